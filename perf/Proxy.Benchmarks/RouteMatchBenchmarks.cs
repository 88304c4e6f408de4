using System.Text;
using BenchmarkDotNet.Attributes;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Benchmarks;

/// <summary>
/// Matching one request against an Istio-sized table: 1,000 virtual hosts (one per service, with
/// Istio's five domain spellings each) × 10 routes (header matches, prefixes, a regex, a catch-all),
/// 10,000 routes in all.
/// </summary>
[MemoryDiagnoser]
public class RouteMatchBenchmarks
{
    private RouteConfiguration _routes = null!;
    private readonly HeaderList _headers = new();
    private byte[] _authority = [];
    private byte[] _path = [];

    [GlobalSetup]
    public void Setup()
    {
        var hosts = new List<VirtualHost>();
        for (int s = 0; s < 1000; s++)
        {
            string service = $"svc{s}";
            var v1 = new Cluster($"outbound|9090|v1|{service}.default.svc.cluster.local", UpstreamProtocol.Http2, [], TimeSpan.FromSeconds(10));
            var v2 = new Cluster($"outbound|9090|v2|{service}.default.svc.cluster.local", UpstreamProtocol.Http2, [], TimeSpan.FromSeconds(10));
            var routes = new List<Route>();
            for (int r = 0; r < 8; r++)
            {
                routes.Add(new Route($"r{r}", PathMatchKind.Prefix, $"/api/v{r}/", v1, TimeSpan.Zero)
                {
                    Headers = [HeaderMatcher.ForString("name", new StringMatcher(StringMatchKind.Exact, $"user{r}"))],
                });
            }
            routes.Add(new Route("regex", PathMatchKind.Regex, "/items/[0-9]+", v1, TimeSpan.Zero));
            routes.Add(new Route("default", PathMatchKind.Prefix, "/", v2, TimeSpan.Zero));
            hosts.Add(new VirtualHost($"{service}.default.svc.cluster.local:9090",
                [$"{service}.default.svc.cluster.local", service, $"{service}.default.svc", $"{service}.default", $"10.0.{s / 250}.{s % 250}"], routes));
        }
        hosts.Add(new VirtualHost("allow_any", ["*"], [new Route("passthrough", PathMatchKind.Prefix, "/", new Cluster("PassthroughCluster", UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(10)), TimeSpan.Zero)]));
        _routes = new RouteConfiguration("9090", hosts, ignorePortInHostMatching: true);

        _authority = Encoding.ASCII.GetBytes("svc537.default.svc.cluster.local:9090");
        _path = Encoding.ASCII.GetBytes("/api/v7/items?page=2");
        _headers.Add(":method"u8, "POST"u8);
        _headers.Add(":scheme"u8, "http"u8);
        _headers.Add(":authority"u8, _authority);
        _headers.Add(":path"u8, _path);
        _headers.Add("content-type"u8, "application/grpc"u8);
        _headers.Add("user-agent"u8, "grpc-dotnet/2.85.0"u8);
        _headers.Add("name"u8, "user7"u8);
    }

    /// <summary>Virtual host by authority, then the routes in order: the header-matched route 8 of 10.</summary>
    [Benchmark]
    public Route? MatchHeaderRoute() => _routes.FindVirtualHost(_authority)!.FindRoute(_path, _headers, isGrpc: true);

    /// <summary>A request that falls through every route to the catch-all, past the regex.</summary>
    [Benchmark]
    public Route? MatchCatchAll() => _routes.FindVirtualHost(_authority)!.FindRoute("/other"u8, _headers, isGrpc: true);
}
