using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Proxy.Xds;
using Xds.ControlPlane;

namespace EndToEnd.Tests;

/// <summary>
/// The admin API as pilot-agent, istioctl and Prometheus use it, against the proxy binary: readiness
/// that follows the first CDS and LDS, stats that count the requests sent, Prometheus output that
/// parses, Istio's golden bootstraps with their static listeners, and the lifecycle endpoints.
/// </summary>
public sealed partial class AdminTests : IAsyncLifetime
{
    private readonly List<WebApplication> _apps = [];
    private int _v1Port;
    private int _v2Port;

    public async Task InitializeAsync()
    {
        foreach (string version in new[] { "v1", "v2" })
        {
            var (app, port) = await VersionUpstream.StartAsync(version);
            _apps.Add(app);
            if (version == "v1")
            {
                _v1Port = port;
            }
            else
            {
                _v2Port = port;
            }
        }
    }

    public async Task DisposeAsync()
    {
        foreach (WebApplication app in _apps)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    private static string HostBinary() =>
        AppContext.BaseDirectory.Replace(Path.Combine("tests", "EndToEnd.Tests"), Path.Combine("src", "Proxy.Host"), StringComparison.Ordinal) + "layotto-fast";

    /// <summary>A proxy process with its log collected.</summary>
    private sealed class ProxyProcess : IAsyncDisposable
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _log = new();

        public ProxyProcess(string binary, IEnumerable<string> args)
        {
            var psi = new ProcessStartInfo(binary) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string a in args)
            {
                psi.ArgumentList.Add(a);
            }
            Process = Process.Start(psi)!;
            Process.ErrorDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
            Process.OutputDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
            Process.BeginErrorReadLine();
            Process.BeginOutputReadLine();
        }

        public Process Process { get; }

        public string Log => string.Join('\n', _log);

