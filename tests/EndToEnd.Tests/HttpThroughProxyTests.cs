using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using EndToEnd.Tests.Grpc;

namespace EndToEnd.Tests;

/// <summary>curl (HTTP/1.1) and nghttp (h2c) through the proxy to Kestrel, and hostile input on raw sockets.</summary>
public sealed class HttpThroughProxyTests(ProxyFixture fixture) : IClassFixture<ProxyFixture>
{
    private string Url(string path) => $"http://127.0.0.1:{fixture.ProxyPort}{path}";

    [Fact]
    public async Task Curl_ChunkedUploadOf50MiB_ArrivesWhole()
    {
        string file = Path.GetTempFileName();
        try
        {
            await File.WriteAllBytesAsync(file, new byte[50 << 20]);
            var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file, Url("/echo")]);
            Assert.True(exit == 0, stderr);
            Assert.Equal($"received {50 << 20} bytes", stdout);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Curl_KeepAlive_ReusesTheConnection()
    {
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sv", Url("/hello"), Url("/hello"), Url("/big/100000")]);
        Assert.True(exit == 0, stderr);
        Assert.StartsWith("hellohello", stdout);
        Assert.Equal(10 + 100000, stdout.Length);
        Assert.Contains("Re-using existing connection", stderr);
    }

    [Fact]
    public async Task Curl_ManyHeaders_AreForwarded()
    {
        // 97 of ours and curl's Host, User-Agent and Accept: 100 field lines, Envoy's default max_headers_count.
        var args = new List<string> { "-sS", "-D", "/dev/stderr" };
        for (int i = 0; i < 97; i++)
        {
            args.Add("-H");
            args.Add($"x-h{i:D3}: value-{i}");
        }
        args.Add(Url("/headers"));
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", args);
        Assert.True(exit == 0, stderr);
        string[] lines = [.. stdout.Split('\n').Where(l => l.StartsWith("x-h", StringComparison.Ordinal))];
        Assert.True(lines.Length == 97, stdout + stderr);
        Assert.Contains("x-h042=value-42", lines);
    }

