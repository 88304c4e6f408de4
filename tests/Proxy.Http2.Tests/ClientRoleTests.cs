using System.Text;

namespace Proxy.Http2.Tests;

/// <summary>The connection as the client side (the proxy's upstream leg).</summary>
public sealed class ClientRoleTests
{
    private static Http2TestPeer Client(params (Http2SettingsParameter, uint)[] serverSettings)
    {
        var peer = new Http2TestPeer(connectionIsServer: false);
        List<Frame> preface = peer.TakeFrames();
        Assert.Equal(Http2FrameType.Settings, preface[0].Type);
        peer.Handshake(serverSettings);
        return peer;
    }

    private static HeaderList Request(string method = "GET", string path = "/")
    {
        var h = new HeaderList();
        h.Add(":method"u8, Encoding.ASCII.GetBytes(method));
        h.Add(":scheme"u8, "http"u8);
        h.Add(":authority"u8, "upstream"u8);
        h.Add(":path"u8, Encoding.ASCII.GetBytes(path));
        return h;
    }

    [Fact]
    public void ClientPreface_IsMagicThenSettingsWithPushDisabled()
    {
        var peer = new Http2TestPeer(connectionIsServer: false);
        List<Frame> frames = peer.TakeFrames();
        Frame settings = frames[0];
        Assert.Equal(Http2FrameType.Settings, settings.Type);
        // ENABLE_PUSH (0x2) = 0 is among the parameters.
        bool pushOff = false;
        for (int i = 0; i < settings.Payload.Length; i += 6)
        {
            pushOff |= settings.Payload[i + 1] == 2 && settings.Payload[i + 5] == 0;
        }
        Assert.True(pushOff);
    }

