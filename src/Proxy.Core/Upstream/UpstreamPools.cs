using System.Collections.Concurrent;
using System.Net;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>
/// Every upstream pool, keyed by address and protocol. Snapshots ask it for their endpoints' pools, so an
/// endpoint that survives a configuration change keeps its connections.
/// </summary>
public sealed class UpstreamPools
{
    private readonly ConcurrentDictionary<(string Cluster, string Address, UpstreamProtocol Protocol, string Transport), UpstreamPool> _pools = new();

    public Http2ConnectionOptions Http2Options { get; init; } = new() { MaxConcurrentStreams = 1024 };

    private readonly ConcurrentDictionary<string, ClusterState> _clusters = new(StringComparer.Ordinal);

    /// <summary>The live state of a cluster name, the same object for every snapshot.</summary>
    public ClusterState ClusterState(string name) => _clusters.GetOrAdd(name, static n => new ClusterState { Name = n });

    /// <summary>The pool for an endpoint of a cluster: like Envoy, each cluster has its own connections.</summary>
    public UpstreamPool Get(EndPoint address, UpstreamProtocol protocol, ClusterState? cluster = null, Transport.Tls.TlsClientContext? tls = null) =>
        _pools.GetOrAdd((cluster?.Name ?? "", address.ToString()!, protocol, tls?.Key ?? ""), static (key, state) => state.protocol == UpstreamProtocol.Http2
            ? new Http2UpstreamPool(state.address, state.self.Http2Options) { Cluster = state.cluster, Tls = state.tls }
            : new Http1UpstreamPool(state.address) { Cluster = state.cluster, Tls = state.tls }, (address, protocol, cluster, self: this, tls));

    /// <summary>
    /// Retires the pools and forgets the cluster states no snapshot in <paramref name="live"/> uses (a
    /// cluster or endpoint removed by a new configuration), so connections and memory do not pile up
    /// as a control plane adds and removes clusters. Busy connections finish their requests first.
    /// </summary>
    public int Prune(ProxySnapshot live)
    {
        var used = new HashSet<UpstreamPool>(ReferenceEqualityComparer.Instance);
        foreach (Cluster cluster in live.Clusters.Values)
        {
            foreach (UpstreamEndpoint endpoint in cluster.Endpoints)
            {
                used.Add(endpoint.Pool);
            }
        }
        int retired = 0;
        foreach (var (key, pool) in _pools)
        {
            if (!used.Contains(pool) && _pools.TryRemove(new KeyValuePair<(string, string, UpstreamProtocol, string), UpstreamPool>(key, pool)))
            {
                pool.Retire();
                retired++;
            }
        }
        foreach (string name in _clusters.Keys)
        {
            if (!live.Clusters.ContainsKey(name) && _clusters.TryRemove(name, out _))
            {
                // Its stats go with it (a cluster added again starts from zero, as in Envoy).
                Diagnostics.StatsStore.Default.RemoveScope("cluster", name);
            }
        }
        return retired;
    }

    /// <summary>The clusters that have pools now (diagnostics and tests).</summary>
    public IReadOnlyCollection<string> PooledClusters => [.. _pools.Keys.Select(static k => k.Cluster).Distinct()];

    public UpstreamEndpoint Endpoint(EndPoint address, UpstreamProtocol protocol, int weight = 1, EndpointHealth health = EndpointHealth.Unknown, int priority = 0,
        ClusterState? cluster = null, int locality = 0, int localityWeight = 1, Transport.Tls.TlsClientContext? tls = null) =>
        new(address, Get(address, protocol, cluster, tls), weight, health, priority) { Locality = locality, LocalityWeight = localityWeight };
}
