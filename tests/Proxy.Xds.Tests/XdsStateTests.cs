using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;
using Proxy.Xds.Api.Route;
using Xds.ControlPlane;
using CoreRoutes = Proxy.Core.Routing.RouteConfiguration;
using PbRoutes = Proxy.Xds.Api.Route.RouteConfiguration;

namespace Proxy.Xds.Tests;

/// <summary>The xDS state machine without a network: validation, warming, sharing, Istio's resources.</summary>
public sealed class XdsStateTests
{
    private DateTime _now = new(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    private XdsState NewState() => new(new UpstreamPools(), [], [], () => _now);

    private static XdsResource R(IMessage m) => new(ControlPlane.NameOf(m), "1", m);

    private static void Apply(XdsState state, XdsResourceType type, params IMessage[] resources) => state.Apply(type, [.. resources.Select(R)], []);

    private static string V1 => MeshResources.ClusterName("v1");
    private static string V2 => MeshResources.ClusterName("v2");

    private static HeaderList Request(string authority, string path = "/hello", string? name = null)
    {
        var headers = new HeaderList();
        headers.Add(":method"u8, "GET"u8);
        headers.Add(":scheme"u8, "http"u8);
        headers.Add(":authority"u8, System.Text.Encoding.ASCII.GetBytes(authority));
        headers.Add(":path"u8, System.Text.Encoding.ASCII.GetBytes(path));
        if (name != null)
        {
            headers.Add("name"u8, System.Text.Encoding.ASCII.GetBytes(name));
        }
        return headers;
    }

    private static Cluster? Route(CoreRoutes routes, string authority, string? name = null)
    {
        HeaderList request = Request(authority, name: name);
        Core.Routing.VirtualHost host = routes.FindVirtualHost(System.Text.Encoding.ASCII.GetBytes(authority))!;
        return host.FindRoute("/hello"u8, request, false)?.Action.PickCluster(request);
    }

    [Fact]
    public void EdsCluster_IsNotUsedBeforeItsEndpointsArrive()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1));
        ProxySnapshot first = state.Build()!;
        Assert.False(first.Clusters.ContainsKey(V1));
        Assert.True(state.Warming);
        Assert.Contains(V1, state.EndpointNames);

        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001, 9002));
        ProxySnapshot second = state.Build()!;
        Assert.Equal(2, second.Clusters[V1].Endpoints.Length);
        Assert.False(state.Warming);
        Assert.Equal(UpstreamProtocol.Http2, second.Clusters[V1].Protocol);
        Assert.Equal(LbPolicy.LeastRequest, second.Clusters[V1].LbPolicy);
    }

    [Fact]
    public void EdsCluster_InitialFetchTimeout_UsesItWithoutEndpoints_AndZeroWaitsForEver()
    {
        XdsState state = NewState();
        var timed = MeshResources.EdsCluster(V1);
        timed.EdsClusterConfig.EdsConfig.InitialFetchTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(2));
        var forever = MeshResources.EdsCluster(V2);
        forever.EdsClusterConfig.EdsConfig.InitialFetchTimeout = Duration.FromTimeSpan(TimeSpan.Zero);
        Apply(state, XdsResourceType.Cluster, timed, forever);
        Assert.Empty(state.Build()!.Clusters);
        _now += TimeSpan.FromSeconds(1);
        Assert.Null(state.Build());
        _now += TimeSpan.FromSeconds(2);
        ProxySnapshot after = state.Build()!;
        Assert.Empty(after.Clusters[V1].Endpoints);
        Assert.False(after.Clusters.ContainsKey(V2));
        _now += TimeSpan.FromHours(1);
        Assert.Null(state.Build());
        Assert.True(state.Warming);
    }

    [Fact]
    public void Listener_RdsInitialFetchTimeout_ServesWithNoRoutes()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Listener, MeshResources.HttpListener("l", 15001, "never", Duration.FromTimeSpan(TimeSpan.FromSeconds(2))));
        Assert.Empty(state.Build()!.Listeners);
        _now += TimeSpan.FromSeconds(3);
        ListenerConfig listener = Assert.Single(state.Build()!.Listeners);
        Assert.Empty(listener.Routes.VirtualHosts); // every request: 404, as Envoy after its RDS timeout
    }

    [Fact]
    public void ClusterCommonHttpProtocolOptions_ComeThroughTheProto()
    {
        // The HttpProtocolOptions extension's common_http_protocol_options as a control plane sends them
        // (Istio's DestinationRule connectionPool.http: idleTimeout, maxRequestsPerConnection).
        XdsState state = NewState();
        Api.Cluster.Cluster cluster = MeshResources.EdsCluster(V1);
        var options = new Api.UpstreamHttp.HttpProtocolOptions
        {
            CommonHttpProtocolOptions = new Api.Core.HttpProtocolOptions { IdleTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(7)), MaxRequestsPerConnection = 3, MaxHeadersCount = 60 },
            ExplicitHttpConfig = new Api.UpstreamHttp.HttpProtocolOptions.Types.ExplicitHttpConfig { Http2ProtocolOptions = new Api.Core.Http2ProtocolOptions() },
        };
        cluster.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = Any.Pack(options);
        Apply(state, XdsResourceType.Cluster, cluster);
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001));
        Cluster built = state.Build()!.Clusters[V1];
        Assert.Equal(TimeSpan.FromSeconds(7), built.IdleTimeout);
        Assert.Equal(3, built.MaxRequestsPerConnection);
        Assert.Equal(60, built.MaxHeadersCount);
    }

    [Fact]
    public void ConnectionManager_HttpProtocolOptions_ComeThroughTheProto()
    {
        // Field 8 of the HttpConnectionManager (Envoy's http_protocol_options): accept_http_10 (2) and
        // default_host_for_http_10 (3) as a control plane sends them.
        XdsState state = NewState();
        Api.Listener.Listener listener = MeshResources.HttpListener("l", 15001, "a");
        Api.Listener.Filter filter = listener.FilterChains[0].Filters.Single(f => f.Name == "envoy.filters.network.http_connection_manager");
        var hcm = filter.TypedConfig.Unpack<Api.Hcm.HttpConnectionManager>();
        hcm.HttpProtocolOptions = new Api.Core.Http1ProtocolOptions { AcceptHttp10 = true, DefaultHostForHttp10 = "server" };
        filter.TypedConfig = Any.Pack(hcm);
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001));
        Apply(state, XdsResourceType.Listener, listener);
        Apply(state, XdsResourceType.Route, MeshResources.AllTo("a", "v1"));
        ListenerOptions options = Assert.Single(state.Build()!.Listeners).Options;
        Assert.True(options.AcceptHttp10);
        Assert.Equal("server"u8.ToArray(), options.DefaultHostForHttp10);
    }

    [Fact]
    public void Listener_IsNotServedBeforeItsRoutes_AndAnUpdatedOneKeepsServingWhileItWarms()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1), MeshResources.EdsCluster(V2));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001), MeshResources.Endpoints(V2, 9002));
        Apply(state, XdsResourceType.Listener, MeshResources.HttpListener("l", 15001, "a"));
        Assert.Empty(state.Build()!.Listeners);
        Assert.Equal(["a"], state.RouteNames);

        Apply(state, XdsResourceType.Route, MeshResources.AllTo("a", "v1"));
        ListenerConfig served = Assert.Single(state.Build()!.Listeners);
        Assert.Equal(V1, Route(served.Routes, "server")!.Name);

        // The listener now wants RDS "b": until it comes, the old version serves.
        Apply(state, XdsResourceType.Listener, MeshResources.HttpListener("l", 15001, "b"));
        ProxySnapshot? warming = state.Build();
        Assert.Same(served, Assert.Single((warming ?? state.Snapshot!).Listeners));
        Apply(state, XdsResourceType.Route, MeshResources.AllTo("b", "v2"));
        Assert.Equal(V2, Route(Assert.Single(state.Build()!.Listeners).Routes, "server")!.Name);
    }

    [Fact]
    public void ANewClusterAndTheRouteThatUsesIt_AreNeverSeenHalfApplied()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001));
        Apply(state, XdsResourceType.Listener, MeshResources.HttpListener("l", 15001, "r"));
        Apply(state, XdsResourceType.Route, MeshResources.AllTo("r", "v1"));
        Assert.Equal(V1, Route(Assert.Single(state.Build()!.Listeners).Routes, "server")!.Name);

        // v2 arrives by CDS, and the route to it by RDS, before v2's endpoints: the old route serves on.
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V2));
        Apply(state, XdsResourceType.Route, MeshResources.AllTo("r", "v2"));
        ProxySnapshot held = state.Build() ?? state.Snapshot!;
        Assert.Equal(V1, Route(Assert.Single(held.Listeners).Routes, "server")!.Name);
        Assert.True(state.Warming);

        // v2's endpoints: cluster and route go live in the same snapshot.
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V2, 9002));
        ProxySnapshot live = state.Build()!;
        Cluster routed = Route(Assert.Single(live.Listeners).Routes, "server")!;
        Assert.Equal(V2, routed.Name);
        Assert.Same(live.Clusters[V2], routed);
        Assert.Single(routed.Endpoints);
    }

    [Fact]
    public void BadResource_RejectsTheWholeUpdate_NamingResourceAndField()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1));
        var good = MeshResources.EdsCluster(V2);
        var bad = MeshResources.EdsCluster("bad");
        bad.CommonLbConfig = new Api.Cluster.Cluster.Types.CommonLbConfig { HealthyPanicThreshold = new Api.Type.Percent { Value = 150 } };
        var e = Assert.Throws<ConfigException>(() => Apply(state, XdsResourceType.Cluster, good, bad));
        Assert.Contains("Cluster 'bad'", e.Message, StringComparison.Ordinal);
        Assert.Contains("healthy_panic_threshold", e.Message, StringComparison.Ordinal);
        Assert.Equal([V1], state.Names(XdsResourceType.Cluster));

        var routes = MeshResources.AllTo("r", "v1");
        routes.VirtualHosts[0].Routes[0].Match = new RouteMatch { SafeRegex = new Api.Matcher.RegexMatcher { Regex = "(" } };
        e = Assert.Throws<ConfigException>(() => Apply(state, XdsResourceType.Route, routes));
        Assert.Contains("RouteConfiguration 'r'.virtual_hosts[0].routes[0].match.safe_regex", e.Message, StringComparison.Ordinal);
        Assert.Empty(state.Names(XdsResourceType.Route));

        var withStatic = new XdsState(new UpstreamPools(), [], [new ListenerConfig("static", new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 15000), CoreRoutes.Empty)]);
        e = Assert.Throws<ConfigException>(() => Apply(withStatic, XdsResourceType.Listener, MeshResources.HttpListener("static", 15001, "r")));
        Assert.Contains("static listener", e.Message, StringComparison.Ordinal);

        var mismatch = MeshResources.EdsCluster("x");
        e = Assert.Throws<ConfigException>(() => state.Apply(XdsResourceType.Cluster, [new XdsResource("y", "1", mismatch)], []));
        Assert.Contains("named 'x'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CircuitBreakerLimits_FollowThePublishedSnapshot_NotARefusedUpdate()
    {
        var pools = new UpstreamPools();
        var state = new XdsState(pools, [], [], () => _now);
        Api.Cluster.Cluster Limited(uint max)
        {
            var cluster = MeshResources.EdsCluster(V1);
            cluster.CircuitBreakers.Thresholds[0].MaxConnections = max;
            return cluster;
        }
        Apply(state, XdsResourceType.Cluster, Limited(5));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001));
        await using var server = new Core.ProxyServer(state.Build()!, pools);
        Assert.Equal(5, pools.ClusterState(V1).MaxConnections);

        var bad = MeshResources.EdsCluster("bad");
        bad.LbPolicy = Api.Cluster.Cluster.Types.LbPolicy.RingHash;
        bad.CommonLbConfig = new Api.Cluster.Cluster.Types.CommonLbConfig { HealthyPanicThreshold = new Api.Type.Percent { Value = -1 } };
        Assert.Throws<ConfigException>(() => Apply(state, XdsResourceType.Cluster, Limited(7), bad));
        Assert.Equal(5, pools.ClusterState(V1).MaxConnections);

        Apply(state, XdsResourceType.Cluster, Limited(7));
        await server.ApplyAsync(state.Build()!);
        Assert.Equal(7, pools.ClusterState(V1).MaxConnections);
    }

    [Fact]
    public void OneRouteChange_SharesEveryOtherVirtualHost_AndEndpointChangesRebindWithoutRebuilding()
    {
        XdsState state = NewState();
        var mesh = MeshResources.BigMesh(50, [9001], "r");
        Apply(state, XdsResourceType.Cluster, mesh.Clusters);
        Apply(state, XdsResourceType.Endpoint, mesh.Endpoints);
        Apply(state, XdsResourceType.Listener, MeshResources.HttpListener("l", 15001, "r"));
        Apply(state, XdsResourceType.Route, mesh.Routes);
        CoreRoutes before = Assert.Single(state.Build()!.Listeners).Routes;

        mesh.Routes.VirtualHosts[7].Routes[0].Route_.Cluster = mesh.Clusters[8].Name;
        Apply(state, XdsResourceType.Route, mesh.Routes);
        ProxySnapshot changed = state.Build()!;
        CoreRoutes after = Assert.Single(changed.Listeners).Routes;
        Assert.NotSame(before, after);
        for (int i = 0; i < 50; i++)
        {
            if (i == 7)
            {
                Assert.NotSame(before.VirtualHosts[i], after.VirtualHosts[i]);
                Assert.Same(changed.Clusters[mesh.Clusters[8].Name], after.VirtualHosts[i].Routes[0].Cluster);
            }
            else
            {
                Assert.Same(before.VirtualHosts[i], after.VirtualHosts[i]);
            }
        }
        Assert.Same(state.Snapshot!.Clusters, changed.Clusters);

        // New endpoints for cluster 3: its cluster is rebuilt; the host routing to it is rebound (its
        // matchers shared), the others untouched.
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(mesh.Clusters[3].Name, 9001, 9002));
        ProxySnapshot rebound = state.Build()!;
        CoreRoutes third = Assert.Single(rebound.Listeners).Routes;
        Assert.Equal(2, third.VirtualHosts[3].Routes[0].Cluster!.Endpoints.Length);
        Assert.NotSame(after.VirtualHosts[3], third.VirtualHosts[3]);
        Assert.Same(after.VirtualHosts[3].Routes[0].Headers, third.VirtualHosts[3].Routes[0].Headers);
        Assert.Same(after.VirtualHosts[4], third.VirtualHosts[4]);
        Assert.Same(changed.Clusters[mesh.Clusters[4].Name], rebound.Clusters[mesh.Clusters[4].Name]);
    }

    [Fact]
    public void RouteToAClusterNotYetKnown_Answers503_ThenFollowsTheClusterWhenItComes()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Listener, MeshResources.HttpListener("l", 15001, "r"));
        Apply(state, XdsResourceType.Route, MeshResources.HeaderRoutes("r"));
        CoreRoutes routes = Assert.Single(state.Build()!.Listeners).Routes;
        Cluster placeholder = Route(routes, "server", "layotto")!;
        Assert.Equal(V1, placeholder.Name);
        Assert.Empty(placeholder.Endpoints);
        Assert.Empty(Route(routes, "anything.example")!.Endpoints); // allow_any → PassthroughCluster, unknown

        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001));
        CoreRoutes now = Assert.Single(state.Build()!.Listeners).Routes;
        Assert.Single(Route(now, "server", "layotto")!.Endpoints);
        Assert.Empty(Route(now, "server")!.Endpoints); // v2 not known yet
    }

    [Fact]
    public void RemovedCluster_LeavesTheSnapshot_AndEndpointRemovalClearsHosts()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1), MeshResources.EdsCluster(V2));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001), MeshResources.Endpoints(V2, 9002));
        Assert.Equal(2, state.Build()!.Clusters.Count);
        state.Apply(XdsResourceType.Cluster, [], [V2]);
        Assert.Equal([V1], state.Build()!.Clusters.Keys.ToArray());
        Assert.Equal([V1], state.EndpointNames.ToArray());
        state.Apply(XdsResourceType.Endpoint, [], [V1]);
        Assert.Empty(state.Build()!.Clusters[V1].Endpoints);
    }

    [Fact]
    public void V2Fields_AreHandledExplicitly()
    {
        XdsState state = NewState();
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1), MeshResources.EdsCluster(V2));
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 9001), MeshResources.Endpoints(V2, 9002));

        // deprecated_v1.bind_to_port false (Istio 1.5's per-port listeners): read, not bound.
        var unbound = MeshResources.HttpListener("0.0.0.0_9080", 9080, "r");
        unbound.DeprecatedV1 = new Api.Listener.Listener.Types.DeprecatedV1 { BindToPort = false };
        Apply(state, XdsResourceType.Listener, unbound, MeshResources.HttpListener("bound", 15001, "r"));

        // The singular request_mirror_policy (RouteAction field 10 in v2, reserved in v3) and a v2
        // per_filter_config Struct for envoy.fault under its legacy key.
        var routes = MeshResources.AllTo("r", "v1");
        Api.Route.Route route = routes.VirtualHosts[0].Routes[0];
        route.Route_.RequestMirrorPolicy = new Api.Route.RouteAction.Types.RequestMirrorPolicy { Cluster = V2 };
        route.Route_.HostRewriteLiteral = "rewritten.example";
        route.PerFilterConfig["envoy.fault"] = Struct.Parser.ParseJson("""{ "abort": { "http_status": 418, "percentage": { "numerator": 100 } } }""");
        Apply(state, XdsResourceType.Route, routes);
        ProxySnapshot snapshot = state.Build()!;
        ListenerConfig listener = Assert.Single(snapshot.Listeners);
        Assert.Equal("bound", listener.Name);
        ListenerConfig dispatched = Assert.Single(snapshot.UnboundListeners);
        Assert.Equal("0.0.0.0_9080", dispatched.Name);
        Assert.False(dispatched.BindToPort);
        Assert.Same(dispatched, snapshot.FindOriginalDestination(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 9080)));
        Assert.Null(snapshot.FindOriginalDestination(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 9081)));
        Core.Routing.Route built = listener.Routes.VirtualHosts[0].Routes[0];
        Assert.Equal(V2, built.Action.Mirror!.Cluster.Name);
        Assert.Equal("rewritten.example"u8.ToArray(), built.Action.HostRewrite);
        Assert.Equal(418, built.Fault!.AbortHttpStatus);

        // v2's std::regex path matcher is refused with a clear error (it is unsafe; v3 dropped it).
        var legacyRegex = MeshResources.AllTo("r", "v1");
        legacyRegex.VirtualHosts[0].Routes[0].Match = new RouteMatch { Regex = "/.*" };
        var e = Assert.Throws<ConfigException>(() => Apply(state, XdsResourceType.Route, legacyRegex));
        Assert.Contains("match.regex", e.Message, StringComparison.Ordinal);
    }

    /// <summary>The resources of Istio's current sidecar dumps by type, in the order a control plane sends them (listeners optionally changed).</summary>
    private static IEnumerable<(XdsResourceType Type, List<XdsResource> Resources)> IstioSidecarDumps(Func<Api.Listener.Listener, Api.Listener.Listener>? listener = null)
    {
        var resources = IstioDumps.Resources("istio-master/config_dump-sidecar-listeners.json")
            .Concat(IstioDumps.Resources("istio-master/config_dump-route-and-subset-cluster.json"))
            .Concat(IstioDumps.Resources("istio-master/config_dump-sidecar-endpoints.json"))
            .ToList();
        foreach (XdsResourceType type in new[] { XdsResourceType.Cluster, XdsResourceType.Endpoint, XdsResourceType.Listener, XdsResourceType.Route })
        {
            yield return (type, resources.Where(r => r.Type == type)
                .Select(r => R(type == XdsResourceType.Listener && listener != null ? listener((Api.Listener.Listener)r.Message) : r.Message))
                .GroupBy(r => r.Name).Select(g => g.First()).ToList());
        }
    }

    [Fact]
    public void IstioV3SidecarDumps_EveryResourceLoads_UnknownFiltersAreNamedAndSkipped()
    {
        XdsState state = NewState();
        foreach (var (type, all) in IstioSidecarDumps())
        {
            List<XdsResource> ofType = all;
            Assert.NotEmpty(ofType);
            if (type == XdsResourceType.Listener)
            {
                // virtualInbound carries an ext_authz filter (Istio's CUSTOM action), which we do not
                // implement: the update is refused (NACK) naming it, rather than served without the check.
                var refused = Assert.Throws<ConfigException>(() => state.Apply(type, ofType, []));
                Assert.Contains("Listener 'virtualInbound'", refused.Message, StringComparison.Ordinal);
                Assert.Contains("envoy.filters.http.ext_authz", refused.Message, StringComparison.Ordinal);
                ofType = [.. ofType.Where(r => r.Name != "virtualInbound")];
            }
            state.Apply(type, ofType, []);
        }
        ProxySnapshot snapshot = state.Build()!;
        Assert.True(state.Names(XdsResourceType.Listener).Count >= 20);
        // The subset cluster is EDS and the endpoints dump has no assignment for it: it warms, unused.
        const string subset = "outbound|9080|v1|productpage.default.svc.cluster.local";
        Assert.Contains(subset, state.Names(XdsResourceType.Cluster));
        Assert.Contains(subset, state.EndpointNames);
        Assert.DoesNotContain(subset, snapshot.Clusters.Keys);
        Assert.True(state.Warming);
        Assert.DoesNotContain(snapshot.Listeners, l => l.Name == "virtualInbound");
        // HTTP listeners and tcp_proxy ones are served: virtualOutbound bound (use_original_dst, its
        // PassthroughCluster chain), the per-service ones reached through it; unknown filters are named.
        Assert.Contains(state.Warnings, w => w.Contains("not honoured yet", StringComparison.Ordinal));
        // mTLS everywhere (listener chains, transport_socket_matches, SDS from sds-grpc): nothing of it is named as not honoured.
        Assert.DoesNotContain(state.Warnings, w => w.Contains("tls", StringComparison.OrdinalIgnoreCase) || w.Contains("transport_socket", StringComparison.Ordinal) || w.Contains("secret", StringComparison.OrdinalIgnoreCase));
        ListenerConfig outbound = Assert.Single(snapshot.Listeners, l => l.Name == "virtualOutbound");
        Assert.True(outbound.UseOriginalDst);
        Assert.Equal("PassthroughCluster", outbound.TcpProxy!.PickCluster());
        Assert.Contains(snapshot.UnboundListeners, l => l.TcpProxy != null && !l.BindToPort);
        Assert.Contains("9080", state.RouteNames);
    }

    [Fact]
    public void IstioV3SidecarDumps_FilterChainsAreChosenPerConnection_AsEnvoyDoes()
    {
        XdsState state = NewState();
        foreach (var (type, ofType) in IstioSidecarDumps(static l => IstioDumps.WithoutHttpFilter(l, "envoy.filters.http.ext_authz")))
        {
            state.Apply(type, ofType, []);
        }
        Apply(state, XdsResourceType.Route, new PbRoutes { Name = "9080" }); // the dumps lack it: the listener would warm
        ProxySnapshot snapshot = state.Build()!;
        ConnectionFacts Facts(string destination, string transport = "raw_buffer", params string[] alpn) =>
            new(System.Net.IPEndPoint.Parse(destination), System.Net.IPEndPoint.Parse("10.244.0.9:41000"), transport, null, alpn);

        // A per-port outbound listener: HTTP by http_inspector's verdict, anything else to its default chain (PassthroughCluster).
        ListenerConfig port9080 = Assert.Single(snapshot.UnboundListeners, l => l.Name == "0.0.0.0_9080");
        Assert.True(port9080.TlsInspector && port9080.HttpInspector && port9080.Inspects);
        Assert.Equal(TimeSpan.Zero, port9080.ListenerFiltersTimeout);
        Assert.True(port9080.ContinueOnListenerFiltersTimeout);
        FilterChain http = FilterChainSelector.Select(port9080.FilterChains, port9080.DefaultFilterChain, Facts("10.96.1.1:9080", "raw_buffer", "http/1.1"))!;
        Assert.True(http.Serving.ServesHttp);
        Assert.Same(port9080.Routes, http.Serving.Routes);
        FilterChain other = FilterChainSelector.Select(port9080.FilterChains, port9080.DefaultFilterChain, Facts("10.96.1.1:9080"))!;
        Assert.Same(port9080.DefaultFilterChain, other);
        Assert.Equal("PassthroughCluster", other.Serving.TcpProxy!.PickCluster());

        // virtualOutbound: its own port is the loop guard (BlackHoleCluster), all else passes through.
        ListenerConfig outbound = Assert.Single(snapshot.Listeners, l => l.Name == "virtualOutbound");
        Assert.False(outbound.Inspects);
        Assert.Equal("BlackHoleCluster", FilterChainSelector.Select(outbound.FilterChains, null, Facts("10.0.0.1:15001"))!.Serving.TcpProxy!.PickCluster());
        Assert.Equal("PassthroughCluster", FilterChainSelector.Select(outbound.FilterChains, null, Facts("10.0.0.1:5432"))!.Serving.TcpProxy!.PickCluster());

        // virtualInbound's mTLS chains take their certificate and roots from pilot-agent's SDS (sds-grpc):
        // the listener warms until both secrets are there, then serves.
        Assert.DoesNotContain(snapshot.Listeners, l => l.Name == "virtualInbound");
        Assert.True(state.Warming);
        var sds = new Secrets.SecretSource(Secrets.SecretSourceKind.Grpc, "sds-grpc");
        Assert.Equal(["ROOTCA", "default"], state.Secrets.Names(sds));
        using (var pki = new TestPki())
        {
            (string cert, string key) = pki.Issue("spiffe://cluster.local/ns/default/sa/httpbin");
            Config.ConfigNode Node(Proxy.Xds.Api.Tls.Secret secret) => Config.ConfigNode.FromMessage(secret, "sds");
            state.Secrets.Apply(sds, [Node(TestPki.CertificateSecret("default", cert, key))], "1");
            Assert.True(state.Build() == null || !state.Snapshot!.Listeners.Any(l => l.Name == "virtualInbound")); // ROOTCA still missing
            state.Secrets.Apply(sds, [Node(TestPki.RootSecret("ROOTCA", pki.RootPem))], "1");
        }
        snapshot = state.Build()!;

        // virtualInbound: the port's own chain (inline inbound routes), the HTTP catch-all, the TCP one, and their mTLS twins.
        ListenerConfig inbound = Assert.Single(snapshot.Listeners, l => l.Name == "virtualInbound");
        Assert.True(inbound.RestoresOriginalDestination && inbound.Inspects);
        Assert.DoesNotContain(state.Warnings, w => w.Contains("TLS", StringComparison.Ordinal) || w.Contains("tls", StringComparison.Ordinal));
        FilterChain mtlsPort80 = FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:80", "tls", "istio-h2"))!;
        Assert.Equal("0.0.0.0_80", mtlsPort80.Name);
        Assert.True(mtlsPort80.Serving.Tls!.RequireClientCertificate && mtlsPort80.Serving.Tls.IsReady);
        Assert.Equal(["h2", "http/1.1"], mtlsPort80.Serving.Tls.Alpn);
        Assert.Equal("spiffe://cluster.local/", Assert.Single(mtlsPort80.Serving.Tls.SubjectAltNames).Matcher.Value);
        FilterChain mtlsTcp = FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:5432", "tls", "istio-peer-exchange", "istio"))!;
        Assert.NotNull(mtlsTcp.Serving.Tls);
        Assert.Equal("InboundPassthroughClusterIpv4", mtlsTcp.Serving.TcpProxy!.PickCluster());
        FilterChain port80 = FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:80", "raw_buffer", "http/1.1"))!;
        Assert.Equal("0.0.0.0_80", port80.Name);
        Assert.Equal("inbound|80||", port80.Serving.Routes.Name);
        FilterChain catchAllHttp = FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:8080", "raw_buffer", "h2c"))!;
        Assert.Equal("virtualInbound-catchall-http", catchAllHttp.Name);
        Assert.True(catchAllHttp.Serving.ServesHttp);
        FilterChain tcp = FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:8080"))!;
        Assert.Equal("InboundPassthroughClusterIpv4", tcp.Serving.TcpProxy!.PickCluster());
        Assert.Equal("virtualInbound-blackhole", FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:15006"))!.Name);
        // TLS that is not Istio's mTLS passes through as TCP, not terminated.
        FilterChain tlsPassthrough = FilterChainSelector.Select(inbound.FilterChains, inbound.DefaultFilterChain, Facts("10.244.0.9:8080", "tls", "h2"))!;
        Assert.Equal("virtualInbound", tlsPassthrough.Name);
        Assert.Null(tlsPassthrough.Serving.Tls);
        Assert.Equal("InboundPassthroughClusterIpv4", tlsPassthrough.Serving.TcpProxy!.PickCluster());
    }

    [Fact]
    public void ListenerWaitingForItsSecret_GoesLiveWithRoutesBoundToTheClustersInUse()
    {
        XdsState state = NewState();
        var listener = MeshResources.HttpListener("l", 15001, "9090");
        var tls = new Api.Tls.DownstreamTlsContext
        {
            CommonTlsContext = new Api.Tls.CommonTlsContext { TlsCertificateSdsSecretConfigs = { new Api.Tls.SdsSecretConfig { Name = "workload", SdsConfig = MeshResources.Ads() } } },
        };
        listener.FilterChains[0].TransportSocket = new Api.Core.TransportSocket { Name = "envoy.transport_sockets.tls", TypedConfig = Any.Pack(tls) };
        // The order ADS delivers them in, a build after each, as the client does.
        Apply(state, XdsResourceType.Cluster, MeshResources.EdsCluster(V1), MeshResources.EdsCluster(V2));
        state.Build();
        Apply(state, XdsResourceType.Listener, listener);
        state.Build();
        Apply(state, XdsResourceType.Route, MeshResources.HeaderRoutes("9090"));
        state.Build();
        Apply(state, XdsResourceType.Endpoint, MeshResources.Endpoints(V1, 1001), MeshResources.Endpoints(V2, 1002));
        state.Build();
        Assert.Empty(state.Snapshot!.Listeners);
        using var pki = new TestPki();
        (string cert, string key) = pki.Issue(null, "localhost");
        state.Secrets.Apply(new Secrets.SecretSource(Secrets.SecretSourceKind.Ads, ""), [Config.ConfigNode.FromMessage(TestPki.CertificateSecret("workload", cert, key), "s")], "1");
        ProxySnapshot snapshot = state.Build()!;
        ListenerConfig live = Assert.Single(snapshot.Listeners);
        Proxy.Core.Routing.Route[] routed = [.. live.Routes.VirtualHosts.SelectMany(static h => h.Routes).Where(static r => r.Cluster?.Name.StartsWith("outbound|", StringComparison.Ordinal) == true)];
        Assert.NotEmpty(routed);
        Assert.All(routed, r => Assert.Same(snapshot.Clusters[r.Cluster!.Name], r.Cluster));
        Assert.All(routed, r => Assert.NotEmpty(r.Cluster!.Endpoints));
    }

    [Fact]
    public void Istio15V2Dump_EveryResourceLoads()
    {
        XdsState state = NewState();
        var resources = IstioDumps.Resources("istio-1.5/config_dump-productpage-v2api.json");
        Assert.Contains(resources, r => r.TypeUrl == XdsTypes.ListenerV2);
        foreach (XdsResourceType type in new[] { XdsResourceType.Cluster, XdsResourceType.Listener, XdsResourceType.Route })
        {
            var ofType = resources.Where(r => r.Type == type).Select(r => R(r.Message)).GroupBy(r => r.Name).Select(g => g.First()).ToList();
            Assert.NotEmpty(ofType);
            state.Apply(type, ofType, []);
        }
        ProxySnapshot snapshot = state.Build()!;
        Assert.Contains(state.Names(XdsResourceType.Cluster), n => n.StartsWith("outbound|9080|v1|reviews", StringComparison.Ordinal));
        // Istio 1.5's mTLS (tls_context with /etc/certs files, v2 verify_subject_alt_name, transport_socket_matches) all loads: nothing about TLS is named as not honoured.
        Assert.DoesNotContain(state.Warnings, w => w.Contains("tls", StringComparison.OrdinalIgnoreCase) || w.Contains("transport_socket", StringComparison.Ordinal) || w.Contains("secret", StringComparison.OrdinalIgnoreCase));
        Assert.NotNull(snapshot);
        // Istio 1.5's per-port listeners (deprecated_v1.bind_to_port false) are reached through virtualOutbound.
        Assert.Contains(snapshot.UnboundListeners, l => l.Name == "0.0.0.0_9080" && l.ServesHttp);
        Assert.True(Assert.Single(snapshot.Listeners, l => l.Name == "virtualOutbound").UseOriginalDst);
    }
}

