using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Proxy.Core;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>
/// The HTTP connection manager's own timeouts, from a bootstrap: stream_idle_timeout (checked by the
/// listener's sweep, not per request) and request_timeout, over HTTP/1.1 and h2c.
/// </summary>
public sealed class ConnectionManagerTimeoutTests(ProxyFixture upstream) : IClassFixture<ProxyFixture>, IAsyncLifetime
{
    private ProxyServer? _proxy;

    private int IdlePort => _proxy!.Listeners[0].LocalEndPoint.Port;
    private int RequestPort => _proxy!.Listeners[1].LocalEndPoint.Port;
    private int DurationPort => _proxy!.Listeners[2].LocalEndPoint.Port;

    public Task InitializeAsync()
    {
        const string Routes = """{ virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: http, timeout: 0s } } ] } ] }""";
        string bootstrap = $$"""
            static_resources:
              listeners:
            {{BootstrapYaml.Listener("idle", Routes, "stream_idle_timeout: 1s")}}
            {{BootstrapYaml.Listener("request", Routes, "request_timeout: 1s")}}
            {{BootstrapYaml.Listener("duration", Routes, "common_http_protocol_options: { max_connection_duration: 1s, idle_timeout: 30s }")}}
              clusters:
              - name: http
                load_assignment: { cluster_name: http, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream.HttpUpstreamPort}} } } } } ] } ] }
            """;
        var pools = new UpstreamPools();
        _proxy = new ProxyServer(new BootstrapLoader(pools).Load(bootstrap, "timeouts"), pools);
        _proxy.Start();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_proxy != null)
        {
            await _proxy.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task StreamIdleTimeout_Is408_WhenTheUpstreamSaysNothing(bool h2)
    {
        var watch = Stopwatch.StartNew();
        var args = new List<string> { "-sS", "-w", " %{http_code}" };
        if (h2)
        {
            args.Add("--http2-prior-knowledge");
        }
        args.Add($"http://127.0.0.1:{IdlePort}/sleep/4000");
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", args);
        Assert.True(exit == 0, stderr);
        Assert.Equal("stream idle timeout\n 408", stdout);
        Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(3.5));
    }

    [Fact]
    public async Task RequestTimeout_Is408_ForABodyThatTrickles()
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, RequestPort);
        await socket.SendAsync(Encoding.ASCII.GetBytes("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"));
        var watch = Stopwatch.StartNew();
        var received = new StringBuilder();
        var buffer = new byte[4096];
        Task<int> receive = socket.ReceiveAsync(buffer.AsMemory()).AsTask();
        // One octet every 200 ms: never idle, never done.
        while (!receive.IsCompleted && watch.Elapsed < TimeSpan.FromSeconds(5))
        {
            try
            {
                await socket.SendAsync(new byte[] { (byte)'x' });
            }
            catch (SocketException)
            {
                break;
            }
            await Task.WhenAny(receive, Task.Delay(200));
        }
        int n = await receive.WaitAsync(TimeSpan.FromSeconds(5));
        received.Append(Encoding.ASCII.GetString(buffer, 0, n));
        Assert.StartsWith("HTTP/1.1 408 ", received.ToString(), StringComparison.Ordinal);
        Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(3));
    }

    [Fact]
    public async Task MaxConnectionDuration_DrainsTheConnection_WithGoAway()
    {
        using var client = await Abuse.RawH2Client.ConnectAsync(DurationPort);
        client.Preface();
        Assert.True(await client.FlushAsync());
        var watch = Stopwatch.StartNew();
        var frames = await client.ReadFramesAsync((type, _) => type == Proxy.Http2.Http2FrameType.GoAway, TimeSpan.FromSeconds(5));
        var goAway = Assert.Single(frames, f => f.Type == Proxy.Http2.Http2FrameType.GoAway);
        Assert.Equal(0u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4))); // NO_ERROR: a drain
        Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(3));
        // Nothing in flight: the drained connection is then closed (the read ends), not left open.
        var rest = await client.ReadFramesAsync((_, _) => false, TimeSpan.FromSeconds(5));
        Assert.DoesNotContain(rest, f => f.Type == Proxy.Http2.Http2FrameType.Headers);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(4.5), $"still open after {watch.Elapsed}");
    }
}