    [Fact]
    public async Task RouteHeaderMutations_AreApplied()
    {
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "-D", "/dev/stderr", "-H", "x-remove-me: 1", "-H", "x-replaced: old", "-H", "x-kept: 1", Url("/headers")]);
        Assert.True(exit == 0, stderr);
        string[] lines = stdout.Split('\n');
        Assert.Contains("x-added=by-route", lines);
        Assert.Contains("x-replaced=new", lines);
        Assert.Contains("x-kept=1", lines);
        Assert.DoesNotContain(lines, l => l.StartsWith("x-remove-me", StringComparison.Ordinal));
        Assert.Contains("x-response-added: yes", stderr);
    }

    [Fact]
    public async Task Curl_Head_HasNoBody()
    {
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "-I", Url("/hello")]);
        Assert.True(exit == 0, stderr);
        Assert.StartsWith("HTTP/1.1 200", stdout);
    }

    [Fact]
    public async Task Nghttp_H2cToHttp1Upstream_WithUpload()
    {
        string file = Path.GetTempFileName();
        try
        {
            await File.WriteAllBytesAsync(file, new byte[3 << 20]);
            var (exit, stdout, stderr) = await Processes.RunAsync("nghttp", ["-d", file, Url("/echo")]);
            Assert.True(exit == 0, stderr + stdout);
            Assert.Equal($"received {3 << 20} bytes", stdout);
            (exit, stdout, stderr) = await Processes.RunAsync("nghttp", [Url("/big/2000000")]);
            Assert.True(exit == 0, stderr);
            Assert.Equal(2000000, stdout.Length);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Http1Client_ToGrpcUpstreamOverH2_GetsBodyAndTrailersInChunkedEncoding()
    {
        string file = Path.GetTempFileName();
        try
        {
            byte[] message = new EchoRequest { Message = "via-h1" }.ToByteArray();
            await File.WriteAllBytesAsync(file, [0, 0, 0, 0, (byte)message.Length, .. message]);
            var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "--raw", "--http1.1", "-H", "content-type: application/grpc", "-H", "te: trailers",
                "--data-binary", "@" + file, Url("/layotto.test.Echo/Unary")]);
            Assert.True(exit == 0, stderr);
            Assert.Contains("via-h1", stdout);
            Assert.Contains("grpc-status: 0", stdout); // the trailer section of the chunked coding
            Assert.Contains("x-trailer: trailer-value", stdout);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Retry_On5xx_Recovers_WithoutRetryTheClientSees503()
    {
        string id = Guid.NewGuid().ToString("N");
        var (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-w", " %{http_code}", Url($"/flaky/{id}")]);
        Assert.Equal("ok after 2 200", stdout);
        string other = Guid.NewGuid().ToString("N");
        (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", Url($"/flaky-no-retry/{other}")]);
        Assert.Equal("503", stdout);
    }

    [Fact]
    public async Task PerTryTimeout_AbandonsTheSlowAttemptAndRetries()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-w", " %{http_code}", Url($"/slow-once/{Guid.NewGuid():N}")]);
        Assert.Equal("fast 200", stdout);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(4), $"took {sw.Elapsed}");
    }

    [Fact]
    public async Task Retry_RecoversFromAnUpstreamReset()
    {
        var (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-w", " %{http_code}", Url($"/reset-once/{Guid.NewGuid():N}")]);
        Assert.Equal("recovered 200", stdout);
    }

    [Fact]
    public async Task Retry_OnConnectFailure_GoesToAnotherHost()
    {
        // One of the two endpoints refuses connections; previous_hosts sends the retry to the other.
        var urls = Enumerable.Range(0, 10).Select(_ => Url("/mixed/hello")).ToList();
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", .. urls]);
        Assert.True(exit == 0, stderr);
        Assert.Equal(string.Concat(Enumerable.Repeat("hello", 10)), stdout);
    }

    [Fact]
    public async Task RedirectAndDirectResponse_AreAnsweredByTheProxy()
    {
        var (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", Url("/old/page?x=1")]);
        Assert.Equal("301 https://new.example/new/page?x=1", stdout);
        // host_redirect without port_redirect: the request's port does not follow (Envoy's newUri).
        (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", Url("/moved-host/a")]);
        Assert.Equal("302 http://other.example/moved-host/a", stdout);
        (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-w", " %{http_code}", Url("/direct")]);
        Assert.Equal("made by the proxy 202", stdout);
    }

    [Fact]
    public async Task CircuitBreaker_MaxRequests_Answers503Overloaded()
    {
        Task<(int, string, string)> first = Processes.RunAsync("curl", ["-sS", Url("/limited/sleep/3000")]);
        // While the first request holds the cluster's only slot, another is refused (polled: curl may start late).
        string stdout = "";
        for (int i = 0; i < 25 && !stdout.StartsWith("HTTP/1.1 503", StringComparison.Ordinal); i++)
        {
            await Task.Delay(100);
            (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-D", "-", "-o", "/dev/null", Url("/limited/hello")]);
        }
        Assert.StartsWith("HTTP/1.1 503", stdout);
        Assert.Contains("x-envoy-overloaded: true", stdout);
        Assert.Equal("slept", (await first).Item2);
        (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", Url("/limited/hello")]);
        Assert.Equal("hello", stdout);
    }

    [Fact]
    public async Task Cors_PreflightAnsweredAndAllowedOriginsMarked()
    {
        var (_, preflight, _) = await Processes.RunAsync("curl", ["-sS", "-D", "-", "-o", "/dev/null", "-X", "OPTIONS", "-H", "Origin: https://app.example",
            "-H", "Access-Control-Request-Method: POST", Url("/cors/hello")]);
        Assert.StartsWith("HTTP/1.1 200", preflight);
        Assert.Contains("access-control-allow-origin: https://app.example", preflight);
        Assert.Contains("access-control-allow-methods: GET,POST", preflight);
        Assert.Contains("access-control-max-age: 600", preflight);
        Assert.Contains("access-control-allow-credentials: true", preflight);

        var (_, actual, _) = await Processes.RunAsync("curl", ["-sS", "-D", "-", "-H", "Origin: https://app.example", Url("/cors/hello")]);
        Assert.Contains("access-control-allow-origin: https://app.example", actual);
        Assert.Contains("access-control-expose-headers: x-trace", actual);
        Assert.EndsWith("hello", actual);

        var (_, other, _) = await Processes.RunAsync("curl", ["-sS", "-D", "-", "-H", "Origin: https://evil.example", Url("/cors/hello")]);
        Assert.DoesNotContain("access-control-allow-origin", other);
        Assert.EndsWith("hello", other);
    }

    [Fact]
    public async Task Mirror_SendsAShadowCopyWithTheBody()
    {
        string id = Guid.NewGuid().ToString("N");
        var (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "--data-binary", "payload-123", Url($"/mirror-probe/{id}")]);
        Assert.Equal("primary-answer", stdout);
        string seen = "";
        for (int i = 0; i < 50 && seen.Split('|').Length < 2; i++)
        {
            await Task.Delay(100);
            (_, seen, _) = await Processes.RunAsync("curl", ["-sS", Url($"/mirror-seen/{id}")]);
        }
        string[] requests = seen.Split('|');
        Assert.Equal(2, requests.Length);
        Assert.Contains(requests, r => r == $"127.0.0.1:{fixture.ProxyPort} payload-123");
        Assert.Contains(requests, r => r == $"127.0.0.1-shadow:{fixture.ProxyPort} payload-123");
    }

    [Fact]
    public async Task IdleTimeout_Is408_WhileActiveStreamsLive()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", Url("/idle/sleep/3000")]);
        Assert.Equal("408", stdout);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2.5), $"took {sw.Elapsed}");
        // A 2 MB body keeps the stream busy well past 300 ms of total time; it is not idle.
        (_, stdout, _) = await Processes.RunAsync("curl", ["-sS", "--limit-rate", "2M", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", Url("/idle/big/2000000")]);
        Assert.Equal("200 2000000", stdout);
    }

    [Fact]
    public async Task RouteTimeout_Is504()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (exit, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", Url("/slow")]);
        Assert.Equal(0, exit);
        Assert.Equal("504", stdout);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(8), $"took {sw.Elapsed}");
    }

    [Fact]
    public async Task GrpcTimeout_IsEnforcedByTheProxy()
    {
        // nghttp does not enforce grpc-timeout itself: the DEADLINE_EXCEEDED must come from the proxy.
        var probe = new ProxyFixture();
        await probe.InitializeAsync();
        string file = Path.GetTempFileName();
        try
        {
            byte[] message = new EchoRequest { DelayMs = 20_000 }.ToByteArray();
            byte[] frame = [0, 0, 0, 0, (byte)message.Length, .. message];
            await File.WriteAllBytesAsync(file, frame);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var (exit, stdout, stderr) = await Processes.RunAsync("nghttp", ["-v", "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "grpc-timeout: 300m", "-d", file,
                $"http://127.0.0.1:{probe.ProxyPort}/layotto.test.Echo/Unary"]);
            Assert.True(exit == 0, stderr + stdout);
            Assert.Contains("grpc-status: 4", stdout);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed}");
            Assert.Equal("/layotto.test.Echo/Unary", await probe.Probe.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            File.Delete(file);
            await probe.DisposeAsync();
        }
    }

    /// <summary>Sends <paramref name="request"/> and reads until the proxy closes; <paramref name="halfCloseAfter"/>: shutdown(SHUT_WR) that long after sending.</summary>
    private async Task<string> RawExchangeAsync(byte[] request, TimeSpan? halfCloseAfter = null)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, fixture.ProxyPort);
        await socket.SendAsync(request);
        if (halfCloseAfter is { } delay)
        {
            await Task.Delay(delay);
            socket.Shutdown(SocketShutdown.Send);
        }
        var received = new MemoryStream();
        var buffer = new byte[65536];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (true)
        {
            int n = await socket.ReceiveAsync(buffer, cts.Token);
            if (n == 0)
            {
                break; // the proxy closed the connection
            }
            received.Write(buffer, 0, n);
        }
        return Encoding.ASCII.GetString(received.ToArray());
    }

    [Theory]
    [InlineData("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400")]
    [InlineData("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "400")]
    [InlineData("GET /hello HTTP/1.1\r\nHost: a\r\n folded: header\r\n\r\n", "400")]
    [InlineData("GET /hello HTTP/1.1\r\nHost : a\r\n\r\n", "400")]
    [InlineData("GET /hello HTTP/1.1\r\n\r\n", "400")]
    [InlineData("GET /hello HTTP/3.0\r\nHost: a\r\n\r\n", "505")]
    [InlineData("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "501")]
    [InlineData("GET /hello HTTP/1.1\nHost: a\n\n", "400")]                   // bare LF: refused at once, not left waiting
    [InlineData("GET /hello#fragment HTTP/1.1\r\nHost: a\r\n\r\n", "400")]
    [InlineData("GET /hello HTTP/1.1\r\nHost: user@a\r\n\r\n", "400")]
    public async Task MalformedRequest_IsRejectedAndClosed(string request, string status)
    {
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes(request));
        Assert.StartsWith($"HTTP/1.1 {status} ", response);
        Assert.Contains("connection: close", response);
        // Everyone else is still served.
        var (exit, stdout, _) = await Processes.RunAsync("curl", ["-sS", Url("/hello")]);
        Assert.Equal(0, exit);
        Assert.Equal("hello", stdout);
    }

    [Fact]
    public async Task EmptyLinesBeforeTheRequestLine_AreIgnored_AndConnectIsNotForwarded()
    {
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes("\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 200 ", response);
        Assert.Contains("\r\nhello\r\n", response);
        // CONNECT matches only connect_matcher routes (as in Envoy): 404, never sent upstream as "GET /".
        response = await RawExchangeAsync(Encoding.ASCII.GetBytes("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nConnection: close\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 404 ", response);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ClientThatHalfClosesAfterItsRequest_GetsTheAnswer(bool finApart)
    {
        // As `nc -N` or a script does: the request, then shutdown(SHUT_WR); the FIN on the same edge as
        // the request or on one of its own.
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"),
            TimeSpan.FromMilliseconds(finApart ? 50 : 0));
        Assert.StartsWith("HTTP/1.1 200 ", response);
        Assert.Contains("hello", response, StringComparison.Ordinal); // and then the proxy closed (the loop above ended)
    }

    [Fact]
    public async Task WebSocketUpgrade_WithoutUpgradeConfigs_Is403()
    {
        // This connection manager names no upgrade_configs: as in Envoy, the upgrade is refused, not sent on as a plain GET.
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes(
            "GET /hello HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 403 ", response);
        Assert.Contains("upgrade not allowed", response, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("zz\r\nhello\r\n0\r\n\r\n")]                              // not a hex size
    [InlineData("fffffffffffffffff\r\nhello\r\n0\r\n\r\n")]               // overflows
    [InlineData("5\r\nhello\r\n0\r\nbad trailer\r\n\r\n")]              // a trailer line without a colon
    [InlineData("5\r\nhello\r\n0\r\nx-t: a\u0001b\r\n\r\n")]           // a trailer value with a control character
    [InlineData("5\r\nhello\r\n0\r\n folded: t\r\n\r\n")]               // obs-fold in the trailer section
    public async Task BadChunkedBody_Is400_WhenNoResponseHasStarted(string body)
    {
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body));
        Assert.StartsWith("HTTP/1.1 400 ", response);
        Assert.Contains("connection: close", response);
        Assert.DoesNotContain("received", response);
    }

    [Theory]
    [InlineData("GET /hello extra HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET /hello HTTP/1.1 extra\r\nHost: a\r\n\r\n")]
    [InlineData("POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")]
    [InlineData("GET /hello HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\ty\r\n\r\n")]
    public async Task MoreMalformedRequests_Are400(string request)
    {
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes(request));
        Assert.StartsWith("HTTP/1.1 400 ", response);
    }

    [Fact]
    public async Task FieldsNamedByConnection_AndH2cUpgradeFields_DoNotReachTheUpstream()
    {
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "-H", "Connection: x-hop, HTTP2-Settings, Upgrade", "-H", "X-Hop: 1", "-H", "X-Kept: 2",
            "-H", "Upgrade: h2c", "-H", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", Url("/headers")]);
        Assert.True(exit == 0, stderr);
        Assert.Contains("x-kept=2", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("x-hop", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HeadSentAnOctetAtATime_IsParsedOnce_AndServed()
    {
        // The head's end is searched from where the last search stopped (less three octets, so a CRLFCRLF
        // split over reads is still found): a head dribbled in one octet at a time is parsed like any other.
        // HTTP/1.0: the answer is delimited by the close, not chunked, so its body can be read as is.
        string head = "GET /headers HTTP/1.0\r\nHost: a\r\nX-Long: " + new string('v', 6000) + "\r\nX-Tail: t\r\n\r\n";
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, fixture.ProxyPort);
        byte[] bytes = Encoding.ASCII.GetBytes(head);
        for (int i = 0; i < bytes.Length; i++)
        {
            await socket.SendAsync(bytes.AsMemory(i, 1));
        }
        var received = new MemoryStream();
        var buffer = new byte[65536];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        int n;
        while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0)
        {
            received.Write(buffer, 0, n);
        }
        string response = Encoding.ASCII.GetString(received.ToArray());
        Assert.StartsWith("HTTP/1.1 200 ", response, StringComparison.Ordinal);
        Assert.DoesNotContain("transfer-encoding", response, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("x-tail=t", response, StringComparison.Ordinal);
        Assert.Contains("x-long=" + new string('v', 6000), response, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MoreThan100HeaderFields_Is431_AsEnvoysMaxHeadersCount()
    {
        string fields = string.Concat(Enumerable.Range(0, 100).Select(i => $"x-{i}: v\r\n"));
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes("GET /hello HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n"));
        Assert.StartsWith("HTTP/1.1 431 ", response);
        // Each Connection option names fields to remove: a head may list 64 of them, not thousands.
        string connection = "Connection: " + string.Join(", ", Enumerable.Range(0, 5000).Select(i => "x-" + i)) + "\r\n";
        Assert.StartsWith("HTTP/1.1 400 ", await RawExchangeAsync(Encoding.ASCII.GetBytes("GET /hello HTTP/1.1\r\nHost: a\r\n" + connection + "\r\n")));
        string fewer = string.Concat(Enumerable.Range(0, 98).Select(i => $"x-{i}: v\r\n"));
        Assert.StartsWith("HTTP/1.1 200 ", await RawExchangeAsync(Encoding.ASCII.GetBytes("GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + fewer + "\r\n")));
    }

    [Fact]
    public async Task OversizedHeaderSection_Is431()
    {
        string big = "GET /hello HTTP/1.1\r\nHost: a\r\nx-big: " + new string('a', 70_000) + "\r\n\r\n";
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes(big));
        Assert.StartsWith("HTTP/1.1 431 ", response);
    }

    [Fact]
    public async Task PipelinedRequests_AreAnsweredInOrder()
    {
        string two = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /big/10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        string response = await RawExchangeAsync(Encoding.ASCII.GetBytes(two));
        int first = response.IndexOf("hello", StringComparison.Ordinal);
        int second = response.IndexOf("abcdefghij", StringComparison.Ordinal);
        Assert.True(first > 0 && second > first, response);
    }

    [Fact]
    public async Task NoRoute_Is404()
    {
        var (exit, stdout, _) = await Processes.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: no-route.example", Url("/x")]);
        Assert.Equal(0, exit);
        Assert.Equal("404", stdout);
    }

    [Fact]
    public async Task HostileH2_TruncatedAndOversizedFrames_AreRejected_OthersServed()
    {
        // A HEADERS frame claiming 16 MiB: larger than our SETTINGS_MAX_FRAME_SIZE → GOAWAY FRAME_SIZE_ERROR.
        byte[] preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();
        byte[] settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        byte[] oversized = [0xFF, 0xFF, 0xFF, 1, 4, 0, 0, 0, 1];
        string response = await RawExchangeAsync([.. preface, .. settings, .. oversized]);
        byte[] bytes = Encoding.ASCII.GetBytes(response);
        int goAway = FindFrame(bytes, 7);
        Assert.True(goAway >= 0, "no GOAWAY");
        Assert.Equal(6, bytes[goAway + 9 + 7]); // FRAME_SIZE_ERROR
        var (exit, stdout, _) = await Processes.RunAsync("nghttp", [Url("/hello")]);
        Assert.Equal(0, exit);
        Assert.Equal("hello", stdout);
    }

    [Fact]
    public async Task PingFlood_FromAPeerThatDoesNotRead_IsBounded_OthersServed()
    {
        // 40 MiB of PINGs, never reading the ACKs: the proxy stops reading this peer once 16 MiB of
        // answers wait, instead of queueing without bound; everyone else is served meanwhile.
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.ReceiveBufferSize = 4096;
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, fixture.ProxyPort);
        byte[] ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        byte[] chunk = [.. Enumerable.Range(0, 4096).SelectMany(_ => ping)];
        await socket.SendAsync((byte[])[.. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray(), 0, 0, 0, 4, 0, 0, 0, 0, 0]);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        long sent = 0;
        try
        {
            while (sent < 40L << 20)
            {
                sent += await socket.SendAsync(chunk, SocketFlags.None, cts.Token);
            }
        }
        catch (OperationCanceledException)
        {
            // Our send blocked: the proxy stopped reading, as it should.
        }
        Assert.True(sent < 40L << 20, $"the proxy kept reading {sent} octets of PINGs it could not answer");
        var (exit, stdout, _) = await Processes.RunAsync("curl", ["-sS", Url("/hello")]);
        Assert.Equal(0, exit);
        Assert.Equal("hello", stdout);
    }

    private static int FindFrame(byte[] bytes, byte type)
    {
        int pos = 0;
        while (pos + 9 <= bytes.Length)
        {
            int length = (bytes[pos] << 16) | (bytes[pos + 1] << 8) | bytes[pos + 2];
            if (bytes[pos + 3] == type)
            {
                return pos;
            }
            pos += 9 + length;
        }
        return -1;
    }
}
