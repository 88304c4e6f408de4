using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Proxy.Http2.Hpack;

namespace Proxy.Http2.Tests;

/// <summary>A recorded frame that the connection under test wrote.</summary>
internal sealed record Frame(Http2FrameType Type, Http2FrameFlags Flags, int StreamId, byte[] Payload)
{
    public Http2ErrorCode ErrorCode => Type switch
    {
        Http2FrameType.RstStream => (Http2ErrorCode)BinaryPrimitives.ReadUInt32BigEndian(Payload),
        Http2FrameType.GoAway => (Http2ErrorCode)BinaryPrimitives.ReadUInt32BigEndian(Payload.AsSpan(4)),
        _ => throw new InvalidOperationException($"{Type} has no error code"),
    };

    public int WindowIncrement => (int)BinaryPrimitives.ReadUInt32BigEndian(Payload);
    public int GoAwayLastStreamId => (int)BinaryPrimitives.ReadUInt32BigEndian(Payload);
    public bool Has(Http2FrameFlags flag) => (Flags & flag) != 0;
    public override string ToString() => $"{Type} flags={Flags} stream={StreamId} len={Payload.Length}";
}

/// <summary>
/// Drives an <see cref="Http2Connection"/> through memory, as the other endpoint would: raw frames in,
/// the frames it writes parsed back out (Kestrel's Http2TestBase style).
/// </summary>
internal sealed class Http2TestPeer
{
    private readonly ArrayBufferWriter<byte> _output = new();
    private readonly HpackEncoder _encoder = new();
    private readonly HpackDecoder _decoder = new();
    private int _read;

    public Http2TestPeer(bool connectionIsServer = true, Http2ConnectionOptions? options = null)
    {
        Handler = new RecordingHandler();
        Connection = new Http2Connection(connectionIsServer, Handler, _output, options);
        Connection.Start();
    }

    public Http2Connection Connection { get; }
    public RecordingHandler Handler { get; }
    public bool Open { get; private set; } = true;

    /// <summary>Sends the client preface and an empty SETTINGS, and consumes the server's SETTINGS/WINDOW_UPDATE/ACK.</summary>
    public Http2TestPeer Handshake(params (Http2SettingsParameter, uint)[] settings)
    {
        var w = new ArrayBufferWriter<byte>();
        if (Connection.IsServer)
        {
            w.Write(Http2FrameWriter.ClientPreface);
        }
        Http2FrameWriter.WriteSettings(w, settings);
        Http2FrameWriter.WriteSettingsAck(w);
        Send(w.WrittenSpan);
        TakeFrames();
        return this;
    }

    private byte[] _unconsumed = [];

    /// <summary>Feeds bytes as a transport would: what the connection does not consume is kept for the next read.</summary>
    public void Send(ReadOnlySpan<byte> bytes)
    {
        var sequence = new ReadOnlySequence<byte>([.. _unconsumed, .. bytes]);
        Open = Connection.ProcessInput(ref sequence);
        _unconsumed = sequence.ToArray();
        Assert.True(!Open || _unconsumed.Length < Http2FrameHeader.Size + 16384, "complete frames left unprocessed");
    }

    /// <summary>Feeds the bytes split across many one-byte segments, to exercise the straddling paths.</summary>
    public void SendFragmented(ReadOnlySpan<byte> bytes)
    {
        var sequence = SegmentedSequence.Create(bytes.ToArray(), 1);
        Open = Connection.ProcessInput(ref sequence);
    }

    public void SendFrame(Action<IBufferWriter<byte>> write)
    {
        var w = new ArrayBufferWriter<byte>();
        write(w);
        Send(w.WrittenSpan);
    }

    public void SendRaw(Http2FrameType type, Http2FrameFlags flags, int streamId, ReadOnlySpan<byte> payload)
    {
        var w = new ArrayBufferWriter<byte>();
        Http2FrameWriter.WriteRaw(w, (byte)type, (byte)flags, streamId, payload);
        Send(w.WrittenSpan);
    }

