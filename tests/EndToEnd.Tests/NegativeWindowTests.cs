using System.Net;
using EndToEnd.Tests.Abuse;
using Microsoft.AspNetCore.Builder;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace EndToEnd.Tests;

/// <summary>
/// RFC 9113 §6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE below what a stream already used makes its window
/// negative; a later WINDOW_UPDATE that brings it back above zero lets exactly that much more go. Through
/// the proxy, with the response body coming from an HTTP/2 upstream (h2spec's 6.9.2 case 2).
/// </summary>
public sealed class NegativeWindowTests
{
    [Theory]
    [InlineData(UpstreamProtocol.Http2, "/body")]
    [InlineData(UpstreamProtocol.Http1, "/body")]
    [InlineData(UpstreamProtocol.Http2, "/none")] // the proxy's own 404 ("no route\n"): its body waits for the window too
    public async Task NegativeStreamWindow_IsTracked_AndReopenedByWindowUpdate(UpstreamProtocol protocol, string path)
    {
        string body = new('b', 31);
        var (app, port) = await VersionUpstream.StartAsync("v", a => a.MapGet("/body", () => body),
            protocol == UpstreamProtocol.Http2 ? Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2 : Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1);
        await using (app)
        {
            var pools = new UpstreamPools();
            var cluster = new Cluster("c", protocol, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, port), protocol)], TimeSpan.FromSeconds(5));
            var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0),
                new RouteConfiguration("r", [new VirtualHost("v", ["*"], [new Route("body", PathMatchKind.Prefix, "/body", cluster, TimeSpan.Zero)])]));
            await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
            proxy.Start();
            using RawH2Client client = await RawH2Client.ConnectAsync(proxy.Listeners[0].LocalEndPoint.Port);
            client.Preface((Http2SettingsParameter.InitialWindowSize, 3)).Headers(1, "GET", path, endStream: true);
            Assert.True(await client.FlushAsync());
            var frames = await client.ReadFramesAsync((type, _) => type == Http2FrameType.Data, TimeSpan.FromSeconds(10));
            Assert.Equal(3, Assert.Single(frames, f => f.Type == Http2FrameType.Data).Payload.Length);
            // The window goes to 3 - 3 + (2 - 3) = -1; a WINDOW_UPDATE of 2 lets one octet go.
            client.Raw(Settings((Http2SettingsParameter.InitialWindowSize, 2)));
            Assert.True(await client.FlushAsync());
            frames = await client.ReadFramesAsync((type, payload) => type == Http2FrameType.Settings, TimeSpan.FromSeconds(10));
            Assert.DoesNotContain(frames, f => f.Type == Http2FrameType.Data);
            client.WindowUpdate(1, 2);
            Assert.True(await client.FlushAsync());
            frames = await client.ReadFramesAsync((type, _) => type == Http2FrameType.Data, TimeSpan.FromSeconds(10));
            Assert.Single(Assert.Single(frames, f => f.Type == Http2FrameType.Data).Payload);
            // The rest, once the window allows it, and the end of the stream.
            client.WindowUpdate(1, 100);
            Assert.True(await client.FlushAsync());
            int rest = (path == "/body" ? body.Length : "no route\n".Length) - 4, received = 0;
            frames = await client.ReadFramesAsync((type, payload) => type == Http2FrameType.Data && (received += payload.Length) >= rest, TimeSpan.FromSeconds(10));
            Assert.Equal(rest, frames.Where(f => f.Type == Http2FrameType.Data).Sum(f => f.Payload.Length));
            Assert.Equal((byte)Http2FrameFlags.EndStream, (byte)(frames.Last().Flags & (byte)Http2FrameFlags.EndStream));
        }
    }

    private static byte[] Settings(params (Http2SettingsParameter, uint)[] settings)
    {
        var w = new System.Buffers.ArrayBufferWriter<byte>();
        Http2FrameWriter.WriteSettings(w, settings);
        return w.WrittenSpan.ToArray();
    }
}
