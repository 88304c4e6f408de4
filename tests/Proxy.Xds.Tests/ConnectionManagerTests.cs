using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;
using Proxy.Xds.Config;

namespace Proxy.Xds.Tests;

/// <summary>
/// The HTTP connection manager's options and filters as the loader reads them: Envoy's timeouts and
/// defaults, the listener and cluster buffer limits, the overload connection cap, RBAC policies evaluated
/// as Envoy does, and security filters that fail closed.
/// </summary>
public sealed class ConnectionManagerTests
{
    /// <summary>A one-listener bootstrap; each extra is YAML written from column 0, indented into its place here.</summary>
    private static string Bootstrap(string hcmExtra = "", string filters = "", string networkFilters = "", string listenerExtra = "", string rootExtra = "") =>
        string.Join('\n',
            "static_resources:",
            "  listeners:",
            "  - name: l",
            "    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }",
            Indent(listenerExtra, 4),
            "    filter_chains:",
            "    - filters:",
            Indent(networkFilters, 6),
            "      - name: envoy.filters.network.http_connection_manager",
            "        typed_config:",
            "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "          stat_prefix: l",
            Indent(hcmExtra, 10),
            "          route_config: { virtual_hosts: [ { name: all, domains: [\"*\"], routes: [ { match: { prefix: / }, route: { cluster: c } } ] } ] }",
            "          http_filters:",
            Indent(filters, 10),
            "          - name: envoy.filters.http.router",
            "  clusters:",
            "  - name: c",
            "    per_connection_buffer_limit_bytes: 65536",
            "    load_assignment: { cluster_name: c, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } } ] } ] }",
            rootExtra);

    private static string Indent(string yaml, int spaces) =>
        yaml.Length == 0 ? "" : string.Join('\n', yaml.Split('\n').Select(l => new string(' ', spaces) + l));

    private static (ProxySnapshot Snapshot, BootstrapLoader Loader) Load(string yaml)
    {
        var loader = new BootstrapLoader(new UpstreamPools());
        return (loader.Load(yaml, "test"), loader);
    }

    [Fact]
    public void Defaults_AreEnvoys()
    {
        ListenerOptions o = Load(Bootstrap()).Snapshot.Listeners[0].Options;
        Assert.Equal(1024 * 1024, o.BufferLimit);
        Assert.Equal(TimeSpan.FromMinutes(5), o.StreamIdleTimeout);
        Assert.Equal(TimeSpan.FromHours(1), o.IdleTimeout);
        Assert.Equal(TimeSpan.Zero, o.RequestHeadersTimeout);
        Assert.Equal(TimeSpan.Zero, o.RequestTimeout);
        Assert.Equal(100, o.Http2.MaxConcurrentStreams);
        Assert.Empty(o.HttpRbac);
        Assert.Null(o.NetworkRbac);
    }

    [Fact]
    public void UpgradeConfigs_WebSocketIsAllowedOnlyWhenNamed_OtherTypesAreWarnedAbout()
    {
        Assert.False(Load(Bootstrap()).Snapshot.Listeners[0].Options.WebSocket);
        Assert.True(Load(Bootstrap(hcmExtra: "upgrade_configs: [ { upgrade_type: websocket } ]")).Snapshot.Listeners[0].Options.WebSocket);
        Assert.False(Load(Bootstrap(hcmExtra: "upgrade_configs: [ { upgrade_type: WebSocket, enabled: false } ]")).Snapshot.Listeners[0].Options.WebSocket);
        var (snapshot, loader) = Load(Bootstrap(hcmExtra: "upgrade_configs: [ { upgrade_type: websocket }, { upgrade_type: CONNECT } ]"));
        Assert.True(snapshot.Listeners[0].Options.WebSocket);
        Assert.Contains(loader.Warnings, w => w.Contains("upgrade type 'CONNECT' is not served", StringComparison.Ordinal));
        (_, loader) = Load(Bootstrap().Replace("route: { cluster: c }", "route: { cluster: c, upgrade_configs: [ { upgrade_type: websocket, enabled: false } ] }", StringComparison.Ordinal));
        Assert.Contains(loader.Warnings, w => w.Contains("route-level upgrade_configs are not honoured", StringComparison.Ordinal));
    }

