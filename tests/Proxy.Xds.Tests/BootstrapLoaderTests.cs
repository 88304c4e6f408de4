using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace Proxy.Xds.Tests;

public sealed class BootstrapLoaderTests
{
    private static string Example => File.ReadAllText(Path.Combine(FindRoot(), "examples", "bootstrap.yaml"));

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Layotto.Fast.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException("repository root");
    }

    private static ProxySnapshot Load(string text) => new BootstrapLoader(new UpstreamPools()).Load(text, "test");

    [Fact]
    public void AdsExample_NamesTheControlPlane_AndNeedsNoStaticListener()
    {
        var loader = new BootstrapLoader(new UpstreamPools());
        ProxySnapshot snapshot = loader.Load(File.ReadAllText(Path.Combine(FindRoot(), "examples", "bootstrap-ads.yaml")), "bootstrap-ads.yaml");
        Assert.Empty(snapshot.Listeners);
        Assert.Equal("http://127.0.0.1:15010", loader.Ads!.Target);
        Assert.True(loader.Ads.Delta);
        Assert.False(loader.Ads.V2);
        Assert.Equal("Kubernetes", loader.Ads.Node.Metadata.Fields["CLUSTER_ID"].StringValue);
        Assert.Empty(loader.Warnings);
    }

    [Fact]
    public void Example_LoadsListenersRoutesAndClusters()
    {
        ProxySnapshot snapshot = Load(Example);
        ListenerConfig listener = Assert.Single(snapshot.Listeners);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 10000), listener.Address);
        VirtualHost host = listener.Routes.FindVirtualHost("anything.example"u8)!;
        Route grpc = host.FindRoute("/helloworld.Greeter/SayHello"u8)!;
        Assert.Equal("grpc_backend", grpc.Cluster!.Name);
        Assert.Equal(UpstreamProtocol.Http2, grpc.Cluster!.Protocol);
        Assert.Equal(TimeSpan.Zero, grpc.Timeout);
        Route web = host.FindRoute("/index.html"u8)!;
        Assert.Equal(UpstreamProtocol.Http1, web.Cluster!.Protocol);
        Assert.Equal(TimeSpan.FromSeconds(15), web.Timeout);
        Assert.IsType<DnsEndPoint>(web.Cluster!.Endpoints[0].Address);
    }

    [Fact]
    public void Json_IsAcceptedWithCamelCaseFields()
    {
        const string json = """
        {"staticResources":{"listeners":[{"name":"l","address":{"socketAddress":{"address":"127.0.0.1","portValue":0}},
          "filterChains":[{"filters":[{"name":"envoy.filters.network.http_connection_manager","typedConfig":{
            "routeConfig":{"virtualHosts":[{"name":"v","domains":["*"],"routes":[{"match":{"path":"/x"},"route":{"cluster":"c","timeout":"0.5s"}}]}]}}}]}]}],
          "clusters":[{"name":"c","connectTimeout":"0.25s","http2ProtocolOptions":{},
            "loadAssignment":{"endpoints":[{"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"::1","portValue":9}}}}]}]}}]}}
        """;
        ProxySnapshot snapshot = Load(json);
        Route route = snapshot.Listeners[0].Routes.FindVirtualHost("h"u8)!.FindRoute("/x?q=1"u8)!;
        Assert.Equal(TimeSpan.FromMilliseconds(500), route.Timeout);
        Assert.Equal(TimeSpan.FromMilliseconds(250), route.Cluster!.ConnectTimeout);
        Assert.Equal(UpstreamProtocol.Http2, route.Cluster!.Protocol);
        Assert.Null(snapshot.Listeners[0].Routes.FindVirtualHost("h"u8)!.FindRoute("/x/y"u8));
    }

    [Theory]
    [InlineData("route: { cluster: web_backend, timeout: 15s }", "route: { cluster: nowhere }", "routes[1].route.cluster: unknown cluster 'nowhere'")]
    [InlineData("connect_timeout: 1s\n    load_assignment:\n      cluster_name: web_backend", "connect_timeout: soon\n    load_assignment:\n      cluster_name: web_backend", "clusters[1].connect_timeout: 'soon' is not a duration")]
    [InlineData("type: STATIC", "type: EDS", "clusters[0].type: EDS clusters need xDS")]
    [InlineData("match: { prefix: \"/\" }", "match: { connect_matcher: {} }", "routes[1].match: path matcher 'connect_matcher' is not supported")]
    [InlineData("match: { prefix: \"/\" }", "match: { safe_regex: { regex: \"(unclosed\" } }", "routes[1].match.safe_regex: invalid regex")]
    [InlineData("route: { cluster: web_backend, timeout: 15s }", "route: { weighted_clusters: { clusters: [ { name: web_backend, weight: 60 } ], total_weight: 100 } }", "weights add up to 60, not total_weight 100")]
    [InlineData("port_value: 10000", "port_value: 70000", "socket_address.port_value: 70000 is not a port")]
    [InlineData("route_config:\n            name: local", "rds: { route_config_name: x }\n          route_config:\n            name: local", "typed_config.rds: RDS over gRPC needs xDS")]
    public void Errors_NameTheField(string find, string replace, string expected)
    {
        string text = Example.Replace(find, replace, StringComparison.Ordinal);
        Assert.NotEqual(Example, text);
        var e = Assert.Throws<ConfigException>(() => Load(text));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void BrokenYaml_IsAClearError()
    {
        var e = Assert.Throws<ConfigException>(() => Load("static_resources: [unclosed"));
        Assert.Contains("not valid YAML or JSON", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UnhonouredFields_AreReportedOnceByPath()
    {
        string text = Example.Replace("type: STATIC\n", "type: STATIC\n    lb_policy: CLUSTER_PROVIDED\n    health_checks: []\n", StringComparison.Ordinal);
        var loader = new BootstrapLoader(new UpstreamPools());
        loader.Load(text, "test");
        Assert.Contains(loader.Warnings, w => w.StartsWith("static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED is not honoured", StringComparison.Ordinal));
        Assert.Contains(loader.Warnings, w => w.StartsWith("static_resources.clusters[0].health_checks", StringComparison.Ordinal));
    }

    [Fact]
    public void DuplicateDomains_AreRejected()
    {
        string text = Example.Replace("              domains: [\"*\"]", "              domains: [\"a\", \"a\"]", StringComparison.Ordinal);
        var e = Assert.Throws<ConfigException>(() => Load(text));
        Assert.Contains("domain 'a' appears in more than one virtual host", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Redirect_IsLoaded()
    {
        string text = Example.Replace("route: { cluster: web_backend, timeout: 15s }", "redirect: { https_redirect: true, host_redirect: example.org, response_code: PERMANENT_REDIRECT }", StringComparison.Ordinal);
        Route route = Load(text).Listeners[0].Routes.FindVirtualHost("x"u8)!.FindRoute("/page"u8)!;
        Assert.Equal(RouteActionKind.Redirect, route.Action.Kind);
        Assert.Equal(308, route.Action.DirectStatus);
        Assert.Equal("https", route.Action.RedirectScheme);
        Assert.Equal("example.org", route.Action.RedirectHost);
    }

    [Fact]
    public void RegexRewrite_UsesRe2StyleGroups()
    {
        string text = Example.Replace("route: { cluster: web_backend, timeout: 15s }",
            "route: { cluster: web_backend, regex_rewrite: { pattern: { regex: \"^/service/([^/]+)(/.*)$\" }, substitution: \"\\\\2/instance/\\\\1\" }, max_grpc_timeout: 2s, auto_host_rewrite: true }", StringComparison.Ordinal);
        Route route = Load(text).Listeners[0].Routes.FindVirtualHost("x"u8)!.FindRoute("/service/foo/v1/api"u8)!;
        Assert.Equal("/v1/api/instance/foo", route.Action.RegexRewrite!.Replace("/service/foo/v1/api", route.Action.RegexSubstitution!));
        Assert.Equal(TimeSpan.FromSeconds(2), route.Action.MaxGrpcTimeout);
        Assert.True(route.Action.AutoHostRewrite);
    }

    [Theory]
    [InlineData("request_mirror_policies: [ { cluster: grpc_backend, runtime_fraction: { default_value: { numerator: 50 } } } ]", 0.5)]
    [InlineData("request_mirror_policy: { cluster: grpc_backend }", 1.0)]
    public void MirrorPolicies_v3AndIstio15Singular(string mirror, double fraction)
    {
        string text = Example.Replace("route: { cluster: web_backend, timeout: 15s }", $"route: {{ cluster: web_backend, {mirror} }}", StringComparison.Ordinal);
        Route route = Load(text).Listeners[0].Routes.FindVirtualHost("x"u8)!.FindRoute("/page"u8)!;
        Assert.Equal("grpc_backend", route.Action.Mirror!.Cluster.Name);
        Assert.Equal(fraction, route.Action.Mirror.Fraction, 3);
    }
}
