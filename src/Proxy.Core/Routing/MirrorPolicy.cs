namespace Proxy.Core.Routing;

/// <summary>
/// Envoy's RequestMirrorPolicy: a fraction of requests is also sent, fire and forget, to another cluster,
/// with "-shadow" appended to the authority; the shadow's response is discarded.
/// </summary>
public sealed class MirrorPolicy(Cluster cluster, double fraction)
{
    public Cluster Cluster { get; } = cluster;
    public double Fraction { get; } = fraction;

    public bool Pick() => Fraction >= 1 || (Fraction > 0 && Random.Shared.NextDouble() < Fraction);
}
