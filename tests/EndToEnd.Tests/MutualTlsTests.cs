using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using EndToEnd.Tests.Abuse;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xds.ControlPlane;

namespace EndToEnd.Tests;

/// <summary>
/// Istio's mutual TLS between two of our sidecars, both the published AOT binary: certificates and roots
/// from pilot-agent-like SDS servers on unix sockets, auto-mTLS by endpoint metadata, a PERMISSIVE port
/// (plaintext and mTLS told apart by the TLS inspector), RBAC by SPIFFE principal, x-forwarded-client-cert,
/// refusals of a wrong SAN, and certificate rotation under load with no failed request.
/// </summary>
[Collection(nameof(BuildsCollection))]
public sealed class MutualTlsTests : IAsyncLifetime
{
    private const string ClientId = "spiffe://cluster.local/ns/default/sa/client";
    private const string ServerId = "spiffe://cluster.local/ns/default/sa/server";

    private readonly TestPki _pki = new("Mesh Test Root");
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"mtls-{Guid.NewGuid():N}");
    private WebApplication _app = null!;
    private int _appPort;
    private SdsServer _clientSds = null!;
    private SdsServer _serverSds = null!;
    private MeshProxy _client = null!;
    private MeshProxy _server = null!;
    private int _clientPort;
    private int _serverPort;
    private int _serverAdmin;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_dir);
        (_app, _appPort) = await VersionUpstream.StartAsync("v1", app =>
            app.MapGet("/xfcc", (HttpRequest r) => r.Headers["x-forwarded-client-cert"].ToString() + "|" + r.Headers["x-forwarded-proto"].ToString()));
        _clientSds = await SdsServer.StartAsync(Path.Combine(_dir, "client-sds.sock"));
        _serverSds = await SdsServer.StartAsync(Path.Combine(_dir, "server-sds.sock"));
        (string cert, string key) = _pki.Issue(ClientId);
        _clientSds.Set(TestPki.CertificateSecret("default", cert, key), TestPki.RootSecret("ROOTCA", _pki.RootPem));
        (cert, key) = _pki.Issue(ServerId);
        _serverSds.Set(TestPki.CertificateSecret("default", cert, key), TestPki.RootSecret("ROOTCA", _pki.RootPem));

        _serverPort = AotProxy.FreePort();
        _serverAdmin = AotProxy.FreePort();
        _server = await MeshProxy.StartAsync(Path.Combine(_dir, "server.yaml"), ServerBootstrap(_serverPort, _appPort, _serverSds.UnixPath), _serverPort,
            "--admin-address", $"127.0.0.1:{_serverAdmin}");
        _clientPort = AotProxy.FreePort();
        _client = await MeshProxy.StartAsync(Path.Combine(_dir, "client.yaml"), ClientBootstrap(_clientPort, _serverPort, _clientSds.UnixPath), _clientPort);
        // Both sidecars opened their listeners once their secrets had come: the first request goes through.
        Assert.Equal("v1", (await GetAsync(_clientPort, "/hello")).Body);
    }

    public async Task DisposeAsync()
    {
        await _client.DisposeAsync();
        await _server.DisposeAsync();
        await _clientSds.DisposeAsync();
        await _serverSds.DisposeAsync();
        await _app.StopAsync();
        await _app.DisposeAsync();
        _pki.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static string Sds(string name, string socket) => $$"""{ name: {{name}}, sds_config: { api_config_source: { api_type: GRPC, transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: sds-grpc } } ] }, initial_fetch_timeout: 0s, resource_api_version: V3 } }""";

    private static string SdsCluster(string socket) => $$"""
          - name: sds-grpc
            type: STATIC
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                explicit_http_config: { http2_protocol_options: {} }
            load_assignment:
              cluster_name: sds-grpc
              endpoints: [ { lb_endpoints: [ { endpoint: { address: { pipe: { path: {{socket}} } } } } ] } ]
        """;

    /// <summary>The server's sidecar: one PERMISSIVE inbound port (mTLS chain with RBAC by principal and XFCC; plaintext chain), as Istio writes it.</summary>
    private static string ServerBootstrap(int port, int appPort, string sdsSocket) => $$"""
        node: { id: "sidecar~127.0.0.1~server.default~default.svc.cluster.local", cluster: server.default }
        static_resources:
          listeners:
          - name: virtualInbound
            address: { socket_address: { address: 127.0.0.1, port_value: {{port}} } }
            listener_filters:
            - name: envoy.filters.listener.tls_inspector
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
            listener_filters_timeout: 0s
            continue_on_listener_filters_timeout: true
            filter_chains:
            - name: inbound-mtls
              filter_chain_match: { transport_protocol: tls }
              transport_socket:
                name: envoy.transport_sockets.tls
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
                  require_client_certificate: true
                  common_tls_context:
                    tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3,
                                  cipher_suites: [ ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256 ] }
                    alpn_protocols: [ h2, http/1.1 ]
                    tls_certificate_sds_secret_configs: [ {{Sds("default", sdsSocket)}} ]
                    combined_validation_context:
                      default_validation_context: { match_typed_subject_alt_names: [ { san_type: URI, matcher: { prefix: "spiffe://cluster.local/" } } ] }
                      validation_context_sds_secret_config: {{Sds("ROOTCA", sdsSocket)}}
              filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: inbound_mtls
                  forward_client_cert_details: APPEND_FORWARD
                  set_current_client_cert_details: { subject: true, dns: true, uri: true }
                  route_config:
                    name: inbound
                    virtual_hosts: [ { name: app, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: app } } ] } ]
                  http_filters:
                  - name: envoy.filters.http.rbac
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
                      rules:
                        policies:
                          allow-client:
                            permissions: [ { any: true } ]
                            principals: [ { authenticated: { principal_name: { exact: "{{ClientId}}" } } } ]
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
            - name: inbound-plaintext
              filter_chain_match: { transport_protocol: raw_buffer }
              filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: inbound_plaintext
                  forward_client_cert_details: APPEND_FORWARD
                  route_config:
                    name: inbound
                    virtual_hosts: [ { name: app, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: app } } ] } ]
                  http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          clusters:
          - name: app
            type: STATIC
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                explicit_http_config: { http2_protocol_options: {} }
            load_assignment:
              cluster_name: app
              endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{appPort}} } } } } ] } ]
        {{SdsCluster(sdsSocket)}}
        """;

    /// <summary>The client's sidecar: routes by path to the server's pod with auto-mTLS (tlsMode: istio), in plaintext, or with a SAN the server does not have.</summary>
    private static string ClientBootstrap(int port, int serverPort, string sdsSocket)
    {
        string UpstreamTls(string san) => $$"""
                  name: envoy.transport_sockets.tls
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
                    sni: outbound_.80_._.server.default.svc.cluster.local
                    common_tls_context:
                      alpn_protocols: [ istio-peer-exchange, istio ]
                      tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }
                      tls_certificate_sds_secret_configs: [ {{Sds("default", sdsSocket)}} ]
                      combined_validation_context:
                        default_validation_context: { match_subject_alt_names: [ { exact: "{{san}}" } ] }
                        validation_context_sds_secret_config: {{Sds("ROOTCA", sdsSocket)}}
            """;
        string Cluster(string name, string san, bool istioEndpoint) => $$"""
              - name: {{name}}
                type: STATIC
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    explicit_http_config: { http2_protocol_options: {} }
                transport_socket_matches:
                - name: tlsMode-istio
                  match: { tlsMode: istio }
                  transport_socket:
            {{BootstrapYaml.Indent(UpstreamTls(san), 2)}}
                - name: tlsMode-disabled
                  match: {}
                  transport_socket: { name: envoy.transport_sockets.raw_buffer }
                load_assignment:
                  cluster_name: {{name}}
                  endpoints:
                  - lb_endpoints:
                    - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{serverPort}} } } }
                      metadata: { filter_metadata: { envoy.transport_socket_match: {{(istioEndpoint ? "{ tlsMode: istio }" : "{}")}} } }
            """;
        return $$"""
            node: { id: "sidecar~127.0.0.1~client.default~default.svc.cluster.local", cluster: client.default }
            static_resources:
              listeners:
            {{BootstrapYaml.Listener("outbound", """
                name: outbound
                virtual_hosts:
                - name: server
                  domains: ["*"]
                  routes:
                  - match: { prefix: /plain/ }
                    route: { cluster: plain, prefix_rewrite: / }
                  - match: { prefix: /wrongsan/ }
                    route: { cluster: wrongsan, prefix_rewrite: / }
                  - match: { prefix: / }
                    route: { cluster: server }
                """).Replace("port_value: 0", $"port_value: {port}", StringComparison.Ordinal)}}
              clusters:
            {{Cluster("server", ServerId, istioEndpoint: true)}}
            {{Cluster("plain", ServerId, istioEndpoint: false)}}
            {{Cluster("wrongsan", "spiffe://cluster.local/ns/default/sa/somebody-else", istioEndpoint: true)}}
            {{SdsCluster(sdsSocket)}}
            """;
    }

    private static async Task<(int Status, string Body)> GetAsync(int port, string path)
    {
        using var client = new HttpClient(new SocketsHttpHandler()) { Timeout = TimeSpan.FromSeconds(20), DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using HttpResponseMessage response = await client.GetAsync($"http://127.0.0.1:{port}{path}");
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task AutoMtls_BetweenTwoSidecars_CarriesTheClientIdentity()
    {
        // Through the mTLS hop: the server's sidecar saw the client's SPIFFE identity (RBAC let it in) and
        // told the app in x-forwarded-client-cert, with itself as By.
        (int status, string body) = await GetAsync(_clientPort, "/xfcc");
        Assert.True(status == 200, $"{status} {body}\n{_client.Log}\n{_server.Log}");
        string[] parts = body.Split('|');
        Assert.Matches($"^By={ServerId};Hash=[0-9a-f]{{64}};Subject=\"O=cluster.local\";URI={ClientId}$", parts[0]);
        Assert.Equal("http", parts[1]); // the client's sidecar set it for the plaintext hop it took; the next one keeps it
        Assert.Equal("v1", (await GetAsync(_clientPort, "/hello")).Body);

        // An endpoint without tlsMode: istio is reached in plaintext, on the same PERMISSIVE port (no XFCC then).
        (status, body) = await GetAsync(_clientPort, "/plain/xfcc");
        Assert.Equal(200, status);
        Assert.Equal("|http", body);

        // A peer whose certificate lacks the SAN the cluster asks for is refused, with the reason logged.
        (status, _) = await GetAsync(_clientPort, "/wrongsan/hello");
        Assert.Equal(503, status);
        await ControlPlane.WaitForAsync(() => _client.Log.Contains("match none of", StringComparison.Ordinal), "the SAN refusal in the log");
        Assert.Contains("cluster wrongsan", _client.Log, StringComparison.Ordinal);

        // The server's /config_dump shows its SDS secrets (version, certificate) with the private key redacted.
        using var admin = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        string dump = await admin.GetStringAsync($"http://127.0.0.1:{_serverAdmin}/config_dump?resource=dynamic_active_secrets");
        Assert.Contains("\"name\": \"default\"", dump, StringComparison.Ordinal);
        Assert.Contains("\"name\": \"ROOTCA\"", dump, StringComparison.Ordinal);
        Assert.Contains("[redacted]", dump, StringComparison.Ordinal);
        Assert.DoesNotContain(Convert.ToBase64String("-----BEGIN PRIVATE KEY"u8.ToArray())[..20], dump, StringComparison.Ordinal);
        string certs = await admin.GetStringAsync($"http://127.0.0.1:{_serverAdmin}/certs");
        Assert.Contains($"\"uri\": \"{ServerId}\"", certs, StringComparison.Ordinal);
        Assert.Contains("\"ca_cert\"", certs, StringComparison.Ordinal);
        Assert.Contains("\"days_until_expiration\": \"0\"", certs, StringComparison.Ordinal); // a one-day workload certificate
        string stats = await admin.GetStringAsync($"http://127.0.0.1:{_serverAdmin}/stats");
        Assert.Matches(@"listener\.127\.0\.0\.1_\d+\.ssl\.handshake: [1-9]", stats);
    }

    [Fact]
    public async Task RealClients_OverMtls_AndRbacByPrincipal()
    {
        string root = Path.Combine(_dir, "root.pem");
        File.WriteAllText(root, _pki.RootPem);
        string Write(string name, string text)
        {
            string path = Path.Combine(_dir, name);
            File.WriteAllText(path, text);
            return path;
        }
        (string clientCert, string clientKey) = _pki.Issue(ClientId);
        (string intruderCert, string intruderKey) = _pki.Issue("spiffe://cluster.local/ns/default/sa/intruder");
        using var other = new TestPki("Another Root");
        (string strangerCert, string strangerKey) = other.Issue(ClientId);

        // curl with the client's certificate, ALPN istio-h2 as Envoy's client offers (no ALPN in common: none negotiated).
        string[] Curl(string cert, string key, params string[] more) =>
            ["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", root, "--cert", Write(Guid.NewGuid() + ".pem", cert), "--key", Write(Guid.NewGuid() + ".key", key),
             "--resolve", $"outbound_.80_._.server.default.svc.cluster.local:{_serverPort}:127.0.0.1", .. more,
             $"https://outbound_.80_._.server.default.svc.cluster.local:{_serverPort}/xfcc"];
        // The server's certificate has only a SPIFFE URI, no DNS name: curl is told not to check the name.
        var (exit, output, error) = await Processes.RunAsync("curl", Curl(clientCert, clientKey, "--http2", "-k"));
        Assert.True(exit == 0, error);
        Assert.EndsWith("\n200", output, StringComparison.Ordinal);
        Assert.Contains($"URI={ClientId}", output, StringComparison.Ordinal);
        Assert.Contains("|https\n", output, StringComparison.Ordinal); // the first hop, over TLS

        // Same root, another identity: RBAC refuses it by principal.
        (exit, output, error) = await Processes.RunAsync("curl", Curl(intruderCert, intruderKey, "--http1.1", "-k"));
        Assert.True(exit == 0, error);
        Assert.EndsWith("\n403", output, StringComparison.Ordinal);

        // A certificate from a root the server does not trust: no TLS session at all.
        (exit, _, error) = await Processes.RunAsync("curl", Curl(strangerCert, strangerKey, "-k"));
        Assert.NotEqual(0, exit);

        // No client certificate on the mTLS chain: refused too (require_client_certificate).
        (exit, _, _) = await Processes.RunAsync("curl", ["-sS", "-k", "--http2", $"https://127.0.0.1:{_serverPort}/hello"]);
        Assert.NotEqual(0, exit);

        // PERMISSIVE: plaintext HTTP/1.1 and h2c on the same port.
        (exit, output, error) = await Processes.RunAsync("curl", ["-sS", "--http2-prior-knowledge", $"http://127.0.0.1:{_serverPort}/hello"]);
        Assert.True(exit == 0, error);
        Assert.Equal("v1", output);
        (exit, output, error) = await Processes.RunAsync("nghttp", ["-v", "--cert", Write("c.pem", clientCert), "--key", Write("c.key", clientKey), $"https://127.0.0.1:{_serverPort}/hello"]);
        Assert.True(exit == 0, output + error);
        Assert.Contains("v1", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Rotation_UnderLoad_LosesNoRequest_AndNewHandshakesUseTheNewCertificate()
    {
        // Load through the mTLS hop (h2load → client sidecar → mTLS → server sidecar → app), while both
        // SDS servers rotate both workloads' certificates (new keys) several times.
        Task<(int, string, string)> load = Processes.RunAsync("h2load", ["-n", "30000", "-c", "8", "-m", "4", $"http://127.0.0.1:{_clientPort}/hello"], TimeSpan.FromSeconds(120));
        string rotated = "";
        for (int i = 0; i < 4; i++)
        {
            await Task.Delay(300);
            rotated = $"rotated-{i}.example";
            (string cert, string key) = _pki.Issue(ServerId, rotated);
            _serverSds.Set(TestPki.CertificateSecret("default", cert, key));
            (cert, key) = _pki.Issue(ClientId);
            _clientSds.Set(TestPki.CertificateSecret("default", cert, key));
        }
        var (exit, output, error) = await load;
        Assert.True(exit == 0, error);
        Assert.Contains("30000 succeeded, 0 failed, 0 errored", output, StringComparison.Ordinal);
        Assert.Contains("status codes: 30000 2xx", output, StringComparison.Ordinal);
        await ControlPlane.WaitForAsync(() => _serverSds.Acks(_serverSds.Version) > 0, "the server sidecar's ACK of the last rotation");
        Assert.Equal(0, _serverSds.Nacks);

        // A handshake now gets the latest certificate.
        (string clientCert, string clientKey) = _pki.Issue(ClientId);
        using X509Certificate2 identity = X509Certificate2.CreateFromPem(clientCert, clientKey);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, _serverPort);
        await using var ssl = new SslStream(tcp.GetStream());
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "server",
            ClientCertificates = [identity],
            ApplicationProtocols = [new SslApplicationProtocol("istio-h2")],
            RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate is not null, // the SPIFFE certificate names no host; it is checked below
        });
        var served = new X509Certificate2(ssl.RemoteCertificate!);
        Assert.Contains(rotated, served.GetNameInfo(X509NameType.DnsName, false) + served.Extensions.OfType<X509SubjectAlternativeNameExtension>().SelectMany(e => e.EnumerateDnsNames()).FirstOrDefault(), StringComparison.Ordinal);

        // A certificate that does not load is NACKed; the one held keeps serving.
        _serverSds.Set(TestPki.CertificateSecret("default", "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n", "nonsense"));
        await ControlPlane.WaitForAsync(() => _serverSds.Nacks > 0, "a NACK of the bad certificate");
        Assert.Contains(_serverSds.Requests, r => r.ErrorDetail?.Message.Contains("default", StringComparison.Ordinal) == true);
        Assert.Equal("v1", (await GetAsync(_clientPort, "/hello")).Body);
    }

    /// <summary>The AOT binary on a bootstrap file, its log collected.</summary>
    private sealed class MeshProxy : IAsyncDisposable
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _log = new();
        private readonly Process _process;

        private MeshProxy(Process process)
        {
            _process = process;
            process.ErrorDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
            process.OutputDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
        }

        public string Log => string.Join('\n', _log);

        public static async Task<MeshProxy> StartAsync(string path, string bootstrap, int port, params string[] more)
        {
            File.WriteAllText(path, bootstrap);
            var psi = new ProcessStartInfo(await AotProxy.BinaryAsync()) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string a in (string[])["-c", path, "--concurrency", "1", "-l", "debug", .. more])
            {
                psi.ArgumentList.Add(a);
            }
            var proxy = new MeshProxy(Process.Start(psi)!);
            for (int i = 0; i < 400; i++)
            {
                Assert.False(proxy._process.HasExited, "the proxy exited:\n" + proxy.Log);
                try
                {
                    using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
                    await probe.ConnectAsync(IPAddress.Loopback, port);
                    return proxy;
                }
                catch (SocketException)
                {
                    await Task.Delay(25);
                }
            }
            await proxy.DisposeAsync();
            throw new InvalidOperationException("the proxy did not start listening:\n" + proxy.Log);
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
            }
            await _process.WaitForExitAsync();
            _process.Dispose();
        }
    }
}
