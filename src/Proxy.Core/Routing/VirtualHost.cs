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

    /// <summary>include_request_attempt_count: x-envoy-attempt-count on each upstream attempt (Istio sets it).</summary>
    public bool IncludeRequestAttemptCount { get; init; }

    /// <summary>include_attempt_count_in_response: x-envoy-attempt-count on the response.</summary>
    public bool IncludeAttemptCountInResponse { get; init; }

    /// <summary>
    /// This host with the clusters of its routes replaced through <paramref name="map"/> (by name) and
    /// everything else shared: a cluster that changed (new endpoints) costs no rebuild of the routes to it.
    /// Null when a route cannot be rebound (cluster_header).
    /// </summary>
    public VirtualHost? Rebind(Func<string, Cluster> map)
    {
        var routes = new Route[Routes.Length];
        for (int i = 0; i < routes.Length; i++)
        {
            if (Routes[i].Rebind(map) is not Route route)
            {
                return null;
            }
            routes[i] = route;
        }
        return new VirtualHost(Name, Domains, routes)
        {
            RequestHeaders = RequestHeaders,
            Fault = Fault,
            Cors = Cors,
            ResponseHeaders = ResponseHeaders,
            IncludeRequestAttemptCount = IncludeRequestAttemptCount,
            IncludeAttemptCountInResponse = IncludeAttemptCountInResponse,
        };
    }

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
