namespace Proxy.Core.Routing;

/// <summary>
/// Envoy's tcp_proxy network filter: a connection's octets go to one endpoint of a cluster (weighted
/// clusters: one picked per connection) and back, untouched. A cluster of type ORIGINAL_DST
/// (Istio's PassthroughCluster) connects to where the client meant to go (SO_ORIGINAL_DST).
/// </summary>
public sealed class TcpProxyConfig(string statPrefix, (string Cluster, int Weight)[] clusters, TimeSpan idleTimeout)
{
    public string StatPrefix { get; } = statPrefix;

    /// <summary>The cluster, or weighted_clusters (weights as given; one is picked per connection).</summary>
    public (string Cluster, int Weight)[] Clusters { get; } = clusters;

    /// <summary>idle_timeout: no octet either way for this long ends the connection (Envoy: 1 h; zero: none).</summary>
    public TimeSpan IdleTimeout { get; } = idleTimeout;

    public string PickCluster()
    {
        if (Clusters.Length == 1)
        {
            return Clusters[0].Cluster;
        }
        int total = 0;
        foreach (var (_, weight) in Clusters)
        {
            total += weight;
        }
        int pick = Random.Shared.Next(Math.Max(total, 1));
        foreach (var (cluster, weight) in Clusters)
        {
            if ((pick -= weight) < 0)
            {
                return cluster;
            }
        }
        return Clusters[^1].Cluster;
    }
}
