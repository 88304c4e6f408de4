using System.Buffers.Binary;

namespace Proxy.Http2.Tests;

/// <summary>
/// Envoy's and nghttp2's protocol constraints, frame by frame: rapid reset (CVE-2023-44487), empty-frame,
/// PRIORITY and SETTINGS floods end the connection with ENHANCE_YOUR_CALM; a reset stream's late frames
/// are ignored however many streams were reset since.
/// </summary>
public sealed class AbuseLimitTests
{
    private static byte[] U32(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return b;
    }

    private static readonly byte[] s_cancel = U32((uint)Http2ErrorCode.Cancel);

    [Fact]
    public void RapidReset_IsEnhanceYourCalm_WithinTheLimit()
    {
        var peer = new Http2TestPeer().Handshake();
        int limit = Http2ConnectionOptions.Default.MaxPrematureResets;
        int streamId = 1;
        for (int i = 0; i <= limit && peer.Open; i++, streamId += 2)
        {
            peer.SendHeaders(streamId, endStream: true, Http2TestPeer.Get());
            peer.SendRaw(Http2FrameType.RstStream, 0, streamId, s_cancel);
        }
        Frame goAway = peer.ExpectGoAway(Http2ErrorCode.EnhanceYourCalm);
        Assert.Equal(2 * limit + 1, goAway.GoAwayLastStreamId);
    }

    [Fact]
    public void ClientCancellingAfterTheResponse_IsNotRapidReset()
    {
        var peer = new Http2TestPeer().Handshake();
        peer.Handler.OnHeadersComplete = (stream, _) => peer.Connection.SendHeaders(stream.Id, Response(), endStream: false);
        for (int i = 0, streamId = 1; i < 1000; i++, streamId += 2)
        {
            peer.SendHeaders(streamId, endStream: true, Http2TestPeer.Get());
            peer.SendRaw(Http2FrameType.RstStream, 0, streamId, s_cancel);
        }
        Assert.True(peer.Open);
        Assert.DoesNotContain(peer.TakeFrames(), f => f.Type == Http2FrameType.GoAway);
    }

    [Fact]
    public void SomeResetsAmongManyAnsweredStreams_AreTolerated()
    {
        // A third of the streams cancelled early, steadily: below Envoy's "more than half" line.
        var peer = new Http2TestPeer().Handshake();
        peer.Handler.OnHeadersComplete = (stream, _) =>
        {
            if (stream.Id % 3 != 0)
            {
                peer.Connection.SendHeaders(stream.Id, Response(), endStream: true);
            }
        };
        for (int i = 0, streamId = 1; i < 3000; i++, streamId += 2)
        {
            peer.SendHeaders(streamId, endStream: true, Http2TestPeer.Get());
            if (streamId % 3 == 0)
            {
                peer.SendRaw(Http2FrameType.RstStream, 0, streamId, s_cancel);
            }
        }
        Assert.True(peer.Open);
    }

    [Fact]
    public void EmptyDataFramesInARow_AreAFlood()
    {
        var peer = new Http2TestPeer().Handshake();
        peer.SendHeaders(1, endStream: false, Http2TestPeer.Post("/upload"));
        peer.SendRaw(Http2FrameType.Data, 0, 1, []);
        Assert.True(peer.Open);
        peer.SendRaw(Http2FrameType.Data, 0, 1, []);
        peer.ExpectGoAway(Http2ErrorCode.EnhanceYourCalm);
    }

    [Fact]
    public void EmptyDataFrames_BetweenRealOnes_AreFine()
    {
        var peer = new Http2TestPeer().Handshake();
        peer.SendHeaders(1, endStream: false, Http2TestPeer.Post("/upload"));
        for (int i = 0; i < 50; i++)
        {
            peer.SendRaw(Http2FrameType.Data, 0, 1, []);
            peer.SendData(1, [1, 2, 3], endStream: false);
        }
        peer.SendRaw(Http2FrameType.Data, Http2FrameFlags.EndStream, 1, []);
        Assert.True(peer.Open);
    }

    [Fact]
    public void EmptyContinuationFrames_AreAFlood()
    {
        var peer = new Http2TestPeer().Handshake();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get());
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndStream, 1, block);
        peer.SendRaw(Http2FrameType.Continuation, 0, 1, []);
        peer.SendRaw(Http2FrameType.Continuation, 0, 1, []);
        peer.ExpectGoAway(Http2ErrorCode.EnhanceYourCalm);
    }

    [Fact]
    public void PriorityFlood_IsEnhanceYourCalm()
    {
        var peer = new Http2TestPeer().Handshake();
        byte[] priority = [0, 0, 0, 0, 16];
        int sent = 0;
        for (; sent < 10_000 && peer.Open; sent++)
        {
            peer.SendRaw(Http2FrameType.Priority, 0, 3 + 2 * (sent % 100), priority);
        }
        peer.ExpectGoAway(Http2ErrorCode.EnhanceYourCalm);
        Assert.Equal(Http2ConnectionOptions.Default.MaxPriorityFramesPerStream + 1, sent);
    }

    [Fact]
    public void SettingsFlood_IsEnhanceYourCalm()
    {
        var peer = new Http2TestPeer().Handshake();
        int sent = 0;
        for (; sent < 10_000 && peer.Open; sent++)
        {
            peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, []));
        }
        peer.ExpectGoAway(Http2ErrorCode.EnhanceYourCalm);
        Assert.True(sent <= Http2ConnectionOptions.Default.MaxSettingsFrames + 1, $"{sent} SETTINGS frames");
    }

    [Fact]
    public void LateFramesForAStreamWeReset_AreIgnored_HoweverManyWereResetSince()
    {
        var options = new Http2ConnectionOptions { MaxConcurrentStreams = 1 };
        var peer = new Http2TestPeer(options: options).Handshake();
        // Stream 1 stays open; every later stream is refused (RST_STREAM REFUSED_STREAM) by the limit.
        peer.SendHeaders(1, endStream: false, Http2TestPeer.Post("/upload"));
        for (int streamId = 3; streamId <= 3 + 2 * 500; streamId += 2)
        {
            peer.SendHeaders(streamId, endStream: false, Http2TestPeer.Post("/upload"));
        }
        Assert.Contains(peer.TakeFrames(), f => f.Type == Http2FrameType.RstStream && f.StreamId == 3);
        // DATA the client sent before it saw the oldest of those 500 resets: ignored (§5.4.2), not STREAM_CLOSED.
        peer.SendData(3, [1, 2, 3], endStream: true);
        peer.SendHeaders(5, endStream: true, ("grpc-status", "0"));
        Assert.True(peer.Open);
        Assert.DoesNotContain(peer.TakeFrames(), f => f.Type == Http2FrameType.GoAway);
    }

    [Fact]
    public void DataOnAStreamThatClosedNormally_IsStillStreamClosed()
    {
        var peer = new Http2TestPeer().Handshake();
        peer.Handler.OnHeadersComplete = (stream, _) => peer.Connection.SendHeaders(stream.Id, Response(), endStream: true);
        peer.SendHeaders(1, endStream: true, Http2TestPeer.Get());
        peer.SendData(1, [1], endStream: false);
        peer.ExpectGoAway(Http2ErrorCode.StreamClosed);
    }

    private static HeaderList Response()
    {
        var headers = new HeaderList();
        headers.Add(":status"u8, "200"u8);
        return headers;
    }
}
