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
    private readonly ConcurrentDictionary<(string Cluster, string Address, UpstreamProtocol Protocol), UpstreamPool> _pools = new();

    public Http2ConnectionOptions Http2Options { get; init; } = new() { MaxConcurrentStreams = 1024 };

    private readonly ConcurrentDictionary<string, ClusterState> _clusters = new(StringComparer.Ordinal);

    /// <summary>The live state of a cluster name, the same object for every snapshot.</summary>
    public ClusterState ClusterState(string name) => _clusters.GetOrAdd(name, static n => new ClusterState { Name = n });

    /// <summary>The pool for an endpoint of a cluster: like Envoy, each cluster has its own connections.</summary>
    public UpstreamPool Get(EndPoint address, UpstreamProtocol protocol, ClusterState? cluster = null) =>
        _pools.GetOrAdd((cluster?.Name ?? "", address.ToString()!, protocol), static (key, state) => state.protocol == UpstreamProtocol.Http2
            ? new Http2UpstreamPool(state.address, state.self.Http2Options) { Cluster = state.cluster }
            : new Http1UpstreamPool(state.address) { Cluster = state.cluster }, (address, protocol, cluster, self: this));

    public UpstreamEndpoint Endpoint(EndPoint address, UpstreamProtocol protocol, int weight = 1, EndpointHealth health = EndpointHealth.Unknown, int priority = 0,
        ClusterState? cluster = null, int locality = 0, int localityWeight = 1) =>
        new(address, Get(address, protocol, cluster), weight, health, priority) { Locality = locality, LocalityWeight = localityWeight };
}
