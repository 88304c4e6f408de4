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

    [Fact]
    public void PilotAgent15CommandLine_IsAccepted_AndItsNoOpsAreNoted()
    {
        // Istio 1.5's pkg/envoy/proxy.go, as pilot-agent ran Envoy then.
        string[] args = ["-c", "/etc/istio/proxy/envoy-rev0.json", "--restart-epoch", "0", "--drain-time-s", "45", "--parent-shutdown-time-s", "60",
            "--service-cluster", "productpage.default", "--service-node", "sidecar~10.1.1.1~productpage-v1-abc.default~default.svc.cluster.local",
            "--max-obj-name-len", "189", "--local-address-ip-version", "v4", "--log-format", "[Envoy (Epoch 0)] [%Y-%m-%d %T.%e][%t][%l][%n] %v",
            "-l", "warning", "--component-log-level", "misc:error", "--concurrency", "2", "--service-zone", "us-east1-b"];
        Assert.True(CommandLine.TryParse(args, out CommandLine? c, out string? error), error);
        Assert.Equal("productpage.default", c.ServiceCluster);
        Assert.Equal("sidecar~10.1.1.1~productpage-v1-abc.default~default.svc.cluster.local", c.ServiceNode);
        Assert.Equal("us-east1-b", c.ServiceZone);
        Assert.Equal(45, c.DrainTimeSeconds);
        Assert.Contains("--max-obj-name-len 189", c.Ignored);
        Assert.Contains("--restart-epoch 0", c.Ignored);
        Assert.Equal(5, c.Ignored.Count);
        Assert.Equal("[Envoy (Epoch 0)] [%Y-%m-%d %T.%e][%t][%l][%n] %v", c.LogFormat);
    }

    [Fact]
    public void LaterIstioFlags_AndInitOnly_AreAccepted()
    {
        string[] args = ["-c", "envoy-rev.json", "--bootstrap-version", "3", "--log-format-prefix-with-location", "0", "--file-flush-min-size-kb", "64",
            "--skip-deprecated-logs", "--enable-core-dump", "--log-format-escaped", "--drain-strategy", "immediate", "--mode", "init_only",
            "--admin-address", "127.0.0.1:15000"];
        Assert.True(CommandLine.TryParse(args, out CommandLine? c, out string? error), error);
        Assert.Equal("init_only", c.Mode);
        Assert.Equal("immediate", c.DrainStrategy);
        Assert.Equal("127.0.0.1:15000", c.AdminAddress);
        Assert.Equal(6, c.Ignored.Count);
    }

    [Theory]
    [InlineData(new[] { "--bogus" }, "unknown option '--bogus'")]
    [InlineData(new[] { "-c" }, "-c needs a value")]
    [InlineData(new[] { "--mode", "fast" }, "--mode must be serve, validate or init_only")]
    [InlineData(new[] { "--drain-strategy", "slow" }, "--drain-strategy must be gradual or immediate")]
    [InlineData(new[] { "--admin-address", "localhost:15000" }, "--admin-address takes HOST:PORT with an IP address")]
    [InlineData(new[] { "--admin-address", "15000" }, "--admin-address takes HOST:PORT with an IP address")]
    [InlineData(new[] { "--max-obj-name-len" }, "--max-obj-name-len needs a value")]
    [InlineData(new[] { "--concurrency", "lots" }, "--concurrency takes a number")]
    [InlineData(new[] { "--upstream-protocol", "h3" }, "--upstream-protocol must be h1 or h2")]
    [InlineData(new[] { "--downstream-protocol", "h2c" }, "--downstream-protocol must be auto, h1 or h2")]
    [InlineData(new[] { "--help=yes" }, "--help takes no value")]
    [InlineData(new[] { "--request-headers-timeout-s", "-1" }, "--request-headers-timeout-s takes a number of seconds")]
    [InlineData(new[] { "--idle-timeout-s", "soon" }, "--idle-timeout-s takes a number of seconds")]
    [InlineData(new[] { "--buffer-limit-bytes", "100" }, "--buffer-limit-bytes takes a number of bytes, at least 16384")]
    [InlineData(new[] { "--max-connections", "-5" }, "--max-connections takes a number")]
    [InlineData(new[] { "--runtime-api", "34904" }, "--runtime-api: '34904' is not HOST:PORT")]
    [InlineData(new[] { "--runtime-api", "localhost:34904" }, "--runtime-api: 'localhost:34904' is not HOST:PORT")]
    [InlineData(new[] { "--runtime-api", "unix:" }, "--runtime-api: unix: needs a socket path")]
    [InlineData(new[] { "--runtime-api-max-message-bytes", "10" }, "--runtime-api-max-message-bytes takes a number of bytes, at least 1024")]
    public void BadArguments_AreExplained(string[] args, string expected)
    {
        Assert.False(CommandLine.TryParse(args, out _, out string? error));
        Assert.StartsWith(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void RuntimeApi_OffByDefault_TcpOrUnixWhenAsked()
    {
        Assert.True(CommandLine.TryParse(["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2"], out CommandLine? d, out _));
        Assert.Equal(Environment.GetEnvironmentVariable("LAYOTTO_RUNTIME_API") is { Length: > 0 } v ? v : null, d.RuntimeApi);
        Assert.Equal(16 * 1024 * 1024, d.RuntimeApiMaxMessageBytes);
        Assert.True(CommandLine.TryParse(["--runtime-api", "127.0.0.1:34904", "--runtime-api-max-message-bytes=4096"], out CommandLine? c, out _));
        Assert.Equal("127.0.0.1:34904", c.RuntimeApi);
        Assert.Equal(4096, c.RuntimeApiMaxMessageBytes);
        Assert.True(CommandLine.TryParse(["--runtime-api", "[::1]:34904"], out c, out _));
        Assert.True(CommandLine.TryParse(["--runtime-api", "unix:/var/run/layotto.sock"], out c, out _));
        Assert.Equal("unix:/var/run/layotto.sock", c.RuntimeApi);
    }

    [Theory]
    [InlineData(null, Proxy.Core.Routing.DownstreamCodec.Auto)]
    [InlineData("auto", Proxy.Core.Routing.DownstreamCodec.Auto)]
    [InlineData("h1", Proxy.Core.Routing.DownstreamCodec.Http1)]
    [InlineData("h2", Proxy.Core.Routing.DownstreamCodec.Http2)]
    public void DownstreamProtocol_IsTheStandaloneListenersCodec(string? value, Proxy.Core.Routing.DownstreamCodec expected)
    {
        string[] args = value == null ? ["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2"] : ["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--downstream-protocol", value];
        Assert.True(CommandLine.TryParse(args, out CommandLine? c, out _));
        Assert.Equal(expected, Standalone.Options(c).Codec);
    }

    [Fact]
    public void EqualsForm_IsAccepted()
    {
        Assert.True(CommandLine.TryParse(["--listen=127.0.0.1:1", "--upstream=127.0.0.1:2", "--upstream-protocol=grpc"], out CommandLine? c, out _));
        Assert.Equal("127.0.0.1:1", c.Listen);
        Assert.Equal("grpc", c.UpstreamProtocol);
    }

    [Fact]
    public void StandaloneLimits_HaveSafeDefaults_AndFlags()
    {
        Assert.True(CommandLine.TryParse(["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2"], out CommandLine? d, out _));
        var defaults = Standalone.Options(d);
        Assert.Equal(TimeSpan.FromSeconds(30), defaults.RequestHeadersTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), defaults.PrefaceTimeout);
        Assert.Equal(TimeSpan.FromMinutes(5), defaults.IdleTimeout);
        Assert.Equal(1024 * 1024, defaults.BufferLimit);
        Assert.Equal(0, d.MaxConnections);

        Assert.True(CommandLine.TryParse(["--request-headers-timeout-s", "2.5", "--preface-timeout-s", "0", "--idle-timeout-s=60", "--buffer-limit-bytes", "65536",
            "--max-connections", "1000"], out CommandLine? c, out string? error), error);
        var options = Standalone.Options(c);
        Assert.Equal(TimeSpan.FromSeconds(2.5), options.RequestHeadersTimeout);
        Assert.Equal(TimeSpan.Zero, options.PrefaceTimeout);
        Assert.Equal(TimeSpan.FromSeconds(60), options.IdleTimeout);
        Assert.Equal(65536, options.BufferLimit);
        Assert.Equal(1000, c.MaxConnections);
    }

    [Fact]
    public void Help_NamesEveryFlagItAccepts()
    {
        foreach (string flag in new[] { "--request-headers-timeout-s", "--preface-timeout-s", "--idle-timeout-s", "--buffer-limit-bytes", "--max-connections" })
        {
            Assert.Contains(flag, CommandLine.Usage, StringComparison.Ordinal);
        }
    }
}
