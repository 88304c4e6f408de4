using System.Collections.Concurrent;
using System.Net;
using Proxy.Core.Routing;

namespace Proxy.Core.Upstream;

/// <summary>
/// The endpoints of ORIGINAL_DST clusters (Istio's PassthroughCluster) for HTTP: one per original
/// destination a request was intercepted on, with its own pool, kept for reuse. At most
/// <see cref="Limit"/> destinations are kept; past it a request to a new one is refused (503) rather than
/// growing without bound.
/// </summary>
public static class OriginalDestinationEndpoints
{
    public const int Limit = 4096;

    private static readonly ConcurrentDictionary<(IPEndPoint, UpstreamProtocol, string), UpstreamEndpoint> s_endpoints = new();

    /// <summary>The endpoint for <paramref name="destination"/> in <paramref name="cluster"/>; null without a destination, or past the limit.</summary>
    public static UpstreamEndpoint? For(EndPoint? destination, Cluster cluster)
    {
        if (destination is not IPEndPoint ip)
        {
            return null;
        }
        var key = (ip, cluster.Protocol, cluster.Name);
        if (s_endpoints.TryGetValue(key, out UpstreamEndpoint? known))
        {
            return known;
        }
        if (s_endpoints.Count >= Limit)
        {
            return null;
        }
        return s_endpoints.GetOrAdd(key, static (k, state) =>
        {
            var (address, protocol, _) = k;
            // The cluster's state: its upstream_bind_config (Istio's 127.0.0.6 for inbound passthrough),
            // connection limits and stats apply to these connections as to any of the cluster's.
            UpstreamPool pool = protocol == UpstreamProtocol.Http2
                ? new Http2UpstreamPool(address, new Proxy.Http2.Http2ConnectionOptions { MaxConcurrentStreams = 1024 }) { Cluster = state }
                : new Http1UpstreamPool(address) { Cluster = state };
            return new UpstreamEndpoint(address, pool);
        }, cluster.State);
    }
}
