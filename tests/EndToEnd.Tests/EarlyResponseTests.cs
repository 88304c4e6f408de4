using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using EndToEnd.Tests.Abuse;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace EndToEnd.Tests;

/// <summary>
/// A response that is complete while the client is still sending its request (here the proxy's own 404,
/// RFC 9113 §8.1 allows it). The stream stays half-closed (local) for a moment, so what the client sends
/// next is still held to the protocol; more body is dropped within the stream's window, and the stream is
/// reset with NO_ERROR within a second unless the client ends it first.
/// </summary>
public sealed class EarlyResponseTests
{
    private static async Task<(ProxyServer Proxy, RawH2Client Client)> StartAsync()
    {
        var pools = new UpstreamPools();
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0), new RouteConfiguration("r", [new VirtualHost("v", ["*"], [])]));
        var proxy = new ProxyServer(new ProxySnapshot([listener], [], 1), pools);
        proxy.Start();
        RawH2Client client = await RawH2Client.ConnectAsync(proxy.Listeners[0].LocalEndPoint.Port);
        client.Preface().Headers(1, "POST", "/upload", endStream: false);
        Assert.True(await client.FlushAsync());
        var frames = await client.ReadFramesAsync((type, _) => type == Http2FrameType.Data, TimeSpan.FromSeconds(10));
        var data = Assert.Single(frames, f => f.Type == Http2FrameType.Data && f.StreamId == 1);
        Assert.Equal((byte)Http2FrameFlags.EndStream, (byte)(data.Flags & (byte)Http2FrameFlags.EndStream)); // the 404 is complete
        return (proxy, client);
    }

    private static Http2ErrorCode Code(byte[] payload, int offset = 0) => (Http2ErrorCode)BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(offset));

    [Fact]
    public async Task MoreBody_AfterTheResponse_IsDroppedWithinTheStreamWindow_ThenTheStreamIsReset()
    {
        var (proxy, client) = await StartAsync();
        await using (proxy)
        using (client)
        {
            // 2 MiB where the stream's window is 1 MiB: the octets are not read, and the stream's window
            // does not reopen for them (the connection's does: other streams go on).
            byte[] chunk = new byte[16384];
            for (int i = 0; i < 128; i++)
            {
                client.Data(1, chunk, endStream: false);
            }
            Assert.True(await client.FlushAsync());
            var frames = await client.ReadFramesAsync((type, _) => type is Http2FrameType.RstStream or Http2FrameType.GoAway, TimeSpan.FromSeconds(10));
            Assert.DoesNotContain(frames, f => f.Type == Http2FrameType.GoAway);
            Assert.DoesNotContain(frames, f => f.Type == Http2FrameType.WindowUpdate && f.StreamId == 1);
            var rst = Assert.Single(frames, f => f.Type == Http2FrameType.RstStream);
            Assert.Equal(1, rst.StreamId);
            Assert.Contains(Code(rst.Payload), new[] { Http2ErrorCode.FlowControlError, Http2ErrorCode.NoError });
            // The connection goes on: the next request is served.
            client.Headers(3, "GET", "/next", endStream: true);
            Assert.True(await client.FlushAsync());
            frames = await client.ReadFramesAsync((type, _) => type == Http2FrameType.Data, TimeSpan.FromSeconds(10));
            Assert.Contains(frames, f => f.Type == Http2FrameType.Headers && f.StreamId == 3);
        }
    }

    [Fact]
    public async Task SomeBody_AfterTheResponse_IsDropped_AndTheStreamResetWithNoErrorWithinASecond()
    {
        var (proxy, client) = await StartAsync();
        await using (proxy)
        using (client)
        {
            client.Data(1, new byte[100], endStream: false);
            Assert.True(await client.FlushAsync());
            var started = System.Diagnostics.Stopwatch.StartNew();
            var frames = await client.ReadFramesAsync((type, _) => type is Http2FrameType.RstStream or Http2FrameType.GoAway, TimeSpan.FromSeconds(10));
            var rst = Assert.Single(frames, f => f.Type == Http2FrameType.RstStream);
            Assert.Equal(1, rst.StreamId);
            Assert.Equal(Http2ErrorCode.NoError, Code(rst.Payload));
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(5), $"reset after {started.Elapsed}");
        }
    }

    [Fact]
    public async Task StreamLeftOpen_AfterTheResponse_IsResetWithNoErrorWithinASecond()
    {
        var (proxy, client) = await StartAsync();
        await using (proxy)
        using (client)
        {
            var frames = await client.ReadFramesAsync((type, _) => type is Http2FrameType.RstStream or Http2FrameType.GoAway, TimeSpan.FromSeconds(5));
            var rst = Assert.Single(frames, f => f.Type == Http2FrameType.RstStream);
            Assert.Equal(1, rst.StreamId);
            Assert.Equal(Http2ErrorCode.NoError, Code(rst.Payload));
        }
    }

    [Fact]
    public async Task DataAfterTheClientsOwnReset_IsStreamClosed()
    {
        var (proxy, client) = await StartAsync();
        await using (proxy)
        using (client)
        {
            client.Reset(1, Http2ErrorCode.Cancel).Data(1, "test"u8, endStream: true);
            Assert.True(await client.FlushAsync());
            var frames = await client.ReadFramesAsync((type, _) => type is Http2FrameType.RstStream or Http2FrameType.GoAway, TimeSpan.FromSeconds(5));
            var error = Assert.Single(frames, f => f.Type is Http2FrameType.RstStream or Http2FrameType.GoAway);
            Assert.Equal(Http2ErrorCode.StreamClosed, Code(error.Payload, error.Type == Http2FrameType.GoAway ? 4 : 0)); // §5.1 closed
        }
    }

    [Fact]
    public async Task TrailersWithoutEndStream_AfterTheResponse_AreMalformed()
    {
        var (proxy, client) = await StartAsync();
        await using (proxy)
        using (client)
        {
            var frame = new ArrayBufferWriter<byte>();
            Http2FrameWriter.WriteHeaders(frame, 1, [0x00, 3, .. "x-t"u8, 1, .. "1"u8], endStream: false, 16384);
            client.Raw(frame.WrittenSpan);
            Assert.True(await client.FlushAsync());
            var frames = await client.ReadFramesAsync((type, _) => type is Http2FrameType.RstStream or Http2FrameType.GoAway, TimeSpan.FromSeconds(5));
            var rst = Assert.Single(frames, f => f.Type == Http2FrameType.RstStream);
            Assert.Equal(Http2ErrorCode.ProtocolError, Code(rst.Payload)); // §8.1: a second HEADERS must end the stream
        }
    }
}
