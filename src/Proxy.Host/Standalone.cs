using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Core.Upstream;

namespace Proxy.Host;

/// <summary>The snapshot for flag-only use: everything on --listen goes to --upstream.</summary>
public static class Standalone
{
    public static ProxySnapshot Build(string listen, string upstream, string protocol, UpstreamPools pools, ListenerOptions? options = null,
        TlsServerContext? tls = null, TlsClientContext? upstreamTls = null)
    {
        IPEndPoint listenAt = ParseEndPoint(listen, "--listen");
        EndPoint target = ParseEndPoint(upstream, "--upstream");
        UpstreamProtocol upstreamProtocol = protocol is "h2" or "grpc" ? UpstreamProtocol.Http2 : UpstreamProtocol.Http1;
        ClusterState state = pools.ClusterState("upstream");
        var cluster = new Cluster("upstream", upstreamProtocol, [pools.Endpoint(target, upstreamProtocol, cluster: state, tls: upstreamTls)], TimeSpan.FromSeconds(5)) { State = state };
        var route = new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero);
        var host = new VirtualHost("all", ["*"], [route]);
        var listener = new ListenerConfig("listener", listenAt, new RouteConfiguration("standalone", [host]))
        {
            Options = options ?? ListenerOptions.Standalone,
            Tls = tls,
        };
        return new ProxySnapshot([listener], [cluster], 1);
    }

    /// <summary>--tls-cert/--tls-key (and --tls-client-ca): the listener's TLS, loaded once; null without --tls-cert.</summary>
    public static TlsServerContext? ServerTls(CommandLine c)
    {
        if (c.TlsCert == null && c.TlsKey == null && c.TlsClientCa == null)
        {
            return null;
        }
        if (c.TlsCert == null || c.TlsKey == null)
        {
            throw new ConfigException("--tls-cert and --tls-key go together (--tls-client-ca needs both)");
        }
        return new TlsServerContext
        {
            Identity = SecretSlot.Of(c.TlsCert, TlsIdentity.FromPem(ReadFile(c.TlsCert, "--tls-cert"), ReadFile(c.TlsKey, "--tls-key"), "--tls-cert/--tls-key")),
            Trust = c.TlsClientCa != null ? SecretSlot.Of(c.TlsClientCa, TlsTrust.FromPem(ReadFile(c.TlsClientCa, "--tls-client-ca"), "--tls-client-ca")) : null,
            RequireClientCertificate = c.TlsClientCa != null,
            Alpn = ["h2", "http/1.1"],
            Protocols = TlsContext.ProtocolRange(null, null, client: false),
        };
    }

    /// <summary>--upstream-tls and its companions: TLS towards the upstream, loaded once; null without it.</summary>
    public static TlsClientContext? UpstreamTls(CommandLine c)
    {
        if (!c.UpstreamTls)
        {
            return null;
        }
        if ((c.UpstreamCert == null) != (c.UpstreamKey == null))
        {
            throw new ConfigException("--upstream-cert and --upstream-key go together");
        }
        return new TlsClientContext
        {
            Sni = c.UpstreamSni ?? "",
            Identity = c.UpstreamCert != null
                ? SecretSlot.Of(c.UpstreamCert, TlsIdentity.FromPem(ReadFile(c.UpstreamCert, "--upstream-cert"), ReadFile(c.UpstreamKey!, "--upstream-key"), "--upstream-cert/--upstream-key"))
                : null,
            Trust = c.UpstreamCa != null ? SecretSlot.Of(c.UpstreamCa, TlsTrust.FromPem(ReadFile(c.UpstreamCa, "--upstream-ca"), "--upstream-ca")) : null,
            Alpn = c.UpstreamProtocol is "h2" or "grpc" ? ["h2"] : ["http/1.1"],
            Protocols = TlsContext.ProtocolRange(null, "TLSv1_3", client: true),
        };
    }

    private static string ReadFile(string path, string what)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ConfigException($"{what}: cannot read '{path}': {e.Message}");
        }
    }

    /// <summary>The standalone listener's limits from the command line (safe defaults of their own).</summary>
    public static ListenerOptions Options(CommandLine c) => new()
    {
        RequestHeadersTimeout = TimeSpan.FromSeconds(c.RequestHeadersTimeoutSeconds),
        PrefaceTimeout = TimeSpan.FromSeconds(c.PrefaceTimeoutSeconds),
        IdleTimeout = TimeSpan.FromSeconds(c.IdleTimeoutSeconds),
        BufferLimit = c.BufferLimitBytes,
        Stats = Proxy.Core.Diagnostics.HttpConnectionManagerStats.For("ingress_http"),
        WebSocket = true,
        Codec = c.DownstreamProtocol switch { "h1" => DownstreamCodec.Http1, "h2" => DownstreamCodec.Http2, _ => DownstreamCodec.Auto },
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
