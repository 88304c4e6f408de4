using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Proxy.Http2.Tests;

/// <summary>Hostile byte sequences in, the exact RFC 9113 error code out (GOAWAY for connection errors, RST_STREAM for stream errors).</summary>
public sealed class ConnectionErrorTests
{
    private static Http2TestPeer Server() => new Http2TestPeer().Handshake();

    private static byte[] U32(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return b;
    }

    [Fact]
    public void InvalidPreface_IsProtocolError()
    {
        var peer = new Http2TestPeer();
        peer.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void PrefaceSplitAcrossReads_IsAccepted()
    {
        var peer = new Http2TestPeer();
        peer.Send(Http2FrameWriter.ClientPreface.Slice(0, 10));
        Assert.True(peer.Open);
        peer.Send(Http2FrameWriter.ClientPreface.Slice(10));
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, []));
        Assert.Contains(peer.TakeFrames(), f => f.Type == Http2FrameType.Settings && f.Has(Http2FrameFlags.Ack));
    }

    [Fact]
    public void FirstFrameNotSettings_IsProtocolError()
    {
        var peer = new Http2TestPeer();
        peer.Send(Http2FrameWriter.ClientPreface);
        peer.SendFrame(w => Http2FrameWriter.WritePing(w, 1, ack: false));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void SettingsLengthNotMultipleOfSix_IsFrameSizeError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Settings, 0, 0, [0, 3, 0, 0, 0]);
        peer.ExpectGoAway(Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void SettingsAckWithPayload_IsFrameSizeError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Settings, Http2FrameFlags.Ack, 0, [0, 3, 0, 0, 0, 1]);
        peer.ExpectGoAway(Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void SettingsOnStream_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Settings, 0, 1, []);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Theory]
    [InlineData(Http2SettingsParameter.EnablePush, 2u, Http2ErrorCode.ProtocolError)]
    [InlineData(Http2SettingsParameter.InitialWindowSize, 0x80000000u, Http2ErrorCode.FlowControlError)]
    [InlineData(Http2SettingsParameter.MaxFrameSize, 16383u, Http2ErrorCode.ProtocolError)]
    [InlineData(Http2SettingsParameter.MaxFrameSize, 16777216u, Http2ErrorCode.ProtocolError)]
    public void InvalidSettingValue_IsConnectionError(Http2SettingsParameter parameter, uint value, Http2ErrorCode expected)
    {
        var peer = Server();
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [(parameter, value)]));
        peer.ExpectGoAway(expected);
    }

    [Fact]
    public void UnknownSetting_IsIgnoredAndAcknowledged()
    {
        var peer = Server();
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [((Http2SettingsParameter)0x99, 7u)]));
        Assert.Single(peer.TakeFrames(), f => f.Type == Http2FrameType.Settings && f.Has(Http2FrameFlags.Ack));
        Assert.True(peer.Open);
    }

    [Fact]
    public void FrameLargerThanMaxFrameSize_IsFrameSizeError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Data, 0, 1, new byte[16385]);
        peer.ExpectGoAway(Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void Ping_IsAnsweredWithSameData()
    {
        var peer = Server();
        peer.SendFrame(w => Http2FrameWriter.WritePing(w, 0x0102030405060708, ack: false));
        Frame ack = Assert.Single(peer.TakeFrames());
        Assert.Equal(Http2FrameType.Ping, ack.Type);
        Assert.True(ack.Has(Http2FrameFlags.Ack));
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, ack.Payload);
    }

    [Fact]
    public void PingWrongLength_IsFrameSizeError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Ping, 0, 0, new byte[7]);
        peer.ExpectGoAway(Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void PingOnStream_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Ping, 0, 1, new byte[8]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void GoAwayOnStream_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.GoAway, 0, 1, new byte[8]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void RstStreamOnStreamZero_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.RstStream, 0, 0, U32(8));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void RstStreamWrongLength_IsFrameSizeError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendRaw(Http2FrameType.RstStream, 0, 1, new byte[3]);
        peer.ExpectGoAway(Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void RstStreamOnIdleStream_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.RstStream, 0, 5, U32(8));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void RstStream_EndsStreamAndReachesHandler()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendRaw(Http2FrameType.RstStream, 0, 1, U32((uint)Http2ErrorCode.Cancel));
        Assert.Equal((Http2ErrorCode.Cancel, true), peer.Handler.Resets[1]);
        Assert.Equal(0, peer.Connection.ActiveStreamCount);
        // Frames racing the reset are allowed: WINDOW_UPDATE and PRIORITY are ignored on a closed stream.
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 1, U32(10));
        Assert.True(peer.Open);
        Assert.Empty(peer.TakeFrames());
    }

    [Fact]
    public void WindowUpdateWrongLength_IsFrameSizeError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 0, new byte[3]);
        peer.ExpectGoAway(Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void ConnectionWindowUpdateOfZero_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 0, U32(0));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void StreamWindowUpdateOfZero_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 1, U32(0));
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
        Assert.Equal((Http2ErrorCode.ProtocolError, false), peer.Handler.Resets[1]);
    }

    [Fact]
    public void ConnectionWindowOverflow_IsFlowControlError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 0, U32(0x7FFFFFFF));
        peer.ExpectGoAway(Http2ErrorCode.FlowControlError);
    }

    [Fact]
    public void StreamWindowOverflow_IsStreamFlowControlError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 1, U32(0x7FFFFFFF));
        peer.ExpectRstStream(1, Http2ErrorCode.FlowControlError);
    }

    [Fact]
    public void WindowUpdateOnIdleStream_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 3, U32(1));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void DataOnStreamZero_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Data, 0, 0, [1, 2]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void DataOnIdleStream_IsProtocolError()
    {
        var peer = Server();
        peer.SendData(1, [1, 2], endStream: false);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void DataAfterEndStream_IsStreamClosed()
    {
        var peer = Server();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.SendData(1, [1], endStream: false);
        peer.ExpectRstStream(1, Http2ErrorCode.StreamClosed);
    }

    [Fact]
    public void DataOnStreamClosedBothWays_IsConnectionStreamClosed()
    {
        var peer = Server();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        var response = new HeaderList();
        response.Add(":status"u8, "204"u8);
        Assert.True(peer.Connection.SendHeaders(1, response, endStream: true));
        peer.TakeFrames();
        peer.SendData(1, [1], endStream: false);
        peer.ExpectGoAway(Http2ErrorCode.StreamClosed);
    }

    [Fact]
    public void DataAfterOurReset_IsIgnoredButStillCountsForTheConnectionWindow()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.Connection.ResetStream(1, Http2ErrorCode.Cancel);
        Assert.Single(peer.TakeFrames(), f => f.Type == Http2FrameType.RstStream);
        // 3 MiB of DATA racing our RST_STREAM: ignored, and the connection window is given back.
        for (int i = 0; i < 192; i++)
        {
            peer.SendData(1, new byte[16384], endStream: false);
        }
        Assert.True(peer.Open);
        Assert.Contains(peer.TakeFrames(), f => f.Type == Http2FrameType.WindowUpdate && f.StreamId == 0);
        Assert.DoesNotContain("data 1", string.Join(",", peer.Handler.Events));
    }

    [Fact]
    public void DataBeyondStreamWindow_IsStreamFlowControlError()
    {
        var peer = new Http2TestPeer(options: new Http2ConnectionOptions { InitialStreamWindowSize = 65535 }).Handshake();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        for (int i = 0; i < 4; i++)
        {
            peer.SendData(1, new byte[16383], endStream: false);
        }
        Assert.Empty(peer.TakeFrames());
        peer.SendData(1, new byte[4], endStream: false); // 65532 + 4 > 65535
        peer.ExpectRstStream(1, Http2ErrorCode.FlowControlError);
    }

    [Fact]
    public void DataBeyondConnectionWindow_IsConnectionFlowControlError()
    {
        var peer = new Http2TestPeer(options: new Http2ConnectionOptions { ConnectionWindowSize = 65535, InitialStreamWindowSize = 1 << 20 }).Handshake();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        for (int i = 0; i < 4; i++)
        {
            peer.SendData(1, new byte[16383], endStream: false);
        }
        peer.SendData(1, new byte[4], endStream: false);
        peer.ExpectGoAway(Http2ErrorCode.FlowControlError);
    }

    [Fact]
    public void DataPaddingFillingPayload_IsProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendRaw(Http2FrameType.Data, Http2FrameFlags.Padded, 1, [4, 0, 0, 0]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void PaddedData_DeliversPayloadWithoutPadding()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendFrame(w => Http2FrameWriter.WriteData(w, 1, "hello"u8, endStream: true, padLength: 10));
        Assert.Equal("hello", Encoding.ASCII.GetString(peer.Handler.Bodies[1].ToArray()));
        Assert.Contains(1, peer.Handler.Ended);
    }

    [Fact]
    public void HeadersOnStreamZero_IsProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(0, true, Http2TestPeer.Get());
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void HeadersOnEvenStreamFromClient_IsProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(2, true, Http2TestPeer.Get());
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void HeadersWithDecreasingStreamId_IsProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(5, true, Http2TestPeer.Get());
        peer.SendHeaders(3, true, Http2TestPeer.Get());
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void HeadersOnClosedStream_IsStreamClosed()
    {
        var peer = Server();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        var response = new HeaderList();
        response.Add(":status"u8, "200"u8);
        peer.Connection.SendHeaders(1, response, endStream: true);
        peer.TakeFrames();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.ExpectGoAway(Http2ErrorCode.StreamClosed);
    }

    [Fact]
    public void InvalidHpack_IsCompressionError()
    {
        var peer = Server();
        // Indexed field 70: beyond the static table, and the dynamic table is empty.
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.EndStream, 1, [0x80 | 70]);
        peer.ExpectGoAway(Http2ErrorCode.CompressionError);
    }

    [Fact]
    public void HpackIndexZero_IsCompressionError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders, 1, [0x80]);
        peer.ExpectGoAway(Http2ErrorCode.CompressionError);
    }

    [Fact]
    public void FrameBetweenHeadersAndContinuation_IsProtocolError()
    {
        var peer = Server();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get());
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndStream, 1, block.AsSpan(0, 2));
        peer.SendFrame(w => Http2FrameWriter.WritePing(w, 1, ack: false));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void ContinuationOnOtherStream_IsProtocolError()
    {
        var peer = Server();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get());
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndStream, 1, block.AsSpan(0, 2));
        peer.SendRaw(Http2FrameType.Continuation, Http2FrameFlags.EndHeaders, 3, block.AsSpan(2));
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void ContinuationWithoutHeaders_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Continuation, Http2FrameFlags.EndHeaders, 1, [0x82]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void ContinuationFlood_IsEnhanceYourCalm()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Headers, 0, 1, [0x82]);
        var junk = new byte[16384];
        for (int i = 0; i < 6 && peer.Open; i++)
        {
            peer.SendRaw(Http2FrameType.Continuation, 0, 1, junk);
        }
        peer.ExpectGoAway(Http2ErrorCode.EnhanceYourCalm);
    }

    [Fact]
    public void HeadersSplitOverContinuations_AreDecoded()
    {
        var peer = Server();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get("/split"));
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndStream, 1, block.AsSpan(0, 1));
        peer.SendRaw(Http2FrameType.Continuation, 0, 1, block.AsSpan(1, 2));
        peer.SendRaw(Http2FrameType.Continuation, Http2FrameFlags.EndHeaders, 1, block.AsSpan(3));
        Assert.Contains((":path", "/split"), peer.Handler.Headers[1]);
        Assert.Contains(1, peer.Handler.Ended);
    }

    [Fact]
    public void HeadersPaddingTooLong_IsProtocolError()
    {
        var peer = Server();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get());
        byte[] payload = [(byte)(block.Length + 1), .. block];
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.Padded, 1, payload);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void HeadersDependingOnItself_IsStreamProtocolError()
    {
        var peer = Server();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get());
        byte[] payload = [0, 0, 0, 1, 16, .. block];
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.Priority | Http2FrameFlags.EndStream, 1, payload);
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void PriorityWrongLength_IsStreamFrameSizeError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Priority, 0, 1, new byte[4]);
        peer.ExpectRstStream(1, Http2ErrorCode.FrameSizeError);
    }

    [Fact]
    public void PriorityOnStreamZero_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Priority, 0, 0, new byte[5]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void PriorityDependingOnItself_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Priority, 0, 3, [0, 0, 0, 3, 16]);
        peer.ExpectRstStream(3, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void PriorityOnIdleStream_IsAccepted()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.Priority, 0, 7, [0, 0, 0, 1, 16]);
        Assert.True(peer.Open);
        Assert.Empty(peer.TakeFrames());
        peer.SendHeaders(3, true, Http2TestPeer.Get()); // a lower id is still usable: PRIORITY does not open a stream
        Assert.Contains(3, peer.Handler.Ended);
    }

    [Fact]
    public void PushPromiseToServer_IsProtocolError()
    {
        var peer = Server();
        peer.SendRaw(Http2FrameType.PushPromise, Http2FrameFlags.EndHeaders, 1, [0, 0, 0, 2, 0x82]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void UnknownFrameTypeAndFlags_AreIgnored()
    {
        var peer = Server();
        peer.SendRaw((Http2FrameType)0xEE, (Http2FrameFlags)0xFF, 0, [1, 2, 3]);
        peer.SendRaw(Http2FrameType.Ping, (Http2FrameFlags)0xFE, 0, new byte[8]); // flags other than ACK mean nothing
        Assert.True(peer.Open);
        Frame pong = Assert.Single(peer.TakeFrames());
        Assert.True(pong.Has(Http2FrameFlags.Ack));
    }

    [Fact]
    public void UnknownFrameInsideFieldBlock_IsProtocolError()
    {
        var peer = Server();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Get());
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndStream, 1, block.AsSpan(0, 2));
        peer.SendRaw((Http2FrameType)0xEE, 0, 1, [1]);
        peer.ExpectGoAway(Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void StreamsBeyondMaxConcurrent_AreRefused_AndCompressionStateSurvives()
    {
        var peer = new Http2TestPeer(options: new Http2ConnectionOptions { MaxConcurrentStreams = 2 }).Handshake();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/a"));
        peer.SendHeaders(3, false, Http2TestPeer.Post("/b"));
        peer.SendHeaders(5, false, Http2TestPeer.Post("/c", ("x-new", "entered-in-table")));
        peer.ExpectRstStream(5, Http2ErrorCode.RefusedStream);
        peer.SendRaw(Http2FrameType.RstStream, 0, 1, U32(8));
        // The refused block's literal went into the dynamic table; this block refers to it by index.
        peer.SendHeaders(7, true, Http2TestPeer.Post("/c", ("x-new", "entered-in-table")));
        Assert.Contains(("x-new", "entered-in-table"), peer.Handler.Headers[7]);
    }

    [Fact]
    public void HeaderListTooLarge_IsStreamError_AndConnectionContinues()
    {
        var peer = new Http2TestPeer(options: new Http2ConnectionOptions { MaxHeaderListSize = 4096 }).Handshake();
        (string, string)[] big = [.. Http2TestPeer.Get(), ("x-big", new string('a', 5000))];
        byte[] block = peer.EncodeHeaders(big);
        peer.SendFrame(w => Http2FrameWriter.WriteHeaders(w, 1, block, true, 16384));
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
        peer.SendHeaders(3, true, Http2TestPeer.Get("/ok"));
        Assert.Contains((":path", "/ok"), peer.Handler.Headers[3]);
    }

    [Fact]
    public void InitialWindowSizeOverflowOnOpenStream_IsFlowControlError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendRaw(Http2FrameType.WindowUpdate, 0, 1, U32(0x7FFFFFFF - 65535));
        Assert.True(peer.Open);
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [(Http2SettingsParameter.InitialWindowSize, 65536u)]));
        peer.ExpectGoAway(Http2ErrorCode.FlowControlError);
    }

    [Fact]
    public void GoAwayFromUs_NamesLastProcessedStream()
    {
        var peer = Server();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.SendHeaders(3, true, Http2TestPeer.Get());
        peer.Connection.GoAway(Http2ErrorCode.NoError);
        Frame goAway = Assert.Single(peer.TakeFrames());
        Assert.Equal(3, goAway.GoAwayLastStreamId);
        Assert.Equal(Http2ErrorCode.NoError, goAway.ErrorCode);
        // Streams after our GOAWAY are refused, but their blocks are still decoded.
        peer.SendHeaders(5, true, Http2TestPeer.Get());
        peer.ExpectRstStream(5, Http2ErrorCode.RefusedStream);
    }

    [Fact]
    public void FramesSplitIntoOneByteSegments_AreParsed()
    {
        var peer = Server();
        var w = new ArrayBufferWriter<byte>();
        byte[] block = peer.EncodeHeaders(Http2TestPeer.Post("/seg", ("content-length", "3")));
        Http2FrameWriter.WriteHeaders(w, 1, block, false, 16384);
        Http2FrameWriter.WriteData(w, 1, "abc"u8, true);
        peer.SendFragmented(w.WrittenSpan);
        Assert.Equal("abc", Encoding.ASCII.GetString(peer.Handler.Bodies[1].ToArray()));
        Assert.Contains((":path", "/seg"), peer.Handler.Headers[1]);
    }
}
