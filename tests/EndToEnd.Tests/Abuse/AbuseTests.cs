using System.Net;
using System.Net.Sockets;
using System.Text;
using Proxy.Http2;

namespace EndToEnd.Tests.Abuse;

/// <summary>
/// Abusive peers against the published Native AOT binary (standalone mode, HTTP/1.1 upstream): rapid
/// reset, clients that never read, heads that never end, silent and preface-only connections, too many
/// connections, a broken preface. Each test checks the defence and that well-behaved clients are served
/// throughout. Memory and CPU under abuse are measured in perf/Abuse, not here.
/// </summary>
public sealed class AbuseTests
{
    private static async Task<string> GetAsync(HttpClient client, int port, string path = "/hello")
    {
        using var response = await client.GetAsync($"http://127.0.0.1:{port}{path}");
        return $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
    }

    /// <summary>Well-behaved clients, HTTP/1.1 and h2c, one request after another until stopped; counts failures.</summary>
    private sealed class GoodClients : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task[] _loops;
        private long _ok;
        private long _failed;
        public string? LastFailure;

        public GoodClients(int port)
        {
            _loops = [Loop(port, HttpVersion.Version11), Loop(port, HttpVersion.Version20)];
        }

        public long Ok => Interlocked.Read(ref _ok);
        public long Failed => Interlocked.Read(ref _failed);

