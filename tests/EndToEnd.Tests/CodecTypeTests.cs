using System.Net;
using System.Net.Sockets;
using System.Text;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace EndToEnd.Tests;

/// <summary>
/// The connection manager's codec_type: AUTO tells HTTP/1.1 and h2c apart by the first octets; HTTP2 takes
/// only HTTP/2 (anything else is an invalid preface: GOAWAY PROTOCOL_ERROR, then close, as h2spec's §3.5
/// case demands); HTTP1 takes only HTTP/1.1 (the HTTP/2 preface is answered 505).
/// </summary>
public sealed class CodecTypeTests
{
    private static async Task<byte[]> ExchangeAsync(DownstreamCodec codec, byte[] send)
    {
        var pools = new UpstreamPools();
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0), new RouteConfiguration("r", [new VirtualHost("v", ["*"], [])]))
        {
            Options = new ListenerOptions { Codec = codec },
        };
        await using var proxy = new ProxyServer(new ProxySnapshot([listener], [], 1), pools);
        proxy.Start();
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, proxy.Listeners[0].LocalEndPoint.Port);
        await socket.SendAsync(send);
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n;
        while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0) // the proxy closes the connection
        {
            received.Write(buffer, 0, n);
        }
        return received.ToArray();
    }

    [Theory]
    [InlineData("INVALID CONNECTION PREFACE\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n")]
    public async Task Http2Only_AnythingButThePreface_IsGoAwayProtocolError(string input)
    {
        byte[] answer = await ExchangeAsync(DownstreamCodec.Http2, Encoding.ASCII.GetBytes(input));
        // Our SETTINGS first, then GOAWAY (type 7) with PROTOCOL_ERROR (1), then the close.
        int at = 0;
        bool goAway = false;
        while (at + 9 <= answer.Length)
        {
            int length = (answer[at] << 16) | (answer[at + 1] << 8) | answer[at + 2];
            if (answer[at + 3] == 7)
            {
                Assert.Equal(1, answer[at + 9 + 7]);
                goAway = true;
            }
            at += 9 + length;
        }
        Assert.True(goAway, "no GOAWAY: " + Encoding.ASCII.GetString(answer));
        Assert.DoesNotContain("HTTP/1.1", Encoding.ASCII.GetString(answer), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Auto_InvalidRequestLine_IsAnHttp11BadRequest()
    {
        byte[] answer = await ExchangeAsync(DownstreamCodec.Auto, "INVALID CONNECTION PREFACE\r\n\r\n"u8.ToArray());
        Assert.StartsWith("HTTP/1.1 400 ", Encoding.ASCII.GetString(answer), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Http1Only_TheHttp2Preface_IsVersionNotSupported()
    {
        byte[] answer = await ExchangeAsync(DownstreamCodec.Http1, [.. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8, 0, 0, 0, 4, 0, 0, 0, 0, 0]);
        Assert.StartsWith("HTTP/1.1 505 ", Encoding.ASCII.GetString(answer), StringComparison.Ordinal);
    }
}
