using Grpc.Core;
using Grpc.Net.Client;
using EndToEnd.Tests.Grpc;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>
/// Istio AuthorizationPolicies as istiod translates them into envoy.filters.http.rbac, loaded from an
/// Envoy bootstrap and enforced over HTTP/1.1 (curl), h2c (curl with prior knowledge) and gRPC
/// (Grpc.Net.Client): a DENY of a path, and an ALLOW of one header value only.
/// </summary>
public sealed class RbacTests(ProxyFixture upstream) : IClassFixture<ProxyFixture>, IAsyncLifetime
{
    private ProxyServer? _proxy;
    private int _denyPort;
    private int _allowPort;

    // AuthorizationPolicy deny-admin: action DENY, rules: to.operation.paths ["/admin/*"] and the gRPC
    // method /layotto.test.Echo/ServerStream.
    private const string DenyAdmin = """
        - name: envoy.filters.http.rbac
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
            rules:
              action: DENY
              policies:
                ns[default]-policy[deny-admin]-rule[0]:
                  permissions:
                  - and_rules:
                      rules:
                      - or_rules:
                          rules:
                          - url_path: { path: { prefix: /admin/ } }
                          - url_path: { path: { exact: /layotto.test.Echo/ServerStream } }
                  principals:
                  - and_ids: { ids: [ { any: true } ] }
            shadow_rules:
              action: DENY
              policies:
                everything: { permissions: [ { any: true } ], principals: [ { any: true } ] }
        """;

    // AuthorizationPolicy allow-alice: action ALLOW, when request.headers[x-user] in ["alice"].
    private const string AllowAlice = """
        - name: envoy.filters.http.rbac
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
            rules:
              policies:
                ns[default]-policy[allow-alice]-rule[0]:
                  permissions:
                  - and_rules: { rules: [ { any: true } ] }
                  principals:
                  - and_ids:
                      ids:
                      - or_ids:
                          ids:
                          - header: { name: x-user, string_match: { exact: alice } }
                      - not_id: { direct_remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }
        """;

    public async Task InitializeAsync()
    {
        const string Routes = """
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /layotto.test.Echo/ }
                route: { cluster: grpc }
              - match: { prefix: /admin/ }
                route: { cluster: http, prefix_rewrite: / }
              - match: { prefix: / }
                route: { cluster: http }
            """;
        string bootstrap = $$"""
            static_resources:
              listeners:
            {{BootstrapYaml.Listener("deny", Routes, hcmFields: "normalize_path: true\nmerge_slashes: true\npath_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", httpFilters: DenyAdmin)}}
            {{BootstrapYaml.Listener("allow", Routes, httpFilters: AllowAlice)}}
              clusters:
              - name: grpc
                type: STATIC
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    explicit_http_config: { http2_protocol_options: {} }
                load_assignment:
                  cluster_name: grpc
                  endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream.GrpcUpstreamPort}} } } } } ] } ]
              - name: http
                type: STATIC
                load_assignment:
                  cluster_name: http
                  endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream.HttpUpstreamPort}} } } } } ] } ]
            """;
        var pools = new UpstreamPools();
        ProxySnapshot snapshot = new BootstrapLoader(pools).Load(bootstrap, "rbac-test");
        Assert.Equal(2, snapshot.Listeners.Count);
        Assert.Single(snapshot.Listeners[0].Options.HttpRbac);
        _proxy = new ProxyServer(snapshot, pools);
        _proxy.Start();
        _denyPort = _proxy.Listeners[0].LocalEndPoint.Port;
        _allowPort = _proxy.Listeners[1].LocalEndPoint.Port;
        await Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_proxy != null)
        {
            await _proxy.DisposeAsync();
        }
    }

    private static async Task<string> Curl(bool h2, int port, string path, params string[] headers)
    {
        var args = new List<string> { "-sS", "--path-as-is", "-w", " %{http_code} %{http_version}" };
        if (h2)
        {
            args.Add("--http2-prior-knowledge");
        }
        foreach (string h in headers)
        {
            args.AddRange(["-H", h]);
        }
        args.Add($"http://127.0.0.1:{port}{path}");
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", args);
        Assert.True(exit == 0, stderr);
        return stdout;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task DenyPolicy_RefusesThePath_AndLetsTheRestThrough(bool h2)
    {
        string version = h2 ? "2" : "1.1";
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "/admin/hello"));
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "/admin/hello?x=1"));
        Assert.Equal($"hello 200 {version}", await Curl(h2, _denyPort, "/hello"));
        // The shadow rules (deny everything) are only recorded, never enforced.
        Assert.Equal($"hello 200 {version}", await Curl(h2, _denyPort, "/hello?admin/"));
        // normalize_path (Istio's default): the policy cannot be walked around with dot segments or escapes,
        // and what goes upstream is the normalized path.
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "/x/../admin/hello"));
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "/%61dmin/hello"));
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "/x/%2e%2e/admin/hello"));
        Assert.Equal($"hello 200 {version}", await Curl(h2, _denyPort, "/x/./../hello"));
        // Istio's DECODE_AND_MERGE_SLASHES: %2F decoded and "//" merged before the policy looks.
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "/admin%2Fhello"));
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _denyPort, "//admin//hello"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AllowPolicy_LetsOnlyTheHeaderValueThrough(bool h2)
    {
        string version = h2 ? "2" : "1.1";
        Assert.Equal($"hello 200 {version}", await Curl(h2, _allowPort, "/hello", "x-user: alice"));
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _allowPort, "/hello", "x-user: bob"));
        Assert.Equal($"RBAC: access denied\n 403 {version}", await Curl(h2, _allowPort, "/hello"));
    }

    [Fact]
    public async Task Grpc_DeniedCalls_GetPermissionDenied()
    {
        using GrpcChannel deny = GrpcChannel.ForAddress($"http://127.0.0.1:{_denyPort}");
        var client = new Echo.EchoClient(deny);
        Assert.Equal("ok", (await client.UnaryAsync(new EchoRequest { Message = "ok" })).Message);
        using var stream = client.ServerStream(new EchoRequest { Message = "no", Count = 2 });
        var denied = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.PermissionDenied, denied.StatusCode);
        Assert.Equal("RBAC: access denied", denied.Status.Detail);

        using GrpcChannel allow = GrpcChannel.ForAddress($"http://127.0.0.1:{_allowPort}");
        var allowed = new Echo.EchoClient(allow);
        Assert.Equal("alice", (await allowed.UnaryAsync(new EchoRequest { Message = "alice" }, new Metadata { { "x-user", "alice" } })).Message);
        var refused = await Assert.ThrowsAsync<RpcException>(() => allowed.UnaryAsync(new EchoRequest { Message = "bob" }, new Metadata { { "x-user", "bob" } }).ResponseAsync);
        Assert.Equal(StatusCode.PermissionDenied, refused.StatusCode);
    }
}