    [Fact]
    public void NormalizePathAndMergeSlashes_AreRead_OffByDefault()
    {
        ListenerOptions d = Load(Bootstrap()).Snapshot.Listeners[0].Options;
        Assert.False(d.NormalizePath);
        Assert.False(d.MergeSlashes);
        Assert.Equal(EscapedSlashesAction.KeepUnchanged, d.EscapedSlashes);
        ListenerOptions o = Load(Bootstrap(hcmExtra: "normalize_path: true\nmerge_slashes: true\npath_with_escaped_slashes_action: REJECT_REQUEST")).Snapshot.Listeners[0].Options;
        Assert.True(o.NormalizePath);
        Assert.True(o.MergeSlashes);
        Assert.Equal(EscapedSlashesAction.RejectRequest, o.EscapedSlashes);
        Assert.Equal(EscapedSlashesAction.UnescapeAndForward, Load(Bootstrap(hcmExtra: "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD")).Snapshot.Listeners[0].Options.EscapedSlashes);
        Assert.Throws<ConfigException>(() => Load(Bootstrap(hcmExtra: "path_with_escaped_slashes_action: SOMETIMES")));
    }

    [Fact]
    public void TimeoutsLimitsAndHttp2Options_AreRead()
    {
        var (snapshot, loader) = Load(Bootstrap(
            hcmExtra: """
                request_headers_timeout: 2s
                stream_idle_timeout: 30s
                request_timeout: 10s
                common_http_protocol_options: { idle_timeout: 60s, max_connection_duration: 600s, max_headers_count: 250 }
                http2_protocol_options: { max_concurrent_streams: 50, initial_stream_window_size: 131072, max_consecutive_inbound_frames_with_empty_payload: 3 }
                """,
            listenerExtra: "per_connection_buffer_limit_bytes: 32768",
            rootExtra: """
            overload_manager:
              resource_monitors:
              - name: envoy.resource_monitors.global_downstream_max_connections
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
                  max_active_downstream_connections: 5000
            """));
        ListenerOptions o = snapshot.Listeners[0].Options;
        Assert.Equal(TimeSpan.FromSeconds(2), o.RequestHeadersTimeout);
        Assert.Equal(TimeSpan.FromSeconds(30), o.StreamIdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), o.RequestTimeout);
        Assert.Equal(TimeSpan.FromSeconds(60), o.IdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(600), o.MaxConnectionDuration);
        Assert.Equal(250, o.MaxHeadersCount);
        Assert.Equal(250, o.Http2.MaxHeaderFields);
        Assert.Equal(100, Load(Bootstrap()).Snapshot.Listeners[0].Options.MaxHeadersCount); // Envoy's default
        Assert.Contains("max_headers_count", Assert.Throws<ConfigException>(() => Load(Bootstrap(hcmExtra: "common_http_protocol_options: { max_headers_count: 0 }"))).Message);
        Assert.Equal(50, o.Http2.MaxConcurrentStreams);
        Assert.Equal(131072, o.Http2.InitialStreamWindowSize);
        Assert.Equal(3, o.Http2.MaxConsecutiveEmptyFrames);
        Assert.Equal(32768, o.BufferLimit);
        Assert.Equal(65536, snapshot.Clusters["c"].BufferLimit);
        Assert.Equal(5000, loader.MaxDownstreamConnections);
    }

    [Fact]
    public void ClusterIdleTimeout_AndMaxRequestsPerConnection_AreRead()
    {
        const string Extension = """
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    common_http_protocol_options: { idle_timeout: 30s, max_requests_per_connection: 5 }
                    explicit_http_config: { http_protocol_options: {} }
            """;
        ProxySnapshot typed = Load(Bootstrap(rootExtra: Cluster("t", Extension))).Snapshot;
        Assert.Equal(TimeSpan.FromSeconds(30), typed.Clusters["t"].IdleTimeout);
        Assert.Equal(5, typed.Clusters["t"].MaxRequestsPerConnection);
        // Envoy's defaults: an hour, no limit.
        Assert.Equal(TimeSpan.FromHours(1), typed.Clusters["c"].IdleTimeout);
        Assert.Equal(0, typed.Clusters["c"].MaxRequestsPerConnection);
        // The cluster's own (deprecated) fields; idle_timeout 0s turns the timeout off.
        Cluster own = Load(Bootstrap(rootExtra: Cluster("d", "    max_requests_per_connection: 1\n    common_http_protocol_options: { idle_timeout: 0s }"))).Snapshot.Clusters["d"];
        Assert.Equal(1, own.MaxRequestsPerConnection);
        Assert.Equal(TimeSpan.Zero, own.IdleTimeout);

        static string Cluster(string name, string extra) => string.Join('\n',
            "  - name: " + name,
            extra,
            "    load_assignment: { cluster_name: " + name + ", endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } } ] } ] }");
    }

    [Fact]
    public void ClusterMaxHeadersCount_IsRead_FromTheProtocolOptionsExtensionOrTheCluster()
    {
        const string Extension = """
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    common_http_protocol_options: { max_headers_count: 40 }
                    explicit_http_config: { http2_protocol_options: {} }
            """;
        ProxySnapshot typed = Load(Bootstrap(rootExtra: Cluster("t", Extension))).Snapshot;
        Assert.Equal(40, typed.Clusters["t"].MaxHeadersCount);
        Assert.Equal(UpstreamProtocol.Http2, typed.Clusters["t"].Protocol);
        Assert.Equal(100, typed.Clusters["c"].MaxHeadersCount); // Envoy's default
        Assert.Equal(7, Load(Bootstrap(rootExtra: Cluster("d", "    common_http_protocol_options: { max_headers_count: 7 }"))).Snapshot.Clusters["d"].MaxHeadersCount);
        ConfigException e = Assert.Throws<ConfigException>(() => Load(Bootstrap(rootExtra: Cluster("z", Extension.Replace("40", "0", StringComparison.Ordinal)))));
        Assert.Contains("max_headers_count", e.Message);

        static string Cluster(string name, string extra) => string.Join('\n',
            "  - name: " + name,
            extra,
            "    load_assignment: { cluster_name: " + name + ", endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } } ] } ] }");
    }

    [Theory]
    [InlineData("", DownstreamCodec.Auto)]
    [InlineData("codec_type: AUTO", DownstreamCodec.Auto)]
    [InlineData("codec_type: HTTP1", DownstreamCodec.Http1)]
    [InlineData("codec_type: HTTP2", DownstreamCodec.Http2)]
    [InlineData("codec_type: 2", DownstreamCodec.Http2)]
    public void CodecType_IsRead(string hcmExtra, DownstreamCodec expected)
    {
        var (snapshot, loader) = Load(Bootstrap(hcmExtra: hcmExtra));
        Assert.Equal(expected, snapshot.Listeners[0].Options.Codec);
        Assert.Empty(loader.Warnings);
    }

    [Fact]
    public void CodecType_Http3IsNamedAsNotServed_AndAnUnknownOneRefused()
    {
        var (snapshot, loader) = Load(Bootstrap(hcmExtra: "codec_type: HTTP3"));
        Assert.Equal(DownstreamCodec.Auto, snapshot.Listeners[0].Options.Codec);
        Assert.Contains(loader.Warnings, w => w.Contains("codec_type", StringComparison.Ordinal) && w.Contains("HTTP3", StringComparison.Ordinal));
        Assert.Contains("codec_type", Assert.Throws<ConfigException>(() => Load(Bootstrap(hcmExtra: "codec_type: SPDY"))).Message);
    }

    [Fact]
    public void HttpProtocolOptions_AcceptHttp10_AndItsDefaultHost_AreRead()
    {
        ListenerOptions defaults = Load(Bootstrap()).Snapshot.Listeners[0].Options;
        Assert.False(defaults.AcceptHttp10); // Envoy's default: 426
        Assert.Null(defaults.DefaultHostForHttp10);
        var (snapshot, loader) = Load(Bootstrap(hcmExtra: "http_protocol_options: { accept_http_10: true, default_host_for_http_10: \"svc.local:8080\" }"));
        ListenerOptions o = snapshot.Listeners[0].Options;
        Assert.True(o.AcceptHttp10);
        Assert.Equal("svc.local:8080"u8.ToArray(), o.DefaultHostForHttp10);
        Assert.Empty(loader.Warnings);
    }

    [Theory]
    [InlineData("a b")]
    [InlineData("user@host")]
    [InlineData("héte")]
    public void HttpProtocolOptions_ABadDefaultHost_IsRefused(string host)
    {
        var e = Assert.Throws<ConfigException>(() => Load(Bootstrap(hcmExtra: "http_protocol_options: { accept_http_10: true, default_host_for_http_10: \"" + host + "\" }")));
        Assert.Contains("default_host_for_http_10", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RuntimeKey_SetsTheConnectionCap()
    {
        var (_, loader) = Load(Bootstrap(rootExtra: """
            layered_runtime:
              layers:
              - name: static
                static_layer: { overload.global_downstream_max_connections: 777 }
            """));
        Assert.Equal(777, loader.MaxDownstreamConnections);
    }

    [Theory]
    [InlineData("envoy.filters.http.ext_authz", "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz")]
    [InlineData("envoy.filters.http.jwt_authn", "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication")]
    [InlineData("my-auth", "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2")]
    public void AccessControlFiltersWeLack_RefuseTheListener(string name, string type)
    {
        var e = Assert.Throws<ConfigException>(() => Load(Bootstrap(filters: $$"""
                  - name: {{name}}
                    typed_config: { "@type": {{type}} }
                  """)));
        Assert.Contains(name, e.Message, StringComparison.Ordinal);
        Assert.Contains("http_filters[0]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OptionalAccessControlFilter_IsSkippedWithAWarning()
    {
        var (snapshot, loader) = Load(Bootstrap(filters: """
                  - name: envoy.filters.http.ext_authz
                    is_optional: true
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz }
                  """));
        Assert.Single(snapshot.Listeners);
        Assert.Contains(loader.Warnings, w => w.Contains("ext_authz", StringComparison.Ordinal) && w.Contains("is_optional", StringComparison.Ordinal));
    }

    [Fact]
    public void ObservingFilters_AreSkippedWithOneWarningEach()
    {
        var (snapshot, loader) = Load(Bootstrap(filters: """
                  - name: istio.metadata_exchange
                    typed_config: { "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/io.istio.http.peer_metadata.Config }
                  - name: istio.stats
                    typed_config: { "@type": type.googleapis.com/stats.PluginConfig }
                  - name: envoy.filters.http.grpc_stats
                  """));
        Assert.Single(snapshot.Listeners);
        Assert.Contains(loader.Warnings, w => w.Contains("istio.metadata_exchange", StringComparison.Ordinal));
        Assert.Contains(loader.Warnings, w => w.Contains("istio.stats", StringComparison.Ordinal));
        Assert.Contains(loader.Warnings, w => w.Contains("grpc_stats", StringComparison.Ordinal));
    }

    [Fact]
    public void RouterNotLast_IsAnError()
    {
        string yaml = Bootstrap().Replace("      - name: envoy.filters.http.router", "      - name: envoy.filters.http.router\n          - name: envoy.filters.http.grpc_stats", StringComparison.Ordinal);
        var e = Assert.Throws<ConfigException>(() => Load(yaml));
        Assert.Contains("must be the last", e.Message, StringComparison.Ordinal);
    }

    private static RbacPolicySet Rbac(string rules, bool network = false)
    {
        string filter = string.Join('\n',
            $"- name: {(network ? "envoy.filters.network.rbac" : "envoy.filters.http.rbac")}",
            "  typed_config:",
            $"    \"@type\": type.googleapis.com/envoy.extensions.filters.{(network ? "network" : "http")}.rbac.v3.RBAC",
            "    rules:",
            Indent(rules, 6));
        ListenerOptions o = Load(network ? Bootstrap(networkFilters: filter) : Bootstrap(filters: filter)).Snapshot.Listeners[0].Options;
        return network ? o.NetworkRbac! : Assert.Single(o.HttpRbac);
    }

    private static RbacRequest Request(HeaderList headers, string path = "/", string remote = "127.0.0.1", int localPort = 8080) => new()
    {
        Headers = headers,
        Path = System.Text.Encoding.ASCII.GetBytes(path),
        DirectRemote = new IPEndPoint(IPAddress.Parse(remote), 40000),
        Remote = new IPEndPoint(IPAddress.Parse(remote), 40000),
        Local = new IPEndPoint(IPAddress.Loopback, localPort),
    };

    private static HeaderList Headers(params (string Name, string Value)[] fields)
    {
        var list = new HeaderList();
        foreach (var (n, v) in fields)
        {
            list.Add(System.Text.Encoding.ASCII.GetBytes(n), System.Text.Encoding.ASCII.GetBytes(v));
        }
        return list;
    }

    [Fact]
    public void Permissions_MethodPathPortAndNot()
    {
        RbacPolicySet rbac = Rbac("""
            action: ALLOW
            policies:
              p:
                permissions:
                - and_rules:
                    rules:
                    - header: { name: ":method", string_match: { exact: GET } }
                    - url_path: { path: { prefix: /api/ } }
                    - destination_port: 8080
                    - not_rule: { url_path: { path: { exact: /api/secret } } }
                principals: [ { any: true } ]
            """);
        Assert.True(rbac.Allows(Request(Headers((":method", "GET")), "/api/x")));
        Assert.False(rbac.Allows(Request(Headers((":method", "POST")), "/api/x")));
        Assert.False(rbac.Allows(Request(Headers((":method", "GET")), "/api/secret")));
        Assert.False(rbac.Allows(Request(Headers((":method", "GET")), "/api/x", localPort: 9090)));
        Assert.False(rbac.Allows(Request(Headers((":method", "GET")), "/other")));
    }

    [Fact]
    public void Principals_AddressesAndHeaders()
    {
        RbacPolicySet rbac = Rbac("""
            action: DENY
            policies:
              block:
                permissions: [ { any: true } ]
                principals:
                - or_ids:
                    ids:
                    - remote_ip: { address_prefix: 10.1.0.0, prefix_len: 16 }
                    - header: { name: x-banned, present_match: true }
            """);
        Assert.False(rbac.Allows(Request(Headers(), remote: "10.1.2.3")));
        Assert.True(rbac.Allows(Request(Headers(), remote: "10.2.2.3")));
        Assert.False(rbac.Allows(Request(Headers(("x-banned", "1")))));
        Assert.True(rbac.Allows(Request(Headers())));
    }

    [Fact]
    public void AuthenticatedPrincipals_MatchNothingWithoutTls()
    {
        RbacPolicySet rbac = Rbac("""
            policies:
              from-sleep:
                permissions: [ { any: true } ]
                principals: [ { authenticated: { principal_name: { exact: spiffe://cluster.local/ns/default/sa/sleep } } } ]
            """);
        Assert.False(rbac.Allows(Request(Headers())));
    }

    [Fact]
    public void RulesWeCannotEvaluate_FailClosed()
    {
        // metadata (and filter_state, requested_server_name...) are not evaluated: ALLOW never matches them…
        RbacPolicySet allow = Rbac("""
            action: ALLOW
            policies:
              jwt:
                permissions: [ { any: true } ]
                principals: [ { metadata: { filter: envoy.filters.http.jwt_authn, path: [ { key: iss } ], value: { string_match: { exact: me } } } } ]
            """);
        Assert.False(allow.Allows(Request(Headers())));
        // …and DENY always does, also under a not.
        RbacPolicySet deny = Rbac("""
            action: DENY
            policies:
              not-from-ns:
                permissions: [ { any: true } ]
                principals: [ { not_id: { metadata: { filter: istio_authn, path: [ { key: source.namespace } ], value: { string_match: { exact: ok } } } } } ]
            """);
        Assert.False(deny.Allows(Request(Headers())));
    }

    [Fact]
    public void NetworkRbac_IsReadForTheConnection()
    {
        RbacPolicySet rbac = Rbac("""
            action: ALLOW
            policies:
              local-only:
                permissions: [ { any: true } ]
                principals: [ { direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } } ]
            """, network: true);
        Assert.True(rbac.Allows(new RbacRequest { DirectRemote = new IPEndPoint(IPAddress.Loopback, 1) }));
        Assert.False(rbac.Allows(new RbacRequest { DirectRemote = new IPEndPoint(IPAddress.Parse("192.0.2.1"), 1) }));
        Assert.True(rbac.Allows(new RbacRequest { DirectRemote = new IPEndPoint(IPAddress.Parse("::ffff:127.0.0.1"), 1) }));
    }

    [Fact]
    public void NetworkAccessControlFilterWeLack_RefusesTheListener()
    {
        var e = Assert.Throws<ConfigException>(() => Load(Bootstrap(networkFilters: """
                  - name: envoy.filters.network.ext_authz
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz }
                  """)));
        Assert.Contains("ext_authz", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AccessControlFilter_DisabledByDefaultForPerRouteEnabling_IsRefused()
    {
        var e = Assert.Throws<ConfigException>(() => Load(Bootstrap(filters: """
            - name: envoy.filters.http.rbac
              disabled: true
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
                rules: { action: DENY, policies: { p: { permissions: [ { any: true } ], principals: [ { any: true } ] } } }
            """)));
        Assert.Contains("enabled per route", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void PerRouteRbac_IsRefused()
    {
        string yaml = Bootstrap().Replace("route: { cluster: c } }", "route: { cluster: c }, typed_per_filter_config: { envoy.filters.http.rbac: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute, rbac: { rules: { action: DENY } } } } }", StringComparison.Ordinal);
        var e = Assert.Throws<ConfigException>(() => Load(yaml));
        Assert.Contains("per-route access control", e.Message, StringComparison.Ordinal);
    }
}
