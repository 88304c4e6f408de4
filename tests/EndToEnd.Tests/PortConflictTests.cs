using EndToEnd.Tests.Abuse;

namespace EndToEnd.Tests;

/// <summary>
/// A port another socket holds is refused, not shared: a second proxy on a running proxy's listener or
/// admin port exits with a clear error instead of silently taking half of the first one's connections
/// (what SO_REUSEPORT, which .NET's ReuseAddress option sets on Linux, would let it do).
/// </summary>
public sealed class PortConflictTests
{
    [Fact]
    public async Task ASecondProxyOnAHeldListenerOrAdminPort_ExitsWithAClearError()
    {
        int upstream = AotProxy.FreePort();
        int admin = AotProxy.FreePort();
        await using AotProxy first = await AotProxy.StartAsync(upstream, "h1", "--admin-address", $"127.0.0.1:{admin}");
        string binary = await AotProxy.BinaryAsync();

        var (exit, _, stderr) = await Processes.RunAsync(binary,
            ["--listen", $"127.0.0.1:{first.Port}", "--upstream", $"127.0.0.1:{upstream}", "--concurrency", "1"], TimeSpan.FromSeconds(30));
        Assert.Equal(1, exit);
        Assert.Contains("cannot listen", stderr, StringComparison.Ordinal);
        Assert.Contains("in use", stderr, StringComparison.OrdinalIgnoreCase);

        (exit, _, stderr) = await Processes.RunAsync(binary,
            ["--listen", $"127.0.0.1:{AotProxy.FreePort()}", "--upstream", $"127.0.0.1:{upstream}", "--concurrency", "1", "--admin-address", $"127.0.0.1:{admin}"], TimeSpan.FromSeconds(30));
        Assert.Equal(1, exit);
        Assert.Contains($"cannot serve the admin endpoint on 127.0.0.1:{admin}", stderr, StringComparison.Ordinal);

        // The first one still answers its admin endpoint.
        using var http = new HttpClient();
        Assert.Equal("LIVE\n", await http.GetStringAsync($"http://127.0.0.1:{admin}/ready"));
    }
}