/// <summary>The ADS source of Istio's real bootstraps (current and 1.5).</summary>
public sealed class AdsBootstrapTests
{
    [Fact]
    public void IstioMasterBootstrap_DeltaAdsOverTheAgentsUnixSocket()
    {
        var loader = new Config.BootstrapLoader(new UpstreamPools());
        ProxySnapshot snapshot = loader.Load(File.ReadAllText(IstioDumps.TestData("xds", "istio-master", "bootstrap-default.envoy-rev.json")), "bootstrap");
        Config.AdsBootstrap ads = loader.Ads!;
        Assert.Equal("unix:/tmp/XDS", ads.Target);
        Assert.True(ads.Delta);
        Assert.False(ads.V2);
        Assert.True(ads.SetNodeOnFirstMessageOnly);
        Assert.True(ads.Clusters && ads.Listeners);
        Assert.Equal("sidecar~1.2.3.4~foo~bar", ads.Node.Id);
        Assert.Equal("istio-proxy", ads.Node.Cluster);
        // Metadata keeps its JSON types: istiod unmarshals it into typed fields.
        Assert.Equal(15090, ads.Node.Metadata.Fields["ENVOY_PROMETHEUS_PORT"].NumberValue);
        Assert.Equal("binary-1.0", ads.Node.Metadata.Fields["ISTIO_VERSION"].StringValue);
        Assert.Equal(15000, ads.Node.Metadata.Fields["PROXY_CONFIG"].StructValue.Fields["proxyAdminPort"].NumberValue);
        Assert.Contains("xds-grpc", snapshot.Clusters.Keys);
        Assert.Contains(loader.Warnings, w => w.Contains("pipe", StringComparison.Ordinal));
    }