    public byte[] EncodeHeaders(params (string Name, string Value)[] headers)
    {
        var w = new ArrayBufferWriter<byte>();
        _encoder.BeginBlock(w);
        foreach (var (name, value) in headers)
        {
            _encoder.Encode(w, Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value));
        }
        return w.WrittenSpan.ToArray();
    }

    public void SendHeaders(int streamId, bool endStream, params (string, string)[] headers)
    {
        byte[] block = EncodeHeaders(headers);
        SendFrame(w => Http2FrameWriter.WriteHeaders(w, streamId, block, endStream, 16384));
    }

    public static (string, string)[] Get(string path = "/") =>
        [(":method", "GET"), (":scheme", "http"), (":authority", "example.com"), (":path", path)];

    public static (string, string)[] Post(string path, params (string, string)[] extra) =>
        [(":method", "POST"), (":scheme", "http"), (":authority", "example.com"), (":path", path), .. extra];

    public void SendData(int streamId, byte[] data, bool endStream) =>
        SendFrame(w => Http2FrameWriter.WriteData(w, streamId, data, endStream));

    /// <summary>Frames written since the last call.</summary>
    public List<Frame> TakeFrames()
    {
        var frames = new List<Frame>();
        ReadOnlySpan<byte> span = _output.WrittenSpan.Slice(_read);
        if (!Connection.IsServer && _read == 0 && span.StartsWith(Http2FrameWriter.ClientPreface))
        {
            span = span.Slice(Http2FrameWriter.ClientPreface.Length);
            _read += Http2FrameWriter.ClientPreface.Length;
        }
        while (span.Length >= Http2FrameHeader.Size)
        {
            var h = Http2FrameHeader.Read(span);
            frames.Add(new Frame(h.Type, h.Flags, h.StreamId, span.Slice(Http2FrameHeader.Size, h.Length).ToArray()));
            span = span.Slice(Http2FrameHeader.Size + h.Length);
            _read += Http2FrameHeader.Size + h.Length;
        }
        return frames;
    }

    /// <summary>Decodes a HEADERS payload (no padding/priority) the connection wrote.</summary>
    public List<(string, string)> DecodeHeaders(byte[] block)
    {
        var sink = new HpackVectorTests.CollectingHandler();
        Assert.True(_decoder.Decode(block, sink));
        return sink.Headers;
    }

    public Frame ExpectGoAway(Http2ErrorCode code)
    {
        List<Frame> frames = TakeFrames();
        Frame goAway = Assert.Single(frames, f => f.Type == Http2FrameType.GoAway);
        Assert.Equal(code, goAway.ErrorCode);
        Assert.False(Open);
        Assert.True(Connection.IsClosed);
        Assert.Equal(code, Handler.ConnectionClosedWith);
        return goAway;
    }

    public Frame ExpectRstStream(int streamId, Http2ErrorCode code)
    {
        List<Frame> frames = TakeFrames();
        Assert.DoesNotContain(frames, f => f.Type == Http2FrameType.GoAway);
        Frame rst = Assert.Single(frames, f => f.Type == Http2FrameType.RstStream);
        Assert.Equal(streamId, rst.StreamId);
        Assert.Equal(code, rst.ErrorCode);
        Assert.True(Open);
        return rst;
    }
}

internal sealed class RecordingHandler : IHttp2ConnectionHandler
{
    public List<string> Events { get; } = [];
    public Dictionary<int, List<(string, string)>> Headers { get; } = [];
    public Dictionary<int, List<(string, string)>> Trailers { get; } = [];
    public Dictionary<int, MemoryStream> Bodies { get; } = [];
    public HashSet<int> Ended { get; } = [];
    public Dictionary<int, (Http2ErrorCode Code, bool Remote)> Resets { get; } = [];
    public Http2ErrorCode? ConnectionClosedWith { get; private set; }
    public (int LastStreamId, Http2ErrorCode Code)? GoAway { get; private set; }
    public int WindowUpdates { get; private set; }
    public Action<Http2Stream, bool>? OnHeadersComplete { get; set; }
    private Http2HeaderBlockKind _kind;

    public void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind)
    {
        _kind = kind;
        Events.Add($"begin {stream.Id} {kind}");
        var target = kind == Http2HeaderBlockKind.Trailers ? Trailers : Headers;
        target[stream.Id] = [];
    }

    public void OnHeader(Http2Stream stream, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags)
    {
        var target = _kind == Http2HeaderBlockKind.Trailers ? Trailers : Headers;
        target[stream.Id].Add((Encoding.ASCII.GetString(name), Encoding.ASCII.GetString(value)));
    }

    public void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        Events.Add($"end {stream.Id} {endStream}");
        if (endStream)
        {
            Ended.Add(stream.Id);
        }
        OnHeadersComplete?.Invoke(stream, endStream);
    }

    public void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (!Bodies.TryGetValue(stream.Id, out MemoryStream? body))
        {
            Bodies[stream.Id] = body = new MemoryStream();
        }
        foreach (ReadOnlyMemory<byte> segment in data)
        {
            body.Write(segment.Span);
        }
        if (endStream)
        {
            Ended.Add(stream.Id);
        }
        Events.Add($"data {stream.Id} {data.Length} {endStream}");
    }

    public void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote)
    {
        Resets[stream.Id] = (errorCode, remote);
        Events.Add($"reset {stream.Id} {errorCode} {remote}");
    }

    public void OnWindowUpdate(int streamId) => WindowUpdates++;

    public void OnSettings(in Http2Settings peerSettings) => Events.Add("settings");

    public void OnGoAway(int lastStreamId, Http2ErrorCode errorCode) => GoAway = (lastStreamId, errorCode);

    public void OnConnectionClosed(Http2ErrorCode errorCode, bool remote, string reason)
    {
        ConnectionClosedWith = errorCode;
        Events.Add($"closed {errorCode} {reason}");
    }
}

internal static class SegmentedSequence
{
    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }

    public static ReadOnlySequence<byte> Create(byte[] bytes, int segmentSize)
    {
        if (bytes.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }
        var first = new Segment(bytes.AsMemory(0, Math.Min(segmentSize, bytes.Length)), 0);
        Segment last = first;
        for (int i = segmentSize; i < bytes.Length; i += segmentSize)
        {
            last = last.Append(bytes.AsMemory(i, Math.Min(segmentSize, bytes.Length - i)));
        }
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }
}
