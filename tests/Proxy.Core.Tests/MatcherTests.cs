using System.Text;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Tests;

/// <summary>Envoy's matcher semantics, table by table.</summary>
public sealed class MatcherTests
{
    private static HeaderList Headers(params (string Name, string Value)[] fields)
    {
        var list = new HeaderList();
        foreach (var (name, value) in fields)
        {
            list.Add(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value));
        }
        return list;
    }

    [Theory]
    [InlineData(StringMatchKind.Exact, "layotto", false, "layotto", true)]
    [InlineData(StringMatchKind.Exact, "layotto", false, "Layotto", false)]
    [InlineData(StringMatchKind.Exact, "layotto", true, "LAYOTTO", true)]
    [InlineData(StringMatchKind.Exact, "", false, "", true)]
    [InlineData(StringMatchKind.Prefix, "/api", false, "/api/v1", true)]
    [InlineData(StringMatchKind.Prefix, "/api", false, "/ap", false)]
    [InlineData(StringMatchKind.Prefix, "/API", true, "/api/v1", true)]
    [InlineData(StringMatchKind.Suffix, ".json", false, "a.json", true)]
    [InlineData(StringMatchKind.Suffix, ".json", false, "a.jsonx", false)]
    [InlineData(StringMatchKind.Contains, "mid", false, "amidst", true)]
    [InlineData(StringMatchKind.Contains, "MID", true, "amidst", true)]
    [InlineData(StringMatchKind.Contains, "mid", false, "m-i-d", false)]
    [InlineData(StringMatchKind.Regex, "v[0-9]+", false, "v12", true)]
    [InlineData(StringMatchKind.Regex, "v[0-9]+", false, "xv12", false)] // whole-value match, as RE2 in Envoy
    [InlineData(StringMatchKind.Regex, "v[0-9]+", false, "v12x", false)]
    [InlineData(StringMatchKind.Regex, "(a|b)*c", false, "ababc", true)]
    public void StringMatcher_FollowsEnvoy(StringMatchKind kind, string pattern, bool ignoreCase, string candidate, bool expected)
    {
        Assert.Equal(expected, new StringMatcher(kind, pattern, ignoreCase).Matches(Encoding.ASCII.GetBytes(candidate)));
    }

    [Fact]
    public void StringMatcher_RegexIsLinearTime()
    {
        // A classic catastrophic-backtracking pattern: the non-backtracking engine answers at once.
        var matcher = new StringMatcher(StringMatchKind.Regex, "(a+)+b");
        Assert.False(matcher.Matches(Encoding.ASCII.GetBytes(new string('a', 5000) + "c")));
    }

    [Fact]
    public void StringMatcher_BadRegex_IsAConfigError()
    {
        Assert.Throws<ConfigException>(() => new StringMatcher(StringMatchKind.Regex, "(unclosed"));
    }

    public static TheoryData<string, HeaderMatcher, (string, string)[], bool> HeaderCases() => new()
    {
        { "exact hit", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto")), [("name", "layotto")], true },
        { "exact miss", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto")), [("name", "other")], false },
        { "missing", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto")), [], false },
        { "missing, inverted", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto"), invert: true), [], true },
        { "miss, inverted", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto"), invert: true), [("name", "x")], true },
        { "hit, inverted", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto"), invert: true), [("name", "layotto")], false },
        { "missing as empty", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, ""), treatMissingAsEmpty: true), [], true },
        { "missing as empty, no match", HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Prefix, "a"), treatMissingAsEmpty: true), [], false },
        { "name case", HeaderMatcher.ForString("X-User", new StringMatcher(StringMatchKind.Exact, "u")), [("x-user", "u")], true },
        { "pseudo :method", HeaderMatcher.ForString(":method", new StringMatcher(StringMatchKind.Exact, "POST")), [(":method", "POST")], true },
        { "joined values", HeaderMatcher.ForString("x", new StringMatcher(StringMatchKind.Exact, "a,b")), [("x", "a"), ("y", "z"), ("x", "b")], true },
        { "range in", HeaderMatcher.ForRange("n", -10, 10), [("n", "-10")], true },
        { "range end excluded", HeaderMatcher.ForRange("n", -10, 10), [("n", "10")], false },
        { "range not a number", HeaderMatcher.ForRange("n", 0, 10), [("n", "5a")], false },
        { "present", HeaderMatcher.ForPresence("p", true), [("p", "")], true },
        { "present, missing", HeaderMatcher.ForPresence("p", true), [], false },
        { "absent wanted", HeaderMatcher.ForPresence("p", false), [], true },
        { "absent wanted, present", HeaderMatcher.ForPresence("p", false), [("p", "1")], false },
        { "present inverted", HeaderMatcher.ForPresence("p", true, invert: true), [], true },
    };

    [Theory]
    [MemberData(nameof(HeaderCases))]
    public void HeaderMatcher_FollowsEnvoy(string why, HeaderMatcher matcher, (string, string)[] headers, bool expected)
    {
        Assert.True(expected == matcher.Matches(Headers(headers)), why);
    }

    [Theory]
    [InlineData(PathMatchKind.Prefix, "/api", "/api/x?q", true)]
    [InlineData(PathMatchKind.Prefix, "/api", "/apix", true)]
    [InlineData(PathMatchKind.PathSeparatedPrefix, "/api", "/apix", false)]
    [InlineData(PathMatchKind.PathSeparatedPrefix, "/api", "/api/x", true)]
    [InlineData(PathMatchKind.PathSeparatedPrefix, "/api", "/api?q=1", true)]
    [InlineData(PathMatchKind.PathSeparatedPrefix, "/api", "/api", true)]
    [InlineData(PathMatchKind.Path, "/exact", "/exact?x=1", true)]
    [InlineData(PathMatchKind.Path, "/exact", "/exact/", false)]
    [InlineData(PathMatchKind.Regex, "/item/[0-9]+", "/item/42?x", true)]
    [InlineData(PathMatchKind.Regex, "/item/[0-9]+", "/item/42/more", false)]
    public void PathMatch_FollowsEnvoy(PathMatchKind kind, string value, string path, bool expected)
    {
        var route = new Route("r", kind, value, RouteAction.Direct(200, ""));
        Assert.Equal(expected, route.Matches(Encoding.ASCII.GetBytes(path), Headers(), false));
    }

    [Fact]
    public void CaseInsensitivePrefix_Matches()
    {
        var route = new Route("r", PathMatchKind.Prefix, "/API", RouteAction.Direct(200, ""), caseSensitive: false);
        Assert.True(route.Matches("/api/x"u8, Headers(), false));
    }

    [Theory]
    [InlineData("/p?debug=1&x=2", true)]
    [InlineData("/p?x=2&debug=1", true)]
    [InlineData("/p?debug=0", false)]
    [InlineData("/p?debugx=1", false)]
    [InlineData("/p", false)]
    public void QueryParameter_ExactValue(string path, bool expected)
    {
        var route = new Route("r", PathMatchKind.Prefix, "/", RouteAction.Direct(200, ""))
        {
            QueryParameters = [new QueryParameterMatcher("debug", new StringMatcher(StringMatchKind.Exact, "1"), false)],
        };
        Assert.Equal(expected, route.Matches(Encoding.ASCII.GetBytes(path), Headers(), false));
    }

    [Fact]
    public void GrpcMatcher_RequiresGrpc()
    {
        var route = new Route("r", PathMatchKind.Prefix, "/", RouteAction.Direct(200, "")) { GrpcOnly = true };
        Assert.False(route.Matches("/svc/M"u8, Headers(), isGrpc: false));
        Assert.True(route.Matches("/svc/M"u8, Headers(), isGrpc: true));
    }

    [Fact]
    public void SeedScenario_HeaderNameLayottoGoesToV1_OthersToV2()
    {
        var v1 = new Cluster("outbound|9090|v1|server.default.svc.cluster.local", UpstreamProtocol.Http2, [], TimeSpan.FromSeconds(10));
        var v2 = new Cluster("outbound|9090|v2|server.default.svc.cluster.local", UpstreamProtocol.Http2, [], TimeSpan.FromSeconds(10));
        var host = new VirtualHost("server.default.svc.cluster.local:9090", ["server.default.svc.cluster.local", "server"],
        [
            new Route("v1", PathMatchKind.Prefix, "/", v1, TimeSpan.Zero)
            {
                Headers = [HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, "layotto"))],
            },
            new Route("v2", PathMatchKind.Prefix, "/", v2, TimeSpan.Zero),
        ]);
        var config = new RouteConfiguration("9090", [host], ignorePortInHostMatching: true);
        VirtualHost found = config.FindVirtualHost("server:9090"u8)!;
        Assert.Same(v1, found.FindRoute("/hello"u8, Headers(("name", "layotto")), true)!.Cluster);
        Assert.Same(v2, found.FindRoute("/hello"u8, Headers(("name", "other")), true)!.Cluster);
        Assert.Same(v2, found.FindRoute("/hello"u8, Headers(), true)!.Cluster);
    }

    [Fact]
    public void WeightedClusters_SplitByWeight()
    {
        var a = new Cluster("a", UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(1));
        var b = new Cluster("b", UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(1));
        RouteAction action = RouteAction.ToWeightedClusters([(a, 90), (b, 10)], totalWeight: 100, TimeSpan.Zero, "test");
        int toA = 0;
        const int N = 100_000;
        for (int i = 0; i < N; i++)
        {
            if (ReferenceEquals(action.PickCluster(Headers()), a))
            {
                toA++;
            }
        }
        Assert.InRange(toA / (double)N, 0.89, 0.91);
    }

    [Fact]
    public void WeightedClusters_TotalWeightMustAddUp()
    {
        var a = new Cluster("a", UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(1));
        var e = Assert.Throws<ConfigException>(() => RouteAction.ToWeightedClusters([(a, 90)], totalWeight: 100, TimeSpan.Zero, "route.weighted_clusters"));
        Assert.Contains("add up to 90, not total_weight 100", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ClusterHeader_PicksTheNamedCluster()
    {
        var a = new Cluster("a", UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(1));
        var map = new Dictionary<string, Cluster> { ["a"] = a };
        RouteAction action = RouteAction.ToClusterHeader("X-Cluster", System.Collections.Frozen.FrozenDictionary.ToFrozenDictionary(map), TimeSpan.Zero);
        Assert.Same(a, action.PickCluster(Headers(("x-cluster", "a"))));
        Assert.Null(action.PickCluster(Headers(("x-cluster", "nope"))));
        Assert.Null(action.PickCluster(Headers()));
    }

    [Theory]
    [InlineData(PathMatchKind.Prefix, "/api/", "/v2/", "/api/users?x=1", "/v2/users?x=1")]
    [InlineData(PathMatchKind.Prefix, "/old", "/", "/old/x", "//x")]
    [InlineData(PathMatchKind.Path, "/a", "/b", "/a?q", "/b?q")]
    public void PrefixRewrite_ReplacesTheMatchedPart(PathMatchKind kind, string match, string rewrite, string path, string expected)
    {
        var route = new Route("r", kind, match, RouteAction.Direct(200, "").WithRewrites(Encoding.ASCII.GetBytes(rewrite), null));
        var buffer = new byte[256];
        int n = route.RewritePath(Encoding.ASCII.GetBytes(path), buffer);
        Assert.Equal(expected, Encoding.ASCII.GetString(buffer, 0, n));
    }

    [Theory]
    [InlineData("api.example.com", "exact")]
    [InlineData("API.EXAMPLE.COM", "exact")]
    [InlineData("x.example.com", "suffix-long")]
    [InlineData("x.other.com", "suffix-short")]
    [InlineData("foo.anything", "prefix")]
    [InlineData("unknown", "any")]
    [InlineData("api.example.com:8080", "with-port")]
    public void VirtualHostSelection_FollowsEnvoysOrder(string authority, string expected)
    {
        VirtualHost Host(string name, params string[] domains) => new(name, domains, []);
        var config = new RouteConfiguration("r",
        [
            Host("any", "*"),
            Host("suffix-short", "*.com"),
            Host("suffix-long", "*.example.com"),
            Host("prefix", "foo.*"),
            Host("exact", "api.example.com"),
            Host("with-port", "api.example.com:8080"),
        ]);
        Assert.Equal(expected, config.FindVirtualHost(Encoding.ASCII.GetBytes(authority))!.Name);
    }

    [Fact]
    public void IgnorePortInHostMatching_StripsThePort()
    {
        var config = new RouteConfiguration("r", [new VirtualHost("server", ["server"], [])], ignorePortInHostMatching: true);
        Assert.Equal("server", config.FindVirtualHost("server:9090"u8)!.Name);
        Assert.Null(new RouteConfiguration("r", [new VirtualHost("server", ["server"], [])]).FindVirtualHost("server:9090"u8));
    }
}

public sealed class LoadBalancerTests
{

    private static UpstreamEndpoint Endpoint(int port, int weight = 1, EndpointHealth health = EndpointHealth.Healthy) =>
        new(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port), new Proxy.Core.Upstream.Http1UpstreamPool(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port)), weight, health);

    private static Dictionary<int, int> Count(Cluster cluster, int n)
    {
        var counts = new Dictionary<int, int>();
        for (int i = 0; i < n; i++)
        {
            int port = ((System.Net.IPEndPoint)cluster.PickEndpoint()!.Address).Port;
            counts[port] = counts.GetValueOrDefault(port) + 1;
        }
        return counts;
    }

    [Theory]
    [InlineData(LbPolicy.RoundRobin)]
    [InlineData(LbPolicy.Random)]
    [InlineData(LbPolicy.LeastRequest)]
    public void UnhealthyAndDrainingEndpoints_AreSkipped(LbPolicy policy)
    {
        var cluster = new Cluster("c", UpstreamProtocol.Http1,
            [Endpoint(1), Endpoint(2), Endpoint(3, health: EndpointHealth.Unhealthy), Endpoint(4, health: EndpointHealth.Draining), Endpoint(5)], TimeSpan.FromSeconds(1), policy);
        Dictionary<int, int> counts = Count(cluster, 3000);
        Assert.Equal([1, 2, 5], counts.Keys.Order());
    }

    [Fact]
    public void PanicThreshold_UsesEveryEndpointWhenTooFewAreHealthy()
    {
        var cluster = new Cluster("c", UpstreamProtocol.Http1,
            [Endpoint(1), Endpoint(2, health: EndpointHealth.Unhealthy), Endpoint(3, health: EndpointHealth.Unhealthy)], TimeSpan.FromSeconds(1));
        Assert.Equal(3, Count(cluster, 300).Count);
    }

    [Theory]
    [InlineData(LbPolicy.RoundRobin)]
    [InlineData(LbPolicy.Random)]
    public void Weights_AreHonoured(LbPolicy policy)
    {
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [Endpoint(1, weight: 3), Endpoint(2, weight: 1)], TimeSpan.FromSeconds(1), policy);
        Dictionary<int, int> counts = Count(cluster, 40_000);
        Assert.InRange(counts[1] / 40_000.0, 0.73, 0.77);
    }

    [Fact]
    public void OutlierDetection_EjectsAfterConsecutive5xx_AndRespectsMaxEjectionPercent()
    {
        UpstreamEndpoint a = Endpoint(1);
        UpstreamEndpoint b = Endpoint(2);
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [a, b], TimeSpan.FromSeconds(1))
        {
            OutlierDetection = new OutlierDetection { Consecutive5xx = 3, BaseEjectionTime = TimeSpan.FromMinutes(1) },
        };
        cluster.RecordOutcome(a, failure: true, gatewayFailure: false);
        cluster.RecordOutcome(a, failure: true, gatewayFailure: false);
        cluster.RecordOutcome(a, failure: false, gatewayFailure: false); // a success resets the streak
        cluster.RecordOutcome(a, failure: true, gatewayFailure: false);
        cluster.RecordOutcome(a, failure: true, gatewayFailure: false);
        Assert.False(a.State.IsEjected);
        cluster.RecordOutcome(a, failure: true, gatewayFailure: false);
        Assert.True(a.State.IsEjected);
        Assert.Equal([2], Count(cluster, 200).Keys);
        // 10 % of two endpoints: one may be out, not both.
        for (int i = 0; i < 5; i++)
        {
            cluster.RecordOutcome(b, failure: true, gatewayFailure: false);
        }
        Assert.False(b.State.IsEjected);
    }

    [Fact]
    public void OutlierDetection_GatewayFailuresAreNotEnforcedByDefault()
    {
        UpstreamEndpoint a = Endpoint(1);
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [a, Endpoint(2)], TimeSpan.FromSeconds(1))
        {
            OutlierDetection = new OutlierDetection { Consecutive5xx = 100, ConsecutiveGatewayFailure = 2 },
        };
        for (int i = 0; i < 5; i++)
        {
            cluster.RecordOutcome(a, failure: true, gatewayFailure: true);
        }
        Assert.False(a.State.IsEjected);
    }

    [Theory]
    [InlineData(LbPolicy.RingHash)]
    [InlineData(LbPolicy.Maglev)]
    public void ConsistentHash_SameKeySameHost_KeysSpread_MostStayWhenAHostGoes(LbPolicy policy)
    {
        UpstreamEndpoint[] hosts = [.. Enumerable.Range(1, 5).Select(p => Endpoint(p))];
        var cluster = new Cluster("c", UpstreamProtocol.Http1, hosts, TimeSpan.FromSeconds(1), policy);
        var smaller = new Cluster("c", UpstreamProtocol.Http1, hosts[..4], TimeSpan.FromSeconds(1), policy);
        var policies = new[] { new HashPolicy(HashPolicyKind.Header, "x-user", terminal: false) };
        var used = new HashSet<int>();
        int moved = 0;
        int keys = 0;
        for (int user = 0; user < 1000; user++)
        {
            var headers = new HeaderList();
            headers.Add("x-user"u8, Encoding.ASCII.GetBytes($"user-{user}"));
            ulong? hash = HashPolicy.Compute(policies, headers, "/"u8, null);
            UpstreamEndpoint first = cluster.PickEndpoint(hash)!;
            Assert.Same(first, cluster.PickEndpoint(hash));
            used.Add(((System.Net.IPEndPoint)first.Address).Port);
            if (!ReferenceEquals(first, hosts[4]))
            {
                keys++;
                if (!ReferenceEquals(first, smaller.PickEndpoint(hash)))
                {
                    moved++;
                }
            }
        }
        Assert.Equal(5, used.Count);
        // Keys whose host stayed should mostly stay with it.
        Assert.True(moved < keys / 5, $"{moved} of {keys} keys moved");
    }

    [Fact]
    public void HashPolicy_CombinesAndStopsAtTerminal()
    {
        var headers = new HeaderList();
        headers.Add("a"u8, "1"u8);
        headers.Add("cookie"u8, "session=abc; other=x"u8);
        ulong? header = HashPolicy.Compute([new HashPolicy(HashPolicyKind.Header, "a", terminal: true), new HashPolicy(HashPolicyKind.Cookie, "session", false)], headers, "/"u8, null);
        ulong? headerOnly = HashPolicy.Compute([new HashPolicy(HashPolicyKind.Header, "a", false)], headers, "/"u8, null);
        ulong? both = HashPolicy.Compute([new HashPolicy(HashPolicyKind.Header, "a", false), new HashPolicy(HashPolicyKind.Cookie, "session", false)], headers, "/"u8, null);
        Assert.Equal(headerOnly, header);
        Assert.NotEqual(headerOnly, both);
        Assert.Null(HashPolicy.Compute([new HashPolicy(HashPolicyKind.Header, "missing", false)], headers, "/"u8, null));
        Assert.NotNull(HashPolicy.Compute([new HashPolicy(HashPolicyKind.QueryParameter, "id", false)], headers, "/x?id=7"u8, null));
    }

    [Fact]
    public void LeastRequest_AvoidsTheBusyEndpoint()
    {
        UpstreamEndpoint busy = Endpoint(1);
        for (int i = 0; i < 100; i++)
        {
            busy.State.RequestStarted();
        }
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [busy, Endpoint(2)], TimeSpan.FromSeconds(1), LbPolicy.LeastRequest);
        Dictionary<int, int> counts = Count(cluster, 4000);
        // The busy endpoint wins only when both choices land on it: about a quarter of the time.
        Assert.InRange(counts[1] / 4000.0, 0.20, 0.30);
    }
}