    [Fact]
    public void ConfigYaml_IsMergedOverTheFile_AsProtobufMerges()
    {
        string file = File.ReadAllText(IstioDumps.TestData("xds", "istio-master", "bootstrap-default.envoy-rev.json"));
        int clusters = new Config.BootstrapLoader(new UpstreamPools()).Load(file, "bootstrap").Clusters.Count;
        // Objects merge field by field, lists append, scalars are replaced; JSON strings stay strings.
        string merged = Config.ConfigNode.Merge(file, "bootstrap", """
            {"admin": {"address": {"socket_address": {"port_value": 15999}}},
             "node": {"id": "sidecar~10.0.0.9~merged.default~default.svc.cluster.local", "metadata": {"EXTRA": "1"}},
             "static_resources": {"clusters": [{"name": "extra", "type": "STATIC", "connect_timeout": "1s"}]}}
            """, "--config-yaml");
        var loader = new Config.BootstrapLoader(new UpstreamPools());
        ProxySnapshot snapshot = loader.Load(merged, "merged");
        Assert.Equal(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 15999), loader.AdminAddress);
        Assert.Equal(clusters + 1, snapshot.Clusters.Count);
        Assert.Contains("extra", snapshot.Clusters.Keys);
        Assert.Equal("sidecar~10.0.0.9~merged.default~default.svc.cluster.local", loader.Ads!.Node.Id);
        Assert.Equal("1", loader.Ads.Node.Metadata.Fields["EXTRA"].StringValue);
        Assert.Equal("binary-1.0", loader.Ads.Node.Metadata.Fields["ISTIO_VERSION"].StringValue);
        Assert.Equal(15090, loader.Ads.Node.Metadata.Fields["ENVOY_PROMETHEUS_PORT"].NumberValue);
        Assert.Throws<ConfigException>(() => Config.ConfigNode.Merge(file, "bootstrap", "[1, 2]", "--config-yaml"));
    }

    [Fact]
    public void Istio15Bootstrap_SotwAdsToPilot_VersionLeftToNegotiate()
    {
        var loader = new Config.BootstrapLoader(new UpstreamPools());
        loader.Load(File.ReadAllText(IstioDumps.TestData("xds", "istio-1.5", "bootstrap-default.envoy-rev0.json")), "bootstrap");
        Config.AdsBootstrap ads = loader.Ads!;
        Assert.Equal("http://istio-pilot:15010", ads.Target);
        Assert.False(ads.Delta);
        Assert.Null(ads.V2);
    }
}
