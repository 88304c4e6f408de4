using System.Net;
using Proxy.Core.Upstream;

namespace Proxy.Core.Routing;

public enum UpstreamProtocol : byte
{
    Http1,
    Http2,
}

/// <summary>Envoy's Cluster: a named set of endpoints, the protocol to speak to them, and how to pick one.</summary>
public sealed class Cluster
{
    private int _next = -1;

    public Cluster(string name, UpstreamProtocol protocol, IReadOnlyList<UpstreamEndpoint> endpoints, TimeSpan connectTimeout)
    {
        Name = name;
        Protocol = protocol;
        Endpoints = [.. endpoints];
        ConnectTimeout = connectTimeout;
    }

    public string Name { get; }
    public UpstreamProtocol Protocol { get; }
    public UpstreamEndpoint[] Endpoints { get; }
    /// <summary>Envoy's connect_timeout (default 5 s; Istio sets 10 s).</summary>
    public TimeSpan ConnectTimeout { get; }

    /// <summary>Round robin over the endpoints; null when the cluster has none.</summary>
    public UpstreamEndpoint? PickEndpoint()
    {
        UpstreamEndpoint[] endpoints = Endpoints;
        if (endpoints.Length == 0)
        {
            return null;
        }
        uint next = (uint)Interlocked.Increment(ref _next);
        return endpoints[next % (uint)endpoints.Length];
    }
}

/// <summary>One upstream address of a cluster, with the connection pool that survives snapshot swaps.</summary>
public sealed class UpstreamEndpoint(EndPoint address, UpstreamPool pool)
{
    public EndPoint Address { get; } = address;
    public UpstreamPool Pool { get; } = pool;
    public override string ToString() => Address.ToString() ?? "";
}
