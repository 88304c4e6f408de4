namespace Proxy.Host.Tests;

public sealed class CommandLineTests
{
    [Fact]
    public void PilotAgentStyleCommandLine_IsAccepted()
    {
        string[] args = ["-c", "etc/istio/proxy/envoy-rev.json", "--drain-time-s", "45", "--drain-strategy", "immediate", "--local-address-ip-version", "v4",
            "--file-flush-interval-msec", "1000", "--disable-hot-restart", "--allow-unknown-static-fields", "--log-format", "%Y-%m-%dT%T.%fZ\t%l\t%n\t%v",
            "-l", "warning", "--component-log-level", "misc:error", "--concurrency", "2"];
        Assert.True(CommandLine.TryParse(args, out CommandLine? c, out string? error), error);
        Assert.Equal("etc/istio/proxy/envoy-rev.json", c.ConfigPath);
        Assert.Equal(45, c.DrainTimeSeconds);
        Assert.Equal(2, c.Concurrency);
        Assert.Equal("warning", c.LogLevel);
    }

    [Theory]
    [InlineData(new[] { "--bogus" }, "unknown option '--bogus'")]
    [InlineData(new[] { "-c" }, "-c needs a value")]
    [InlineData(new[] { "--mode", "fast" }, "--mode must be serve or validate")]
    [InlineData(new[] { "--concurrency", "lots" }, "--concurrency takes a number")]
    [InlineData(new[] { "--upstream-protocol", "h3" }, "--upstream-protocol must be h1 or h2")]
    [InlineData(new[] { "--help=yes" }, "--help takes no value")]
    public void BadArguments_AreExplained(string[] args, string expected)
    {
        Assert.False(CommandLine.TryParse(args, out _, out string? error));
        Assert.StartsWith(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void EqualsForm_IsAccepted()
    {
        Assert.True(CommandLine.TryParse(["--listen=127.0.0.1:1", "--upstream=127.0.0.1:2", "--upstream-protocol=grpc"], out CommandLine? c, out _));
        Assert.Equal("127.0.0.1:1", c.Listen);
        Assert.Equal("grpc", c.UpstreamProtocol);
    }
}