public sealed class HeaderMutationTests
{
    private static HeaderList List(params (string, string)[] fields)
    {
        var list = new HeaderList();
        foreach (var (n, v) in fields)
        {
            list.Add(Encoding.ASCII.GetBytes(n), Encoding.ASCII.GetBytes(v));
        }
        return list;
    }

    private static List<(string, string)> Fields(HeaderList list) =>
        [.. Enumerable.Range(0, list.Count).Select(i => (Encoding.ASCII.GetString(list.Name(i)), Encoding.ASCII.GetString(list.Value(i))))];

    [Theory]
    [InlineData(HeaderAppendAction.Append, "x=old,x=new")]
    [InlineData(HeaderAppendAction.AddIfAbsent, "x=old")]
    [InlineData(HeaderAppendAction.OverwriteOrAdd, "x=new")]
    [InlineData(HeaderAppendAction.OverwriteIfExists, "x=new")]
    public void AppendActions_WhenPresent(HeaderAppendAction action, string expected)
    {
        HeaderList list = List(("x", "old"));
        new HeaderMutations([("X", "new", action)], []).Apply(list);
        Assert.Equal(expected, string.Join(',', Fields(list).Select(f => $"{f.Item1}={f.Item2}")));
    }

    [Theory]
    [InlineData(HeaderAppendAction.Append, "x=new")]
    [InlineData(HeaderAppendAction.AddIfAbsent, "x=new")]
    [InlineData(HeaderAppendAction.OverwriteOrAdd, "x=new")]
    [InlineData(HeaderAppendAction.OverwriteIfExists, "")]
    public void AppendActions_WhenAbsent(HeaderAppendAction action, string expected)
    {
        HeaderList list = List();
        new HeaderMutations([("x", "new", action)], []).Apply(list);
        Assert.Equal(expected, string.Join(',', Fields(list).Select(f => $"{f.Item1}={f.Item2}")));
    }

