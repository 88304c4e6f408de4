using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds;
using Proxy.Xds.Config;
using Xds.ControlPlane;

// The xDS bars of issue 6, measured over a real gRPC stream from tests/Xds.ControlPlane:
//   1. a push of N clusters, N endpoint sets and N routes: receipt → snapshot swap, and until the ACK;
//   2. a one-route change inside that route configuration: receipt → swap;
//   3. memory retained by the snapshot (and by the xDS state that keeps the resources) for N × 3 endpoints;
//   4. C routing changes pushed while clients send requests without pause: requests ok / failed.
// Usage: dotnet run -c Release --project perf/XdsPush -- [--services 1000] [--changes 10000] [--delta true]
int services = Arg("--services", 1000);
int changes = Arg("--changes", 10000);
bool delta = Arg("--delta", 1) != 0;

int Arg(string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? (args[i + 1] is "true" ? 1 : args[i + 1] is "false" ? 0 : int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture)) : fallback;
}

static int FreePort()
{
    using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
    return ((IPEndPoint)probe.LocalEndPoint!).Port;
}

// Upstream: one Kestrel (h2c) on three ports, the three endpoints of every cluster.
int[] ports = [FreePort(), FreePort(), FreePort()];
WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k =>
{
    foreach (int p in ports)
    {
        k.Listen(IPAddress.Loopback, p, o => o.Protocols = HttpProtocols.Http2);
    }
});
WebApplication upstream = builder.Build();
upstream.MapGet("/{**path}", () => "ok");
await upstream.StartAsync();

Console.WriteLine($"# xDS push bars: {services} clusters × {ports.Length} endpoints, {services} virtual hosts/routes, {(delta ? "Delta" : "SotW")} v3, {Environment.ProcessorCount} cores, .NET {Environment.Version}");

// 3. Memory first, in a quiet process: the state and snapshot for the mesh, built from resources decoded
// from their wire bytes (so nothing is shared with the generator's objects).
{
    var (clusters, assignments, routes) = MeshResources.BigMesh(services, ports, "9090");
    byte[][] c = [.. clusters.Select(m => m.ToByteArray())];
    byte[][] a = [.. assignments.Select(m => m.ToByteArray())];
    byte[] r = routes.ToByteArray();
    byte[] l = MeshResources.HttpListener("mem", FreePort(), "9090").ToByteArray();
    clusters = null!;
    assignments = null!;
    routes = null!;
    long before = Retained();
    object?[] keep = new object?[1];
    ProxySnapshot snapshot = BuildState(c, a, r, l, keep);
    long withState = Retained() - before;
    if (args.Contains("--profile"))
    {
        Profile((XdsState)keep[0]!, services, ports);
    }
    keep[0] = null;
    long snapshotOnly = Retained() - before;
    Console.WriteLine($"memory: snapshot {snapshotOnly / 1048576.0:F1} MB ({snapshot.Clusters.Count} clusters, {snapshot.Clusters.Values.Sum(x => x.Endpoints.Length)} endpoints, {snapshot.Listeners.Count} listener, {snapshot.Listeners[0].Routes.VirtualHosts.Count} virtual hosts); with the xDS state that keeps the resources for diffing {withState / 1048576.0:F1} MB");
    GC.KeepAlive(snapshot);
    GC.KeepAlive(c);
    GC.KeepAlive(a);
    GC.KeepAlive(r);
}

