using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Proxy.Http2.Hpack;

namespace Proxy.Http2;

/// <summary>
/// One HTTP/2 connection, client or server side, as a protocol engine without I/O (RFC 9113): bytes in
/// through <see cref="ProcessInput"/>, events out to an <see cref="IHttp2ConnectionHandler"/>, frames out
/// into an <see cref="IBufferWriter{T}"/>. It keeps the connection and stream state machines, both
/// directions of flow control, settings and HPACK contexts, and turns every protocol violation into the
/// RST_STREAM or GOAWAY that RFC 9113 §5.4 prescribes.
/// </summary>
/// <remarks>
/// Threading: one thread reads (<see cref="ProcessInput"/>) and receives every callback; any thread may
/// send. Every write to the output happens under <see cref="SyncRoot"/>, so the transport that drains the
/// output takes the same lock. Callbacks run outside the lock.
/// </remarks>
public sealed partial class Http2Connection
{
    private const int MaxRememberedResets = 64;
    private const int MaxGoAwayDebugBytes = 256;

    private readonly OwnedLock _sync;
    private readonly bool _isServer;
    private readonly Http2ConnectionOptions _options;
    private readonly IHttp2ConnectionHandler _handler;
    private readonly IBufferWriter<byte> _output;
    private readonly HpackDecoder _decoder;
    private readonly HpackEncoder _encoder;
    private readonly HeaderSink _sink;
    private readonly RepeatBlock?[] _repeats = new RepeatBlock?[3]; // by Http2HeaderBlockKind
    private readonly ArrayBufferWriter<byte> _encodeBuffer = new(256);
    private readonly StreamMap _streams = new();
    private readonly Stack<Http2Stream> _freeStreams = new();
    private readonly List<Http2Stream> _closedStreams = [];
    private int _closedCount; // _closedStreams.Count, for the lock-free check before each frame
    private readonly List<Http2Stream> _abortedStreams = [];
    private readonly ResetStreamSet _resetStreams = new();
    // Abuse accounting (see Http2ConnectionOptions): streams the peer opened, resets before our answer,
    // empty frames in a row, PRIORITY and SETTINGS frames received.
    private int _streamsOpened;
    private int _windowStreams;
    private int _prematureResets;
    private int _consecutiveEmptyFrames;
    private int _priorityFrames;
    private int _settingsFrames;
    private readonly int[] _recentlyClosed = new int[MaxRememberedResets];
    private int _recentlyClosedNext;

    private Http2Settings _peerSettings = Http2Settings.Initial;
    private readonly Http2Settings _localSettings;
    private int _connectionSendWindow = Http2Settings.DefaultInitialWindowSize;
    private int _connectionReceiveWindow = Http2Settings.DefaultInitialWindowSize;
    private int _connectionUnannounced;
    private int _highestPeerStreamId;
    private int _nextLocalStreamId;
    private int _activePeerStreams;
    private int _activeLocalStreams;
    private bool _prefaceReceived;
    private bool _firstSettingsReceived;
    private int _pendingSettingsAcks;
    private bool _goAwaySent;
    private int _goAwayLastStreamId = int.MaxValue;
    private bool _goAwayReceived;
    private bool _closed;

    // A field block that spans HEADERS + CONTINUATION frames (RFC 9113 §6.10).
    private int _continuationStreamId;
    private bool _continuationEndStream;
    private bool _continuationSelfDependent;
    private byte[]? _headerBlock;
    private int _headerBlockLength;