    [Fact]
    public void Remove_RemovesEveryOccurrence_BeforeAdding()
    {
        HeaderList list = List(("a", "1"), ("b", "2"), ("a", "3"));
        new HeaderMutations([("a", "4", HeaderAppendAction.Append)], ["A"]).Apply(list);
        Assert.Equal([("b", "2"), ("a", "4")], Fields(list));
    }

    [Theory]
    [InlineData(":path")]
    [InlineData("host")]
    [InlineData("bad name")]
    public void PseudoHeadersAndHost_CannotBeMutated(string name)
    {
        Assert.Throws<ConfigException>(() => new HeaderMutations([(name, "v", HeaderAppendAction.Append)], []));
    }
}

public sealed class PriorityTests
{
    private static UpstreamEndpoint Endpoint(int port, int priority, EndpointHealth health = EndpointHealth.Healthy) =>
        new(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port), new Proxy.Core.Upstream.Http1UpstreamPool(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port)), 1, health, priority);

    private static double ShareOfPriority0(Cluster cluster, int n)
    {
        int p0 = 0;
        for (int i = 0; i < n; i++)
        {
            if (cluster.PickEndpoint()!.Priority == 0)
            {
                p0++;
            }
        }
        return p0 / (double)n;
    }

    [Fact]
    public void HealthyPriority0_TakesAllTraffic()
    {
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [Endpoint(1, 0), Endpoint(2, 0), Endpoint(3, 1)], TimeSpan.FromSeconds(1));
        Assert.Equal(1.0, ShareOfPriority0(cluster, 2000));
    }

    [Fact]
    public void DegradedPriority0_SpillsOverByTheOverprovisioningFactor()
    {
        // Half of P0 healthy: 1.4 × 50 % = 70 % stays on P0, 30 % goes to P1.
        var cluster = new Cluster("c", UpstreamProtocol.Http1,
            [Endpoint(1, 0), Endpoint(2, 0, EndpointHealth.Unhealthy), Endpoint(3, 1), Endpoint(4, 1)], TimeSpan.FromSeconds(1), panicThresholdPercent: 0);
        Assert.InRange(ShareOfPriority0(cluster, 20_000), 0.67, 0.73);
    }
}

