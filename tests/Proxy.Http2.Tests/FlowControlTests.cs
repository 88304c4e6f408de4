namespace Proxy.Http2.Tests;

/// <summary>RFC 9113 §5.2 and §6.9: both directions of flow control, for the connection and each stream.</summary>
public sealed class FlowControlTests
{
    private static HeaderList Status(string code)
    {
        var h = new HeaderList();
        h.Add(":status"u8, System.Text.Encoding.ASCII.GetBytes(code));
        return h;
    }

    [Fact]
    public void SendData_StopsAtPeerStreamWindow_AndResumesOnWindowUpdate()
    {
        var peer = new Http2TestPeer().Handshake((Http2SettingsParameter.InitialWindowSize, 100u));
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.Connection.SendHeaders(1, Status("200"), endStream: false);
        Assert.Equal(100, peer.Connection.SendData(1, new byte[250], endStream: true));
        Assert.Equal(0, peer.Connection.SendData(1, new byte[150], endStream: true));
        List<Frame> frames = peer.TakeFrames();
        Frame data = Assert.Single(frames, f => f.Type == Http2FrameType.Data);
        Assert.Equal(100, data.Payload.Length);
        Assert.False(data.Has(Http2FrameFlags.EndStream));

        peer.SendFrame(w => Http2FrameWriter.WriteWindowUpdate(w, 1, 1000));
        Assert.Equal(1, peer.Handler.WindowUpdates);
        Assert.Equal(150, peer.Connection.SendData(1, new byte[150], endStream: true));
        Frame last = Assert.Single(peer.TakeFrames());
        Assert.True(last.Has(Http2FrameFlags.EndStream));
    }

    [Fact]
    public void SendData_SplitsAtPeerMaxFrameSize()
    {
        var peer = new Http2TestPeer().Handshake();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.Connection.SendHeaders(1, Status("200"), endStream: false);
        peer.TakeFrames();
        Assert.Equal(40000, peer.Connection.SendData(1, new byte[40000], endStream: false));
        Assert.Equal([16384, 16384, 7232], peer.TakeFrames().Select(f => f.Payload.Length));
    }

    [Fact]
    public void SendData_StopsAtConnectionWindow()
    {
        var peer = new Http2TestPeer().Handshake((Http2SettingsParameter.InitialWindowSize, 1u << 20));
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.SendHeaders(3, true, Http2TestPeer.Get());
        peer.Connection.SendHeaders(1, Status("200"), endStream: false);
        peer.Connection.SendHeaders(3, Status("200"), endStream: false);
        Assert.Equal(65535, peer.Connection.SendData(1, new byte[70000], endStream: false));
        Assert.Equal(0, peer.Connection.SendData(3, new byte[10], endStream: false));
        peer.SendFrame(w => Http2FrameWriter.WriteWindowUpdate(w, 0, 10));
        Assert.Equal(10, peer.Connection.SendData(3, new byte[10], endStream: false));
    }

    [Fact]
    public void InitialWindowSizeChange_AppliesToOpenStreams()
    {
        var peer = new Http2TestPeer().Handshake((Http2SettingsParameter.InitialWindowSize, 100u));
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        peer.Connection.SendHeaders(1, Status("200"), endStream: false);
        Assert.Equal(60, peer.Connection.SendData(1, new byte[60], endStream: false));
        // Window 40 left; the initial size drops by 80: the window becomes -40 (§6.9.2) and nothing may be sent.
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [(Http2SettingsParameter.InitialWindowSize, 20u)]));
        Assert.Equal(0, peer.Connection.SendData(1, new byte[10], endStream: false));
        Assert.Equal(0, peer.Connection.GetSendWindow(1));
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [(Http2SettingsParameter.InitialWindowSize, 110u)]));
        Assert.Equal(50, peer.Connection.GetSendWindow(1));
    }

    [Fact]
    public void ConsumeData_SendsWindowUpdatesAfterHalfAWindow()
    {
        var peer = new Http2TestPeer(options: new Http2ConnectionOptions { InitialStreamWindowSize = 65535, ConnectionWindowSize = 65535 }).Handshake();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendData(1, new byte[16384], endStream: false);
        peer.SendData(1, new byte[16384], endStream: false);
        peer.Connection.ConsumeData(1, 16384);
        Assert.Empty(peer.TakeFrames());
        peer.Connection.ConsumeData(1, 16384);
        List<Frame> updates = peer.TakeFrames();
        Assert.Equal(32768, Assert.Single(updates, f => f.StreamId == 1).WindowIncrement);
        Assert.Equal(32768, Assert.Single(updates, f => f.StreamId == 0).WindowIncrement);
        // With the window reopened the peer can send another 64 KiB.
        for (int i = 0; i < 4; i++)
        {
            peer.SendData(1, new byte[16000], endStream: false);
        }
        Assert.True(peer.Open);
        Assert.DoesNotContain(peer.TakeFrames(), f => f.Type == Http2FrameType.RstStream);
    }

    [Fact]
    public void Padding_IsReturnedToTheWindowsAtOnce()
    {
        var peer = new Http2TestPeer(options: new Http2ConnectionOptions { InitialStreamWindowSize = 65535, ConnectionWindowSize = 65535 }).Handshake();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        for (int i = 0; i < 200; i++)
        {
            peer.SendFrame(w => Http2FrameWriter.WriteData(w, 1, [7], endStream: false, padLength: 255));
        }
        // 200 × 257 octets of flow control is far beyond 64 KiB: only the 200 data octets remain charged.
        Assert.True(peer.Open);
        Assert.DoesNotContain(peer.TakeFrames(), f => f.Type == Http2FrameType.RstStream);
        Assert.Equal(200, peer.Handler.Bodies[1].Length);
    }

    [Fact]
    public void HeaderBlockLargerThanPeerFrameSize_IsSplitIntoContinuations()
    {
        var peer = new Http2TestPeer().Handshake();
        peer.SendHeaders(1, true, Http2TestPeer.Get());
        var response = Status("200");
        response.Add("x-large"u8, new byte[40000].Select(_ => (byte)'z').ToArray(), Hpack.HeaderIndexing.WithoutIndexing);
        peer.Connection.SendHeaders(1, response, endStream: true);
        List<Frame> frames = peer.TakeFrames();
        Assert.Equal([Http2FrameType.Headers, Http2FrameType.Continuation, Http2FrameType.Continuation], frames.Select(f => f.Type));
        Assert.True(frames[2].Has(Http2FrameFlags.EndHeaders));
        Assert.True(frames[0].Has(Http2FrameFlags.EndStream));
        byte[] block = [.. frames[0].Payload, .. frames[1].Payload, .. frames[2].Payload];
        Assert.Equal(40000, peer.DecodeHeaders(block)[1].Item2.Length);
    }
}