    /// <param name="syncRoot">The lock to write the output under; pass the transport's when it drains the output under its own lock.</param>
    public Http2Connection(bool isServer, IHttp2ConnectionHandler handler, IBufferWriter<byte> output, Http2ConnectionOptions? options = null, OwnedLock? syncRoot = null)
    {
        _sync = syncRoot ?? new OwnedLock();
        _isServer = isServer;
        _handler = handler;
        _output = output;
        _options = options ?? Http2ConnectionOptions.Default;
        _options.Validate();
        _decoder = new HpackDecoder(Math.Max(_options.HeaderTableSize, Http2Settings.DefaultHeaderTableSize), _options.MaxHeaderListSize);
        _encoder = new HpackEncoder(_options.EncoderTableSizeLimit);
        _sink = new HeaderSink(this);
        _nextLocalStreamId = isServer ? 2 : 1;
        _prefaceReceived = !isServer;
        Http2Settings local = Http2Settings.Initial;
        local.HeaderTableSize = (uint)_options.HeaderTableSize;
        local.EnablePush = false;
        local.MaxConcurrentStreams = (uint)_options.MaxConcurrentStreams;
        local.InitialWindowSize = _options.InitialStreamWindowSize;
        local.MaxFrameSize = _options.MaxFrameSize;
        local.MaxHeaderListSize = (uint)_options.MaxHeaderListSize;
        if (isServer)
        {
            // §6.5.2: a server never sends ENABLE_PUSH; leaving it at its initial value keeps it off the wire.
            local.EnablePush = true;
        }
        _localSettings = local;
    }

    /// <summary>The lock under which frames are written to the output; the transport drains the output under it too.</summary>
    public OwnedLock SyncRoot => _sync;
    public bool IsServer => _isServer;
    public bool IsClosed => _closed;

    /// <summary>The peer's preface (server side) and first SETTINGS frame have arrived.</summary>
    public bool HandshakeReceived => _prefaceReceived && Volatile.Read(ref _firstSettingsReceived);
    public Http2Settings PeerSettings
    {
        get
        {
            using (_sync.Enter())
            {
                return _peerSettings;
            }
        }
    }

    public int ActiveStreamCount
    {
        get
        {
            using (_sync.Enter())
            {
                return _streams.Count;
            }
        }
    }

    /// <summary>Appends each open stream's <see cref="Http2Stream.UserState"/> and tag (for periodic checks off the data path).</summary>
    public void CopyStreamStates(List<(object? State, int Tag)> into)
    {
        using (_sync.Enter())
        {
            foreach (Http2Stream stream in _streams.Values)
            {
                into.Add((stream.UserState, stream.UserTag));
            }
        }
    }

    /// <summary>Client side: whether <see cref="OpenStream"/> would succeed now.</summary>
    public bool CanOpenStream
    {
        get
        {
            using (_sync.Enter())
            {
                return !_closed && !_goAwayReceived && !_goAwaySent && _activeLocalStreams < PeerStreamLimit
                       && _nextLocalStreamId > 0;
            }
        }
    }

    /// <summary>
    /// How many streams a client opens before the server's first SETTINGS frame has said its limit. RFC 9113
    /// §6.5.2 starts SETTINGS_MAX_CONCURRENT_STREAMS unbounded, but a server that then announces 100 (the
    /// usual value: nghttpd, Kestrel, Go) refuses every stream above it; nghttp2 and Envoy assume 100 until told.
    /// </summary>
    public const uint InitialPeerMaxConcurrentStreams = 100;

    /// <summary>The peer's stream limit, or <see cref="InitialPeerMaxConcurrentStreams"/> while its SETTINGS have not come (under the lock).</summary>
    private uint PeerStreamLimit => _firstSettingsReceived
        ? _peerSettings.MaxConcurrentStreams
        : Math.Min(_peerSettings.MaxConcurrentStreams, InitialPeerMaxConcurrentStreams);

    /// <summary>Writes the connection preface (RFC 9113 §3.4): the client magic, then SETTINGS and the connection window.</summary>
    public void Start()
    {
        using (_sync.Enter())
        {
            if (!_isServer)
            {
                _output.Write(Http2FrameWriter.ClientPreface);
            }
            Http2FrameWriter.WriteSettings(_output, _localSettings);
            _pendingSettingsAcks++;
            int raise = _options.ConnectionWindowSize - Http2Settings.DefaultInitialWindowSize;
            if (raise > 0)
            {
                Http2FrameWriter.WriteWindowUpdate(_output, 0, raise);
                _connectionReceiveWindow += raise;
            }
        }
    }