[System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
static ProxySnapshot BuildState(byte[][] c, byte[][] a, byte[] r, byte[] l, object?[] keep)
{
    var state = new XdsState(new UpstreamPools(), [], []);
    state.Apply(XdsResourceType.Cluster, [.. c.Select(b => Proxy.Xds.Api.Cluster.Cluster.Parser.ParseFrom(b)).Select(m => new XdsResource(m.Name, "1", m))], []);
    state.Apply(XdsResourceType.Endpoint, [.. a.Select(b => Proxy.Xds.Api.Endpoint.ClusterLoadAssignment.Parser.ParseFrom(b)).Select(m => new XdsResource(m.ClusterName, "1", m))], []);
    Proxy.Xds.Api.Listener.Listener listener = Proxy.Xds.Api.Listener.Listener.Parser.ParseFrom(l);
    state.Apply(XdsResourceType.Listener, [new XdsResource(listener.Name, "1", listener)], []);
    var (shell, hosts) = RouteConfigurationParts.Split(r);
    state.Apply(XdsResourceType.Route, [new XdsResource(shell.Name, "1", shell, hosts)], []);
    keep[0] = state;
    return state.Build()!;
}

// In-process (no transport): a one-route change split, applied and built, phase by phase.
static void Profile(XdsState state, int services, int[] ports)
{
    var (_, _, routes) = MeshResources.BigMesh(services, ports, "9090");
    double split = 0, apply = 0, build = 0;
    const int Rounds = 200;
    for (int i = 0; i < Rounds; i++)
    {
        routes.VirtualHosts[services / 2].Routes[0].Route_.Cluster = $"outbound|9090||svc{i % 2}.ns{i % 2}.svc.cluster.local";
        byte[] bytes = routes.ToByteArray();
        long t0 = Stopwatch.GetTimestamp();
        var (shell, hosts) = RouteConfigurationParts.Split(bytes);
        long t1 = Stopwatch.GetTimestamp();
        state.Apply(XdsResourceType.Route, [new XdsResource("9090", "x", shell, hosts)], []);
        long t2 = Stopwatch.GetTimestamp();
        state.Build();
        long t3 = Stopwatch.GetTimestamp();
        if (i >= Rounds / 2)
        {
            split += Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds;
            apply += Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds;
            build += Stopwatch.GetElapsedTime(t2, t3).TotalMilliseconds;
        }
    }
    var mesh = MeshResources.BigMesh(services, ports, "p");
    var pools = new UpstreamPools();
    var loader = new BootstrapLoader(pools) { Dynamic = true };
    for (int round = 0; round < 3; round++)
    {
        long c0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < services; i++)
        {
            loader.LoadCluster(ConfigNode.FromMessage(mesh.Clusters[i], "c"), ConfigNode.FromMessage(mesh.Endpoints[i], "e"));
        }
        long c1 = Stopwatch.GetTimestamp();
        for (int i = 0; i < services; i++)
        {
            loader.LoadCluster(ConfigNode.FromMessage(mesh.Clusters[i], "c"));
        }
        long c2 = Stopwatch.GetTimestamp();
        int n = 0;
        for (int i = 0; i < services; i++)
        {
            ConfigNode node = ConfigNode.FromMessage(mesh.Clusters[i], "c");
            foreach (string f in new[] { "name", "type", "connect_timeout", "lb_policy", "common_lb_config", "health_checks", "transport_socket", "circuit_breakers", "outlier_detection", "load_assignment", "hosts", "http2_protocol_options" })
            {
                n += node[f].Exists ? 1 : 0;
            }
        }
        long c3 = Stopwatch.GetTimestamp();
        for (int i = 0; i < services; i++)
        {
            loader.LoadVirtualHost(ConfigNode.FromMessage(mesh.Routes.VirtualHosts[i], "v"), new Dictionary<string, Cluster>());
        }
        long c4 = Stopwatch.GetTimestamp();
        Console.WriteLine($"profile round {round}: {services} clusters with endpoints {Stopwatch.GetElapsedTime(c0, c1).TotalMilliseconds:F1} ms, without {Stopwatch.GetElapsedTime(c1, c2).TotalMilliseconds:F1} ms, 12 field probes each {Stopwatch.GetElapsedTime(c2, c3).TotalMilliseconds:F1} ms ({n}), {services} virtual hosts {Stopwatch.GetElapsedTime(c3, c4).TotalMilliseconds:F1} ms");
    }
    {
        ConfigNode probe = ConfigNode.FromMessage(mesh.Clusters[0], "c");
        foreach (string f in new[] { "name", "health_checks", "transport_socket", "lb_policy", "connect_timeout", "circuit_breakers" })
        {
            int hits = 0;
            long p0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < 1_000_000; i++)
            {
                hits += probe[f].Exists ? 1 : 0;
            }
            Console.WriteLine($"probe {f}: {Stopwatch.GetElapsedTime(p0).TotalMilliseconds:F0} ns each ({hits})");
        }
    }
    const int N = Rounds / 2;
    Console.WriteLine($"profile (one-route change in-process, no transport, mean of {N}): split {split / N:F2} ms, apply {apply / N:F2} ms, build {build / N:F2} ms");
}