        public async ValueTask DisposeAsync()
        {
            if (!Process.HasExited)
            {
                Process.Kill();
            }
            await Process.WaitForExitAsync();
            Process.Dispose();
        }
    }

    private static async Task<(int Status, string Body)> AdminAsync(int port, string path, string method = "GET")
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        using var request = new HttpRequestMessage(new HttpMethod(method), $"http://127.0.0.1:{port}{path}");
        using HttpResponseMessage response = await client.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private static async Task UntilAdminAnswersAsync(int port, ProxyProcess proxy)
    {
        for (int i = 0; i < 400; i++)
        {
            try
            {
                using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await probe.ConnectAsync(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException)
            {
                Assert.False(proxy.Process.HasExited, "the proxy exited:\n" + proxy.Log);
                await Task.Delay(25);
            }
        }
        Assert.Fail("the admin endpoint never answered:\n" + proxy.Log);
    }

    private static string AdminJson(int port) =>
        $$"""{ "address": { "socket_address": { "address": "127.0.0.1", "port_value": {{port}} } } }""";

    [Fact]
    public async Task PilotAgentReadiness_FollowsTheFirstCdsAndLds_AndStatsCountTheRequests()
    {
        string socketPath = Path.Combine(Path.GetTempPath(), $"xds-{Guid.NewGuid():N}.sock");
        await using ControlPlane plane = await ControlPlane.StartAsync(socketPath);
        int port = AotProxyPort();
        int adminPort = AotProxyPort();
        string bootstrap = Path.Combine(Path.GetTempPath(), $"envoy-rev-{Guid.NewGuid():N}.json");
        File.WriteAllText(bootstrap, $$"""
            {
              "node": { "id": "sidecar~127.0.0.1~client.default~default.svc.cluster.local", "cluster": "client.default",
                        "metadata": { "ISTIO_VERSION": "1.28.0" } },
              "admin": {{AdminJson(adminPort)}},
              "dynamic_resources": {
                "lds_config": { "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3" },
                "cds_config": { "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3" },
                "ads_config": { "api_type": "DELTA_GRPC", "transport_api_version": "V3",
                                "grpc_services": [ { "envoy_grpc": { "cluster_name": "xds-grpc" } } ] }
              },
              "static_resources": {
                "clusters": [ {
                  "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
                  "load_assignment": { "cluster_name": "xds-grpc", "endpoints": [ { "lb_endpoints": [ { "endpoint": { "address": { "pipe": { "path": "{{socketPath}}" } } } } ] } ] },
                  "typed_extension_protocol_options": { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": { "http2_protocol_options": {} } } }
                } ]
              }
            }
            """);
        // Current pilot-agent's command line.
        await using var proxy = new ProxyProcess(HostBinary(), ["-c", bootstrap, "--drain-time-s", "2", "--drain-strategy", "immediate", "--local-address-ip-version", "v4",
            "--file-flush-interval-msec", "1000", "--disable-hot-restart", "--allow-unknown-static-fields",
            "--log-format", "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t", "-l", "info", "--component-log-level", "misc:error", "--concurrency", "2"]);
        try
        {
            await UntilAdminAnswersAsync(adminPort, proxy);
            // The log lines take pilot-agent's --log-format.
            var logDeadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (!proxy.Log.Contains("admin endpoint on", StringComparison.Ordinal) && DateTime.UtcNow < logDeadline)
            {
                await Task.Delay(20);
            }
            string adminLine = proxy.Log.Split('\n').First(l => l.Contains("admin endpoint on", StringComparison.Ordinal));
            Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\tinfo\tenvoy main :0\tadmin endpoint on 127\.0\.0\.1:\d+\tthread=\d+$", adminLine);

            // Before any configuration: not ready, as pilot-agent's probe reads it.
            var (status, body) = await AdminAsync(adminPort, "/ready");
            Assert.Equal(503, status);
            Assert.Equal("INITIALIZING\n", body);
            (status, body) = await AdminAsync(adminPort, "/stats?usedonly&filter=^(server%5C.state|listener_manager%5C.workers_started)");
            Assert.Equal(200, status);
            Assert.Contains("server.state: 3\n", body, StringComparison.Ordinal);
            Assert.Contains("listener_manager.workers_started: 0\n", body, StringComparison.Ordinal);

            // Clusters alone do not make it ready; listeners too do.
            plane.Set(XdsResourceType.Cluster, MeshResources.EdsCluster(MeshResources.ClusterName("v1")), MeshResources.EdsCluster(MeshResources.ClusterName("v2")));
            plane.Set(XdsResourceType.Endpoint, MeshResources.Endpoints(MeshResources.ClusterName("v1"), _v1Port), MeshResources.Endpoints(MeshResources.ClusterName("v2"), _v2Port));
            await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Endpoint).Acks >= 1, "the EDS ACK");
            Assert.Equal(503, (await AdminAsync(adminPort, "/ready")).Status);
            plane.Set(XdsResourceType.Route, MeshResources.HeaderRoutes("9090"));
            plane.Set(XdsResourceType.Listener, MeshResources.HttpListener($"127.0.0.1_{port}", port, "9090"));
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while ((await AdminAsync(adminPort, "/ready")).Status != 200)
            {
                Assert.True(DateTime.UtcNow < deadline, "never ready:\n" + proxy.Log);
                await Task.Delay(20);
            }
            Assert.Equal("LIVE\n", (await AdminAsync(adminPort, "/ready")).Body);
            (_, body) = await AdminAsync(adminPort, "/stats?usedonly");
            Assert.Contains("server.state: 0\n", body, StringComparison.Ordinal);
            Assert.Contains("listener_manager.workers_started: 1\n", body, StringComparison.Ordinal);
            Assert.Matches(@"cluster_manager\.cds\.update_success: [1-9]", body);
            Assert.Matches(@"listener_manager\.lds\.update_success: [1-9]", body);
            Assert.DoesNotContain("update_rejected: 1", body, StringComparison.Ordinal);

            // Requests: 7 to v1 (by header), 5 to v2, 2 to the allow_any host (PassthroughCluster, not
            // sent: 503 from the proxy).
            using (var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") })
            {
                for (int i = 0; i < 14; i++)
                {
                    using var request = new HttpRequestMessage(HttpMethod.Get, "/hello");
                    request.Headers.Host = i < 12 ? "server" : "nobody.example";
                    if (i < 7)
                    {
                        request.Headers.Add("name", "layotto");
                    }
                    using HttpResponseMessage response = await http.SendAsync(request);
                    Assert.Equal(i < 12 ? HttpStatusCode.OK : HttpStatusCode.ServiceUnavailable, response.StatusCode);
                    if (i < 12)
                    {
                        Assert.Equal(i < 7 ? "v1" : "v2", await response.Content.ReadAsStringAsync());
                    }
                }
            }
            (status, body) = await AdminAsync(adminPort, "/stats/prometheus");
            Assert.Equal(200, status);
            Dictionary<string, double> metrics = ParsePrometheus(body);
            string v1 = MeshResources.ClusterName("v1"), v2 = MeshResources.ClusterName("v2");
            const string Hcm = "envoy_http_conn_manager_prefix=\"outbound_0.0.0.0_9090\"";
            Assert.Equal(7, metrics[$"envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{v1}\"}}"]);
            Assert.Equal(5, metrics[$"envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{v2}\"}}"]);
            Assert.Equal(7, metrics[$"envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"2\",envoy_cluster_name=\"{v1}\"}}"]);
            Assert.Equal(14, metrics[$"envoy_http_downstream_rq_total{{{Hcm}}}"]);
            Assert.Equal(12, metrics[$"envoy_http_downstream_rq_xx{{envoy_response_code_class=\"2\",{Hcm}}}"]);
            Assert.Equal(2, metrics[$"envoy_http_downstream_rq_xx{{envoy_response_code_class=\"5\",{Hcm}}}"]);
            Assert.Equal(14, metrics[$"envoy_http_downstream_rq_time_count{{{Hcm}}}"]);
            Assert.Equal(12, metrics[$"envoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"{v1}\"}}"] + metrics[$"envoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"{v2}\"}}"]);
            Assert.Equal(14, metrics[$"envoy_http_downstream_rq_time_bucket{{{Hcm},le=\"+Inf\"}}"]);
            Assert.True(metrics[$"envoy_listener_downstream_cx_total{{envoy_listener_address=\"127.0.0.1_{port}\"}}"] >= 1);

            // The same counts as text and JSON; counters can be reset (Prometheus keeps its totals).
            (_, body) = await AdminAsync(adminPort, $"/stats?filter=upstream_rq_total");
            Assert.Contains($"cluster.{v1}.upstream_rq_total: 7\n", body, StringComparison.Ordinal);
            (_, body) = await AdminAsync(adminPort, "/stats?format=json&filter=downstream_rq_total");
            using (JsonDocument json = JsonDocument.Parse(body))
            {
                JsonElement stat = json.RootElement.GetProperty("stats").EnumerateArray().Single(s => s.TryGetProperty("name", out _));
                Assert.Equal("http.outbound_0.0.0.0_9090.downstream_rq_total", stat.GetProperty("name").GetString());
                Assert.Equal(14, stat.GetProperty("value").GetInt64());
            }
            Assert.Equal(405, (await AdminAsync(adminPort, "/reset_counters")).Status);
            Assert.Equal(200, (await AdminAsync(adminPort, "/reset_counters", "POST")).Status);
            (_, body) = await AdminAsync(adminPort, $"/stats?filter=upstream_rq_total");
            Assert.Contains($"cluster.{v1}.upstream_rq_total: 0\n", body, StringComparison.Ordinal);
            Assert.Equal(7, ParsePrometheus((await AdminAsync(adminPort, "/stats/prometheus")).Body)[$"envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{v1}\"}}"]);
            Assert.Equal(400, (await AdminAsync(adminPort, "/stats?filter=(")).Status);

            // server_info, clusters, listeners.
            (_, body) = await AdminAsync(adminPort, "/server_info");
            using (JsonDocument info = JsonDocument.Parse(body))
            {
                Assert.Equal("LIVE", info.RootElement.GetProperty("state").GetString());
                Assert.Equal("sidecar~127.0.0.1~client.default~default.svc.cluster.local", info.RootElement.GetProperty("node").GetProperty("id").GetString());
                Assert.Equal("1.28.0", info.RootElement.GetProperty("node").GetProperty("metadata").GetProperty("ISTIO_VERSION").GetString());
                Assert.Equal(2, info.RootElement.GetProperty("command_line_options").GetProperty("concurrency").GetInt32());
            }
            (_, body) = await AdminAsync(adminPort, "/clusters");
            Assert.Contains($"{v1}::127.0.0.1:{_v1Port}::health_flags::healthy\n", body, StringComparison.Ordinal);
            (_, body) = await AdminAsync(adminPort, "/clusters?format=json");
            using (JsonDocument clusters = JsonDocument.Parse(body))
            {
                Assert.Contains(clusters.RootElement.GetProperty("cluster_statuses").EnumerateArray(), c => c.GetProperty("name").GetString() == v2);
            }
            (_, body) = await AdminAsync(adminPort, "/listeners");
            Assert.Equal($"127.0.0.1_{port}::127.0.0.1:{port}\n", body);
            Assert.Equal(404, (await AdminAsync(adminPort, "/nothing")).Status);

            // config_dump round-trips through Envoy's admin types: what the control plane sent comes back.
            await CheckConfigDumpAsync(adminPort, port, v1, v2, _v1Port);

            // pilot-agent's exit: POST /quitquitquit (GET is refused) → drained and gone with 0.
            Assert.Equal(405, (await AdminAsync(adminPort, "/quitquitquit")).Status);
            Assert.Equal(200, (await AdminAsync(adminPort, "/quitquitquit", "POST")).Status);
            await proxy.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(0, proxy.Process.ExitCode);
        }
        finally
        {
            File.Delete(bootstrap);
            File.Delete(socketPath);
        }
    }

    private static readonly Google.Protobuf.JsonParser s_dumpParser = new(Google.Protobuf.JsonParser.Settings.Default
        .WithIgnoreUnknownFields(true)
        .WithTypeRegistry(Google.Protobuf.Reflection.TypeRegistry.FromMessages(
            Proxy.Xds.Api.Admin.ConfigDump.Descriptor, Proxy.Xds.Api.Admin.BootstrapConfigDump.Descriptor, Proxy.Xds.Api.Admin.ClustersConfigDump.Descriptor,
            Proxy.Xds.Api.Admin.EndpointsConfigDump.Descriptor, Proxy.Xds.Api.Admin.ListenersConfigDump.Descriptor, Proxy.Xds.Api.Admin.ScopedRoutesConfigDump.Descriptor,
            Proxy.Xds.Api.Admin.RoutesConfigDump.Descriptor, Proxy.Xds.Api.Admin.SecretsConfigDump.Descriptor,
            Proxy.Xds.Api.Admin.ClustersConfigDump.Types.DynamicCluster.Descriptor, Proxy.Xds.Api.Admin.ListenersConfigDump.Types.DynamicListener.Descriptor,
            Proxy.Xds.Api.Cluster.Cluster.Descriptor, Proxy.Xds.Api.Listener.Listener.Descriptor, Proxy.Xds.Api.Route.RouteConfiguration.Descriptor,
            Proxy.Xds.Api.Endpoint.ClusterLoadAssignment.Descriptor, Proxy.Xds.Api.Hcm.HttpConnectionManager.Descriptor,
            Proxy.Xds.Api.UpstreamHttp.HttpProtocolOptions.Descriptor, Proxy.Xds.Api.Router.Router.Descriptor, Proxy.Xds.Api.Udpa.TypedStruct.Descriptor,
            Proxy.Xds.Api.MetadataExchange.MetadataExchange.Descriptor)));

    private static async Task CheckConfigDumpAsync(int adminPort, int port, string v1, string v2, int v1Port)
    {
        var (status, body) = await AdminAsync(adminPort, "/config_dump?include_eds");
        Assert.Equal(200, status);
        var dump = s_dumpParser.Parse<Proxy.Xds.Api.Admin.ConfigDump>(body);
        Assert.Equal(
            ["BootstrapConfigDump", "ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "ScopedRoutesConfigDump", "RoutesConfigDump", "SecretsConfigDump"],
            dump.Configs.Select(static c => c.TypeUrl[(c.TypeUrl.LastIndexOf('.') + 1)..]));
        var bootstrap = dump.Configs[0].Unpack<Proxy.Xds.Api.Admin.BootstrapConfigDump>();
        Assert.Equal("sidecar~127.0.0.1~client.default~default.svc.cluster.local", bootstrap.Bootstrap.Fields["node"].StructValue.Fields["id"].StringValue);
        Assert.Equal("layotto-fast", bootstrap.Bootstrap.Fields["node"].StructValue.Fields["user_agent_name"].StringValue);

        var clusters = dump.Configs[1].Unpack<Proxy.Xds.Api.Admin.ClustersConfigDump>();
        Assert.NotEmpty(clusters.VersionInfo);
        Assert.Equal("xds-grpc", Assert.Single(clusters.StaticClusters).Cluster.Unpack<Proxy.Xds.Api.Cluster.Cluster>().Name);
        var dynamicClusters = clusters.DynamicActiveClusters.ToDictionary(static c => c.Cluster.Unpack<Proxy.Xds.Api.Cluster.Cluster>().Name);
        SameProto(MeshResources.EdsCluster(v1), dynamicClusters[v1].Cluster.Unpack<Proxy.Xds.Api.Cluster.Cluster>());
        SameProto(MeshResources.EdsCluster(v2), dynamicClusters[v2].Cluster.Unpack<Proxy.Xds.Api.Cluster.Cluster>());
        Assert.All(dynamicClusters.Values, static c => Assert.True(c.LastUpdated.ToDateTime() > DateTime.UtcNow.AddMinutes(-5)));

        var endpoints = dump.Configs[2].Unpack<Proxy.Xds.Api.Admin.EndpointsConfigDump>();
        Assert.Contains(endpoints.DynamicEndpointConfigs, e => e.EndpointConfig.Unpack<Proxy.Xds.Api.Endpoint.ClusterLoadAssignment>().Equals(MeshResources.Endpoints(v1, v1Port)));
        Assert.Equal("xds-grpc", Assert.Single(endpoints.StaticEndpointConfigs).EndpointConfig.Unpack<Proxy.Xds.Api.Endpoint.ClusterLoadAssignment>().ClusterName);

        var listeners = dump.Configs[3].Unpack<Proxy.Xds.Api.Admin.ListenersConfigDump>();
        var listener = Assert.Single(listeners.DynamicListeners);
        Assert.Equal($"127.0.0.1_{port}", listener.Name);
        Assert.Null(listener.WarmingState);
        SameProto(MeshResources.HttpListener($"127.0.0.1_{port}", port, "9090"), listener.ActiveState.Listener.Unpack<Proxy.Xds.Api.Listener.Listener>());

        var routes = dump.Configs[5].Unpack<Proxy.Xds.Api.Admin.RoutesConfigDump>();
        SameProto(MeshResources.HeaderRoutes("9090"), Assert.Single(routes.DynamicRouteConfigs).RouteConfig.Unpack<Proxy.Xds.Api.Route.RouteConfiguration>());

        // resource=, mask= and name_regex= as istioctl and operators use them.
        (status, body) = await AdminAsync(adminPort, "/config_dump?resource=dynamic_active_clusters&mask=cluster.name&name_regex=%5Eoutbound%5C%7C9090%5C%7Cv1");
        Assert.Equal(200, status);
        dump = s_dumpParser.Parse<Proxy.Xds.Api.Admin.ConfigDump>(body);
        var only = Assert.Single(dump.Configs).Unpack<Proxy.Xds.Api.Admin.ClustersConfigDump.Types.DynamicCluster>();
        SameProto(new Proxy.Xds.Api.Cluster.Cluster { Name = v1 }, only.Cluster.Unpack<Proxy.Xds.Api.Cluster.Cluster>());
        Assert.Empty(only.VersionInfo);
        Assert.Equal(404, (await AdminAsync(adminPort, "/config_dump?resource=nothing")).Status);
        Assert.Equal(400, (await AdminAsync(adminPort, "/config_dump?name_regex=(")).Status);
    }

        private static void SameProto(Google.Protobuf.IMessage expected, Google.Protobuf.IMessage actual) =>
        Assert.True(expected.Equals(actual), $"expected:\n{expected}\nactual:\n{actual}");

    [Fact]
    public async Task Istio15GoldenBootstrap_WithPilotAgent15CommandLine_Starts_AndItsPrometheusListenerReachesTheAdminStats()
    {
        int adminPort = AotProxyPort();
        int prometheusPort = AotProxyPort();
        string golden = File.ReadAllText(Xds.ControlPlane.IstioDumps.TestData("xds", "istio-1.5", "bootstrap-default.envoy-rev0.json"));
        string bootstrap = Path.Combine(Path.GetTempPath(), $"envoy-rev0-{Guid.NewGuid():N}.json");
        // The same file with its fixed ports moved to free ones (tests run side by side).
        File.WriteAllText(bootstrap, PortValue().Replace(golden, m => m.Groups[1].Value switch
        {
            "15000" => $"\"port_value\": {adminPort}",
            "15090" => $"\"port_value\": {prometheusPort}",
            _ => m.Value,
        }));
        await using var proxy = new ProxyProcess(HostBinary(), ["-c", bootstrap, "--restart-epoch", "0", "--drain-time-s", "1", "--parent-shutdown-time-s", "60",
            "--service-cluster", "productpage.default", "--service-node", "sidecar~10.1.1.1~productpage-v1-abc.default~default.svc.cluster.local",
            "--max-obj-name-len", "189", "--local-address-ip-version", "v4", "--log-format", "[Envoy (Epoch 0)] [%Y-%m-%d %T.%e][%t][%l][%n] %v",
            "-l", "warning", "--component-log-level", "misc:error", "--concurrency", "2"]);
        try
        {
            await UntilAdminAnswersAsync(adminPort, proxy);
            // istio-pilot does not resolve here: initializing, and it says so.
            var (status, body) = await AdminAsync(adminPort, "/ready");
            Assert.Equal(503, status);
            (_, body) = await AdminAsync(adminPort, "/server_info");
            using (JsonDocument info = JsonDocument.Parse(body))
            {
                Assert.Equal("sidecar~10.1.1.1~productpage-v1-abc.default~default.svc.cluster.local", info.RootElement.GetProperty("node").GetProperty("id").GetString());
                Assert.Equal("productpage.default", info.RootElement.GetProperty("node").GetProperty("cluster").GetString());
            }
            // The bootstrap's own 15090 listener routes /stats/prometheus to the admin endpoint.
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            string scraped = await http.GetStringAsync($"http://127.0.0.1:{prometheusPort}/stats/prometheus");
            Dictionary<string, double> metrics = ParsePrometheus(scraped);
            Assert.Equal(3, metrics["envoy_server_state"]);
            Assert.True(metrics["envoy_cluster_upstream_rq_total{envoy_cluster_name=\"prometheus_stats\"}"] >= 1);

            // SIGTERM: drained and exited with 0.
            var (killed, _, killError) = await Processes.RunAsync("kill", ["-TERM", proxy.Process.Id.ToString(CultureInfo.InvariantCulture)]);
            Assert.True(killed == 0, killError);
            await proxy.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(0, proxy.Process.ExitCode);
        }
        finally
        {
            File.Delete(bootstrap);
        }
    }

    [Theory]
    [InlineData("gradual")]
    [InlineData("immediate")]
    public async Task GracefulDrainUnderLoad_FailsNoRequest_ThenTheProcessExitsWithZero(string strategy)
    {
        int port = AotProxyPort();
        int adminPort = AotProxyPort();
        await using var proxy = new ProxyProcess(HostBinary(), ["--listen", $"127.0.0.1:{port}", "--upstream", $"127.0.0.1:{_v1Port}", "--upstream-protocol", "h2", "--admin-address", $"127.0.0.1:{adminPort}",
            "--drain-time-s", "3", "--drain-strategy", strategy, "--concurrency", "2"]);
        await UntilAdminAnswersAsync(adminPort, proxy);
        Assert.Equal("LIVE\n", (await AdminAsync(adminPort, "/ready")).Body);

        // Clients that keep their connections (HTTP/1.1 keep-alive and h2c), as applications do.
        using var h1 = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
        using var h2 = new HttpClient(new SocketsHttpHandler()) { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10), DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        int ok = 0, afterDrain = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        bool draining = false;
        using var stop = new CancellationTokenSource();
        async Task WorkAsync(HttpClient client)
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using HttpResponseMessage response = await client.GetAsync("/hello");
                    string body = await response.Content.ReadAsStringAsync();
                    if (response.IsSuccessStatusCode && body == "v1")
                    {
                        Interlocked.Increment(ref ok);
                        if (Volatile.Read(ref draining))
                        {
                            Interlocked.Increment(ref afterDrain);
                        }
                    }
                    else
                    {
                        failures.Enqueue($"{(int)response.StatusCode} HTTP/{response.Version} '{body}'");
                    }
                }
                catch (HttpRequestException e)
                {
                    failures.Enqueue($"{(client == h2 ? "h2" : "h1")}: {e.Message} {e.InnerException?.Message}");
                }
            }
        }
        Task[] workers = [.. Enumerable.Range(0, 8).Select(i => Task.Run(() => WorkAsync(i % 2 == 0 ? h1 : h2)))];
        await Task.Delay(700);
        Assert.Equal(200, (await AdminAsync(adminPort, "/drain_listeners?graceful", "POST")).Status);
        Volatile.Write(ref draining, true);
        Assert.Equal(503, (await AdminAsync(adminPort, "/ready")).Status);
        // The drain time is 3 s: clients keep being served (told to reconnect) for all of it.
        await Task.Delay(1500);
        await stop.CancelAsync();
        await Task.WhenAll(workers);
        Assert.True(failures.IsEmpty, $"{failures.Count} failed: {string.Join(" | ", failures.Distinct().Take(4))}");
        Assert.True(afterDrain > 50, $"only {afterDrain} requests while draining ({ok} in all)");
        await proxy.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(0, proxy.Process.ExitCode);
    }

    /// <summary>Sends raw octets to the admin port and reads until the server closes (or 5 s).</summary>
    private static Task<string> RawAsync(int port, string request) => RawAsyncWithin(port, request, TimeSpan.FromSeconds(5));

    private static async Task<string> RawAsyncWithin(int port, string request, TimeSpan limit)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes(request));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(limit);
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        }
        catch (OperationCanceledException)
        {
        }
        return System.Text.Encoding.ASCII.GetString(received.ToArray());
    }

    [Fact]
    public async Task AdminEndpoint_RefusesMalformedOrOversizedRequests_AndKeepsConnectionsAlive()
    {
        int port = AotProxyPort();
        int adminPort = AotProxyPort();
        await using var proxy = new ProxyProcess(HostBinary(), ["--listen", $"127.0.0.1:{port}", "--upstream", $"127.0.0.1:{_v1Port}", "--upstream-protocol", "h2", "--admin-address", $"127.0.0.1:{adminPort}"]);
        await UntilAdminAnswersAsync(adminPort, proxy);

        Assert.StartsWith("HTTP/1.1 400 ", await RawAsync(adminPort, "NONSENSE\r\n\r\n"), StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 400 ", await RawAsync(adminPort, "GET /ready HTTP/1.1\r\nno colon here\r\n\r\n"), StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 431 ", await RawAsync(adminPort, "GET /ready HTTP/1.1\r\nx-big: " + new string('a', 20_000) + "\r\n\r\n"), StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 413 ", await RawAsync(adminPort, "POST /healthcheck/fail HTTP/1.1\r\ncontent-length: 10000000\r\n\r\n"), StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 400 ", await RawAsync(adminPort, "POST /logging HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"), StringComparison.Ordinal);

        // Two requests on one connection (keep-alive), then HTTP/1.0 closes; HEAD has no body.
        string both = await RawAsync(adminPort, "GET /ready HTTP/1.1\r\nhost: a\r\n\r\nGET /ready HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
        Assert.Equal(2, both.Split("HTTP/1.1 200 OK").Length - 1);
        Assert.EndsWith("LIVE\n", both, StringComparison.Ordinal);
        string head = await RawAsync(adminPort, "HEAD /ready HTTP/1.0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200 ", head, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\n", head, StringComparison.Ordinal);

        // A head trickled in and never finished is cut off (10 s), not left holding a slot.
        var trickle = Stopwatch.StartNew();
        Assert.Equal("", await RawAsyncWithin(adminPort, "GET /ready HTTP/1.1\r\nx-slow: 1", TimeSpan.FromSeconds(20)));
        Assert.InRange(trickle.Elapsed, TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(15));

        // healthcheck/fail takes /ready down (pilot-agent's drain signal); ok brings it back.
        Assert.Equal(200, (await AdminAsync(adminPort, "/healthcheck/fail", "POST")).Status);
        Assert.Equal(503, (await AdminAsync(adminPort, "/ready")).Status);
        Assert.Equal(200, (await AdminAsync(adminPort, "/healthcheck/ok", "POST")).Status);
        Assert.Equal(200, (await AdminAsync(adminPort, "/ready")).Status);
        Assert.Equal(400, (await AdminAsync(adminPort, "/logging?level=loud", "POST")).Status);
        Assert.Equal(200, (await AdminAsync(adminPort, "/logging?level=debug", "POST")).Status);
        Assert.Contains("proxy: debug", (await AdminAsync(adminPort, "/logging", "POST")).Body, StringComparison.Ordinal);
        Assert.False(proxy.Process.HasExited);
    }

    [Fact]
    public async Task UpstreamBindConfig_SourceAddressAndSocketOptions_AreApplied()
    {
        // An upstream that answers with the address the connection came from.
        var (app, upstreamPort) = await VersionUpstream.StartAsync("peer", a => a.MapGet("/peer", (Microsoft.AspNetCore.Http.HttpContext c) => c.Connection.RemoteIpAddress!.ToString()));
        _apps.Add(app);
        int port = AotProxyPort();
        string bootstrap = $$"""
            static_resources:
              listeners:
              - name: l
                address: { socket_address: { address: 127.0.0.1, port_value: {{port}} } }
                filter_chains:
                - filters:
                  - name: envoy.filters.network.http_connection_manager
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                      stat_prefix: l
                      route_config: { virtual_hosts: [ { name: a, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: bound } } ] } ] }
                      http_filters: [ { name: envoy.filters.http.router } ]
              clusters:
              - name: bound
                type: STATIC
                connect_timeout: 1s
                http2_protocol_options: {}
                upstream_bind_config:
                  source_address: { address: 127.0.0.6, port_value: 0 }
                  socket_options: [ { description: SO_KEEPALIVE, level: 1, name: 9, int_value: 1 } ]
                load_assignment: { cluster_name: bound, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstreamPort}} } } } } ] } ] }
            """;
        await using var proxy = new ProxyProcess(HostBinary(), ["--config-yaml", bootstrap]);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            try
            {
                Assert.Equal("127.0.0.6", await http.GetStringAsync($"http://127.0.0.1:{port}/peer"));
                break;
            }
            catch (HttpRequestException) when (DateTime.UtcNow < deadline && !proxy.Process.HasExited)
            {
                await Task.Delay(50);
            }
        }
    }

    private static int AotProxyPort() => Abuse.AotProxy.FreePort();

    [GeneratedRegex("\"port_value\": (\\d+)")]
    private static partial Regex PortValue();

    [GeneratedRegex("^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\\\\n]|\\\\[\"\\\\n])*\")(,[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\\\\n]|\\\\[\"\\\\n])*\")*\\})? (?<value>\\S+)$")]
    private static partial Regex Sample();

    /// <summary>
    /// Parses Prometheus' text exposition format strictly: every sample belongs to a family declared by
    /// a # TYPE line before it, names and labels are well-formed, values are numbers, and a histogram's
    /// buckets never decrease. Keys are the sample as written, without the value.
    /// </summary>
    public static Dictionary<string, double> ParsePrometheus(string text)
    {
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        string? family = null;
        double lastBucket = -1;
        string? lastBucketSeries = null;
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0)
            {
                continue;
            }
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                string[] parts = line.Split(' ');
                Assert.Equal(4, parts.Length);
                Assert.Contains(parts[3], new[] { "counter", "gauge", "histogram", "summary", "untyped" });
                Assert.True(types.TryAdd(parts[2], parts[3]), $"a second # TYPE for {parts[2]}");
                family = parts[2];
                continue;
            }
            if (line.StartsWith('#'))
            {
                continue;
            }
            Match m = Sample().Match(line);
            Assert.True(m.Success, $"not a sample line: {line}");
            string name = m.Groups[1].Value;
            Assert.NotNull(family);
            bool belongs = name == family || (types[family!] == "histogram" && (name == family + "_bucket" || name == family + "_sum" || name == family + "_count"));
            Assert.True(belongs, $"{name} outside its family {family}");
            string valueText = m.Groups["value"].Value;
            double value = valueText switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                "NaN" => double.NaN,
                _ => double.Parse(valueText, NumberStyles.Float, CultureInfo.InvariantCulture),
            };
            string key = line[..line.LastIndexOf(' ')];
            Assert.True(samples.TryAdd(key, value), $"a repeated sample: {key}");
            if (name.EndsWith("_bucket", StringComparison.Ordinal))
            {
                string series = Regex.Replace(key, ",?le=\"[^\"]*\"", "");
                if (series == lastBucketSeries)
                {
                    Assert.True(value >= lastBucket, $"bucket went down: {line}");
                }
                lastBucketSeries = series;
                lastBucket = value;
            }
        }
        return samples;
    }
}
