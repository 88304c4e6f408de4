using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using EndToEnd.Tests.Abuse;
using EndToEnd.Tests.Grpc;
using Xds.ControlPlane;

namespace EndToEnd.Tests;

/// <summary>
/// The published binary as a TLS front without a bootstrap (--tls-cert/--tls-key): h2 and HTTP/1.1 by
/// ALPN for curl, nghttp, h2load and a real gRPC client; and as a TLS client (--upstream-tls) of another
/// of itself, verifying the upstream's certificate against --upstream-ca with a clear refusal otherwise.
/// </summary>
[Collection(nameof(BuildsCollection))]
public sealed class TlsFrontTests(ProxyFixture fixture) : IClassFixture<ProxyFixture>, IDisposable
{
    private readonly TestPki _pki = new("Front Test Root");
    private readonly string _dir = Directory.CreateTempSubdirectory("tls-front-").FullName;

    private (string Cert, string Key, string Root) Files(string? spiffe, params string[] dns)
    {
        (string cert, string key) = _pki.Issue(spiffe, dns);
        string Write(string name, string text)
        {
            string path = Path.Combine(_dir, $"{Guid.NewGuid():N}-{name}");
            File.WriteAllText(path, text);
            return path;
        }
        return (Write("cert.pem", cert), Write("key.pem", key), Write("root.pem", _pki.RootPem));
    }

    /// <summary>A file holding <paramref name="request"/> as one uncompressed gRPC message (for h2load -d).</summary>
    private string GrpcMessageFile(EchoRequest request)
    {
        byte[] message = request.ToByteArray();
        byte[] frame = new byte[5 + message.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(1), message.Length);
        message.CopyTo(frame, 5);
        string path = Path.Combine(_dir, $"{Guid.NewGuid():N}.grpc");
        File.WriteAllBytes(path, frame);
        return path;
    }