    /// <summary>
    /// Processes every complete frame at the start of <paramref name="buffer"/> and moves it past them.
    /// Returns false once the connection is finished (a GOAWAY was written for a connection error, or the
    /// connection was already closed): the transport flushes the output and closes the socket.
    /// </summary>
    public bool ProcessInput(ref ReadOnlySequence<byte> buffer)
    {
        if (_closed)
        {
            buffer = buffer.Slice(buffer.End);
            return false;
        }
        try
        {
            if (!_prefaceReceived && !TryReadPreface(ref buffer))
            {
                return true;
            }
            if (buffer.IsSingleSegment && MemoryMarshal.TryGetArray(buffer.First, out ArraySegment<byte> input))
            {
                // The usual input, one array: frames are cut by offset, the sequence is advanced once.
                int consumed = ProcessFrames(input.Array!, input.Offset, input.Count);
                buffer = buffer.Slice(consumed);
                return !_closed;
            }
            while (Http2FrameReader.TryReadFrame(ref buffer, _options.MaxFrameSize, out Http2FrameHeader header, out ReadOnlySequence<byte> payload))
            {
                RecycleClosedStreams();
                ProcessFrame(header, payload);
                if (_closed)
                {
                    buffer = buffer.Slice(buffer.End);
                    return false;
                }
            }
            return true;
        }
        catch (Http2ConnectionException e)
        {
            Fail(e.ErrorCode, e.Message);
        }
        catch (HpackException e)
        {
            // RFC 9113 §4.3: a field block that cannot be decoded is a COMPRESSION_ERROR.
            Fail(Http2ErrorCode.CompressionError, "HPACK: " + e.Message);
        }
        buffer = buffer.Slice(buffer.End);
        return false;
    }

    /// <summary>Processes the complete frames in <paramref name="array"/>; returns the octets consumed (all of them once closed).</summary>
    private int ProcessFrames(byte[] array, int offset, int count)
    {
        int pos = 0;
        while (Http2FrameReader.TryReadFrame(array.AsSpan(offset + pos, count - pos), _options.MaxFrameSize, out Http2FrameHeader header))
        {
            var payload = new ReadOnlySequence<byte>(array, offset + pos + Http2FrameHeader.Size, header.Length);
            pos += Http2FrameHeader.Size + header.Length;
            RecycleClosedStreams();
            ProcessFrame(header, payload);
            if (_closed)
            {
                return count;
            }
        }
        return pos;
    }

    /// <summary>The peer closed the transport: every open stream ends.</summary>
    public void OnTransportClosed()
    {
        AbortAll(Http2ErrorCode.Cancel, remote: true, "connection closed by peer", writeGoAway: false);
    }