public sealed class ClusterLimitsTests
{
    [Fact]
    public void MaxConnections_IsACountingSemaphore()
    {
        var state = new ClusterState { Name = "c", MaxConnections = 2 };
        Assert.True(state.TryReserveConnection());
        Assert.True(state.TryReserveConnection());
        Assert.False(state.TryReserveConnection());
        state.ReleaseConnection();
        Assert.True(state.TryReserveConnection());
        Assert.Equal(2, state.Connections);
    }

    [Fact]
    public void PoolsArePerCluster_LikeEnvoys()
    {
        var pools = new Proxy.Core.Upstream.UpstreamPools();
        var address = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 9);
        var a = pools.Endpoint(address, UpstreamProtocol.Http2, cluster: pools.ClusterState("a"));
        var a2 = pools.Endpoint(address, UpstreamProtocol.Http2, cluster: pools.ClusterState("a"));
        var b = pools.Endpoint(address, UpstreamProtocol.Http2, cluster: pools.ClusterState("b"));
        Assert.Same(a.State, a2.State);      // a new snapshot of cluster a keeps its connections
        Assert.NotSame(a.State, b.State);
        Assert.Same(pools.ClusterState("a"), a.State.Cluster);
    }

    [Fact]
    public void LocalityWeights_SplitTraffic()
    {
        var pools = new Proxy.Core.Upstream.UpstreamPools();
        UpstreamEndpoint E(int port, int locality, int weight) =>
            pools.Endpoint(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port), UpstreamProtocol.Http1, locality: locality, localityWeight: weight);
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [E(1, 0, 3), E(2, 0, 3), E(3, 1, 1)], TimeSpan.FromSeconds(1), localityWeighted: true);
        int inFirst = 0;
        for (int i = 0; i < 20_000; i++)
        {
            if (cluster.PickEndpoint()!.Locality == 0)
            {
                inFirst++;
            }
        }
        Assert.InRange(inFirst / 20_000.0, 0.72, 0.78);
    }
}
