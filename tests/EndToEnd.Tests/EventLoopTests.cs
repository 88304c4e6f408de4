using System.Globalization;
using EndToEnd.Tests.Abuse;

namespace EndToEnd.Tests;

/// <summary>
/// The published binary at --concurrency 2 (two event loops of our own, each with its own upstream pool
/// slots), under many connections with h2load: every request answered, over HTTP/1.1 and HTTP/2 upstreams,
/// and the same with LAYOTTO_SOCKET_ENGINE=dotnet (.NET's socket engine), which must keep working.
/// </summary>
public sealed class EventLoopTests
{
    private static async Task<(int Succeeded, string Output)> H2load(params string[] args)
    {
        var (exit, stdout, stderr) = await Processes.RunAsync("h2load", args, TimeSpan.FromSeconds(90));
        var line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith("requests:", StringComparison.Ordinal)) ?? "";
        // "requests: N total, N started, N done, N succeeded, F failed, E errored, T timeout"
        string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int succeeded = words.Length > 7 ? int.Parse(words[7], CultureInfo.InvariantCulture) : -1;
        return (succeeded, $"exit {exit}\n{stdout}\n{stderr}");
    }

    [Theory]
    [InlineData("loops")]
    [InlineData("dotnet")]
    public async Task Http1_upstream_answers_every_request_from_32_connections_at_concurrency_2(string engine)
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var environment = engine == "dotnet" ? new Dictionary<string, string> { ["LAYOTTO_SOCKET_ENGINE"] = "dotnet" } : new Dictionary<string, string>();
        int admin = AotProxy.FreePort();
        await using var proxy = await AotProxy.StartAsync(upstream.Port, "h1", environment, "--concurrency", "2", "--admin-address", $"127.0.0.1:{admin}");
        var (succeeded, output) = await H2load("--h1", "-n", "4000", "-c", "32", $"http://127.0.0.1:{proxy.Port}/hello");
        Assert.True(succeeded == 4000, output + "\n" + proxy.Log);
        Assert.Equal(4000, upstream.Requests);
        await AssertRequestsStayedOnTheirLoops(engine, admin, 4000);
    }

    /// <summary>
    /// On our loops, every request ran on the loop of its connections: no thread entered another loop's
    /// lock (each such entry costs a process-wide barrier), bar a few at start-up and from timers.
    /// </summary>
    private static async Task AssertRequestsStayedOnTheirLoops(string engine, int adminPort, int requests)
    {
        if (engine != "loops")
        {
            return;
        }
        using var client = new HttpClient();
        string stats = await client.GetStringAsync($"http://127.0.0.1:{adminPort}/stats");
        string line = stats.Split('\n').Single(l => l.StartsWith("server.loop_lock_foreign_entries: ", StringComparison.Ordinal));
        long foreign = long.Parse(line.AsSpan(line.IndexOf(' ') + 1), CultureInfo.InvariantCulture);
        Assert.True(foreign <= requests / 1000, $"{foreign} entries of a loop's lock from another thread over {requests} requests");
    }

    [Theory]
    [InlineData("loops")]
    [InlineData("dotnet")]
    public async Task Http2_upstream_answers_every_request_from_multiplexed_connections_at_concurrency_2(string engine)
    {
        string root = Directory.CreateTempSubdirectory("loops-nghttpd-").FullName;
        await File.WriteAllTextAsync(Path.Combine(root, "hello.txt"), "hello from nghttpd\n");
        var (nghttpd, upstreamPort) = await LoadDriverTests.StartNghttpd(root);
        try
        {
            var environment = engine == "dotnet" ? new Dictionary<string, string> { ["LAYOTTO_SOCKET_ENGINE"] = "dotnet" } : new Dictionary<string, string>();
            int admin = AotProxy.FreePort();
            await using var proxy = await AotProxy.StartAsync(upstreamPort, "h2", environment, "--concurrency", "2", "--admin-address", $"127.0.0.1:{admin}");
            var (succeeded, output) = await H2load("-n", "8000", "-c", "8", "-m", "16", $"http://127.0.0.1:{proxy.Port}/hello.txt");
            Assert.True(succeeded == 8000, output + "\n" + proxy.Log);
            Assert.Contains("8000 succeeded", output);
            await AssertRequestsStayedOnTheirLoops(engine, admin, 8000);
            // The open upstream connections, as /clusters counts them from the admin thread: at least one
            // (a loop's own), at most the pool's 16 per loop.
            using var client = new HttpClient();
            string clusters = await client.GetStringAsync($"http://127.0.0.1:{admin}/clusters");
            string line = clusters.Split('\n').First(l => l.Contains("::cx_active::", StringComparison.Ordinal));
            int open = int.Parse(line.AsSpan(line.LastIndexOf(':') + 1), CultureInfo.InvariantCulture);
            Assert.InRange(open, 1, 32);
        }
        finally
        {
            nghttpd.Kill();
            await nghttpd.WaitForExitAsync();
            nghttpd.Dispose();
        }
    }
}