    public void Dispose()
    {
        _pki.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task TlsFront_ServesH2AndHttp11ByAlpn_ToCurlNghttpH2loadAndGrpc()
    {
        var (cert, key, root) = Files(null, "localhost");
        await using AotProxy proxy = await AotProxy.StartAsync(fixture.GrpcUpstreamPort, "h2", "--tls-cert", cert, "--tls-key", key);
        string url = $"https://localhost:{proxy.Port}/layotto.test.Echo/Unary";

        // curl, both protocols, verifying the certificate by name against the test root.
        foreach (string protocol in new[] { "--http2", "--http1.1" })
        {
            var (exit, output, error) = await Processes.RunAsync("curl", ["-sS", protocol, "--cacert", root, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                "--resolve", $"localhost:{proxy.Port}:127.0.0.1", "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@/dev/null", url]);
            Assert.True(exit == 0, error + proxy.Log);
            Assert.Equal(protocol == "--http2" ? "2 200" : "1.1 200", output);
        }

        // nghttp (h2 by ALPN) and h2load over TLS.
        var (nExit, nOut, nErr) = await Processes.RunAsync("nghttp", ["-v", "-H", "content-type: application/grpc", "-H", "te: trailers", $"https://127.0.0.1:{proxy.Port}/layotto.test.Echo/Unary"]);
        Assert.True(nExit == 0, nOut + nErr);
        Assert.Contains("The negotiated protocol: h2", nOut, StringComparison.Ordinal);
        string frame = Path.Combine(_dir, "empty-message.grpc");
        File.WriteAllBytes(frame, [0, 0, 0, 0, 0]); // one gRPC message: uncompressed, zero octets
        var (hExit, hOut, hErr) = await Processes.RunAsync("h2load", ["-n", "2000", "-c", "4", "-m", "8", "-d", frame, "-H", "content-type: application/grpc", "-H", "te: trailers",
            $"https://127.0.0.1:{proxy.Port}/layotto.test.Echo/Unary"], TimeSpan.FromSeconds(60));
        Assert.True(hExit == 0, hErr);
        Assert.Contains("2000 succeeded, 0 failed", hOut, StringComparison.Ordinal);
        Assert.Contains("status codes: 2000 2xx", hOut, StringComparison.Ordinal);
        Assert.Contains("TLS Protocol: TLSv1.3", hOut, StringComparison.Ordinal);

        // A real gRPC client over TLS: unary with a large payload, and a server stream.
        using var trusted = X509Certificate2.CreateFromPem(_pki.RootPem);
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, CustomTrustStore = { trusted }, RevocationMode = X509RevocationMode.NoCheck },
            },
            ConnectCallback = async (context, token) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await socket.ConnectAsync(System.Net.IPAddress.Loopback, context.DnsEndPoint.Port, token);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        using GrpcChannel channel = GrpcChannel.ForAddress($"https://localhost:{proxy.Port}", new GrpcChannelOptions { HttpHandler = handler, MaxReceiveMessageSize = 8 * 1024 * 1024 });
        var client = new Echo.EchoClient(channel);
        byte[] payload = new byte[1_500_000];
        Random.Shared.NextBytes(payload);
        EchoReply reply = await client.UnaryAsync(new EchoRequest { Message = "over tls", Payload = ByteString.CopyFrom(payload), ReplySize = 3_000_000 }).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("over tls", reply.Message);
        Assert.Equal(3_000_000, reply.Payload.Length);
        using var stream = client.ServerStream(new EchoRequest { Count = 50 });
        int received = 0;
        while (await stream.ResponseStream.MoveNext(CancellationToken.None))
        {
            received++;
        }
        Assert.Equal(50, received);
    }

    /// <summary>
    /// The ClientHello is read whole before the handshake (its ALPN offer decides the protocol), into a
    /// buffer that starts small and grows: one just over the first buffer and one several times its size
    /// both complete, and ALPN still settles on h2 at the end of a long list.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task LargeUploadsOverTls_PauseAtTheUpstreamsPace_AndResume(bool oneByOne)
    {
        // Eight streams of 1.5 MB each on one TLS connection outrun the upstream: the proxy stops reading the
        // client (back-pressure) and must read on once the upstream has taken its share. A resume that did
        // not reach the TLS reader left the connection stalled after the first round of streams. With
        // LAYOTTO_IO_URING=0 sends and receives go one by one, as on a kernel without io_uring.
        var (cert, key, _) = Files(null, "localhost");
        var environment = oneByOne ? new Dictionary<string, string> { ["LAYOTTO_IO_URING"] = "0" } : new Dictionary<string, string>();
        await using AotProxy proxy = await AotProxy.StartAsync(fixture.GrpcUpstreamPort, "h2", environment, "--tls-cert", cert, "--tls-key", key);
        string body = GrpcMessageFile(new EchoRequest { Message = "upload", Payload = ByteString.CopyFrom(new byte[1_500_000]) });
        var (exit, output, error) = await Processes.RunAsync("h2load", ["-n", "48", "-c", "1", "-m", "8", "-N", "20", "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
            $"https://127.0.0.1:{proxy.Port}/layotto.test.Echo/Unary"], TimeSpan.FromSeconds(90));
        Assert.True(exit == 0, error);
        Assert.True(output.Contains("48 succeeded, 0 failed", StringComparison.Ordinal), output + proxy.Log);
        Assert.Contains("status codes: 48 2xx", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(10)]   // about 2.5 KiB
    [InlineData(50)]   // about 12 KiB
    public async Task LargeClientHello_CompletesTheHandshake_WithAlpnH2(int paddingProtocols)
    {
        var (cert, key, _) = Files(null, "localhost");
        await using AotProxy proxy = await AotProxy.StartAsync(fixture.GrpcUpstreamPort, "h2", "--tls-cert", cert, "--tls-key", key);
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, proxy.Port);
        await using var tls = new SslStream(new System.Net.Sockets.NetworkStream(socket, ownsSocket: false));
        using var trusted = X509Certificate2.CreateFromPem(_pki.RootPem);
        var protocols = Enumerable.Range(0, paddingProtocols).Select(i => new SslApplicationProtocol($"x-padding-{i:D3}-" + new string('p', 220))).ToList();
        protocols.Add(SslApplicationProtocol.Http2);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ApplicationProtocols = protocols,
            CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, CustomTrustStore = { trusted }, RevocationMode = X509RevocationMode.NoCheck },
        }).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(SslApplicationProtocol.Http2, tls.NegotiatedApplicationProtocol);
        // The connection serves HTTP/2 after it: the server's SETTINGS follow our preface.
        await tls.WriteAsync("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray());
        await tls.WriteAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 });
        var head = new byte[9];
        await tls.ReadExactlyAsync(head).AsTask().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(4, head[3]); // SETTINGS
    }

    /// <summary>ALPN settles the protocol: after h2, anything but the HTTP/2 preface is a connection error (h2spec's §3.5 over TLS); after http/1.1, HTTP/1.1 only.</summary>
    [Theory]
    [InlineData("h2", "INVALID CONNECTION PREFACE\r\n\r\n")]
    [InlineData("http/1.1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")]
    public async Task AlpnChoice_IsTheOnlyProtocolTheConnectionSpeaks(string alpn, string send)
    {
        var (cert, key, _) = Files(null, "localhost");
        await using AotProxy proxy = await AotProxy.StartAsync(fixture.GrpcUpstreamPort, "h2", "--tls-cert", cert, "--tls-key", key);
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, proxy.Port);
        await using var tls = new SslStream(new System.Net.Sockets.NetworkStream(socket, ownsSocket: false));
        using var trusted = X509Certificate2.CreateFromPem(_pki.RootPem);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ApplicationProtocols = [new SslApplicationProtocol(alpn)],
            CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, CustomTrustStore = { trusted }, RevocationMode = X509RevocationMode.NoCheck },
        }).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(alpn, tls.NegotiatedApplicationProtocol.ToString());
        await tls.WriteAsync(System.Text.Encoding.ASCII.GetBytes(send));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int n;
        while ((n = await tls.ReadAsync(buffer, cts.Token)) > 0) // the proxy closes the connection
        {
            received.Write(buffer, 0, n);
        }
        byte[] answer = received.ToArray();
        if (alpn == "h2")
        {
            Assert.DoesNotContain("HTTP/1.1", System.Text.Encoding.ASCII.GetString(answer), StringComparison.Ordinal);
            Assert.Contains("invalid connection preface", System.Text.Encoding.ASCII.GetString(answer), StringComparison.Ordinal); // GOAWAY's debug data
        }
        else
        {
            Assert.StartsWith("HTTP/1.1 505 ", System.Text.Encoding.ASCII.GetString(answer), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task UpstreamTls_ToAnotherProxy_VerifiesTheCertificate_AndSaysWhyItRefuses()
    {
        var (cert, key, root) = Files("spiffe://cluster.local/ns/default/sa/front", "front.internal");
        await using AotProxy front = await AotProxy.StartAsync(fixture.HttpUpstreamPort, "h1", "--tls-cert", cert, "--tls-key", key);

        // Trusting the right root, the chain is verified (names are not: SNI says which, SANs are Envoy's business).
        await using (AotProxy edge = await AotProxy.StartAsync(front.Port, "h2", "--upstream-tls", "--upstream-ca", root, "--upstream-sni", "front.internal"))
        {
            var (exit, output, error) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", $"http://127.0.0.1:{edge.Port}/headers"]);
            Assert.True(exit == 0, error);
            Assert.Equal("200", output);
        }

        // A root that did not sign it: 503, and the log says why.
        using var other = new TestPki("Unrelated Root");
        string wrongRoot = Path.Combine(_dir, "wrong-root.pem");
        File.WriteAllText(wrongRoot, other.RootPem);
        await using (AotProxy edge = await AotProxy.StartAsync(front.Port, "h1", "--upstream-tls", "--upstream-ca", wrongRoot))
        {
            var (exit, output, error) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", $"http://127.0.0.1:{edge.Port}/headers"]);
            Assert.True(exit == 0, error);
            Assert.Equal("503", output);
            await ControlPlane.WaitForAsync(() => edge.Log.Contains("does not chain to a trusted CA", StringComparison.Ordinal), "the refusal in the log");
        }

        // Flags that do not go together are refused at start, with the reason.
        var (code, _, stderr) = await Processes.RunAsync(await AotProxy.BinaryAsync(), ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--tls-cert", cert]);
        Assert.NotEqual(0, code);
        Assert.Contains("--tls-cert and --tls-key go together", stderr, StringComparison.Ordinal);
        (code, _, stderr) = await Processes.RunAsync(await AotProxy.BinaryAsync(), ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--tls-cert", key, "--tls-key", key]);
        Assert.NotEqual(0, code);
        Assert.Contains("no certificate", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LargeMessagesBothWays_ThroughATlsHopBetweenTwoProxies_AllComplete()
    {
        // h2c in, TLS between the two binaries (as between two sidecars), 1.5 MB each way per call, eight calls
        // at a time on each of two connections: flow control blocks streams and wakes them as queues drain.
        var (cert, key, _) = Files(null, "front.internal");
        await using AotProxy front = await AotProxy.StartAsync(fixture.GrpcUpstreamPort, "h2", "--tls-cert", cert, "--tls-key", key);
        await using AotProxy edge = await AotProxy.StartAsync(front.Port, "h2", "--upstream-tls");
        string body = GrpcMessageFile(new EchoRequest { Message = "both ways", Payload = ByteString.CopyFrom(new byte[1_500_000]), ReplySize = 1_500_000 });
        var (exit, output, error) = await Processes.RunAsync("h2load", ["-n", "64", "-c", "2", "-m", "8", "-N", "20", "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
            $"http://127.0.0.1:{edge.Port}/layotto.test.Echo/Unary"], TimeSpan.FromSeconds(90));
        Assert.True(exit == 0, error);
        Assert.True(output.Contains("64 succeeded, 0 failed", StringComparison.Ordinal), output + edge.Log + front.Log);
        Assert.Contains("status codes: 64 2xx", output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled", edge.Log + front.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SilentOrStalledTlsClients_AreLetGoWhenTheHandshakeTimeoutPasses()
    {
        var (cert, key, _) = Files(null, "localhost");
        await using AotProxy proxy = await AotProxy.StartAsync(fixture.HttpUpstreamPort, "h1", "--tls-cert", cert, "--tls-key", key);
        // One client says nothing; another sends half a ClientHello and stalls. Both are closed by the
        // proxy once the handshake's 10 s are up (checked by the listener's sweep), not held forever.
        using var silent = new System.Net.Sockets.TcpClient();
        await silent.ConnectAsync(System.Net.IPAddress.Loopback, proxy.Port);
        using var stalled = new System.Net.Sockets.TcpClient();
        await stalled.ConnectAsync(System.Net.IPAddress.Loopback, proxy.Port);
        await stalled.GetStream().WriteAsync(new byte[] { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03 });
        var started = System.Diagnostics.Stopwatch.StartNew();
        foreach (var client in new[] { silent, stalled })
        {
            byte[] buffer = new byte[64];
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            int n;
            try
            {
                n = await client.GetStream().ReadAsync(buffer, limit.Token);
            }
            catch (IOException)
            {
                n = 0; // reset: closed as well
            }
            Assert.Equal(0, n);
        }
        Assert.InRange(started.Elapsed, TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(15));
    }
}
