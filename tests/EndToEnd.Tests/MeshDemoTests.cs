using System.Diagnostics;
using System.Net;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using Layotto.Runtime.V1;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Runtime;
using Proxy.Core.Upstream;
using Proxy.Xds;
using Proxy.Xds.Config;
using Proxy.Xds.Mesh;
using Xds.ControlPlane;

namespace EndToEnd.Tests;

/// <summary>
/// The seed scenario with everything real: Istio YAML in a directory → the embedded control plane
/// (translation + our ADS server) → a sidecar (our proxy driven over ADS, runtime API on) → an app's
/// InvokeService calls → two versions of `server`. Routing changes by saving YAML files.
/// </summary>
public sealed class MeshDemoTests : IAsyncLifetime
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);

    private LayottoServer _v1 = null!;
    private LayottoServer _v2 = null!;
    private string _dir = null!;
    private int _servicePort;
    private MeshControlPlane _mesh = null!;
    private ProxyServer _proxy = null!;
    private AdsClient _ads = null!;
    private RuntimeApiServer _runtime = null!;
    private GrpcChannel _channel = null!;
    private Runtime.RuntimeClient _client = null!;

    private static string Repo()
    {
        string dir = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(dir, "Layotto.Fast.sln")))
        {
            dir = Path.GetDirectoryName(dir.TrimEnd(Path.DirectorySeparatorChar)) ?? throw new InvalidOperationException("repository root not found");
        }
        return dir;
    }

    private static string Routing(string file) => Path.Combine(Repo(), "examples", "istio", "routing", file);

    public async Task InitializeAsync()
    {
        _v1 = await LayottoServer.StartAsync("v1");
        _v2 = await LayottoServer.StartAsync("v2");
        _servicePort = Abuse.AotProxy.FreePort();
        _dir = Directory.CreateTempSubdirectory("mesh-test-").FullName;
        // The demo's service, with the workloads on this test's ports (the demo uses 127.0.0.2/3:9090).
        File.WriteAllText(Path.Combine(_dir, "server.yaml"), $$"""
            apiVersion: networking.istio.io/v1beta1
            kind: ServiceEntry
            metadata: { name: server, namespace: default }
            spec:
              hosts: [server.default.svc.cluster.local]
              resolution: STATIC
              ports: [ { number: {{_servicePort}}, name: http, protocol: HTTP } ]
              workloadSelector: { labels: { app: server } }
            ---
            apiVersion: networking.istio.io/v1alpha3
            kind: WorkloadEntry
            metadata: { name: server-v1, namespace: default }
            spec: { address: 127.0.0.1, ports: { http: {{_v1.Port}} }, labels: { app: server, version: v1 } }
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: { name: server-v2, namespace: default }
            spec: { address: 127.0.0.1, ports: { http: {{_v2.Port}} }, labels: { app: server, version: v2 } }
            """);
        _mesh = new MeshControlPlane(_dir, new IPEndPoint(IPAddress.Loopback, 0));
        _mesh.Start(TimeSpan.FromMilliseconds(100));
        var pools = new UpstreamPools();
        _proxy = new ProxyServer(new ProxySnapshot([], [], 0), pools);
        _proxy.Start();
        var node = new Proxy.Xds.Api.Core.Node { Id = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local", Cluster = "client.default" };
        _ads = new AdsClient(new XdsState(pools, [], []), new AdsBootstrap($"http://127.0.0.1:{((IPEndPoint)_mesh.Ads.EndPoint).Port}", true, false, true, true, true, node), _proxy.ApplyAsync, TimeSpan.FromSeconds(1));
        _runtime = new RuntimeApiServer(new IPEndPoint(IPAddress.Loopback, 0), _proxy.Snapshots);
        _runtime.Start();
        _channel = GrpcChannel.ForAddress($"http://127.0.0.1:{((IPEndPoint)_runtime.EndPoint).Port}");
        _client = new Runtime.RuntimeClient(_channel);
        await ControlPlane.WaitForAsync(() => _proxy.Listeners.Count == 1, "the sidecar's outbound listener");
    }

    public async Task DisposeAsync()
    {
        _channel.Dispose();
        await _runtime.DisposeAsync();
        await _ads.DisposeAsync();
        await _proxy.DisposeAsync();
        await _mesh.DisposeAsync();
        await _v1.DisposeAsync();
        await _v2.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<string> CallAsync(string? name = null)
    {
        var metadata = new Metadata();
        if (name != null)
        {
            metadata.Add("name", name);
        }
        var request = new InvokeServiceRequest { Id = $"server.default.svc.cluster.local:{_servicePort}", Message = new CommonInvokeRequest { Method = "/hello", Data = new Any { Value = ByteString.Empty } } };
        InvokeResponse response = await _client.InvokeServiceAsync(request, metadata).ResponseAsync.WaitAsync(Limit);
        return response.Data.Value.ToStringUtf8();
    }

    private void Apply(string file) => File.Copy(Routing(file), Path.Combine(_dir, file), overwrite: true);

    private async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Limit;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}; mesh error: {_mesh.LastError}");
            await Task.Delay(20);
        }
    }

    /// <summary>Waits until ten calls in a row answer from <paramref name="version"/> (a balanced route answers so by chance 1 in 1,024).</summary>
    private Task SettledAsync(string version, string? name = null) => EventuallyAsync(async () =>
    {
        for (int i = 0; i < 10; i++)
        {
            if (!(await CallAsync(name)).EndsWith(version, StringComparison.Ordinal))
            {
                return false;
            }
        }
        return true;
    }, $"every call to {version}");

    [Fact]
    public async Task NoVirtualService_Balanced_ThenAllToV1_ThenByHeader()
    {
        var seen = new HashSet<string>();
        await EventuallyAsync(async () =>
        {
            string answer = await CallAsync();
            Assert.StartsWith("GET /hello \n hello, i am layotto v", answer, StringComparison.Ordinal);
            seen.Add(answer[^2..]);
            return seen.Count == 2;
        }, "answers from both versions without a VirtualService");

        Apply("destination-rule.yaml");
        Apply("virtual-service-all-v1.yaml");
        await SettledAsync("v1");
        for (int i = 0; i < 20; i++)
        {
            Assert.EndsWith("layotto v1", await CallAsync(i % 2 == 0 ? null : "layotto"), StringComparison.Ordinal);
        }

        File.Delete(Path.Combine(_dir, "virtual-service-all-v1.yaml"));
        Apply("virtual-service-header.yaml");
        await SettledAsync("v2");
        for (int i = 0; i < 20; i++)
        {
            Assert.EndsWith("layotto v1", await CallAsync("layotto"), StringComparison.Ordinal);
            Assert.EndsWith("layotto v2", await CallAsync("someone-else"), StringComparison.Ordinal);
            Assert.EndsWith("layotto v2", await CallAsync(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task YamlSwitchedUnderSteadyCalls_NoCallFails()
    {
        Apply("destination-rule.yaml");
        Apply("virtual-service-all-v1.yaml");
        await SettledAsync("v1");
        using var stop = new CancellationTokenSource();
        int ok = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Task[] callers = [.. Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    string answer = await CallAsync();
                    if (answer.EndsWith("v1", StringComparison.Ordinal) || answer.EndsWith("v2", StringComparison.Ordinal))
                    {
                        Interlocked.Increment(ref ok);
                    }
                    else
                    {
                        failures.Enqueue(answer);
                    }
                }
                catch (RpcException e)
                {
                    failures.Enqueue(e.Status.ToString());
                }
            }
        }))];
        string allV1 = Path.Combine(_dir, "virtual-service-all-v1.yaml");
        string header = Path.Combine(_dir, "virtual-service-header.yaml");
        for (int i = 0; i < 10; i++)
        {
            // Swap the VirtualService: the old one out and the new one in, in one rename.
            string from = i % 2 == 0 ? allV1 : header;
            string to = i % 2 == 0 ? header : allV1;
            File.Copy(Routing(Path.GetFileName(to)), to + ".tmp", overwrite: true);
            File.Delete(from);
            File.Move(to + ".tmp", to, overwrite: true);
            string want = i % 2 == 0 ? "v2" : "v1";
            await SettledAsync(want);
        }
        await stop.CancelAsync();
        await Task.WhenAll(callers);
        Assert.Empty(failures);
        Assert.True(ok > 50, $"only {ok} calls");
    }

    [Fact]
    public async Task BrokenYaml_IsReportedWithFileResourceAndField_AndTheLastGoodConfigServes()
    {
        Apply("destination-rule.yaml");
        Apply("virtual-service-all-v1.yaml");
        await SettledAsync("v1");
        long version = _mesh.Ads.Version;
        string file = Path.Combine(_dir, "virtual-service-all-v1.yaml");
        File.WriteAllText(file, File.ReadAllText(Routing("virtual-service-all-v1.yaml")).Replace("subset: v1", "subset: v3", StringComparison.Ordinal));
        await EventuallyAsync(() => Task.FromResult(_mesh.LastError != null), "the error");
        Assert.Contains("virtual-service-all-v1.yaml: VirtualService default/server", _mesh.LastError, StringComparison.Ordinal);
        Assert.Contains("subset 'v3' of 'server.default.svc.cluster.local' is not defined by a DestinationRule", _mesh.LastError, StringComparison.Ordinal);
        Assert.Equal(version, _mesh.Ads.Version);
        Assert.EndsWith("v1", await CallAsync(), StringComparison.Ordinal);

        File.WriteAllText(file, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: server }\nspec: { hosts: [server], http: [ { route: [ { destination: { host: server, subset: v2 } } ], mirrorr: {} } ] }\n");
        await EventuallyAsync(() => Task.FromResult(_mesh.LastError?.Contains("field 'mirrorr' is not translated", StringComparison.Ordinal) == true), "the unknown field");
        Assert.Equal(version, _mesh.Ads.Version);
        Assert.EndsWith("v1", await CallAsync(), StringComparison.Ordinal);
        File.WriteAllText(file, "kind: [unclosed");
        await EventuallyAsync(() => Task.FromResult(_mesh.LastError?.Contains("not valid YAML", StringComparison.Ordinal) == true), "the YAML error");
        Assert.Equal(version, _mesh.Ads.Version);
        string last = await CallAsync();
        Assert.True(last.EndsWith("v1", StringComparison.Ordinal), $"{last}; version {version} → {_mesh.Ads.Version}; error {_mesh.LastError}");
    }
}