    [Fact]
    public void Request_ResponseWithTrailers_RoundTrips()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request("POST", "/pkg.Svc/M"), endStream: false);
        Assert.Equal(1, id);
        Assert.Equal(5, peer.Connection.SendData(id, "hello"u8, endStream: true));
        List<Frame> frames = peer.TakeFrames();
        Assert.Equal(Http2FrameType.Headers, frames[0].Type);
        Assert.Contains((":path", "/pkg.Svc/M"), peer.DecodeHeaders(frames[0].Payload));
        Assert.Equal(Http2FrameType.Data, frames[1].Type);
        Assert.True(frames[1].Has(Http2FrameFlags.EndStream));

        peer.SendHeaders(1, false, (":status", "200"), ("content-type", "application/grpc"));
        peer.SendData(1, [0, 0, 0, 0, 1, 42], endStream: false);
        peer.SendHeaders(1, true, ("grpc-status", "0"), ("grpc-message", "ok"));
        Assert.Equal([(":status", "200"), ("content-type", "application/grpc")], peer.Handler.Headers[1]);
        Assert.Equal(6, peer.Handler.Bodies[1].Length);
        Assert.Equal([("grpc-status", "0"), ("grpc-message", "ok")], peer.Handler.Trailers[1]);
        Assert.Equal(0, peer.Connection.ActiveStreamCount);
    }

    [Fact]
    public void BeforeTheServersSettings_AtMost100StreamsOpen_ThenTheAnnouncedLimitHolds()
    {
        // A server announcing 100 (nghttpd, Kestrel) would refuse every stream past it: until its SETTINGS
        // arrive, the client assumes 100, as nghttp2 and Envoy do.
        var peer = new Http2TestPeer(connectionIsServer: false);
        peer.TakeFrames();
        for (int i = 0; i < 100; i++)
        {
            Assert.NotEqual(0, peer.Connection.OpenStream(Request(), endStream: true));
        }
        Assert.False(peer.Connection.CanOpenStream);
        Assert.Equal(0, peer.Connection.OpenStream(Request(), endStream: true));

        peer.Handshake((Http2SettingsParameter.MaxConcurrentStreams, 250));
        Assert.True(peer.Connection.CanOpenStream);
        for (int i = 0; i < 150; i++)
        {
            Assert.NotEqual(0, peer.Connection.OpenStream(Request(), endStream: true));
        }
        Assert.False(peer.Connection.CanOpenStream);
        Assert.Equal(0, peer.Connection.OpenStream(Request(), endStream: true));
    }

    [Fact]
    public void InformationalResponse_IsFollowedByFinalResponse()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request(), endStream: true);
        peer.SendHeaders(id, false, (":status", "100"));
        peer.SendHeaders(id, true, (":status", "204"));
        Assert.Equal(["begin 1 Response", "end 1 False", "begin 1 Response", "end 1 True"], peer.Handler.Events.Where(e => !e.StartsWith("settings", StringComparison.Ordinal)));
    }

    [Fact]
    public void InformationalResponseWithEndStream_IsMalformed()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request(), endStream: true);
        peer.SendHeaders(id, true, (":status", "103"));
        peer.ExpectRstStream(id, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void ResponseWithoutStatus_IsMalformed()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request(), endStream: true);
        peer.SendHeaders(id, true, ("content-type", "text/plain"));
        peer.ExpectRstStream(id, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void DataBeforeResponseHeaders_IsMalformed()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request(), endStream: true);
        peer.SendData(id, [1], endStream: true);
        peer.ExpectRstStream(id, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void HeadResponseWithContentLength_HasNoBody()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request("HEAD"), endStream: true);
        peer.TakeFrames();
        peer.SendHeaders(id, true, (":status", "200"), ("content-length", "1000"));
        Assert.Contains(id, peer.Handler.Ended);
        Assert.Empty(peer.TakeFrames());
    }

    [Fact]
    public void ServerEnablingPush_IsProtocolError()
    {
        var peer = new Http2TestPeer(connectionIsServer: false);
        peer.TakeFrames();
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [(Http2SettingsParameter.EnablePush, 1u)]));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void PushPromise_IsProtocolError()
    {
        var peer = Client();
        int id = peer.Connection.OpenStream(Request(), endStream: true);
        peer.SendRaw(Http2FrameType.PushPromise, Http2FrameFlags.EndHeaders, id, [0, 0, 0, 2, 0x82]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void ServerOpeningStream_IsProtocolError()
    {
        var peer = Client();
        peer.SendHeaders(2, true, (":status", "200"));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void MaxConcurrentStreams_LimitsOpenStream()
    {
        var peer = Client((Http2SettingsParameter.MaxConcurrentStreams, 2u));
        Assert.Equal(1, peer.Connection.OpenStream(Request(), endStream: true));
        Assert.Equal(3, peer.Connection.OpenStream(Request(), endStream: true));
        Assert.False(peer.Connection.CanOpenStream);
        Assert.Equal(0, peer.Connection.OpenStream(Request(), endStream: true));
        peer.SendHeaders(1, true, (":status", "200"));
        Assert.True(peer.Connection.CanOpenStream);
        Assert.Equal(5, peer.Connection.OpenStream(Request(), endStream: true));
    }

    [Fact]
    public void GoAway_RefusesStreamsAboveLastStreamId()
    {
        var peer = Client();
        int a = peer.Connection.OpenStream(Request(), endStream: true);
        int b = peer.Connection.OpenStream(Request(), endStream: true);
        peer.SendFrame(w => Http2FrameWriter.WriteGoAway(w, a, Http2ErrorCode.NoError));
        Assert.Equal((Http2ErrorCode.RefusedStream, true), peer.Handler.Resets[b]);
        Assert.False(peer.Handler.Resets.ContainsKey(a));
        Assert.Equal((a, Http2ErrorCode.NoError), peer.Handler.GoAway);
        Assert.Equal(0, peer.Connection.OpenStream(Request(), endStream: true));
        peer.SendHeaders(a, true, (":status", "200"));
        Assert.Contains(a, peer.Handler.Ended);
    }
}
