using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Xds.Mesh;
using Xds.ControlPlane;
using Cluster = Proxy.Xds.Api.Cluster.Cluster;
using RouteConfiguration = Proxy.Xds.Api.Route.RouteConfiguration;

namespace Proxy.Xds.Tests;

/// <summary>
/// The embedded control plane's translation of Istio's resources: the shapes istiod produces (compared
/// with a real istiod dump where we have one), every VirtualService/DestinationRule field we translate,
/// and errors that name file, resource and field.
/// </summary>
public sealed class IstioTranslatorTests
{
    private const string Service = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: { name: productpage, namespace: default }
        spec:
          hosts: [productpage.default.svc.cluster.local]
          resolution: STATIC
          ports: [ { number: 9080, name: http } ]
          workloadSelector: { labels: { app: productpage } }
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: WorkloadEntry
        metadata: { name: pp-v1, namespace: default }
        spec: { address: 10.0.0.1, labels: { app: productpage, version: v1 } }
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: WorkloadEntry
        metadata: { name: pp-v2, namespace: default }
        spec: { address: 10.0.0.2, ports: { http: 19080 }, labels: { app: productpage, version: v2 } }
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: { name: productpage, namespace: default }
        spec:
          host: productpage
          trafficPolicy:
            loadBalancer: { simple: ROUND_ROBIN }
            connectionPool: { tcp: { maxConnections: 100, connectTimeout: 2s }, http: { http1MaxPendingRequests: 10, http2MaxRequests: 50, maxRetries: 3, maxRequestsPerConnection: 4, idleTimeout: 90s } }
            outlierDetection: { consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50 }
          subsets:
          - { name: v1, labels: { version: v1 } }
          - { name: v2, labels: { version: v2 }, trafficPolicy: { loadBalancer: { simple: RANDOM } } }
        """;

    private static List<(XdsResourceType Type, string Name, Google.Protobuf.IMessage Resource)> Translate(params string[] docs) =>
        new IstioTranslator().Translate(docs.Select((d, i) => ($"f{i}.yaml", d)));

    private static T Get<T>(List<(XdsResourceType Type, string Name, Google.Protobuf.IMessage Resource)> resources, string name) =>
        (T)resources.Single(r => r.Name == name && r.Resource is T).Resource;

    [Fact]
    public void SubsetCluster_HasIstiodsShape()
    {
        // istiod's own subset cluster for productpage v1 (a real config dump).
        Cluster istio = IstioDumps.Resources("istio-master/config_dump-route-and-subset-cluster.json")
            .Select(r => r.Message).OfType<Cluster>().Single(c => c.Name == "outbound|9080|v1|productpage.default.svc.cluster.local");
        var ours = Get<Cluster>(Translate(Service.Replace("loadBalancer: { simple: ROUND_ROBIN }\n    ", "", StringComparison.Ordinal)), istio.Name);
        Assert.Equal(istio.Type, ours.Type);
        Assert.Equal(istio.EdsClusterConfig.ServiceName, ours.EdsClusterConfig.ServiceName);
        Assert.True(ours.EdsClusterConfig.EdsConfig.Ads != null && istio.EdsClusterConfig.EdsConfig.Ads != null);
        // Without a DestinationRule load balancer, istiod's default: LEAST_REQUEST.
        Assert.Equal(istio.LbPolicy, new IstioTranslator().Translate([("a.yaml", Service.Split("---")[0])]).Select(r => r.Resource).OfType<Cluster>().First().LbPolicy);
    }

    [Fact]
    public void DestinationRule_PolicyAndSubsetEndpoints()
    {
        var resources = Translate(Service);
        var all = Get<Api.Endpoint.ClusterLoadAssignment>(resources, "outbound|9080||productpage.default.svc.cluster.local");
        Assert.Equal(["10.0.0.1:9080", "10.0.0.2:19080"], all.Endpoints.SelectMany(l => l.LbEndpoints).Select(e => $"{e.Endpoint.Address.SocketAddress.Address}:{e.Endpoint.Address.SocketAddress.PortValue}"));
        var v2 = Get<Api.Endpoint.ClusterLoadAssignment>(resources, "outbound|9080|v2|productpage.default.svc.cluster.local");
        Assert.Equal(["10.0.0.2"], v2.Endpoints.SelectMany(l => l.LbEndpoints).Select(e => e.Endpoint.Address.SocketAddress.Address));
        var v1 = Get<Cluster>(resources, "outbound|9080|v1|productpage.default.svc.cluster.local");
        Assert.Equal(Cluster.Types.LbPolicy.RoundRobin, v1.LbPolicy);
        Assert.Equal(TimeSpan.FromSeconds(2), v1.ConnectTimeout.ToTimeSpan());
        Assert.Equal(100u, v1.CircuitBreakers.Thresholds[0].MaxConnections);
        Assert.Equal(10u, v1.CircuitBreakers.Thresholds[0].MaxPendingRequests);
        Assert.Equal(50u, v1.CircuitBreakers.Thresholds[0].MaxRequests);
        var protocol = v1.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack<Api.UpstreamHttp.HttpProtocolOptions>();
        Assert.Equal(4u, protocol.CommonHttpProtocolOptions.MaxRequestsPerConnection);
        Assert.Equal(TimeSpan.FromSeconds(90), protocol.CommonHttpProtocolOptions.IdleTimeout.ToTimeSpan());
        Assert.NotNull(protocol.ExplicitHttpConfig.HttpProtocolOptions); // an HTTP/1.1 port stays HTTP/1.1
        Assert.Equal(5u, v1.OutlierDetection.Consecutive5Xx);
        Assert.Equal(50u, v1.OutlierDetection.MaxEjectionPercent);
        Assert.Equal(Cluster.Types.LbPolicy.Random, Get<Cluster>(resources, "outbound|9080|v2|productpage.default.svc.cluster.local").LbPolicy);
        var listener = Get<Api.Listener.Listener>(resources, "127.0.0.1_9080");
        Assert.Equal(9080u, listener.Address.SocketAddress.PortValue);
    }

    [Fact]
    public void VirtualService_EveryTranslatedField()
    {
        const string vs = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: { name: productpage, namespace: default }
            spec:
              hosts: [productpage]
              http:
              - name: canary
                match:
                - uri: { prefix: /api }
                  headers: { x-user: { exact: tester } }
                  method: { exact: POST }
                  ignoreUriCase: true
                route:
                - { destination: { host: productpage, subset: v1 }, weight: 90 }
                - { destination: { host: productpage, subset: v2 }, weight: 10 }
                timeout: 3s
                retries: { attempts: 4, perTryTimeout: 1s, retryOn: "5xx,reset" }
                rewrite: { uri: /v2/api, authority: internal.example }
                headers:
                  request: { set: { x-set: "1" }, add: { x-add: "2" }, remove: [x-drop] }
                  response: { set: { x-served-by: canary } }
                mirror: { host: productpage, subset: v2 }
                mirrorPercentage: { value: 25.5 }
                fault:
                  delay: { fixedDelay: 50ms, percentage: { value: 10 } }
                  abort: { httpStatus: 503, percentage: { value: 1.5 } }
                corsPolicy:
                  allowOrigins: [ { exact: "https://app.example" } ]
                  allowMethods: [GET, POST]
                  maxAge: 24h
                  allowCredentials: true
              - route:
                - destination: { host: productpage.default.svc.cluster.local, subset: v1, port: { number: 9080 } }
            """;
        var routes = Get<RouteConfiguration>(Translate(Service, vs), "9080");
        var host = routes.VirtualHosts.Single();
        Assert.Equal(2, host.Routes.Count);
        var r = host.Routes[0];
        Assert.Equal("canary", r.Name);
        Assert.Equal("/api", r.Match.Prefix);
        Assert.False(r.Match.CaseSensitive);
        Assert.Contains(r.Match.Headers, h => h.Name == "x-user" && h.StringMatch.Exact == "tester");
        Assert.Contains(r.Match.Headers, h => h.Name == ":method" && h.StringMatch.Exact == "POST");
        Assert.Equal([90u, 10u], r.Route_.WeightedClusters.Clusters.Select(c => c.Weight));
        Assert.Equal(TimeSpan.FromSeconds(3), r.Route_.Timeout.ToTimeSpan());
        Assert.Equal(4u, r.Route_.RetryPolicy.NumRetries);
        Assert.Equal("5xx,reset", r.Route_.RetryPolicy.RetryOn);
        Assert.Equal("/v2/api", r.Route_.PrefixRewrite);
        Assert.Equal("internal.example", r.Route_.HostRewriteLiteral);
        Assert.Equal(["x-drop"], r.RequestHeadersToRemove);
        Assert.Equal(2, r.RequestHeadersToAdd.Count);
        Assert.Equal("outbound|9080|v2|productpage.default.svc.cluster.local", r.Route_.RequestMirrorPolicies[0].Cluster);
        Assert.Equal(255_000u, r.Route_.RequestMirrorPolicies[0].RuntimeFraction.DefaultValue.Numerator);
        Assert.True(r.TypedPerFilterConfig.ContainsKey("envoy.filters.http.fault"));
        Assert.Equal("https://app.example", r.Route_.Cors.AllowOriginStringMatch[0].Exact);
        Assert.Equal("86400", r.Route_.Cors.MaxAge);
        Assert.Equal("outbound|9080|v1|productpage.default.svc.cluster.local", host.Routes[1].Route_.Cluster);
        Assert.Equal("/", host.Routes[1].Match.Prefix);
        // Istio's default retries where the VirtualService gives none.
        Assert.Equal(2u, host.Routes[1].Route_.RetryPolicy.NumRetries);
    }

    [Theory]
    [InlineData("spec: { hosts: [nowhere], http: [ { route: [ { destination: { host: productpage } } ] } ] }", "f1.yaml: VirtualService default/vs: spec.hosts[0]: host 'nowhere' is not a known service")]
    [InlineData("spec: { hosts: [productpage], http: [ { route: [ { destination: { host: productpage, subset: v9 } } ] } ] }", "subset 'v9' of 'productpage.default.svc.cluster.local' is not defined by a DestinationRule")]
    [InlineData("spec: { hosts: [productpage], http: [ { route: [ { destination: { host: productpage } } ], mirrorr: {} } ] }", "field 'mirrorr' is not translated")]
    [InlineData("spec: { hosts: [productpage], tcp: [ { route: [ { destination: { host: productpage } } ] } ] }", "spec.tcp/spec.tls: only http routes are translated")]
    [InlineData("spec: { hosts: [productpage], http: [ { route: [ { destination: { host: productpage, port: { number: 1 } } } ] } ] }", "port 1 is not a port of 'productpage.default.svc.cluster.local'")]
    public void Errors_NameFileResourceAndField(string spec, string expected)
    {
        string vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: vs, namespace: default }\n" + spec;
        var e = Assert.Throws<ConfigException>(() => Translate(Service, vs));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OtherErrors()
    {
        Assert.Contains("not valid YAML", Assert.Throws<ConfigException>(() => Translate("kind: [")).Message, StringComparison.Ordinal);
        Assert.Contains("kind 'Gateway' is not translated", Assert.Throws<ConfigException>(() =>
            Translate("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: g }\nspec: {}")).Message, StringComparison.Ordinal);
        Assert.Contains("apiVersion 'networking.istio.io/v2' is not", Assert.Throws<ConfigException>(() =>
            Translate("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: { name: g }\nspec: {}")).Message, StringComparison.Ordinal);
        Assert.Contains("a DestinationRule for 'productpage.default.svc.cluster.local' already comes from", Assert.Throws<ConfigException>(() =>
            Translate(Service, Service.Split("---")[3])).Message, StringComparison.Ordinal);
        // Kubernetes workloads carry no routing: skipped.
        Assert.NotEmpty(Translate(Service, "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: d }\nspec: {}"));
    }
}
