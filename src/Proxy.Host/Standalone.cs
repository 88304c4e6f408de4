using System.Net;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Host;

/// <summary>The snapshot for flag-only use: everything on --listen goes to --upstream.</summary>
public static class Standalone
{
    public static ProxySnapshot Build(string listen, string upstream, string protocol, UpstreamPools pools, ListenerOptions? options = null)
    {
        IPEndPoint listenAt = ParseEndPoint(listen, "--listen");
        EndPoint target = ParseEndPoint(upstream, "--upstream");
        UpstreamProtocol upstreamProtocol = protocol is "h2" or "grpc" ? UpstreamProtocol.Http2 : UpstreamProtocol.Http1;
        ClusterState state = pools.ClusterState("upstream");
        var cluster = new Cluster("upstream", upstreamProtocol, [pools.Endpoint(target, upstreamProtocol, cluster: state)], TimeSpan.FromSeconds(5)) { State = state };
        var route = new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero);
        var host = new VirtualHost("all", ["*"], [route]);
        var listener = new ListenerConfig("listener", listenAt, new RouteConfiguration("standalone", [host]))
        {
            Options = options ?? ListenerOptions.Standalone,
        };
        return new ProxySnapshot([listener], [cluster], 1);
    }

    /// <summary>The standalone listener's limits from the command line (safe defaults of their own).</summary>
    public static ListenerOptions Options(CommandLine c) => new()
    {
        RequestHeadersTimeout = TimeSpan.FromSeconds(c.RequestHeadersTimeoutSeconds),
        PrefaceTimeout = TimeSpan.FromSeconds(c.PrefaceTimeoutSeconds),
        IdleTimeout = TimeSpan.FromSeconds(c.IdleTimeoutSeconds),
        BufferLimit = c.BufferLimitBytes,
        Stats = Proxy.Core.Diagnostics.HttpConnectionManagerStats.For("ingress_http"),
    };

    public static IPEndPoint ParseEndPoint(string text, string what)
    {
        if (IPEndPoint.TryParse(text, out IPEndPoint? endPoint) && endPoint.Port != 0 || text.EndsWith(":0", StringComparison.Ordinal) && IPEndPoint.TryParse(text, out endPoint))
        {
            return endPoint!;
        }
        int colon = text.LastIndexOf(':');
        if (colon > 0 && text[..colon] == "localhost" && int.TryParse(text[(colon + 1)..], out int port))
        {
            return new IPEndPoint(IPAddress.Loopback, port);
        }
        throw new ConfigException($"{what}: '{text}' is not an address of the form IP:PORT");
    }
}