static long Retained()
{
    for (int i = 0; i < 3; i++)
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
    }
    return GC.GetTotalMemory(true);
}

// 1. The big push over gRPC, to the proxy in this process (JIT) or, with --proxy PATH, to the shipped
// binary (Native AOT) in its own process: then the receipt→swap figures are the proxy's own log lines.
await using ControlPlane plane = await ControlPlane.StartAsync();
int listenPort = FreePort();
var updates = new System.Collections.Concurrent.ConcurrentQueue<XdsUpdate>();
string? proxyPath = Array.IndexOf(args, "--proxy") is int pi and >= 0 ? args[pi + 1] : null;
await using IAsyncDisposable proxy = proxyPath == null ? await InProcessAsync() : StartProcess(proxyPath);

async Task<IAsyncDisposable> InProcessAsync()
{
    var pools = new UpstreamPools();
    var server = new ProxyServer(new ProxySnapshot([], [], 0), pools);
    server.Start();
    var node = new Proxy.Xds.Api.Core.Node { Id = "sidecar~127.0.0.1~bench.default~default.svc.cluster.local", Cluster = "bench" };
    var client = new AdsClient(new XdsState(pools, [], []), new AdsBootstrap(plane.Target, delta, false, true, true, true, node), server.ApplyAsync);
    client.Updated += updates.Enqueue;
    await Task.Yield();
    return new Owned(async () =>
    {
        await client.DisposeAsync();
        await server.DisposeAsync();
    });
}

IAsyncDisposable StartProcess(string path)
{
    string bootstrap = $$"""
        node: { id: "sidecar~127.0.0.1~bench.default~default.svc.cluster.local", cluster: bench }
        dynamic_resources:
          ads_config:
            api_type: {{(delta ? "DELTA_GRPC" : "GRPC")}}
            transport_api_version: V3
            set_node_on_first_message_only: true
            grpc_services: [ { envoy_grpc: { cluster_name: xds-grpc } } ]
          cds_config: { ads: {}, resource_api_version: V3 }
          lds_config: { ads: {}, resource_api_version: V3 }
        static_resources:
          clusters:
          - name: xds-grpc
            type: STATIC
            connect_timeout: 1s
            http2_protocol_options: {}
            load_assignment: { cluster_name: xds-grpc, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{plane.Port}} } } } } ] } ] }
        """;
    var psi = new ProcessStartInfo(path) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
    foreach (string a in new[] { "--config-yaml", bootstrap, "-l", "debug", "--concurrency", "1" })
    {
        psi.ArgumentList.Add(a);
    }
    Process process = Process.Start(psi)!;
    var line = new System.Text.RegularExpressions.Regex(@"xds: (\w+) update applied: (\d+) resources, (\d+) removed, ([\d.]+) ms to (swap|no change)");
    process.ErrorDataReceived += (_, e) =>
    {
        if (e.Data != null && line.Match(e.Data) is { Success: true } m)
        {
            updates.Enqueue(new XdsUpdate(Enum.Parse<XdsResourceType>(m.Groups[1].Value), int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture),
                int.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture), true, null,
                TimeSpan.FromMilliseconds(double.Parse(m.Groups[4].Value, System.Globalization.CultureInfo.InvariantCulture)), m.Groups[5].Value == "swap"));
        }
    };
    process.BeginErrorReadLine();
    process.BeginOutputReadLine();
    Console.WriteLine($"proxy: {path} (pid {process.Id})");
    return new Owned(async () =>
    {
        process.Kill();
        await process.WaitForExitAsync();
        Console.WriteLine($"proxy: peak RSS {PeakRss(process.Id)}");
        process.Dispose();
    }, () => PeakRss(process.Id));
}

static string PeakRss(int pid)
{
    try
    {
        return File.ReadAllLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmHWM", StringComparison.Ordinal))?.Split(':')[1].Trim() ?? "?";
    }
    catch (IOException)
    {
        return "?";
    }
}

async Task<bool> Listening(int port)
{
    try
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return true;
    }
    catch (SocketException)
    {
        return false;
    }
}

async Task WaitListening(int port, bool listening)
{
    for (int i = 0; i < 6000 && await Listening(port) != listening; i++)
    {
        await Task.Delay(10);
    }
}

await ControlPlane.WaitForAsync(() => plane.StreamsOpened > 0, "the stream");
await Task.Delay(200);

