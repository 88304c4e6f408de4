using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Microsoft.AspNetCore.Builder;
using Proxy.Core;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds;
using Proxy.Xds.Api.Discovery;
using Proxy.Xds.Config;
using Xds.ControlPlane;

namespace EndToEnd.Tests;

/// <summary>
/// The proxy driven by a real gRPC control plane (tests/Xds.ControlPlane), over State of the World and
/// Delta, API v3 and v2, pushing Istio's shapes: routes change live, bad resources are NACKed while the
/// old config serves, a control plane killed mid-traffic loses no request, removed clusters let their
/// requests finish.
/// </summary>
public sealed class XdsTests : IAsyncLifetime
{
    private readonly List<WebApplication> _apps = [];
    private int _v1Port;
    private int _v2Port;
    private int _slowStarted;

    public async Task InitializeAsync()
    {
        _v1Port = await StartVersionAsync("v1");
        _v2Port = await StartVersionAsync("v2");
    }

    private async Task<int> StartVersionAsync(string version)
    {
        var (app, port) = await VersionUpstream.StartAsync(version, app => app.MapGet("/slow", async () =>
        {
            Interlocked.Increment(ref _slowStarted);
            await Task.Delay(1500);
            return version;
        }));
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

    private static int FreePort() => Abuse.AotProxy.FreePort();

    /// <summary>The proxy in this process, with no static config, driven by <paramref name="plane"/>.</summary>
    private sealed class XdsProxy : IAsyncDisposable
    {
        public ControlPlane Plane { get; set; } = null!;
        public int Port { get; set; }
        public required ProxyServer Server { get; init; }
        public required AdsClient Client { get; init; }
        public required XdsState State { get; init; }
        public required Proxy.Xds.Api.Core.Node Node { get; init; }
        public required HttpClient Http { get; init; }

        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            await Client.DisposeAsync();
            await Server.DisposeAsync();
            if (Plane != null)
            {
                await Plane.DisposeAsync();
            }
        }
    }

    private static async Task<XdsProxy> StartProxyAsync(ControlPlane plane, int port, bool delta, bool? v2, string nodeId = "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
        Proxy.Core.Transport.Tls.TlsClientContext? tls = null)
    {
        var pools = new UpstreamPools();
        var server = new ProxyServer(new ProxySnapshot([], [], 0), pools);
        server.Start();
        var node = new Proxy.Xds.Api.Core.Node { Id = nodeId, Cluster = "client.default" };
        node.Metadata = new Struct { Fields = { ["ISTIO_VERSION"] = Value.ForString("1.28.0"), ["CLUSTER_ID"] = Value.ForString("Kubernetes") } };
        var state = new XdsState(pools, [], []);
        var client = new AdsClient(state, new AdsBootstrap(plane.Target, delta, v2, true, true, true, node) { Tls = tls }, server.ApplyAsync, TimeSpan.FromSeconds(1));
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 4,
            EnableMultipleHttp2Connections = true,
            ConnectCallback = async (context, token) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, port, token);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        var http = new HttpClient(handler)
        {
            BaseAddress = new Uri("http://server:9090"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(30),
        };
        return new XdsProxy { Server = server, Client = client, State = state, Node = node, Http = http };
    }

    /// <summary>Pushes the seed scenario: two EDS subset clusters, their endpoints, a listener with RDS "9090", the header routes.</summary>
    private void PushMesh(ControlPlane plane, int port, bool legacy)
    {
        plane.Set(XdsResourceType.Cluster, MeshResources.EdsCluster(MeshResources.ClusterName("v1")), MeshResources.EdsCluster(MeshResources.ClusterName("v2")));
        plane.Set(XdsResourceType.Endpoint, MeshResources.Endpoints(MeshResources.ClusterName("v1"), _v1Port), MeshResources.Endpoints(MeshResources.ClusterName("v2"), _v2Port));
        plane.Set(XdsResourceType.Listener, MeshResources.HttpListener($"127.0.0.1_{port}", port, "9090"));
        plane.Set(XdsResourceType.Route, MeshResources.HeaderRoutes("9090", legacy));
    }

