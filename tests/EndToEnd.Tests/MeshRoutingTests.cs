using System.Net;
using Microsoft.AspNetCore.Builder;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>
/// The seed scenario over real sockets: two versions of a service behind the proxy, routed by an Envoy
/// route configuration in Istio's shape (header match to subset v1, the rest to v2; then a 90/10 split).
/// </summary>
public sealed class MeshRoutingTests(Xunit.Abstractions.ITestOutputHelper output) : IAsyncLifetime
{
    private readonly List<WebApplication> _apps = [];
    private int _v1Port;
    private int _v2Port;

    public async Task InitializeAsync()
    {
        _v1Port = await StartVersionAsync("v1");
        _v2Port = await StartVersionAsync("v2");
    }

    private async Task<int> StartVersionAsync(string version)
    {
        var (app, port) = await VersionUpstream.StartAsync(version);
        _apps.Add(app);
        return port;
    }

    public async Task DisposeAsync()
    {
        foreach (WebApplication app in _apps)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    private string Bootstrap(string routes) => $$"""
        static_resources:
          listeners:
          - name: outbound_9090
            address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
            filter_chains:
            - filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  route_config:
                    name: "9090"
                    ignore_port_in_host_matching: true
                    virtual_hosts:
                    - name: server.default.svc.cluster.local:9090
                      domains: [server.default.svc.cluster.local, server]
                      routes:
        {{routes}}
          clusters:
          - name: outbound|9090|v1|server.default.svc.cluster.local
            connect_timeout: 1s
            http2_protocol_options: {}
            load_assignment: { endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{_v1Port}} } } } } ] } ] }
          - name: outbound|9090|v2|server.default.svc.cluster.local
            connect_timeout: 1s
            http2_protocol_options: {}
            load_assignment: { endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{_v2Port}} } } } } ] } ] }
        """;

    private static Task<(ProxyServer Proxy, HttpClient Client)> StartProxyAsync(string bootstrap, UpstreamPools? sharedPools = null)
    {
        var pools = sharedPools ?? new UpstreamPools();
        ProxySnapshot snapshot = new BootstrapLoader(pools).Load(bootstrap, "test");
        var proxy = new ProxyServer(snapshot, pools);
        proxy.Start();
        int port = proxy.Listeners[0].LocalEndPoint.Port;
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 4,
            EnableMultipleHttp2Connections = true,
            // The authority says "server", as an application in the mesh would; the socket goes to the proxy.
            ConnectCallback = async (context, token) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, port, token);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        var client = new HttpClient(handler)
        {
            BaseAddress = new Uri("http://server:9090"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        return Task.FromResult((proxy, client));
    }

    private static async Task<string> GetAsync(HttpClient client, string? name = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/hello");
        if (name != null)
        {
            request.Headers.Add("name", name);
        }
        using HttpResponseMessage response = await client.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadAsStringAsync();
    }

    [Fact]
    public async Task HeaderNameLayotto_GoesToV1_AllOthersToV2()
    {
        const string routes = """
                      - match: { prefix: "/", case_sensitive: true, headers: [ { name: name, string_match: { exact: layotto } } ] }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local", timeout: 0s }
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v2|server.default.svc.cluster.local", timeout: 0s }
        """;
        var (proxy, client) = await StartProxyAsync(Bootstrap(routes));
        await using (proxy)
        using (client)
        {
            for (int i = 0; i < 20; i++)
            {
                Assert.Equal("v1", await GetAsync(client, "layotto"));
                Assert.Equal("v2", await GetAsync(client, "someone-else"));
                Assert.Equal("v2", await GetAsync(client));
            }
        }
    }

    [Fact]
    public async Task Istio15LegacyExactMatch_RoutesTheSame()
    {
        const string routes = """
                      - match: { prefix: "/", headers: [ { name: name, exact_match: layotto } ] }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local" }
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v2|server.default.svc.cluster.local" }
        """;
        var (proxy, client) = await StartProxyAsync(Bootstrap(routes));
        await using (proxy)
        using (client)
        {
            Assert.Equal("v1", await GetAsync(client, "layotto"));
            Assert.Equal("v2", await GetAsync(client, "nope"));
        }
    }

    [Fact]
    public async Task NinetyTenSplit_IsHonouredOverTenThousandRequests()
    {
        const string routes = """
                      - match: { prefix: "/" }
                        route:
                          weighted_clusters:
                            clusters:
                            - { name: "outbound|9090|v1|server.default.svc.cluster.local", weight: 90 }
                            - { name: "outbound|9090|v2|server.default.svc.cluster.local", weight: 10 }
        """;
        var (proxy, client) = await StartProxyAsync(Bootstrap(routes));
        await using (proxy)
        using (client)
        {
            const int N = 10_000;
            int v1 = 0;
            await Parallel.ForAsync(0, N, new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (_, _) =>
            {
                if (await GetAsync(client) == "v1")
                {
                    Interlocked.Increment(ref v1);
                }
            });
            double share = v1 / (double)N;
            Assert.InRange(share, 0.88, 0.92); // ±2 points
        }
    }

    [Fact]
    public async Task SnapshotSwaps_HundredPerSecondUnderLoad_LoseNoRequest()
    {
        const string toV1 = """
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local" }
        """;
        const string toV2 = """
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v2|server.default.svc.cluster.local" }
        """;
        var pools = new UpstreamPools();
        ProxySnapshot v1 = new BootstrapLoader(pools).Load(Bootstrap(toV1), "v1");
        ProxySnapshot v2 = new BootstrapLoader(pools).Load(Bootstrap(toV2), "v2");
        var (proxy, client) = await StartProxyAsync(Bootstrap(toV1), pools);
        await using (proxy)
        using (client)
        {
            using var stop = new CancellationTokenSource();
            int swaps = 0;
            Task swapper = Task.Run(async () =>
            {
                using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(10));
                while (await timer.WaitForNextTickAsync(stop.Token).AsTask().ContinueWith(t => !t.IsCanceled && t.Result))
                {
                    proxy.Snapshots.Publish(++swaps % 2 == 0 ? v1 : v2);
                }
            });
            int ok = 0;
            int failed = 0;
            int[] seen = new int[2];
            var sw = System.Diagnostics.Stopwatch.StartNew();
            await Parallel.ForAsync(0, 16, async (_, _) =>
            {
                while (sw.Elapsed < TimeSpan.FromSeconds(3))
                {
                    try
                    {
                        string version = await GetAsync(client);
                        Interlocked.Increment(ref seen[version == "v1" ? 0 : 1]);
                        Interlocked.Increment(ref ok);
                    }
                    catch (HttpRequestException)
                    {
                        Interlocked.Increment(ref failed);
                    }
                }
            });
            await stop.CancelAsync();
            await swapper;
            output.WriteLine($"{ok} requests ok, {failed} failed, {swaps} snapshot swaps in 3 s; v1 {seen[0]}, v2 {seen[1]}");
            Assert.Equal(0, failed);
            Assert.True(swaps >= 50, $"only {swaps} swaps"); // ~100/s asked; a loaded CI box ticks slower
            Assert.True(seen[0] > 0 && seen[1] > 0, $"v1={seen[0]} v2={seen[1]}");
            Assert.True(ok > 1000, $"only {ok} requests");
        }
    }

    [Fact]
    public async Task FaultAbortAndDelay_AreObservedByTheClient()
    {
        const string routes = """
                      - match: { prefix: "/hello", headers: [ { name: x-fault, string_match: { exact: abort } } ] }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local" }
                        typed_per_filter_config:
                          envoy.fault:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                            abort: { http_status: 418, percentage: { numerator: 100, denominator: HUNDRED } }
                      - match: { prefix: "/hello", headers: [ { name: x-fault, string_match: { exact: delay } } ] }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local" }
                        typed_per_filter_config:
                          legacy.key.is.ignored:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                            delay: { fixed_delay: 0.5s, percentage: { numerator: 1000000, denominator: MILLION } }
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v2|server.default.svc.cluster.local" }
        """;
        var (proxy, client) = await StartProxyAsync(Bootstrap(routes));
        await using (proxy)
        using (client)
        {
            using var abort = new HttpRequestMessage(HttpMethod.Get, "/hello");
            abort.Headers.Add("x-fault", "abort");
            using HttpResponseMessage aborted = await client.SendAsync(abort);
            Assert.Equal((HttpStatusCode)418, aborted.StatusCode);
            Assert.Equal("fault filter abort\n", await aborted.Content.ReadAsStringAsync());

            using var delay = new HttpRequestMessage(HttpMethod.Get, "/hello");
            delay.Headers.Add("x-fault", "delay");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using HttpResponseMessage delayed = await client.SendAsync(delay);
            Assert.Equal("v1", await delayed.Content.ReadAsStringAsync());
            Assert.True(sw.Elapsed >= TimeSpan.FromMilliseconds(450), $"took {sw.Elapsed}");

            Assert.Equal("v2", await GetAsync(client));
        }
    }

    [Fact]
    public async Task WeightedClusterHeaderMutations_FollowTheChosenCluster()
    {
        const string routes = """
                      - match: { prefix: "/" }
                        route:
                          weighted_clusters:
                            clusters:
                            - name: "outbound|9090|v1|server.default.svc.cluster.local"
                              weight: 50
                              response_headers_to_add: [ { header: { key: x-subset, value: v1 } } ]
                            - name: "outbound|9090|v2|server.default.svc.cluster.local"
                              weight: 50
                              response_headers_to_add: [ { header: { key: x-subset, value: v2 } } ]
        """;
        var (proxy, client) = await StartProxyAsync(Bootstrap(routes));
        await using (proxy)
        using (client)
        {
            var seen = new HashSet<string>();
            for (int i = 0; i < 40; i++)
            {
                using HttpResponseMessage response = await client.GetAsync("/hello");
                string body = await response.Content.ReadAsStringAsync();
                Assert.Equal(body, Assert.Single(response.Headers.GetValues("x-subset")));
                seen.Add(body);
            }
            Assert.Equal(2, seen.Count);
        }
    }
}