// Warm-up (in process, the JIT compiles the paths once; the shipped binary is Native AOT and has no such
// first time): a mesh of other names pushed and removed.
var warm = MeshResources.BigMesh(services, ports, "warm");
foreach (var cl in warm.Clusters)
{
    cl.Name = "warm-" + cl.Name;
    cl.EdsClusterConfig.ServiceName = cl.Name;
}
foreach (var cla in warm.Endpoints)
{
    cla.ClusterName = "warm-" + cla.ClusterName;
}
int warmPort = FreePort();
plane.Set(XdsResourceType.Cluster, warm.Clusters);
plane.Set(XdsResourceType.Endpoint, warm.Endpoints);
plane.Set(XdsResourceType.Listener, MeshResources.HttpListener("warm", warmPort, "warm"));
plane.Set(XdsResourceType.Route, warm.Routes);
await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= 1, "the warm-up", TimeSpan.FromSeconds(60));
await WaitListening(warmPort, true);
XdsUpdate[] cold = [.. updates];
plane.Remove(XdsResourceType.Listener, "warm");
plane.Remove(XdsResourceType.Route, "warm");
plane.Remove(XdsResourceType.Cluster, [.. warm.Clusters.Select(x => x.Name)]);
plane.Remove(XdsResourceType.Endpoint, [.. warm.Endpoints.Select(x => x.ClusterName)]);
await WaitListening(warmPort, false);
await Task.Delay(1000);
Console.WriteLine($"first push (cold{(proxyPath == null ? ", JIT compiling" : "")}): receipt→swap " + string.Join(", ", cold.Select(u => $"{u.Type} {u.Resources} {u.ReceiptToSwap.TotalMilliseconds:F1} ms")) + $"; sum {cold.Sum(u => u.ReceiptToSwap.TotalMilliseconds):F1} ms");

// The push, five times: each replaces every cluster, endpoint set and virtual host by new ones (cluster
// names change, so every route changes), as a mesh-wide change would. The median is quoted.
var mesh = MeshResources.BigMesh(services, ports, "9090");
var sums = new List<double>();
var walls = new List<double>();
for (int round = 0; round < 5; round++)
{
    mesh = MeshResources.BigMesh(services, ports, "9090");
    foreach (var cl in mesh.Clusters)
    {
        cl.Name = $"r{round}-" + cl.Name;
        cl.EdsClusterConfig.ServiceName = cl.Name;
    }
    foreach (var cla in mesh.Endpoints)
    {
        cla.ClusterName = $"r{round}-" + cla.ClusterName;
    }
    foreach (var vh in mesh.Routes.VirtualHosts)
    {
        vh.Routes[0].Route_.Cluster = $"r{round}-" + vh.Routes[0].Route_.Cluster;
    }
    int routeAcks = plane.Responses(XdsResourceType.Route).Acks;
    updates.Clear();
    var wall = Stopwatch.StartNew();
    plane.Replace(XdsResourceType.Cluster, mesh.Clusters);
    plane.Replace(XdsResourceType.Endpoint, mesh.Endpoints);
    if (round == 0)
    {
        plane.Set(XdsResourceType.Listener, MeshResources.HttpListener("bench", listenPort, "9090"));
    }
    plane.Set(XdsResourceType.Route, mesh.Routes);
    await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > routeAcks, "the route ACK", TimeSpan.FromSeconds(60));
    wall.Stop();
    await WaitListening(listenPort, true);
    await Task.Delay(300);
    XdsUpdate[] push = [.. updates];
    sums.Add(push.Sum(u => u.ReceiptToSwap.TotalMilliseconds));
    walls.Add(wall.Elapsed.TotalMilliseconds);
    Console.WriteLine($"push {round}: {push.Length} responses, all accepted: {push.All(u => u.Accepted)}; receipt→swap " +
        string.Join(", ", push.Select(u => $"{u.Type} {u.Resources}{(u.Removed > 0 ? $"(-{u.Removed})" : "")} {u.ReceiptToSwap.TotalMilliseconds:F1} ms")) +
        $"; sum {sums[^1]:F1} ms; first Set → RDS ACK at the control plane {walls[^1]:F1} ms");
}
if (proxy is Owned owned && proxyPath != null)
{
    Console.WriteLine($"proxy: peak RSS {owned.Describe()}");
}
sums.Sort();
walls.Sort();
Console.WriteLine($"push of {services} clusters + {services} endpoint sets + {services} routes: receipt→swap summed over the responses, median of 5 {sums[2]:F1} ms (min {sums[0]:F1}, max {sums[4]:F1}); control plane's first Set → RDS ACK median {walls[2]:F1} ms");