    private static async Task<string> GetAsync(HttpClient client, string? name = null, string path = "/hello")
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (name != null)
        {
            request.Headers.Add("name", name);
        }
        using HttpResponseMessage response = await client.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadAsStringAsync();
    }

    /// <summary>Clients sending requests without pause until stopped, counting answers as expected or not.</summary>
    private sealed class Load : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task[] _workers;
        private int _ok;
        private int _failed;

        public Load(HttpClient client, int workers, string? name, Func<string, bool> expected)
        {
            _workers = [.. Enumerable.Range(0, workers).Select(_ => Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    try
                    {
                        Interlocked.Increment(ref expected(await GetAsync(client, name)) ? ref _ok : ref _failed);
                    }
                    catch (HttpRequestException)
                    {
                        Interlocked.Increment(ref _failed);
                    }
                }
            }))];
        }

        public int Ok => Volatile.Read(ref _ok);
        public int Failed => Volatile.Read(ref _failed);

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_workers);
        }

        public async ValueTask DisposeAsync()
        {
            await StopAsync();
            _stop.Dispose();
        }
    }

    /// <summary>A control plane with the seed scenario pushed, and the proxy serving it (its listener bound, its routes ACKed).</summary>
    private async Task<XdsProxy> StartMeshAsync(bool delta, bool? v2, bool legacy = false, string? unixPath = null)
    {
        ControlPlane plane = await ControlPlane.StartAsync(unixPath);
        int port = FreePort();
        PushMesh(plane, port, legacy);
        XdsProxy proxy = await StartProxyAsync(plane, port, delta, v2);
        proxy.Plane = plane;
        proxy.Port = port;
        await WaitForListenerAsync(proxy);
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= 1, "RDS ACK");
        return proxy;
    }

    private static Task WaitForListenerAsync(XdsProxy proxy) =>
        ControlPlane.WaitForAsync(() => proxy.Server.Listeners.Count == 1, "the LDS listener to be bound");

    [Fact]
    public async Task AdsOverMutualTls_TheXdsClustersTransportSocketIsHonoured()
    {
        // istiod on 15012 as Istio 1.5+ reaches it: TLS, the proxy's workload certificate as client
        // certificate, istiod's SPIFFE identity checked.
        using var pki = new TestPki();
        (string cert, string key) = pki.Issue("spiffe://cluster.local/ns/istio-system/sa/istiod", "istiod.istio-system.svc");
        using var serverCertificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(cert, key);
        await using ControlPlane plane = await ControlPlane.StartTlsAsync(serverCertificate, pki.Root);
        int port = FreePort();
        PushMesh(plane, port, legacy: false);
        (string clientCert, string clientKey) = pki.Issue("spiffe://cluster.local/ns/default/sa/client");
        Proxy.Core.Transport.Tls.TlsClientContext Tls(string expected) => new()
        {
            Sni = "istiod.istio-system.svc",
            Identity = Proxy.Core.Transport.Tls.SecretSlot.Of("workload", Proxy.Core.Transport.Tls.TlsIdentity.FromPem(clientCert, clientKey, "workload")),
            Trust = Proxy.Core.Transport.Tls.SecretSlot.Of("root", Proxy.Core.Transport.Tls.TlsTrust.FromPem(pki.RootPem, "root")),
            SubjectAltNames = [new Proxy.Core.Transport.Tls.SanMatcher(Proxy.Core.Transport.Tls.SanType.Uri, new StringMatcher(StringMatchKind.Exact, expected))],
            Protocols = Proxy.Core.Transport.Tls.TlsContext.ProtocolRange(null, "TLSv1_3", client: true),
        };
        await using (XdsProxy proxy = await StartProxyAsync(plane, port, delta: true, v2: false, tls: Tls("spiffe://cluster.local/ns/istio-system/sa/istiod")))
        {
            await WaitForListenerAsync(proxy);
            await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= 1, "RDS ACK");
            Assert.Equal("v1", await GetAsync(proxy.Http, "layotto"));
            Assert.Contains("spiffe://cluster.local/ns/default/sa/client", plane.LastClientSans, StringComparison.Ordinal);
        }
        // A control plane that is not who the proxy expects gets no request at all.
        int before = plane.Requests.Count;
        await using (XdsProxy impostor = await StartProxyAsync(plane, FreePort(), delta: true, v2: false, tls: Tls("spiffe://cluster.local/ns/istio-system/sa/someone-else")))
        {
            await Task.Delay(1500);
            Assert.Equal(before, plane.Requests.Count);
            Assert.Empty(impostor.Server.Listeners);
        }
    }

    [Fact]
    public async Task SecretsOverAds_TlsListenerWarmsUntilTheyCome_ABadOneIsNacked()
    {
        await using ControlPlane plane = await ControlPlane.StartAsync();
        int port = FreePort();
        using var pki = new TestPki();
        // The listener terminates TLS with a certificate and roots named for the ADS stream (sds_config: ads).
        var listener = MeshResources.HttpListener($"127.0.0.1_{port}", port, "9090");
        var sds = new Proxy.Xds.Api.Tls.SdsSecretConfig { Name = "workload", SdsConfig = MeshResources.Ads() };
        var tls = new Proxy.Xds.Api.Tls.DownstreamTlsContext
        {
            CommonTlsContext = new Proxy.Xds.Api.Tls.CommonTlsContext { AlpnProtocols = { "h2", "http/1.1" }, TlsCertificateSdsSecretConfigs = { sds } },
        };
        listener.FilterChains[0].TransportSocket = new Proxy.Xds.Api.Core.TransportSocket { Name = "envoy.transport_sockets.tls", TypedConfig = Any.Pack(tls) };
        plane.Set(XdsResourceType.Cluster, MeshResources.EdsCluster(MeshResources.ClusterName("v1")), MeshResources.EdsCluster(MeshResources.ClusterName("v2")));
        plane.Set(XdsResourceType.Endpoint, MeshResources.Endpoints(MeshResources.ClusterName("v1"), _v1Port), MeshResources.Endpoints(MeshResources.ClusterName("v2"), _v2Port));
        plane.Set(XdsResourceType.Listener, listener);
        plane.Set(XdsResourceType.Route, MeshResources.HeaderRoutes("9090"));
        await using XdsProxy proxy = await StartProxyAsync(plane, port, delta: false, v2: false);

        // The secret is asked for by name on the stream; until it comes the listener warms (not bound).
        await ControlPlane.WaitForAsync(() => plane.Requests.Any(r => r is DiscoveryRequest { TypeUrl: XdsTypes.SecretV3 } d && d.ResourceNames.Contains("workload")), "the secret asked for over ADS");
        await Task.Delay(500);
        Assert.Empty(proxy.Server.Listeners);
        (string cert, string key) = pki.Issue(null, "localhost");
        plane.SetSecrets(TestPki.CertificateSecret("workload", cert, key));
        await WaitForListenerAsync(proxy);
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Endpoint).Acks >= 1 && plane.Responses(XdsResourceType.Route).Acks >= 1, "EDS and RDS ACKs");
        string root = Path.Combine(Path.GetTempPath(), $"root-{Guid.NewGuid():N}.pem");
        File.WriteAllText(root, pki.RootPem);
        var (exit, output, error) = await Processes.RunAsync("curl", ["-sS", "--http2", "--cacert", root, "--resolve", $"localhost:{port}:127.0.0.1", "-H", "host: server:9090", "-H", "name: layotto", $"https://localhost:{port}/hello"]);
        Assert.True(exit == 0, error);
        Assert.Equal("v1", output);

        // A certificate that does not load: NACKed on the stream, naming the secret; the old one serves on.
        plane.SetSecrets(TestPki.CertificateSecret("workload", cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"));
        await ControlPlane.WaitForAsync(() => plane.Requests.Any(r => r is DiscoveryRequest { TypeUrl: XdsTypes.SecretV3, ErrorDetail: not null } d && d.ErrorDetail.Message.Contains("workload", StringComparison.Ordinal)), "the NACK of the bad secret");
        (exit, output, error) = await Processes.RunAsync("curl", ["-sS", "--cacert", root, "--resolve", $"localhost:{port}:127.0.0.1", "-H", "host: server:9090", $"https://localhost:{port}/hello"]);
        Assert.True(exit == 0, error);
        Assert.Equal("v2", output);
        File.Delete(root);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public async Task RouteChange_TakesEffectOnTheNextRequest(bool delta, bool v2)
    {
        await using XdsProxy proxy = await StartMeshAsync(delta, v2, legacy: v2, unixPath: null);
        ControlPlane plane = proxy.Plane;
        int port = proxy.Port;

        Assert.Equal("v1", await GetAsync(proxy.Http, "layotto"));
        Assert.Equal("v2", await GetAsync(proxy.Http, "someone-else"));
        Assert.Equal("v2", await GetAsync(proxy.Http));

        int acks = plane.Responses(XdsResourceType.Route).Acks;
        plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", "v1"));
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > acks, "the ACK of the route change");
        // The ACK is sent after the swap: the very next request sees the new route.
        Assert.Equal("v1", await GetAsync(proxy.Http));
        Assert.Equal("v1", await GetAsync(proxy.Http, "someone-else"));

        // The wire: v2 or v3 type URLs as asked, the node on the first request of the stream only.
        var requests = plane.Requests.ToArray();
        string prefix = v2 ? "type.googleapis.com/envoy.api.v2." : "type.googleapis.com/envoy.config.";
        Assert.All(requests, r => Assert.StartsWith(prefix, r is DiscoveryRequest s ? s.TypeUrl : ((DeltaDiscoveryRequest)r).TypeUrl, StringComparison.Ordinal));
        Assert.Equal(delta, requests[0] is DeltaDiscoveryRequest);
        Assert.Equal("sidecar~127.0.0.1~client.default~default.svc.cluster.local", requests[0] is DiscoveryRequest first ? first.Node.Id : ((DeltaDiscoveryRequest)requests[0]).Node.Id);
        Assert.All(requests.Skip(1), r => Assert.Null(r is DiscoveryRequest s ? s.Node : ((DeltaDiscoveryRequest)r).Node));
        Assert.Equal(0, plane.Responses(XdsResourceType.Route).Nacks);
        Assert.Equal(0, plane.Responses(XdsResourceType.Cluster).Nacks);
        Assert.Equal(0, plane.Responses(XdsResourceType.Listener).Nacks);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BrokenResource_IsNacked_AndTheOldConfigKeepsServing(bool delta)
    {
        await using XdsProxy proxy = await StartMeshAsync(delta, v2: false, legacy: false, unixPath: null);
        ControlPlane plane = proxy.Plane;
        int port = proxy.Port;

        // A route whose regex does not compile: the whole update is refused, by name and field.
        var broken = MeshResources.AllTo("9090", "v1");
        broken.VirtualHosts[0].Routes[0].Match = new Proxy.Xds.Api.Route.RouteMatch { SafeRegex = new Proxy.Xds.Api.Matcher.RegexMatcher { Regex = "/((unclosed" } };
        plane.Set(XdsResourceType.Route, broken);
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Nacks >= 1, "the NACK");
        string error = plane.Responses(XdsResourceType.Route).LastError!;
        Assert.Contains("RouteConfiguration '9090'", error, StringComparison.Ordinal);
        Assert.Contains("safe_regex", error, StringComparison.Ordinal);
        Assert.Equal("v1", await GetAsync(proxy.Http, "layotto"));
        Assert.Equal("v2", await GetAsync(proxy.Http));

        // A cluster resource whose bytes do not decode: NACKed too, traffic unchanged.
        plane.SetRaw(XdsResourceType.Cluster, "garbage", new Any { TypeUrl = XdsTypes.ClusterV3, Value = Google.Protobuf.ByteString.CopyFrom(0x0a, 0xff, 0x01) });
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Cluster).Nacks >= 1, "the cluster NACK");
        Assert.Equal("v2", await GetAsync(proxy.Http));

        // Fixed: accepted again, and in force.
        plane.Remove(XdsResourceType.Cluster, "garbage");
        plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", "v1"));
        int acks = plane.Responses(XdsResourceType.Route).Acks;
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > acks, "the ACK after the fix");
        Assert.Equal("v1", await GetAsync(proxy.Http));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ControlPlaneKilledAndRestarted_MidTraffic_LosesNoRequest(bool delta)
    {
        await using XdsProxy proxy = await StartMeshAsync(delta, v2: false, legacy: false, unixPath: null);
        ControlPlane plane = proxy.Plane;
        int port = proxy.Port;

        await using var load = new Load(proxy.Http, 4, "layotto", static body => body == "v1");
        await Task.Delay(300);
        await plane.StopAsync();
        await Task.Delay(1000);
        int streams = plane.StreamsOpened;
        await plane.RestartAsync();
        await ControlPlane.WaitForAsync(() => plane.StreamsOpened > streams, "the proxy to reconnect");
        await Task.Delay(300);
        await load.StopAsync();
        Assert.Equal(0, load.Failed);
        Assert.True(load.Ok > 50, $"only {load.Ok} requests");

        // The new stream works: a change pushed after the restart is applied.
        int acks = plane.Responses(XdsResourceType.Route).Acks;
        plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", "v2"));
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > acks, "the ACK after reconnecting");
        Assert.Equal("v2", await GetAsync(proxy.Http, "layotto"));
        Assert.True(proxy.Client.Connects >= 2);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ClusterRemoved_WhileRequestsToItAreInFlight_LetsThemFinish(bool delta)
    {
        await using XdsProxy proxy = await StartMeshAsync(delta, v2: false, legacy: false, unixPath: null);
        ControlPlane plane = proxy.Plane;
        int port = proxy.Port;

        Task<string>[] inFlight = [.. Enumerable.Range(0, 8).Select(_ => GetAsync(proxy.Http, "layotto", "/slow"))];
        await ControlPlane.WaitForAsync(() => Volatile.Read(ref _slowStarted) == 8, "all eight requests to reach v1");
        int acks = plane.Responses(XdsResourceType.Cluster).Acks;
        plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", "v2"));
        plane.Remove(XdsResourceType.Cluster, MeshResources.ClusterName("v1"));
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Cluster).Acks > acks, "the CDS ACK");
        Assert.Equal("v2", await GetAsync(proxy.Http, "layotto"));
        string[] bodies = await Task.WhenAll(inFlight);
        Assert.All(bodies, b => Assert.Equal("v1", b));
        // The removed cluster's connections were retired (closed once idle), not kept for ever.
        Assert.DoesNotContain(MeshResources.ClusterName("v1"), proxy.Server.Pools.PooledClusters);
        Assert.Contains(MeshResources.ClusterName("v2"), proxy.Server.Pools.PooledClusters);
        // The EDS subscription followed: v1's name was unsubscribed (Delta) or left out of the list (SotW),
        // and State of the World's complete CDS set removed it without a removal list.
        if (delta)
        {
            Assert.Contains(plane.Requests, r => r is DeltaDiscoveryRequest d && d.ResourceNamesUnsubscribe.Contains(MeshResources.ClusterName("v1")));
        }
        else
        {
            var eds = plane.Requests.OfType<DiscoveryRequest>().Last(r => r.TypeUrl == XdsTypes.EndpointV3);
            Assert.Equal([MeshResources.ClusterName("v2")], eds.ResourceNames);
        }
        Assert.Equal(0, plane.Responses(XdsResourceType.Cluster).Nacks);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task StreamClosedByTheControlPlane_ReconnectsWithTheVersionsItHolds_TrafficUndisturbed(bool delta)
    {
        await using XdsProxy proxy = await StartMeshAsync(delta, v2: false);
        ControlPlane plane = proxy.Plane;
        await using var load = new Load(proxy.Http, 1, "layotto", static body => body == "v1");
        await Task.Delay(200);
        int before = plane.Requests.Count;
        int streams = plane.StreamsOpened;
        plane.CloseStreams();
        await ControlPlane.WaitForAsync(() => plane.StreamsOpened > streams, "the reconnect", TimeSpan.FromSeconds(5));
        await ControlPlane.WaitForAsync(() => plane.Requests.Count >= before + 3, "the resubscription");
        await Task.Delay(200);
        await load.StopAsync();
        Assert.Equal(0, load.Failed);
        Assert.True(load.Ok > 10, $"only {load.Ok} requests");

        IMessage[] after = [.. plane.Requests.Skip(before)];
        if (delta)
        {
            var cds = after.OfType<DeltaDiscoveryRequest>().First(r => r.TypeUrl == XdsTypes.ClusterV3);
            Assert.NotNull(cds.Node); // first request of the new stream
            Assert.Equal([MeshResources.ClusterName("v1"), MeshResources.ClusterName("v2")], cds.InitialResourceVersions.Keys.Order());
            var eds = after.OfType<DeltaDiscoveryRequest>().First(r => r.TypeUrl == XdsTypes.EndpointV3);
            Assert.Equal(2, eds.InitialResourceVersions.Count);
            Assert.Equal(2, eds.ResourceNamesSubscribe.Count);
        }
        else
        {
            var cds = after.OfType<DiscoveryRequest>().First(r => r.TypeUrl == XdsTypes.ClusterV3);
            Assert.NotNull(cds.Node);
            Assert.NotEqual("", cds.VersionInfo);
            Assert.Equal("", cds.ResponseNonce);
            var rds = after.OfType<DiscoveryRequest>().First(r => r.TypeUrl == XdsTypes.RouteV3);
            Assert.Equal(["9090"], rds.ResourceNames);
        }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public async Task IstiosRealConfigs_PushedOverTheWire_AreAllAccepted(bool delta, bool v2)
    {
        // v3: a current sidecar's listeners, a gateway route and subset cluster, a sidecar's endpoints;
        // v2: Istio 1.5's productpage sidecar. Listeners are moved to 127.0.0.1 on ephemeral ports.
        var resources = v2
            ? IstioDumps.Resources("istio-1.5/config_dump-productpage-v2api.json")
            : [.. IstioDumps.Resources("istio-master/config_dump-sidecar-listeners.json"),
               .. IstioDumps.Resources("istio-master/config_dump-route-and-subset-cluster.json"),
               .. IstioDumps.Resources("istio-master/config_dump-sidecar-endpoints.json")];
        await using ControlPlane plane = await ControlPlane.StartAsync();
        var counts = new Dictionary<XdsResourceType, int>();
        foreach (XdsResourceType type in new[] { XdsResourceType.Cluster, XdsResourceType.Endpoint, XdsResourceType.Listener, XdsResourceType.Route })
        {
            var ofType = resources.Where(r => r.Type == type).Select(r => r.Message)
                .GroupBy(ControlPlane.NameOf).Select(g => g.First())
                // A mesh without Istio's CUSTOM authorization: its ext_authz filter, which we refuse
                // (fail closed, tested in Proxy.Xds.Tests), is taken out; the RBAC filters stay.
                .Select(m => m is Proxy.Xds.Api.Listener.Listener l ? IstioDumps.WithoutHttpFilter(l, "envoy.filters.http.ext_authz") : m)
                .ToArray();
            foreach (var listener in ofType.OfType<Proxy.Xds.Api.Listener.Listener>())
            {
                listener.Address = new Proxy.Xds.Api.Core.Address { SocketAddress = new Proxy.Xds.Api.Core.SocketAddress { Address = "127.0.0.1", PortValue = 0 } };
            }
            counts[type] = ofType.Length;
            if (ofType.Length > 0)
            {
                plane.Set(type, ofType);
            }
        }
        await using XdsProxy proxy = await StartProxyAsync(plane, FreePort(), delta, v2);
        proxy.Plane = null!;
        string Seen() => string.Join("; ", counts.Keys.Select(t => $"{t}: {plane.Responses(t)}")) + $"; requests {plane.Requests.Count}, streams {plane.StreamsOpened}";
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Listener).Acks + plane.Responses(XdsResourceType.Listener).Nacks >= 1
            && plane.Responses(XdsResourceType.Cluster).Acks + plane.Responses(XdsResourceType.Cluster).Nacks >= 1, "LDS and CDS answers");
        Assert.True(plane.Responses(XdsResourceType.Listener).Nacks + plane.Responses(XdsResourceType.Cluster).Nacks == 0, Seen());
        // RDS follows the listeners: the route names they reference are asked for.
        await ControlPlane.WaitForAsync(() => plane.Requests.Any(r => r is DiscoveryRequest { ResourceNames.Count: > 0 } d && XdsTypes.ResourceType(d.TypeUrl) == XdsResourceType.Route
            || r is DeltaDiscoveryRequest { ResourceNamesSubscribe.Count: > 0 } dd && XdsTypes.ResourceType(dd.TypeUrl) == XdsResourceType.Route), "the RDS subscription");
        await Task.Delay(500);
        Assert.True(counts[XdsResourceType.Listener] >= 5, $"{counts[XdsResourceType.Listener]} listeners");
        foreach (XdsResourceType type in counts.Keys)
        {
            Assert.True(plane.Responses(type).Nacks == 0, $"{type} NACKed: {Seen()}");
        }
        Assert.All(plane.Requests, r => Assert.Equal(v2, (r is DiscoveryRequest d ? d.TypeUrl : ((DeltaDiscoveryRequest)r).TypeUrl).Contains(".api.v2.", StringComparison.Ordinal)));
        if (v2)
        {
            // Istio 1.5's sidecar: its mTLS certificates are files (/etc/certs, provided by the test);
            // HTTP is behind original-destination dispatch (bind_to_port false): only the virtual listeners are bound.
            await ControlPlane.WaitForAsync(() => proxy.Server.Listeners.Any(l => l.Name == "virtualOutbound"), "virtualOutbound");
            Assert.All(proxy.Server.Listeners, l => Assert.StartsWith("virtual", l.Name, StringComparison.Ordinal));
            Assert.NotEmpty(proxy.Server.Snapshots.Current.UnboundListeners);
            return;
        }
        // virtualInbound's mTLS chains wait for the workload certificate and roots from pilot-agent's SDS
        // (sds-grpc): until they come it warms and is not bound; then it is.
        await Task.Delay(1500);
        Assert.DoesNotContain(proxy.Server.Listeners, l => l.Name == "virtualInbound");
        string sdsPath = Path.Combine(Path.GetTempPath(), $"sds-{Guid.NewGuid():N}.sock");
        await using SdsServer sds = await SdsServer.StartAsync(sdsPath);
        using (var pki = new TestPki())
        {
            (string cert, string key) = pki.Issue("spiffe://cluster.local/ns/default/sa/httpbin");
            sds.Set(TestPki.CertificateSecret("default", cert, key), TestPki.RootSecret("ROOTCA", pki.RootPem));
        }
        await using var secrets = new Proxy.Xds.Secrets.SecretSubscriptions(proxy.State.Secrets, _ => ("unix:" + sdsPath, null), proxy.Node);
        // virtualInbound has plain HTTP filter chains too: it is bound and answers. Its AuthorizationPolicy
        // (RBAC ALLOW: GET /info or POST /data from the sleep service account, identified by mTLS) lets
        // nothing through without a peer identity: 403, fail closed.
        await ControlPlane.WaitForAsync(() => proxy.Server.Listeners.Any(l => l.Name == "virtualInbound"), "virtualInbound bound");
        int port = proxy.Server.Listeners.First(l => l.Name == "virtualInbound").LocalEndPoint.Port;
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-s", "-w", " %{http_code}", $"http://127.0.0.1:{port}/info"]);
        Assert.True(exit == 0, stderr);
        Assert.Equal("RBAC: access denied\n 403", stdout);
    }

    [Fact]
    public async Task UnixSocketTransport_AndV2Fallback_WhenTheVersionIsNotSet()
    {
        string path = Path.Combine(Path.GetTempPath(), $"xds-{Guid.NewGuid():N}.sock");
        await using XdsProxy proxy = await StartMeshAsync(delta: true, v2: null, legacy: false, unixPath: path);
        ControlPlane plane = proxy.Plane;
        int port = proxy.Port;
        Assert.Equal("v1", await GetAsync(proxy.Http, "layotto"));
        File.Delete(path);
    }

    [Fact]
    public async Task TheProxyBinary_WithAnIstioStyleBootstrap_FollowsTheControlPlaneOverAUnixSocket()
    {
        string path = Path.Combine(Path.GetTempPath(), $"xds-{Guid.NewGuid():N}.sock");
        await using ControlPlane plane = await ControlPlane.StartAsync(path);
        int port = FreePort();
        PushMesh(plane, port, legacy: false);
        string bootstrap = $$"""
            {
              "node": { "id": "sidecar~127.0.0.1~client.default~default.svc.cluster.local", "cluster": "client.default",
                        "metadata": { "ISTIO_VERSION": "1.28.0", "ENVOY_PROMETHEUS_PORT": 15090 } },
              "dynamic_resources": {
                "lds_config": { "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3" },
                "cds_config": { "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3" },
                "ads_config": { "api_type": "DELTA_GRPC", "set_node_on_first_message_only": true, "transport_api_version": "V3",
                                "grpc_services": [ { "envoy_grpc": { "cluster_name": "xds-grpc" } } ] }
              },
              "static_resources": {
                "clusters": [ {
                  "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
                  "load_assignment": { "cluster_name": "xds-grpc", "endpoints": [ { "lb_endpoints": [ { "endpoint": { "address": { "pipe": { "path": "{{path}}" } } } } ] } ] },
                  "typed_extension_protocol_options": { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": { "http2_protocol_options": {} } } }
                } ]
              }
            }
            """;
        // The Host's own build output (its dependencies resolved for it, not for this test project).
        string binary = AppContext.BaseDirectory.Replace(Path.Combine("tests", "EndToEnd.Tests"), Path.Combine("src", "Proxy.Host"), StringComparison.Ordinal) + "layotto-fast";
        var psi = new System.Diagnostics.ProcessStartInfo(binary) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { "--config-yaml", bootstrap, "-l", "info" })
        {
            psi.ArgumentList.Add(a);
        }
        using var process = System.Diagnostics.Process.Start(psi)!;
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.ErrorDataReceived += (_, e) => log.Enqueue(e.Data ?? "");
        process.BeginErrorReadLine();
        try
        {
            await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= 1, "the binary's RDS ACK");
            string Url() => $"http://127.0.0.1:{port}/hello";
            var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "-H", "Host: server", "-H", "name: layotto", Url()]);
            Assert.True(exit == 0, stderr);
            Assert.Equal("v1", stdout);
            (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-H", "Host: server", Url()]);
            Assert.Equal("v2", stdout);

            int acks = plane.Responses(XdsResourceType.Route).Acks;
            plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", "v1"));
            await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks > acks, "the ACK of the change");
            (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-H", "Host: server", Url()]);
            Assert.Equal("v1", stdout);
            var first = (DeltaDiscoveryRequest)plane.Requests.First();
            Assert.Equal("1.28.0", first.Node.Metadata.Fields["ISTIO_VERSION"].StringValue);
            Assert.Equal(15090, first.Node.Metadata.Fields["ENVOY_PROMETHEUS_PORT"].NumberValue);
        }
        finally
        {
            process.Kill();
            await process.WaitForExitAsync();
            File.Delete(path);
        }
        Assert.Contains(log, l => l.Contains($"xds: delta ADS to unix:{path}", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ThousandRouteChanges_UnderContinuousLoad_FailNoRequest()
    {
        await using XdsProxy proxy = await StartMeshAsync(delta: true, v2: false, legacy: false, unixPath: null);
        ControlPlane plane = proxy.Plane;
        int port = proxy.Port;

        await using var load = new Load(proxy.Http, 4, null, static body => body is "v1" or "v2");
        const int Changes = 1000;
        int before = plane.Responses(XdsResourceType.Route).Acks;
        for (int i = 0; i < Changes; i++)
        {
            plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", i % 2 == 0 ? "v1" : "v2"));
            // Paced by the ACKs, as a control plane that waits for them would be.
            int target = before + i + 1;
            await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= target, $"ACK {i}");
        }
        await load.StopAsync();
        Assert.Equal(0, load.Failed);
        Assert.True(load.Ok > 100, $"only {load.Ok} requests");
        Assert.Equal(0, plane.Responses(XdsResourceType.Route).Nacks);
    }
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RuntimeApiInvokeService_RoutedByXds_RouteChangesUnderCallsFailNone(bool delta)
    {
        // Istio's shape: the per-port outbound listener is not bound (traffic reaches it through the
        // virtual outbound listener); its RDS "9090" routes runtime API calls to port 9090. HTTP/2 clusters.
        ControlPlane plane = await ControlPlane.StartAsync();
        plane.Set(XdsResourceType.Cluster, MeshResources.EdsCluster(MeshResources.ClusterName("v1")), MeshResources.EdsCluster(MeshResources.ClusterName("v2")));
        plane.Set(XdsResourceType.Endpoint, MeshResources.Endpoints(MeshResources.ClusterName("v1"), _v1Port), MeshResources.Endpoints(MeshResources.ClusterName("v2"), _v2Port));
        Proxy.Xds.Api.Listener.Listener outbound = MeshResources.HttpListener("0.0.0.0_9090", 9090, "9090");
        outbound.Address.SocketAddress.Address = "0.0.0.0";
        outbound.BindToPort = false;
        plane.Set(XdsResourceType.Listener, outbound);
        plane.Set(XdsResourceType.Route, MeshResources.HeaderRoutes("9090"));
        await using XdsProxy proxy = await StartProxyAsync(plane, 0, delta, v2: false);
        proxy.Plane = plane;
        await using var runtime = new Proxy.Core.Runtime.RuntimeApiServer(new IPEndPoint(IPAddress.Loopback, 0), proxy.Server.Snapshots);
        runtime.Start();
        using var channel = global::Grpc.Net.Client.GrpcChannel.ForAddress($"http://127.0.0.1:{((IPEndPoint)runtime.EndPoint).Port}");
        var client = new Layotto.Runtime.V1.Runtime.RuntimeClient(channel);
        var request = new Layotto.Runtime.V1.InvokeServiceRequest
        {
            Id = "server.default.svc.cluster.local:9090",
            Message = new Layotto.Runtime.V1.CommonInvokeRequest { Method = "/hello" },
        };
        async Task<string> CallAsync(string? name)
        {
            var metadata = new global::Grpc.Core.Metadata();
            if (name != null)
            {
                metadata.Add("name", name);
            }
            var response = await client.InvokeServiceAsync(request, metadata).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(20));
            return response.Data.Value.ToStringUtf8();
        }
        await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= 1, "RDS ACK");
        Assert.Empty(proxy.Server.Listeners);
        Assert.Equal("v1", await CallAsync("layotto"));
        Assert.Equal("v2", await CallAsync("someone"));
        Assert.Equal("v2", await CallAsync(null));

        using var stop = new CancellationTokenSource();
        int ok = 0;
        int failed = 0;
        Task[] callers = [.. Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    string body = await CallAsync(null);
                    Interlocked.Increment(ref body is "v1" or "v2" ? ref ok : ref failed);
                }
                catch (global::Grpc.Core.RpcException)
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }))];
        int before = plane.Responses(XdsResourceType.Route).Acks;
        for (int i = 0; i < 200; i++)
        {
            plane.Set(XdsResourceType.Route, MeshResources.AllTo("9090", i % 2 == 0 ? "v1" : "v2"));
            int target = before + i + 1;
            await ControlPlane.WaitForAsync(() => plane.Responses(XdsResourceType.Route).Acks >= target, $"ACK {i}");
        }
        await stop.CancelAsync();
        await Task.WhenAll(callers);
        Assert.Equal(0, failed);
        Assert.True(ok > 50, $"only {ok} calls");
        // The last push (everything to v2) rules every call now.
        Assert.Equal("v2", await CallAsync("layotto"));
        Assert.Equal(0, plane.Responses(XdsResourceType.Route).Nacks);
        Assert.Equal(0, plane.Responses(XdsResourceType.Listener).Nacks);
    }
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OurOwnAdsServer_ServesTheProxy_AndPushesChanges(bool delta)
    {
        // The embedded control plane's ADS server (our gRPC server on our HTTP/2 engine), not the test one.
        await using var ads = new Proxy.Xds.Server.AdsServer(new IPEndPoint(IPAddress.Loopback, 0));
        ads.Start();
        int port = FreePort();
        (XdsResourceType, string, IMessage)[] Mesh(Proxy.Xds.Api.Route.RouteConfiguration routes) =>
        [
            (XdsResourceType.Cluster, MeshResources.ClusterName("v1"), MeshResources.EdsCluster(MeshResources.ClusterName("v1"))),
            (XdsResourceType.Cluster, MeshResources.ClusterName("v2"), MeshResources.EdsCluster(MeshResources.ClusterName("v2"))),
            (XdsResourceType.Endpoint, MeshResources.ClusterName("v1"), MeshResources.Endpoints(MeshResources.ClusterName("v1"), _v1Port)),
            (XdsResourceType.Endpoint, MeshResources.ClusterName("v2"), MeshResources.Endpoints(MeshResources.ClusterName("v2"), _v2Port)),
            (XdsResourceType.Listener, $"127.0.0.1_{port}", MeshResources.HttpListener($"127.0.0.1_{port}", port, "9090")),
            (XdsResourceType.Route, "9090", routes),
        ];
        ads.Publish(Mesh(MeshResources.HeaderRoutes("9090")));
        var pools = new UpstreamPools();
        await using var server = new ProxyServer(new ProxySnapshot([], [], 0), pools);
        server.Start();
        var node = new Proxy.Xds.Api.Core.Node { Id = "sidecar~127.0.0.1~client.default~default.svc.cluster.local", Cluster = "client.default" };
        await using var client = new AdsClient(new XdsState(pools, [], []), new AdsBootstrap($"http://127.0.0.1:{((IPEndPoint)ads.EndPoint).Port}", delta, false, true, true, true, node), server.ApplyAsync, TimeSpan.FromSeconds(1));
        await ControlPlane.WaitForAsync(() => server.Listeners.Count == 1, "the listener from our ADS server");
        using var http = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (_, token) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, port, token);
                return new NetworkStream(socket, ownsSocket: true);
            },
        }) { BaseAddress = new Uri("http://server:9090"), DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        async Task<string> GetAsync(string? name)
        {
            for (int i = 0; ; i++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, "/hello");
                if (name != null)
                {
                    request.Headers.Add("name", name);
                }
                using HttpResponseMessage response = await http.SendAsync(request);
                if (response.IsSuccessStatusCode || i > 100)
                {
                    return await response.Content.ReadAsStringAsync();
                }
                await Task.Delay(20); // routes may still be on their way
            }
        }
        Assert.Equal("v1", await GetAsync("layotto"));
        Assert.Equal("v2", await GetAsync(null));
        long version = ads.Version;
        Assert.False(ads.Publish(Mesh(MeshResources.HeaderRoutes("9090"))), "the same configuration is no change");
        Assert.True(ads.Publish(Mesh(MeshResources.AllTo("9090", "v1"))));
        Assert.Equal(version + 1, ads.Version);
        await ControlPlane.WaitForAsync(() => GetAsync(null).Result == "v1", "the pushed route");
        Assert.Equal("v1", await GetAsync("someone"));
        Assert.Equal(1, ads.Streams);
    }
}
