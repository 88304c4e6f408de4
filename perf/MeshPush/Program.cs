using System.Diagnostics;
using System.Net;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds;
using Proxy.Xds.Config;
using Proxy.Xds.Mesh;

// The embedded control plane's bars (issue 12), over real ADS streams on loopback:
//   1. N services × 3 endpoints, a DestinationRule (2 subsets) and a VirtualService each, in YAML, served
//      to P proxies: time from start until every proxy has every route;
//   2. a one-route change (one VirtualService file rewritten): from the write until every proxy's
//      published snapshot routes the new way — with the directory poll (what a user sees), and from the
//      control plane's reload (translation + push + every proxy's swap).
// Usage: dotnet run -c Release --project perf/MeshPush -- [--services 1000] [--proxies 10] [--changes 20] [--delta true]
int services = Arg("--services", 1000);
if (args.Contains("--debug")) { Proxy.Core.Diagnostics.ProxyLog.Level = Proxy.Core.Diagnostics.LogLevel.Debug; }
int proxies = Arg("--proxies", 10);
int changes = Arg("--changes", 20);
bool delta = Arg("--delta", 1) != 0;

int Arg(string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? (args[i + 1] is "true" ? 1 : args[i + 1] is "false" ? 0 : int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture)) : fallback;
}

string dir = Directory.CreateTempSubdirectory("mesh-push-").FullName;
string VirtualService(int i, string subset) => $$"""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: { name: svc{{i}}, namespace: ns{{i % 20}} }
    spec:
      hosts: [svc{{i}}.ns{{i % 20}}.svc.cluster.local]
      http:
      - match: [ { headers: { name: { exact: layotto } } } ]
        route: [ { destination: { host: svc{{i}}.ns{{i % 20}}.svc.cluster.local, subset: v1 } } ]
      - route: [ { destination: { host: svc{{i}}.ns{{i % 20}}.svc.cluster.local, subset: {{subset}} } } ]
    """;
