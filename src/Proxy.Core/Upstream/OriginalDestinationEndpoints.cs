using System.Collections.Concurrent;
using System.Net;
using Proxy.Core.Routing;

namespace Proxy.Core.Upstream;

/// <summary>
/// The endpoints of ORIGINAL_DST clusters (Istio's PassthroughCluster, InboundPassthroughCluster) for
/// HTTP: one per original destination a request was intercepted on, with its own pool, kept for reuse.
/// As Envoy's cleanup_interval (5 s) does, a destination with no request in flight and none for
/// <see cref="CleanupInterval"/> is let go (its idle connections closed). At most <see cref="Limit"/> are
/// kept at once; past it, after pruning, a request to a new one is refused (503) rather than growing
/// without bound.
/// </summary>
public static class OriginalDestinationEndpoints
{
    public const int Limit = 4096;

    public static readonly TimeSpan CleanupInterval = TimeSpan.FromSeconds(5);

    private sealed class Entry(UpstreamEndpoint endpoint)
    {
        public UpstreamEndpoint Endpoint { get; } = endpoint;
        public long LastUsed = Environment.TickCount64;
    }

    private static readonly ConcurrentDictionary<(IPEndPoint, UpstreamProtocol, string, string), Entry> s_endpoints = new();
    private static long s_lastPrune = Environment.TickCount64;

    /// <summary>How many destinations are held now.</summary>
    public static int Count => s_endpoints.Count;

    /// <summary>The endpoint for <paramref name="destination"/> in <paramref name="cluster"/>; null without a destination, or past the limit.</summary>
    public static UpstreamEndpoint? For(EndPoint? destination, Cluster cluster)
    {
        if (destination is not IPEndPoint ip)
        {
            return null;
        }
        var key = (ip, cluster.Protocol, cluster.Name, cluster.Tls?.Key ?? "");
        long now = Environment.TickCount64;
        if (s_endpoints.TryGetValue(key, out Entry? known))
        {
            Volatile.Write(ref known.LastUsed, now);
            return known.Endpoint;
        }
        long sincePrune = now - Volatile.Read(ref s_lastPrune);
        if (s_endpoints.Count >= Limit && sincePrune < 100)
        {
            return null; // full, and pruned a moment ago: not again for every new destination
        }
        if (s_endpoints.Count >= Limit || sincePrune >= (long)CleanupInterval.TotalMilliseconds)
        {
            Prune(now);
            if (s_endpoints.Count >= Limit)
            {
                return null;
            }
        }
        return s_endpoints.GetOrAdd(key, static (k, context) =>
        {
            var (address, protocol, _, _) = k;
            var (state, tls) = context;
            // The cluster's state: its upstream_bind_config (Istio's 127.0.0.6 for inbound passthrough),
            // connection limits and stats apply to these connections as to any of the cluster's.
            UpstreamPool pool = protocol == UpstreamProtocol.Http2
                ? new Http2UpstreamPool(address, new Proxy.Http2.Http2ConnectionOptions { MaxConcurrentStreams = 1024 }) { Cluster = state, Tls = tls }
                : new Http1UpstreamPool(address) { Cluster = state, Tls = tls };
            return new Entry(new UpstreamEndpoint(address, pool));
        }, (cluster.State, cluster.Tls)).Endpoint;
    }

    /// <summary>
    /// Lets go of the destinations unused for the cleanup interval with nothing in flight. A request that
    /// took one just before still completes: a retired pool serves what it is given, then closes.
    /// </summary>
    public static void Prune(long now)
    {
        Volatile.Write(ref s_lastPrune, Environment.TickCount64);
        long idle = (long)CleanupInterval.TotalMilliseconds;
        foreach (var (key, entry) in s_endpoints)
        {
            if (now - Volatile.Read(ref entry.LastUsed) >= idle && entry.Endpoint.Pool.ActiveRequests == 0
                && s_endpoints.TryRemove(new KeyValuePair<(IPEndPoint, UpstreamProtocol, string, string), Entry>(key, entry)))
            {
                entry.Endpoint.Pool.Retire();
            }
        }
    }
}