        private async Task Loop(int port, Version version)
        {
            using var client = new HttpClient(new SocketsHttpHandler()) { DefaultRequestVersion = version, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(10) };
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    string answer = await GetAsync(client, port);
                    if (answer == "200 hello")
                    {
                        Interlocked.Increment(ref _ok);
                    }
                    else
                    {
                        LastFailure = answer;
                        Interlocked.Increment(ref _failed);
                    }
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                    LastFailure = e.Message;
                    Interlocked.Increment(ref _failed);
                }
                await Task.Delay(5);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_loops);
            _stop.Dispose();
        }
    }

    [Fact]
    public async Task RapidReset_ClosesTheConnectionWithinAFewHundredStreams_UpstreamSeesAlmostNothing_OthersServed()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1");
        long ok;
        long failedDuring;
        string? lastFailure;
        int sent = 0;
        List<(Http2FrameType Type, byte Flags, int StreamId, byte[] Payload)> frames;
        long upstreamBefore;
        await using (var good = new GoodClients(proxy.Port))
        {
            while (good.Ok < 10)
            {
                await Task.Delay(10);
            }
            upstreamBefore = upstream.Requests;
            using RawH2Client attacker = await RawH2Client.ConnectAsync(proxy.Port);
            attacker.Preface();
            Task<List<(Http2FrameType, byte, int, byte[])>> reading = attacker.ReadFramesAsync((type, _) => type == Http2FrameType.GoAway, TimeSpan.FromSeconds(20));
            // HEADERS + RST_STREAM pairs as fast as the socket takes them, 100 pairs a write.
            for (int streamId = 1; streamId < 20_000; )
            {
                for (int i = 0; i < 100; i++, streamId += 2, sent++)
                {
                    attacker.Headers(streamId, "GET", "/hello", endStream: true).Reset(streamId, Http2ErrorCode.Cancel);
                }
                if (!await attacker.FlushAsync() || reading.IsCompleted)
                {
                    break;
                }
            }
            frames = await reading;
            await Task.Delay(500); // others go on being served after the attacker is gone
            ok = good.Ok;
            failedDuring = good.Failed;
            lastFailure = good.LastFailure;
        }
        var goAway = Assert.Single(frames, f => f.Type == Http2FrameType.GoAway);
        var code = (Http2ErrorCode)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4));
        int lastStream = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload);
        Assert.Equal(Http2ErrorCode.EnhanceYourCalm, code);
        Assert.True(lastStream < 1000, $"GOAWAY after stream {lastStream}");
        // The good clients' requests reached the upstream too; the attacker's at most 1 % of what it sent.
        long attackerRequests = upstream.Requests - upstreamBefore - (ok - 10) - failedDuring;
        Assert.True(attackerRequests <= sent / 100, $"{attackerRequests} of the attacker's {sent} streams reached the upstream");
        Assert.True(failedDuring == 0, $"{failedDuring} good requests failed: {lastFailure}");
        // And afterwards: no upstream connection stays taken (fresh clients are served at once).
        using var after = new HttpClient();
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("200 hello", await GetAsync(after, proxy.Port));
        }
    }

    [Fact]
    public async Task H2ClientThatNeverReads_WithHugeWindows_BackPressuresTheUpstream()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1");
        using RawH2Client reader = await RawH2Client.ConnectAsync(proxy.Port, receiveBuffer: 64 * 1024);
        reader.Preface((Http2SettingsParameter.InitialWindowSize, int.MaxValue))
              .WindowUpdate(0, int.MaxValue - 65535)
              .Headers(1, "GET", "/big/536870912", endStream: true);
        Assert.True(await reader.FlushAsync());
        await AssertBackPressuredAsync(upstream, proxy);
    }

    [Fact]
    public async Task H1ClientThatNeverReads_BackPressuresTheUpstream()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1");
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 64 * 1024 };
        await socket.ConnectAsync(IPAddress.Loopback, proxy.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("GET /big/536870912 HTTP/1.1\r\nHost: x\r\n\r\n"));
        await AssertBackPressuredAsync(upstream, proxy);
    }

    /// <summary>
    /// The 512 MiB response stalls: what the upstream could write is bounded by socket buffers and the
    /// proxy's 1 MiB watermark, not by the response size, and other clients are served meanwhile.
    /// </summary>
    private static async Task AssertBackPressuredAsync(CountingUpstream upstream, AotProxy proxy)
    {
        long previous = -1;
        // Wait until the upstream has stopped making progress (stalled by back-pressure), at most 10 s.
        for (int i = 0; i < 40 && upstream.BigBytesWritten != previous; i++)
        {
            previous = upstream.BigBytesWritten;
            await Task.Delay(250);
        }
        long written = upstream.BigBytesWritten;
        Assert.True(written < 64L << 20, $"the upstream wrote {written >> 20} MiB to a client that reads nothing");
        using var other = new HttpClient();
        Assert.Equal("200 hello", await GetAsync(other, proxy.Port));
    }

    [Fact]
    public async Task HeadsThatNeverEnd_Get408AfterTheHeaderTimeout_WhileOthersAreServed()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1", "--request-headers-timeout-s", "1");
        var sockets = new List<Socket>();
        try
        {
            for (int i = 0; i < 300; i++)
            {
                var s = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(IPAddress.Loopback, proxy.Port);
                await s.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: "u8.ToArray());
                sockets.Add(s);
            }
            using var other = new HttpClient();
            Assert.Equal("200 hello", await GetAsync(other, proxy.Port));
            var started = DateTime.UtcNow;
            var answers = await Task.WhenAll(sockets.Select(ReadAllAsync));
            Assert.All(answers, a => Assert.StartsWith("HTTP/1.1 408", a, StringComparison.Ordinal));
            Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(8));
            Assert.Equal("200 hello", await GetAsync(other, proxy.Port));
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
        }
    }

    /// <summary>Everything the proxy sends until it closes (bounded by 10 s).</summary>
    private static async Task<string> ReadAllAsync(Socket socket)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0)
            {
                text.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
        }
        catch (OperationCanceledException)
        {
            text.Append("<still open>");
        }
        catch (SocketException e)
        {
            text.Append($"<{e.SocketErrorCode}>");
        }
        return text.ToString();
    }

    [Fact]
    public async Task SilentPrefaceOnlyAndIdleConnections_AreClosedByTheirTimeouts()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1", "--preface-timeout-s", "1", "--idle-timeout-s", "2");
        using var silent = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await silent.ConnectAsync(IPAddress.Loopback, proxy.Port);
        using RawH2Client prefaceOnly = await RawH2Client.ConnectAsync(proxy.Port);
        prefaceOnly.Raw(Http2FrameWriter.ClientPreface);
        Assert.True(await prefaceOnly.FlushAsync());
        using var idle = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await idle.ConnectAsync(IPAddress.Loopback, proxy.Port);
        await idle.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());

        var started = DateTime.UtcNow;
        Task<string> idleAnswer = ReadAllAsync(idle);
        string preface = Encoding.ASCII.GetString((await prefaceOnly.ReadFramesAsync((_, _) => false, TimeSpan.FromSeconds(10))).SelectMany(f => f.Payload).ToArray());
        TimeSpan prefaceClosedAfter = DateTime.UtcNow - started;
        string silentAnswer = await ReadAllAsync(silent);
        TimeSpan silentClosedAfter = DateTime.UtcNow - started;
        string idleText = await idleAnswer;

        Assert.True(prefaceClosedAfter < TimeSpan.FromSeconds(4), $"preface-only connection closed after {prefaceClosedAfter}");
        Assert.Equal("", silentAnswer); // closed with nothing said
        Assert.True(silentClosedAfter < TimeSpan.FromSeconds(6), $"silent connection closed after {silentClosedAfter}");
        Assert.StartsWith("HTTP/1.1 200", idleText, StringComparison.Ordinal);
        Assert.DoesNotContain("<still open>", idleText, StringComparison.Ordinal);
        _ = preface;
    }

    [Fact]
    public async Task IdleHttp2Connection_GetsGoAwayThenIsClosed()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1", "--idle-timeout-s", "1");
        using RawH2Client client = await RawH2Client.ConnectAsync(proxy.Port);
        client.Preface().Headers(1, "GET", "/hello", endStream: true);
        Assert.True(await client.FlushAsync());
        var started = DateTime.UtcNow;
        // The request is answered; then, with nothing in flight, idle_timeout sends GOAWAY(NO_ERROR) and closes.
        var frames = await client.ReadFramesAsync((_, _) => false, TimeSpan.FromSeconds(8));
        TimeSpan closedAfter = DateTime.UtcNow - started;
        Assert.Contains(frames, f => f.Type == Http2FrameType.Headers && f.StreamId == 1);
        var goAway = Assert.Single(frames, f => f.Type == Http2FrameType.GoAway);
        Assert.Equal(Http2ErrorCode.NoError, (Http2ErrorCode)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4)));
        Assert.Equal(1, (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload));
        Assert.True(closedAfter < TimeSpan.FromSeconds(5), $"closed after {closedAfter}");
    }

    [Fact]
    public async Task PastTheConnectionCap_NewConnectionsAreClosedAtOnce()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1", "--max-connections", "3");
        await Task.Delay(500); // the start-up probe's connection is gone
        var held = new List<Socket>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                var s = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(IPAddress.Loopback, proxy.Port);
                held.Add(s);
            }
            await Task.Delay(200);
            using (var over = new Socket(SocketType.Stream, ProtocolType.Tcp))
            {
                string answer;
                try
                {
                    await over.ConnectAsync(IPAddress.Loopback, proxy.Port);
                    await Task.Delay(100);
                    await over.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
                    answer = await ReadAllAsync(over);
                }
                catch (SocketException e)
                {
                    answer = $"<{e.SocketErrorCode}>"; // reset at once (even before connect returned): the expected outcome
                }
                Assert.DoesNotContain("200", answer, StringComparison.Ordinal);
                Assert.DoesNotContain("<still open>", answer, StringComparison.Ordinal);
            }
            held[0].Dispose();
            held.RemoveAt(0);
            await Task.Delay(300);
            using var client = new HttpClient();
            Assert.Equal("200 hello", await GetAsync(client, proxy.Port));
        }
        finally
        {
            held.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public async Task OutOfFileDescriptors_TheListenerBacksOffWithoutSpinning_AndRecovers()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1");
        using (var client = new HttpClient())
        {
            Assert.Equal("200 hello", await GetAsync(client, proxy.Port)); // its upstream connection is open
        }
        await Task.Delay(300);
        // Room for four more descriptors: the fifth connection cannot be accepted (EMFILE) and stays in
        // the backlog, readable; a listener that retried at once would spin its loop.
        int open = Directory.GetFiles($"/proc/{proxy.ProcessId}/fd").Length;
        int limit = open + 4;
        var (exit, _, err) = await Processes.RunAsync("prlimit", ["--pid", proxy.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), $"--nofile={limit}:{limit}"]);
        Assert.True(exit == 0, $"prlimit failed: {err}");
        var held = new List<Socket>();
        try
        {
            for (int i = 0; i < 12; i++)
            {
                var s = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(IPAddress.Loopback, proxy.Port); // completed by the kernel, accepted or not
                held.Add(s);
            }
            await Task.Delay(500);
            double before = CpuSeconds(proxy.ProcessId);
            await Task.Delay(1500);
            double busy = CpuSeconds(proxy.ProcessId) - before;
            Assert.True(busy < 0.5, $"{busy:F2} s of CPU in 1.5 s while out of descriptors: the accept loop spins\n{proxy.Log}");
            Assert.Contains("backing off", proxy.Log, StringComparison.Ordinal);

            // Descriptors come back: the connections waiting in the backlog are taken and served.
            held.ForEach(s => s.Dispose());
            held.Clear();
            await Processes.RunAsync("prlimit", ["--pid", proxy.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), "--nofile=4096:4096"]);
            using var again = new HttpClient();
            string answer = "";
            for (int attempt = 0; attempt < 50 && answer != "200 hello"; attempt++)
            {
                try
                {
                    answer = await GetAsync(again, proxy.Port);
                }
                catch (HttpRequestException e)
                {
                    answer = e.Message;
                    await Task.Delay(100);
                }
            }
            Assert.Equal("200 hello", answer);
        }
        finally
        {
            held.ForEach(s => s.Dispose());
        }
    }

    /// <summary>User and system CPU of process <paramref name="pid"/> so far, in seconds.</summary>
    private static double CpuSeconds(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture)) / 100.0;
    }

    [Fact]
    public async Task InvalidHttp2Preface_GetsGoAwayProtocolError()
    {
        await using CountingUpstream upstream = await CountingUpstream.StartAsync();
        await using AotProxy proxy = await AotProxy.StartAsync(upstream.Port, "h1");
        using RawH2Client client = await RawH2Client.ConnectAsync(proxy.Port);
        client.Raw("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"u8);
        Assert.True(await client.FlushAsync());
        var frames = await client.ReadFramesAsync((type, _) => type == Http2FrameType.GoAway, TimeSpan.FromSeconds(10));
        var goAway = Assert.Single(frames, f => f.Type == Http2FrameType.GoAway);
        Assert.Equal(Http2ErrorCode.ProtocolError, (Http2ErrorCode)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4)));
    }
}
