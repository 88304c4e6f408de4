namespace Proxy.Core.Routing;

/// <summary>Envoy's VirtualHost: a set of domains and routes tried in order, first match wins.</summary>
public sealed class VirtualHost(string name, IReadOnlyList<string> domains, IReadOnlyList<Route> routes)
{
    public string Name { get; } = name;
    public IReadOnlyList<string> Domains { get; } = domains;
    public Route[] Routes { get; } = [.. routes];
    public HeaderMutations? RequestHeaders { get; init; }
    public FaultPolicy? Fault { get; init; }
    public CorsPolicy? Cors { get; init; }
    public HeaderMutations? ResponseHeaders { get; init; }

    public Route? FindRoute(ReadOnlySpan<byte> path)
    {
        foreach (Route route in Routes)
        {
            if (route.Matches(path))
            {
                return route;
            }
        }
        return null;
    }

    /// <summary>The first route whose whole match (path, headers, query, gRPC) accepts the request.</summary>
    public Route? FindRoute(ReadOnlySpan<byte> path, Proxy.Http2.HeaderList headers, bool isGrpc)
    {
        foreach (Route route in Routes)
        {
            if (route.Matches(path, headers, isGrpc))
            {
                return route;
            }
        }
        return null;
    }
}