// Traffic goes through: a request to svc7.
using var http = new HttpClient(new SocketsHttpHandler
{
    ConnectCallback = async (_, token) =>
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(IPAddress.Loopback, listenPort, token);
        return new NetworkStream(socket, ownsSocket: true);
    },
    EnableMultipleHttp2Connections = true,
})
{ DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
Console.WriteLine($"check: GET http://svc7:9090/ → {(int)(await http.GetAsync(new Uri("http://svc7:9090/"))).StatusCode}");

// 2. One-route change, repeated: the route of one virtual host points at another cluster.
var oneRoute = new List<double>();
for (int i = 0; i < 50; i++)
{
    mesh.Routes.VirtualHosts[services / 2].Routes[0].Route_.Cluster = mesh.Clusters[i % 2 == 0 ? 1 : 0].Name;
    updates.Clear();
    int acks = plane.Responses(XdsResourceType.Route).Acks;
    plane.Set(XdsResourceType.Route, mesh.Routes);
    await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > acks, "ACK");
    await ControlPlane.WaitForAsync(() => updates.Any(u => u.Type == XdsResourceType.Route), "the proxy's log line");
    oneRoute.Add(updates.First(u => u.Type == XdsResourceType.Route).ReceiptToSwap.TotalMilliseconds);
}
oneRoute.Sort();
Console.WriteLine($"one-route change (one RouteConfiguration of {services} virtual hosts resent): receipt→swap median {oneRoute[oneRoute.Count / 2]:F2} ms, p90 {oneRoute[oneRoute.Count * 9 / 10]:F2} ms, max {oneRoute[^1]:F2} ms over {oneRoute.Count}");

// 4. Routing changes under continuous load.
using var stop = new CancellationTokenSource();
long ok = 0, failed = 0;
Task[] load = [.. Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
{
    var target = new Uri($"http://svc{services / 2}:9090/w{w}");
    while (!stop.IsCancellationRequested)
    {
        try
        {
            using HttpResponseMessage response = await http.GetAsync(target);
            Interlocked.Increment(ref response.IsSuccessStatusCode ? ref ok : ref failed);
        }
        catch (HttpRequestException)
        {
            Interlocked.Increment(ref failed);
        }
    }
}))];
var swaps = new List<double>(changes);
var changeClock = Stopwatch.StartNew();
for (int i = 0; i < changes; i++)
{
    mesh.Routes.VirtualHosts[services / 2].Routes[0].Route_.Cluster = mesh.Clusters[i % 2 == 0 ? 1 : 0].Name;
    int acks = plane.Responses(XdsResourceType.Route).Acks;
    updates.Clear();
    plane.Set(XdsResourceType.Route, mesh.Routes);
    await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > acks, "ACK", TimeSpan.FromSeconds(30));
    await ControlPlane.WaitForAsync(() => updates.Any(u => u.Type == XdsResourceType.Route), "the proxy's log line");
    if (updates.FirstOrDefault(u => u.Type == XdsResourceType.Route) is { Accepted: true } u)
    {
        swaps.Add(u.ReceiptToSwap.TotalMilliseconds);
    }
}
changeClock.Stop();
await stop.CancelAsync();
await Task.WhenAll(load);
swaps.Sort();
Console.WriteLine($"under load: {changes} routing changes pushed and ACKed in {changeClock.Elapsed.TotalSeconds:F1} s (receipt→swap median {swaps[swaps.Count / 2]:F2} ms, max {swaps[^1]:F2} ms); requests meanwhile: {ok} ok, {failed} failed; NACKs {plane.Responses(XdsResourceType.Route).Nacks}");

await upstream.StopAsync();

/// <summary>Runs a cleanup when disposed.</summary>
internal sealed class Owned(Func<Task> dispose, Func<string>? describe = null) : IAsyncDisposable
{
    public string Describe() => describe?.Invoke() ?? "";

    public async ValueTask DisposeAsync() => await dispose();
}
