using System.Text.Json;
using EndToEnd.Tests.Abuse;
using Google.Protobuf;

namespace EndToEnd.Tests;

/// <summary>
/// perf/Proxy.Load, the load driver, run as a process (as scripts run it) against the published proxy and
/// Kestrel: the open model holds its rate, the report files say what happened, statuses and gRPC statuses
/// are counted, thresholds set the exit code, and mistakes are refused with a reason.
/// </summary>
public sealed class LoadDriverTests(ProxyFixture fixture) : IClassFixture<ProxyFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("load-driver-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string DriverPath()
    {
        // The driver's build output beside ours: perf/Proxy.Load/bin/<configuration>/net10.0/proxy-load.dll.
        string testBin = AppContext.BaseDirectory;
        string driver = testBin.Replace(Path.Combine("tests", "EndToEnd.Tests"), Path.Combine("perf", "Proxy.Load"), StringComparison.Ordinal);
        return Path.Combine(driver, "proxy-load.dll");
    }

    private static Task<(int ExitCode, string Stdout, string Stderr)> RunDriver(params string[] args) =>
        Processes.RunAsync("dotnet", [DriverPath(), .. args], TimeSpan.FromSeconds(90));

    private string Body(EchoRequestSpec spec)
    {
        string path = Path.Combine(_dir, $"body-{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(path, new Grpc.EchoRequest { Message = spec.Message, Status = spec.Status }.ToByteArray());
        return path;
    }

    private readonly record struct EchoRequestSpec(string Message, int Status = 0);

    /// <summary>nghttpd (Debian's nghttp2-server) serving <paramref name="root"/> over h2c: an upstream in its own process.</summary>
    internal static async Task<(System.Diagnostics.Process Process, int Port)> StartNghttpd(string root)
    {
        int port = AotProxy.FreePort();
        var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("nghttpd", ["--no-tls", "-d", root, port.ToString(System.Globalization.CultureInfo.InvariantCulture)])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await probe.ConnectAsync(System.Net.IPAddress.Loopback, port);
                return (process, port);
            }
            catch (System.Net.Sockets.SocketException) when (attempt < 100 && !process.HasExited)
            {
                await Task.Delay(50);
            }
        }
    }

    [Fact]
    public async Task OpenModel_ThroughThePublishedProxy_HoldsTheRate_AndWritesJsonAndHtml()
    {
        // The upstream is nghttpd in a process of its own, so nothing in this test host (Kestrel shares its
        // thread pool with every other test) can stall the run being measured.
        string root = Directory.CreateTempSubdirectory("load-nghttpd-").FullName;
        await File.WriteAllTextAsync(Path.Combine(root, "hello.txt"), "hello from nghttpd\n");
        var (nghttpd, upstreamPort) = await StartNghttpd(root);
        try
        {
            await using AotProxy proxy = await AotProxy.StartAsync(upstreamPort, "h2");
            string report = Path.Combine(_dir, "open");
            var (exit, stdout, stderr) = await RunDriver("--url", $"http://127.0.0.1:{proxy.Port}/hello.txt", "--protocol", "h2",
                "--rate", "400", "--duration", "3s", "--warmup", "1s", "--connections", "4",
                "--report", report, "--max-error-rate", "0");
            Assert.True(exit == 0, stdout + stderr);

            using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "report.json")));
            JsonElement r = json.RootElement;
            long requests = r.GetProperty("requests").GetInt64();
            Assert.InRange(requests, 1176, 1224); // 400/s for 3 s, within 2 %
            Assert.InRange(r.GetProperty("rps").GetDouble(), 392, 408);
            Assert.Equal(0, r.GetProperty("failed").GetInt64());
            Assert.Equal(requests, r.GetProperty("status").GetProperty("200").GetInt64());
            Assert.Equal(requests * "hello from nghttpd\n".Length, r.GetProperty("bytes").GetProperty("received").GetInt64());
            JsonElement latency = r.GetProperty("latency_ms");
            double p50 = latency.GetProperty("p50").GetDouble(), p99 = latency.GetProperty("p99").GetDouble(), max = latency.GetProperty("max").GetDouble();
            Assert.True(p50 > 0 && p50 <= latency.GetProperty("p90").GetDouble() && p99 <= latency.GetProperty("p999").GetDouble() && p99 <= max, r.ToString());
            Assert.InRange(r.GetProperty("timeline").GetArrayLength(), 3, 4);
            Assert.Equal("open", r.GetProperty("model").GetString());

            string html = File.ReadAllText(Path.Combine(report, "report.html"));
            Assert.Equal(3, html.Split("<svg ").Length - 1);
            Assert.Contains("<polyline", html, StringComparison.Ordinal);
            Assert.Contains("Latency by percentile", html, StringComparison.Ordinal);
            Assert.DoesNotContain("<script", html, StringComparison.Ordinal);
            Assert.Contains("requests", File.ReadAllText(Path.Combine(report, "report.txt")), StringComparison.Ordinal);
            Assert.Contains($"requests   {requests} in 3 s", stdout, StringComparison.Ordinal);
        }
        finally
        {
            nghttpd.Kill();
            nghttpd.Dispose();
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task StalledUpstream_OpenModelCountsTheStallFromTheIntendedTime_AndTheProxyRefusesNothing()
    {
        // nghttpd stops for a second under 400 req/s: requests pile up past its 100 streams, so the proxy
        // opens a second upstream connection, which may carry only 100 streams until nghttpd's SETTINGS
        // say otherwise (more would be refused, and answered 503). The open model keeps sending at the
        // intended times, so the stall shows in the latencies instead of vanishing from them.
        string root = Directory.CreateTempSubdirectory("load-stall-").FullName;
        await File.WriteAllTextAsync(Path.Combine(root, "hello.txt"), "hello\n");
        var (nghttpd, upstreamPort) = await StartNghttpd(root);
        try
        {
            await using AotProxy proxy = await AotProxy.StartAsync(upstreamPort, "h2");
            string report = Path.Combine(_dir, "stall");
            Task<(int ExitCode, string Stdout, string Stderr)> run = RunDriver("--url", $"http://127.0.0.1:{proxy.Port}/hello.txt", "--protocol", "h2",
                "--rate", "400", "--duration", "6s", "--warmup", "0s", "--connections", "4", "--report", report, "--quiet");
            // Everything is measured (no warm-up): the stall falls in the window if the driver started within 3 s.
            await Task.Delay(3000);
            await Processes.RunAsync("kill", ["-STOP", nghttpd.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            await Task.Delay(1000);
            await Processes.RunAsync("kill", ["-CONT", nghttpd.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            var (exit, stdout, stderr) = await run;
            Assert.True(exit == 0, stdout + stderr + proxy.Log);
            using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "report.json")));
            JsonElement r = json.RootElement;
            Assert.True(r.GetProperty("failed").GetInt64() == 0, stdout + proxy.Log);
            Assert.InRange(r.GetProperty("requests").GetInt64(), 2352, 2448);
            Assert.True(r.GetProperty("latency_ms").GetProperty("max").GetDouble() >= 700, stdout);
        }
        finally
        {
            nghttpd.Kill();
            nghttpd.Dispose();
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task ClosedModel_Http1_CountsEveryRequest_AndAFailingStatusTripsTheThreshold()
    {
        string ok = Path.Combine(_dir, "h1");
        var (exit, stdout, stderr) = await RunDriver("--url", $"http://127.0.0.1:{fixture.ProxyPort}/hello", "--connections", "4",
            "--requests", "2000", "--duration", "30s", "--warmup", "0s", "--report", ok, "--quiet");
        Assert.True(exit == 0, stdout + stderr);
        using (JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(ok, "report.json"))))
        {
            Assert.Equal(2000, json.RootElement.GetProperty("requests").GetInt64());
            Assert.Equal(2000, json.RootElement.GetProperty("status").GetProperty("200").GetInt64());
            Assert.Equal(2000 * "hello".Length, json.RootElement.GetProperty("bytes").GetProperty("received").GetInt64());
            Assert.Equal("closed", json.RootElement.GetProperty("model").GetString());
        }

        // A route the upstream does not have: 404s are failures, and --max-error-rate makes the exit code 1.
        string bad = Path.Combine(_dir, "h1-404");
        (exit, stdout, stderr) = await RunDriver("--url", $"http://127.0.0.1:{fixture.ProxyPort}/no-such-page", "--connections", "2",
            "--requests", "300", "--warmup", "0s", "--report", bad, "--max-error-rate", "1%", "--quiet");
        Assert.True(exit == 1, stdout + stderr);
        Assert.Contains("THRESHOLD  error rate", stdout, StringComparison.Ordinal);
        using JsonDocument failed = JsonDocument.Parse(File.ReadAllText(Path.Combine(bad, "report.json")));
        Assert.Equal(300, failed.RootElement.GetProperty("failed").GetInt64());
        Assert.Equal(300, failed.RootElement.GetProperty("failures").GetProperty("status").GetInt64());
        Assert.Equal(300, failed.RootElement.GetProperty("status").GetProperty("404").GetInt64());
        Assert.Equal(1, failed.RootElement.GetProperty("thresholds").GetProperty("violations").GetArrayLength());
    }

    [Fact]
    public async Task Grpc_CountsGrpcStatuses_NonZeroIsAFailure_AndP99ThresholdSetsTheExitCode()
    {
        string ok = Path.Combine(_dir, "grpc-ok");
        var (okExit, okOut, okErr) = await RunDriver("--url", $"http://127.0.0.1:{fixture.GrpcUpstreamPort}/layotto.test.Echo/Unary", "--grpc",
            "--body-file", Body(new("hello")), "--connections", "2", "--streams", "4", "--requests", "200", "--warmup", "0s",
            "--report", ok, "--max-error-rate", "0", "--quiet");
        Assert.True(okExit == 0, okOut + okErr);
        using (JsonDocument passed = JsonDocument.Parse(File.ReadAllText(Path.Combine(ok, "report.json"))))
        {
            Assert.Equal(200, passed.RootElement.GetProperty("grpc_status").GetProperty("0").GetInt64());
            Assert.Equal(0, passed.RootElement.GetProperty("failed").GetInt64());
        }

        string dir = Path.Combine(_dir, "grpc-fail");
        var (exit, stdout, stderr) = await RunDriver("--url", $"http://127.0.0.1:{fixture.GrpcUpstreamPort}/layotto.test.Echo/Unary", "--grpc",
            "--body-file", Body(new("nope", Status: 5)), "--connections", "2", "--streams", "4", "--requests", "200", "--warmup", "0s",
            "--report", dir, "--max-p99", "0.0001", "--quiet");
        Assert.True(exit == 1, stdout + stderr);
        Assert.Contains("THRESHOLD  p99", stdout, StringComparison.Ordinal);
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "report.json")));
        Assert.Equal(200, json.RootElement.GetProperty("grpc_status").GetProperty("5").GetInt64());
        Assert.Equal(200, json.RootElement.GetProperty("failed").GetInt64());
    }

    [Theory]
    [InlineData("--duration|3s", "--url is required")]
    [InlineData("--url|http://127.0.0.1:1/|--streams|2", "--streams above 1 needs --protocol h2")]
    [InlineData("--url|https://127.0.0.1:1/", "https is not supported")]
    [InlineData("--url|http://127.0.0.1:1/|--rate|-5", "--rate '-5'")]
    [InlineData("--url|http://127.0.0.1:1/|--duration|soon", "--duration 'soon'")]
    [InlineData("--url|http://127.0.0.1:1/|--grpc|--protocol|h1", "--grpc needs --protocol h2")]
    [InlineData("--url|http://127.0.0.1:1/|--bogus", "unknown option --bogus")]
    [InlineData("--url|http://127.0.0.1:1/|-H|bad name: v", "with a token for the name")]
    [InlineData("--url|http://127.0.0.1:1/|-H|x-a: b\r\nx-smuggled: 1", "control characters are not allowed")]
    [InlineData("--url|http://127.0.0.1:1/|-H|content-length: 5", "the driver frames its own messages")]
    public async Task BadArguments_AreRefusedWithTheReason(string args, string reason)
    {
        var (exit, stdout, stderr) = await RunDriver(args.Split('|'));
        Assert.True(exit == 2, stdout + stderr);
        Assert.Contains(reason, stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnreachableTarget_ExitsWithTwoAndSaysWhere()
    {
        int port = AotProxy.FreePort();
        var (exit, stdout, stderr) = await RunDriver("--url", $"http://127.0.0.1:{port}/", "--duration", "1s", "--quiet");
        Assert.True(exit == 2, stdout + stderr);
        Assert.Contains($"cannot connect to 127.0.0.1:{port}", stderr, StringComparison.Ordinal);
    }
}
