using System.Net;
using System.Net.Sockets;
using System.Text;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace EndToEnd.Tests;

/// <summary>
/// HTTP/1.0 requests: refused with 426 Upgrade Required unless the connection manager's
/// http_protocol_options.accept_http_10 says otherwise (Envoy's default, and Istio's); when accepted, a
/// request without Host takes default_host_for_http_10 as its authority, for routing and upstream.
/// </summary>
public sealed class Http10Tests
{
    private static async Task<string> ExchangeAsync(ListenerOptions options, string request)
    {
        var routes = new RouteConfiguration("r",
        [
            new VirtualHost("b", ["b.example"], [new Route("b", PathMatchKind.Prefix, "/", RouteAction.Direct(200, "host b"))]),
            new VirtualHost("any", ["*"], [new Route("any", PathMatchKind.Prefix, "/", RouteAction.Direct(200, "any host"))]),
        ]);
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0), routes) { Options = options };
        await using var proxy = new ProxyServer(new ProxySnapshot([listener], [], 1), new UpstreamPools());
        proxy.Start();
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, proxy.Listeners[0].LocalEndPoint.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes(request));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n;
        while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0) // HTTP/1.0 without keep-alive: the proxy closes
        {
            received.Write(buffer, 0, n);
        }
        return Encoding.ASCII.GetString(received.ToArray());
    }

    [Fact]
    public async Task ByDefault_Http10_IsUpgradeRequired_AndClosed()
    {
        string answer = await ExchangeAsync(new ListenerOptions(), "GET / HTTP/1.0\r\nHost: b.example\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 426 Upgrade Required\r\n", answer, StringComparison.Ordinal);
        Assert.Contains("connection: close", answer, StringComparison.Ordinal);
        Assert.DoesNotContain("host b", answer, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ByDefault_Http11_IsServed()
    {
        string answer = await ExchangeAsync(new ListenerOptions(), "GET / HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200 ", answer, StringComparison.Ordinal);
        Assert.EndsWith("host b", answer, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("GET / HTTP/1.0\r\n\r\n", "host b")] // no Host: the default host routes it
    [InlineData("GET / HTTP/1.0\r\nHost: c.example\r\n\r\n", "any host")] // its own Host wins
    [InlineData("GET http://c.example/ HTTP/1.0\r\n\r\n", "any host")] // so does an absolute-form target
    public async Task Accepted_WithADefaultHost_ForRequestsThatNameNone(string request, string expected)
    {
        var options = new ListenerOptions { AcceptHttp10 = true, DefaultHostForHttp10 = "b.example"u8.ToArray() };
        string answer = await ExchangeAsync(options, request);
        Assert.StartsWith("HTTP/1.1 200 ", answer, StringComparison.Ordinal);
        Assert.EndsWith(expected, answer, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Accepted_WithoutADefaultHost_GoesToTheCatchAll()
    {
        string answer = await ExchangeAsync(new ListenerOptions { AcceptHttp10 = true }, "GET / HTTP/1.0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200 ", answer, StringComparison.Ordinal);
        Assert.EndsWith("any host", answer, StringComparison.Ordinal);
    }

    [Fact]
    public void TheQuickListenMode_AcceptsHttp10_AndEnvoysDefaultDoesNot()
    {
        Assert.True(ListenerOptions.Standalone.AcceptHttp10);
        Assert.False(ListenerOptions.Envoy.AcceptHttp10);
    }
}