    private bool TryReadPreface(ref ReadOnlySequence<byte> buffer)
    {
        ReadOnlySpan<byte> preface = Http2FrameWriter.ClientPreface;
        int available = (int)Math.Min(buffer.Length, preface.Length);
        Span<byte> head = stackalloc byte[preface.Length];
        buffer.Slice(0, available).CopyTo(head);
        if (!head.Slice(0, available).SequenceEqual(preface.Slice(0, available)))
        {
            // §3.4: an invalid connection preface is a connection error of type PROTOCOL_ERROR.
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "invalid connection preface");
        }
        if (available < preface.Length)
        {
            return false;
        }
        buffer = buffer.Slice(preface.Length);
        _prefaceReceived = true;
        return true;
    }

    private void ProcessFrame(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        // §6.10: a field block is one HEADERS and its CONTINUATIONs, with no other frame in between.
        if (_continuationStreamId != 0 && (header.Type != Http2FrameType.Continuation || header.StreamId != _continuationStreamId))
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"{header.Type} frame on stream {header.StreamId} while a field block on stream {_continuationStreamId} is open");
        }
        // §3.4: the first frame of either side's preface is SETTINGS.
        if (!_firstSettingsReceived && header.Type != Http2FrameType.Settings)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"first frame is {header.Type}, not SETTINGS");
        }
        if (header.Length != 0)
        {
            _consecutiveEmptyFrames = 0;
        }
        else
        {
            CountEmptyFrame(header);
        }
        try
        {
            switch (header.Type)
            {
                case Http2FrameType.Data:
                    ProcessData(header, payload);
                    break;
                case Http2FrameType.Headers:
                    ProcessHeaders(header, payload);
                    break;
                case Http2FrameType.Priority:
                    ProcessPriority(header, payload);
                    break;
                case Http2FrameType.RstStream:
                    ProcessRstStream(header, payload);
                    break;
                case Http2FrameType.Settings:
                    ProcessSettings(header, payload);
                    break;
                case Http2FrameType.PushPromise:
                    // §8.4: we never enable push; a server cannot receive one at all (§6.6).
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "PUSH_PROMISE received but push is disabled");
                case Http2FrameType.Ping:
                    ProcessPing(header, payload);
                    break;
                case Http2FrameType.GoAway:
                    ProcessGoAway(header, payload);
                    break;
                case Http2FrameType.WindowUpdate:
                    ProcessWindowUpdate(header, payload);
                    break;
                case Http2FrameType.Continuation:
                    ProcessContinuation(header, payload);
                    break;
                default:
                    // §4.1, §5.5: frames of unknown type are ignored.
                    break;
            }
        }
        catch (Http2StreamException e)
        {
            ResetForStreamError(e.StreamId, e.ErrorCode);
        }
    }

    private void ProcessData(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        int streamId = header.StreamId;
        if (streamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "DATA on stream 0"); // §6.1
        }
        int padLength = ReadPadLength(header, payload, reserved: 0);
        int dataLength = header.Length - padLength - (header.HasFlag(Http2FrameFlags.Padded) ? 1 : 0);
        bool endStream = header.HasFlag(Http2FrameFlags.EndStream);
        // §6.9.1: the whole payload, padding included, counts against flow control.
        int flowLength = header.Length;
        Http2Stream? stream;
        using (_sync.Enter())
        {
            if (flowLength > _connectionReceiveWindow)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, $"DATA of {flowLength} octets exceeds the connection window {_connectionReceiveWindow}");
            }
            _connectionReceiveWindow -= flowLength;
            if (!_streams.TryGetValue(streamId, out stream))
            {
                // Nobody will consume these octets: return them to the connection window now.
                CreditConnection(flowLength);
                if (IsIdle(streamId))
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"DATA on idle stream {streamId}"); // §5.1
                }
                if (WasResetRecently(streamId))
                {
                    return; // §5.4.2: frames in flight when we reset the stream are ignored.
                }
                throw ClosedStreamError(streamId, "DATA");
            }
            if (!stream.CanReceive)
            {
                CreditConnection(flowLength);
                throw new Http2StreamException(streamId, Http2ErrorCode.StreamClosed, "DATA after END_STREAM"); // §5.1 half-closed (remote)
            }
            if (!stream.FinalHeadersReceived)
            {
                CreditConnection(flowLength);
                throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, "DATA before the final header block"); // §8.1
            }
            if (flowLength > stream.ReceiveWindow)
            {
                CreditConnection(flowLength);
                throw new Http2StreamException(streamId, Http2ErrorCode.FlowControlError, $"DATA of {flowLength} octets exceeds the stream window {stream.ReceiveWindow}");
            }
            stream.ReceiveWindow -= flowLength;
            if (flowLength > dataLength)
            {
                // Padding is consumed on arrival.
                ConsumeLocked(stream, flowLength - dataLength);
            }
            stream.ReceivedContentLength += dataLength;
            if (stream.ExpectedContentLength >= 0 && !stream.BodylessResponse
                && (stream.ReceivedContentLength > stream.ExpectedContentLength || (endStream && stream.ReceivedContentLength != stream.ExpectedContentLength)))
            {
                // §8.1.1: DATA that disagrees with content-length makes the message malformed.
                CreditConnection(dataLength);
                throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, "DATA length disagrees with content-length");
            }
            if (endStream)
            {
                CloseRemote(stream);
            }
        }
        if (dataLength > 0 || endStream)
        {
            int offset = header.Length - padLength - dataLength;
            _handler.OnData(stream, Part(header, payload, offset, dataLength), endStream);
        }
    }

    /// <summary>Octets <paramref name="offset"/> to <paramref name="offset"/> + <paramref name="length"/> of a frame's payload; the payload itself when that is all of it (no padding, the usual case).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySequence<byte> Part(in Http2FrameHeader header, in ReadOnlySequence<byte> payload, int offset, int length) =>
        offset == 0 && length == header.Length ? payload : payload.Slice(offset, length);

    /// <summary>The first span of a sequence, without the general path when it is one array (the transport's input always is).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ReadOnlySpan<byte> FirstSpanOf(in ReadOnlySequence<byte> sequence) =>
        SequenceMarshal.TryGetArray(sequence, out ArraySegment<byte> segment) ? segment.AsSpan() : sequence.FirstSpan;

    /// <summary>§6.1, §6.2: the Pad Length field and the rule that padding fits in the payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ReadPadLength(in Http2FrameHeader header, in ReadOnlySequence<byte> payload, int reserved) =>
        header.HasFlag(Http2FrameFlags.Padded) ? ReadPadLengthField(header, payload, reserved) : 0;

    private static int ReadPadLengthField(in Http2FrameHeader header, in ReadOnlySequence<byte> payload, int reserved)
    {
        if (header.Length < 1)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, $"padded {header.Type} without a Pad Length field");
        }
        int padLength = payload.FirstSpan[0];
        if (padLength >= header.Length - reserved)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"{header.Type} padding of {padLength} octets fills the payload");
        }
        return padLength;
    }

    private void ProcessPriority(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (header.StreamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "PRIORITY on stream 0"); // §6.3
        }
        if (_options.MaxPriorityFramesPerStream > 0 && ++_priorityFrames > (long)_options.MaxPriorityFramesPerStream * (1 + _streamsOpened))
        {
            // Envoy's max_inbound_priority_frames_per_stream: PRIORITY costs work and changes nothing (§5.3.2).
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "PRIORITY flood");
        }
        if (header.Length != 5)
        {
            throw new Http2StreamException(header.StreamId, Http2ErrorCode.FrameSizeError, "PRIORITY length is not 5"); // §6.3
        }
        Span<byte> fields = stackalloc byte[5];
        payload.CopyTo(fields);
        int dependency = (int)(BinaryPrimitives.ReadUInt32BigEndian(fields) & 0x7FFFFFFF);
        if (dependency == header.StreamId)
        {
            throw new Http2StreamException(header.StreamId, Http2ErrorCode.ProtocolError, "stream depends on itself"); // §5.3.1
        }
        // RFC 9113 §5.3.2 deprecates the priority scheme: the signal is otherwise ignored.
    }

    private void ProcessRstStream(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (header.StreamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "RST_STREAM on stream 0"); // §6.4
        }
        if (header.Length != 4)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "RST_STREAM length is not 4"); // §6.4
        }
        var errorCode = (Http2ErrorCode)ReadUInt32(payload);
        Http2Stream? stream;
        bool premature;
        using (_sync.Enter())
        {
            if (!_streams.TryGetValue(header.StreamId, out stream))
            {
                if (IsIdle(header.StreamId))
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"RST_STREAM on idle stream {header.StreamId}"); // §6.4
                }
                return;
            }
            CloseStream(stream);
            premature = _isServer && !stream.HeadersSent && IsPeerInitiated(stream.Id);
        }
        _handler.OnStreamReset(stream, errorCode, remote: true);
        if (premature)
        {
            CountPrematureReset();
        }
    }

    private void ProcessSettings(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (header.StreamId != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "SETTINGS on a stream"); // §6.5
        }
        if (header.HasFlag(Http2FrameFlags.Ack))
        {
            if (header.Length != 0)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "SETTINGS ACK with a payload"); // §6.5
            }
            if (!_firstSettingsReceived)
            {
                throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "first frame is a SETTINGS ACK, not SETTINGS"); // §3.4
            }
            using (_sync.Enter())
            {
                if (_pendingSettingsAcks > 0 && --_pendingSettingsAcks == 0)
                {
                    // Our SETTINGS_HEADER_TABLE_SIZE binds the peer's encoder only from now on.
                    _decoder.SetMaxTableSize(_options.HeaderTableSize);
                }
            }
            return;
        }
        if (header.Length % 6 != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "SETTINGS length is not a multiple of 6"); // §6.5
        }
        if (_options.MaxSettingsFrames > 0 && ++_settingsFrames > (long)_options.MaxSettingsFrames + _streamsOpened)
        {
            // Each SETTINGS costs an ACK and a pass over the open streams: a stream of them is a flood.
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "SETTINGS flood");
        }

        Http2Settings updated;
        int windowDelta;
        using (_sync.Enter())
        {
            updated = _peerSettings;
            ReadOnlySequence<byte> rest = payload;
            Span<byte> entry = stackalloc byte[6];
            while (rest.Length >= 6)
            {
                rest.Slice(0, 6).CopyTo(entry);
                rest = rest.Slice(6);
                updated.Apply(BinaryPrimitives.ReadUInt16BigEndian(entry), BinaryPrimitives.ReadUInt32BigEndian(entry.Slice(2)), receivedByClient: !_isServer);
            }
            windowDelta = updated.InitialWindowSize - _peerSettings.InitialWindowSize;
            if (windowDelta != 0)
            {
                // §6.9.2: a new initial window size adjusts every open stream's window; overflow is a FLOW_CONTROL_ERROR.
                foreach (Http2Stream stream in _streams.Values)
                {
                    long window = (long)stream.SendWindow + windowDelta;
                    if (window > Http2Settings.MaxWindowSize)
                    {
                        throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, $"SETTINGS_INITIAL_WINDOW_SIZE overflows the window of stream {stream.Id}");
                    }
                }
                foreach (Http2Stream stream in _streams.Values)
                {
                    stream.SendWindow += windowDelta;
                }
            }
            if (updated.HeaderTableSize != _peerSettings.HeaderTableSize)
            {
                _encoder.SetPeerMaxTableSize(updated.HeaderTableSize);
            }
            _peerSettings = updated;
            _firstSettingsReceived = true;
            Http2FrameWriter.WriteSettingsAck(_output);
        }
        _handler.OnSettings(updated);
        if (windowDelta > 0)
        {
            _handler.OnWindowUpdate(0);
        }
    }

    private void ProcessPing(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (header.StreamId != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "PING on a stream"); // §6.7
        }
        if (header.Length != 8)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "PING length is not 8"); // §6.7
        }
        if (header.HasFlag(Http2FrameFlags.Ack))
        {
            return;
        }
        Span<byte> data = stackalloc byte[8];
        payload.CopyTo(data);
        using (_sync.Enter())
        {
            Http2FrameWriter.WritePing(_output, BinaryPrimitives.ReadUInt64BigEndian(data), ack: true);
        }
    }

    private void ProcessGoAway(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (header.StreamId != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "GOAWAY on a stream"); // §6.8
        }
        if (header.Length < 8)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "GOAWAY shorter than 8 octets"); // §6.8
        }
        Span<byte> fields = stackalloc byte[8];
        payload.Slice(0, 8).CopyTo(fields);
        int lastStreamId = (int)(BinaryPrimitives.ReadUInt32BigEndian(fields) & 0x7FFFFFFF);
        var errorCode = (Http2ErrorCode)BinaryPrimitives.ReadUInt32BigEndian(fields.Slice(4));
        using (_sync.Enter())
        {
            _goAwayReceived = true;
            _abortedStreams.Clear();
            foreach (Http2Stream stream in _streams.Values)
            {
                // §6.8: streams we opened above the last id were not processed and may be retried.
                if (!IsPeerInitiated(stream.Id) && stream.Id > lastStreamId)
                {
                    _abortedStreams.Add(stream);
                }
            }
            foreach (Http2Stream stream in _abortedStreams)
            {
                CloseStream(stream);
            }
        }
        foreach (Http2Stream stream in _abortedStreams)
        {
            _handler.OnStreamReset(stream, Http2ErrorCode.RefusedStream, remote: true);
        }
        _abortedStreams.Clear();
        _handler.OnGoAway(lastStreamId, errorCode);
    }

    private void ProcessWindowUpdate(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (header.Length != 4)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "WINDOW_UPDATE length is not 4"); // §6.9
        }
        int increment = (int)(ReadUInt32(payload) & 0x7FFFFFFF);
        int streamId = header.StreamId;
        using (_sync.Enter())
        {
            if (streamId == 0)
            {
                if (increment == 0)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "connection WINDOW_UPDATE of 0"); // §6.9
                }
                if ((long)_connectionSendWindow + increment > Http2Settings.MaxWindowSize)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, "connection window exceeds 2^31-1"); // §6.9.1
                }
                _connectionSendWindow += increment;
            }
            else
            {
                if (!_streams.TryGetValue(streamId, out Http2Stream? stream))
                {
                    if (IsIdle(streamId))
                    {
                        throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"WINDOW_UPDATE on idle stream {streamId}"); // §5.1
                    }
                    return; // §5.1: allowed for a short while on a closed stream
                }
                if (increment == 0)
                {
                    throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, "stream WINDOW_UPDATE of 0"); // §6.9
                }
                if ((long)stream.SendWindow + increment > Http2Settings.MaxWindowSize)
                {
                    throw new Http2StreamException(streamId, Http2ErrorCode.FlowControlError, "stream window exceeds 2^31-1"); // §6.9.1
                }
                stream.SendWindow += increment;
            }
        }
        _handler.OnWindowUpdate(streamId);
    }

    /// <summary>
    /// §5.1: DATA or HEADERS on a stream that ended is STREAM_CLOSED; on an identifier below the highest
    /// one used but never opened (implicitly closed, §5.1.1) it is PROTOCOL_ERROR.
    /// </summary>
    private Http2ConnectionException ClosedStreamError(int streamId, string frame) =>
        Array.IndexOf(_recentlyClosed, streamId) >= 0
            ? new Http2ConnectionException(Http2ErrorCode.StreamClosed, $"{frame} on closed stream {streamId}")
            : new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"{frame} on stream {streamId}, which is not open");

    /// <summary>
    /// Envoy's max_consecutive_inbound_frames_with_empty_payload: frames that carry nothing and end nothing
    /// (DATA without END_STREAM, HEADERS or CONTINUATION without END_HEADERS) cost work for free.
    /// </summary>
    private void CountEmptyFrame(in Http2FrameHeader header)
    {
        bool empty = header.Type switch
        {
            Http2FrameType.Data => !header.HasFlag(Http2FrameFlags.EndStream),
            Http2FrameType.Headers or Http2FrameType.Continuation => !header.HasFlag(Http2FrameFlags.EndHeaders),
            _ => false,
        };
        if (!empty)
        {
            _consecutiveEmptyFrames = 0;
            return;
        }
        if (++_consecutiveEmptyFrames > _options.MaxConsecutiveEmptyFrames)
        {
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, $"more than {_options.MaxConsecutiveEmptyFrames} empty {header.Type} frames in a row");
        }
    }

    /// <summary>A peer stream opened: the window the rapid-reset ratio is taken over moves on.</summary>
    private void CountStreamOpened()
    {
        _streamsOpened++;
        if (_options.MaxPrematureResets > 0 && ++_windowStreams >= 2 * _options.MaxPrematureResets)
        {
            // Decay: the recent past counts, a long well-behaved history does not excuse a burst.
            _windowStreams /= 2;
            _prematureResets /= 2;
        }
    }

    /// <summary>The peer reset a stream before we answered it (CVE-2023-44487, "rapid reset").</summary>
    private void CountPrematureReset()
    {
        if (_options.MaxPrematureResets > 0 && ++_prematureResets > _options.MaxPrematureResets)
        {
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "too many streams reset by the client before their response (rapid reset)");
        }
    }

    private static uint ReadUInt32(in ReadOnlySequence<byte> payload)
    {
        ReadOnlySpan<byte> first = payload.FirstSpan;
        if (first.Length >= 4)
        {
            return BinaryPrimitives.ReadUInt32BigEndian(first);
        }
        Span<byte> copy = stackalloc byte[4];
        payload.Slice(0, 4).CopyTo(copy);
        return BinaryPrimitives.ReadUInt32BigEndian(copy);
    }
}