for (int i = 0; i < services; i++)
{
    string host = $"svc{i}.ns{i % 20}.svc.cluster.local";
    File.WriteAllText(Path.Combine(dir, $"svc{i}.yaml"), $$"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: { name: svc{{i}}, namespace: ns{{i % 20}} }
        spec:
          hosts: [{{host}}]
          resolution: STATIC
          ports: [ { number: 9090, name: http } ]
          endpoints:
          - { address: 10.{{i / 250}}.{{i % 250}}.1, labels: { version: v1 } }
          - { address: 10.{{i / 250}}.{{i % 250}}.2, labels: { version: v2 } }
          - { address: 10.{{i / 250}}.{{i % 250}}.3, labels: { version: v2 } }
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: { name: svc{{i}}, namespace: ns{{i % 20}} }
        spec:
          host: {{host}}
          subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]
        """);
    File.WriteAllText(Path.Combine(dir, $"vs{i}.yaml"), VirtualService(i, "v2"));
}
Console.WriteLine($"# mesh push bars: {services} services × 3 endpoints, a DestinationRule and a VirtualService each, {proxies} proxies, {(delta ? "Delta" : "SotW")} ADS v3, {Environment.ProcessorCount} cores, .NET {Environment.Version}");

{
    var translator = new IstioTranslator { BindOutboundListeners = false };
    var files = Directory.EnumerateFiles(dir).Select(f => (f, File.ReadAllText(f))).ToList();
    for (int i = 0; i < 3; i++)
    {
        var t = Stopwatch.StartNew();
        var resources = translator.Translate(files);
        long translate = t.ElapsedMilliseconds;
        t.Restart();
        var ads = new Proxy.Xds.Server.AdsServer(new IPEndPoint(IPAddress.Loopback, 0));
        ads.Publish(resources);
        Console.WriteLine($"translate {files.Count} files: {translate} ms; publish (pack + hash {resources.Count} resources): {t.ElapsedMilliseconds} ms");
        await ads.DisposeAsync();
    }
}
var started = Stopwatch.StartNew();
var mesh = new MeshControlPlane(dir, new IPEndPoint(IPAddress.Loopback, 0), bindOutboundListeners: false);
mesh.Start(TimeSpan.FromMilliseconds(200));
Console.WriteLine($"translate + serve {services} services: {started.ElapsedMilliseconds} ms (version {mesh.Ads.Version})");

// The proxies: our proxy's xDS client and snapshot, each with its own pools and state, in this process.
string probeHost = "svc7.ns7.svc.cluster.local";
var sidecars = new List<(ProxyServer Server, AdsClient Client, string[] Cluster)>();
var startedAt = Stopwatch.StartNew();
for (int p = 0; p < proxies; p++)
{
    var pools = new UpstreamPools();
    var server = new ProxyServer(new ProxySnapshot([], [], 0), pools);
    string[] cluster = [""];
    var node = new Proxy.Xds.Api.Core.Node { Id = $"sidecar~127.0.0.{p + 1}~app-{p}.default~default.svc.cluster.local", Cluster = "app.default" };
    var client = new AdsClient(new XdsState(pools, [], []), new AdsBootstrap($"http://127.0.0.1:{((IPEndPoint)mesh.Ads.EndPoint).Port}", delta, false, true, true, true, node),
        async snapshot =>
        {
            await server.ApplyAsync(snapshot);
            // What a request for the probe host without the header would take now.
            RouteConfiguration? routes = snapshot.FindRoutesFor(System.Text.Encoding.ASCII.GetBytes(probeHost + ":9090"));
            Route? route = routes?.FindVirtualHost(System.Text.Encoding.ASCII.GetBytes(probeHost))?.FindRoute("/"u8, new Proxy.Http2.HeaderList(), false);
            Volatile.Write(ref cluster[0], route?.Action.PickCluster(new Proxy.Http2.HeaderList(), out _)?.Name ?? "");
        }, TimeSpan.FromSeconds(1));
    sidecars.Add((server, client, cluster));
}
async Task<long> UntilAllAsync(string clusterName, Stopwatch clock)
{
    while (sidecars.Any(s => Volatile.Read(ref s.Cluster[0]) != clusterName))
    {
        if (clock.Elapsed > TimeSpan.FromSeconds(60))
        {
            throw new TimeoutException($"not every proxy routes to {clusterName}");
        }
        await Task.Delay(1);
    }
    return clock.ElapsedTicks * 1_000_000 / Stopwatch.Frequency;
}
long initial = await UntilAllAsync($"outbound|9090|v2|{probeHost}", startedAt);
Console.WriteLine($"initial push to {proxies} proxies (connect → every proxy routes): {initial / 1000.0:F1} ms");

var gcPause = GC.GetTotalPauseDuration();
int[] gcCounts = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
var saved = new List<double>();
var reached = new List<double>();
var reloads = new List<double>();
for (int c = 0; c < changes; c++)
{
    // What a user does: save the file. The control plane is told (inotify), waits for the file to be
    // quiet, reads, translates and publishes; every proxy gets the route configuration and swaps.
    string subset = c % 2 == 0 ? "v1" : "v2";
    string file = Path.Combine(dir, "vs7.yaml");
    var clock = Stopwatch.StartNew();
    long savedAt = Stopwatch.GetTimestamp();
    File.WriteAllText(file, VirtualService(7, subset));
    saved.Add(await UntilAllAsync($"outbound|9090|{subset}|{probeHost}", clock) / 1000.0);
    long reloadStarted = mesh.LastReloadStarted;
    reached.Add(saved[^1] - Stopwatch.GetElapsedTime(savedAt, reloadStarted).TotalMilliseconds);
    reloads.Add(mesh.LastReloadTime.TotalMilliseconds);
    await Task.Delay(50);
}
static string Stats(List<double> values) => values.Count == 0 ? "-" : $"median {values.Order().ElementAt(values.Count / 2):F1} ms, max {values.Max():F1} ms (n={values.Count})";
Console.WriteLine($"one-route change, file saved → all {proxies} proxies route anew (notified, {mesh.QuietPeriod.TotalMilliseconds:F0} ms quiet period): {Stats(saved)}");
Console.WriteLine($"one-route change, control plane takes it (stat, read, translate {services} services, publish, push) → all {proxies} proxies swapped: {Stats(reached)}");
Console.WriteLine($"  of which the control plane's reload (stat, read, translate, publish): {Stats(reloads)}");
Console.WriteLine($"  GC during the changes: {(GC.GetTotalPauseDuration() - gcPause).TotalMilliseconds:F0} ms paused; collections gen0 {GC.CollectionCount(0) - gcCounts[0]}, gen1 {GC.CollectionCount(1) - gcCounts[1]}, gen2 {GC.CollectionCount(2) - gcCounts[2]}; heap {GC.GetTotalMemory(false) >> 20} MiB");
foreach (var (server, client, _) in sidecars)
{
    await client.DisposeAsync();
    await server.DisposeAsync();
}
await mesh.DisposeAsync();
Directory.Delete(dir, recursive: true);
