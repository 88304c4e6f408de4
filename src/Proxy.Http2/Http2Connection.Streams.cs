using System.Buffers;
using System.Text;
using Proxy.Http2.Hpack;

namespace Proxy.Http2;

public sealed partial class Http2Connection
{
    /// <summary>
    /// Client side: opens a stream by sending its request header block. Returns the new stream's id, or 0
    /// when no stream can be opened now (closed, GOAWAY, or the peer's SETTINGS_MAX_CONCURRENT_STREAMS).
    /// </summary>
    public int OpenStream(HeaderList headers, bool endStream, object? userState = null, int userTag = 0)
    {
        using (_sync.Enter())
        {
            if (_closed || _goAwayReceived || _goAwaySent || _activeLocalStreams >= PeerStreamLimit || _nextLocalStreamId <= 0)
            {
                return 0;
            }
            int streamId = _nextLocalStreamId;
            // §5.1.1: identifiers cannot be reused; when they run out, a new connection is needed.
            _nextLocalStreamId = streamId > int.MaxValue - 2 ? -1 : streamId + 2;
            Http2Stream stream = RentStream(streamId, Http2StreamState.Open);
            stream.UserState = userState;
            stream.UserTag = userTag;
            int method = headers.IndexOf(":method"u8);
            stream.BodylessResponse = method >= 0 && headers.Value(method).SequenceEqual("HEAD"u8);
            _activeLocalStreams++;
            WriteHeaderBlock(streamId, headers, endStream);
            if (endStream)
            {
                CloseLocal(stream);
            }
            return streamId;
        }
    }

    /// <summary>Sends a header block (response headers, or trailers with <paramref name="endStream"/>). False if the stream cannot send.</summary>
    public bool SendHeaders(int streamId, HeaderList headers, bool endStream)
    {
        using (_sync.Enter())
        {
            if (_closed || !_streams.TryGetValue(streamId, out Http2Stream? stream) || !stream.CanSend)
            {
                return false;
            }
            WriteHeaderBlock(streamId, headers, endStream);
            stream.HeadersSent = true;
            if (endStream)
            {
                CloseLocal(stream);
            }
            return true;
        }
    }

    /// <summary>
    /// Sends as much of <paramref name="data"/> as the stream and connection send windows allow, in frames
    /// no larger than the peer's SETTINGS_MAX_FRAME_SIZE. Returns the octets sent (END_STREAM goes out only
    /// with the last of them), or -1 when the stream can no longer send. The rest waits for
    /// <see cref="IHttp2ConnectionHandler.OnWindowUpdate"/>.
    /// </summary>
    public int SendData(int streamId, ReadOnlySpan<byte> data, bool endStream)
    {
        using (_sync.Enter())
        {
            if (!TryGetSendable(streamId, out Http2Stream? stream))
            {
                return -1;
            }
            int allowed = Allowed(stream, data.Length);
            if (allowed == 0 && (data.Length > 0 || !endStream))
            {
                return 0;
            }
            int maxFrame = _peerSettings.MaxFrameSize;
            bool finish = endStream && allowed == data.Length;
            int sent = 0;
            do
            {
                int chunk = Math.Min(allowed - sent, maxFrame);
                Http2FrameWriter.WriteData(_output, streamId, data.Slice(sent, chunk), finish && sent + chunk == allowed);
                sent += chunk;
            }
            while (sent < allowed);
            return AfterDataSent(stream, allowed, finish);
        }
    }

    /// <inheritdoc cref="SendData(int, ReadOnlySpan{byte}, bool)"/>
    public int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (data.IsSingleSegment)
        {
            return SendData(streamId, FirstSpanOf(data), endStream);
        }
        using (_sync.Enter())
        {
            if (!TryGetSendable(streamId, out Http2Stream? stream))
            {
                return -1;
            }
            int length = (int)Math.Min(data.Length, int.MaxValue);
            int allowed = Allowed(stream, length);
            if (allowed == 0 && (length > 0 || !endStream))
            {
                return 0;
            }
            int maxFrame = _peerSettings.MaxFrameSize;
            bool finish = endStream && allowed == data.Length;
            int sent = 0;
            do
            {
                int chunk = Math.Min(allowed - sent, maxFrame);
                Http2FrameWriter.WriteData(_output, streamId, data.Slice(sent, chunk), finish && sent + chunk == allowed);
                sent += chunk;
            }
            while (sent < allowed);
            return AfterDataSent(stream, allowed, finish);
        }
    }

    /// <summary>The octets the stream could send now (the smaller of its window and the connection's), or -1 if it cannot send.</summary>
    public int GetSendWindow(int streamId)
    {
        using (_sync.Enter())
        {
            return TryGetSendable(streamId, out Http2Stream? stream) ? Allowed(stream, int.MaxValue) : -1;
        }
    }

    /// <summary>Resets a stream with RST_STREAM (for example to cancel it, or NO_ERROR after a complete response, §8.1).</summary>
    public void ResetStream(int streamId, Http2ErrorCode errorCode)
    {
        using (_sync.Enter())
        {
            if (_closed || !_streams.TryGetValue(streamId, out Http2Stream? stream))
            {
                return;
            }
            Http2FrameWriter.WriteRstStream(_output, streamId, errorCode);
            RememberReset(streamId);
            CloseStream(stream);
        }
    }

    /// <summary>
    /// The application drops <paramref name="bytes"/> octets delivered by <see cref="IHttp2ConnectionHandler.OnData"/>
    /// unread: the connection's window reopens (other streams go on), the stream's does not, so a body
    /// nobody reads is bounded by the stream's window.
    /// </summary>
    public void DropData(int bytes)
    {
        if (bytes <= 0)
        {
            return;
        }
        using (_sync.Enter())
        {
            if (!_closed)
            {
                CreditConnection(bytes);
            }
        }
    }

    /// <summary>
    /// The application has consumed <paramref name="bytes"/> octets delivered by
    /// <see cref="IHttp2ConnectionHandler.OnData"/> on <paramref name="streamId"/> (also after the stream
    /// closed): the windows reopen, and WINDOW_UPDATE goes out once half a window has been consumed.
    /// </summary>
    public void ConsumeData(int streamId, int bytes)
    {
        if (bytes <= 0)
        {
            return;
        }
        using (_sync.Enter())
        {
            if (_closed)
            {
                return;
            }
            _streams.TryGetValue(streamId, out Http2Stream? stream);
            if (stream != null && stream.CanReceive)
            {
                ConsumeLocked(stream, bytes);
            }
            else
            {
                CreditConnection(bytes);
            }
        }
    }

    public void Ping(ulong opaqueData)
    {
        using (_sync.Enter())
        {
            if (!_closed)
            {
                Http2FrameWriter.WritePing(_output, opaqueData, ack: false);
            }
        }
    }

    /// <summary>
    /// Sends GOAWAY naming the last peer stream we will process (RFC 9113 §6.8). With NO_ERROR this is a
    /// graceful shutdown: open streams finish, new ones are refused. Any other code closes the connection.
    /// </summary>
    public void GoAway(Http2ErrorCode errorCode, string? debugData = null)
    {
        if (errorCode != Http2ErrorCode.NoError)
        {
            AbortAll(errorCode, remote: false, debugData ?? "connection closed", writeGoAway: true);
            return;
        }
        using (_sync.Enter())
        {
            if (_closed || _goAwaySent)
            {
                return;
            }
            _goAwaySent = true;
            _goAwayLastStreamId = _highestPeerStreamId;
            WriteGoAway(errorCode, debugData);
        }
    }

    /// <summary>
    /// The first step of a graceful shutdown (RFC 9113 §6.8): GOAWAY with the last stream identifier
    /// 2^31-1 and NO_ERROR, which tells the peer to open no more streams while the ones it may have in
    /// flight are still taken. <see cref="GoAway"/> later sends the real last stream identifier.
    /// </summary>
    public void AnnounceShutdown(string? debugData = null)
    {
        using (_sync.Enter())
        {
            if (_closed || _goAwaySent || _shutdownAnnounced)
            {
                return;
            }
            _shutdownAnnounced = true;
            Span<byte> debug = stackalloc byte[MaxGoAwayDebugBytes];
            int length = debugData == null ? 0 : Encoding.ASCII.GetBytes(debugData.AsSpan(0, Math.Min(debugData.Length, MaxGoAwayDebugBytes)), debug);
            Http2FrameWriter.WriteGoAway(_output, int.MaxValue, Http2ErrorCode.NoError, debug.Slice(0, length));
        }
    }

    private bool _shutdownAnnounced;

    // Larger blocks are encoded aside and then cut into frames; smaller ones need no copy.
    private const int MaxDirectBlockOctets = 4096;

    private void WriteHeaderBlock(int streamId, HeaderList headers, bool endStream)
    {
        int bound = HpackEncoder.MaxBlockStartOctets + headers.EncodedLengthBound();
        if (bound <= Math.Min(_peerSettings.MaxFrameSize, MaxDirectBlockOctets))
        {
            // The usual block fits one frame: encoded straight into the output behind its frame header.
            Span<byte> frame = _output.GetSpan(Http2FrameHeader.Size + bound);
            Span<byte> block = frame.Slice(Http2FrameHeader.Size);
            int length = EncodeOrRepeat(headers, block);
            Http2FrameHeader.Write(frame, length, Http2FrameType.Headers, Http2FrameFlags.EndHeaders | (endStream ? Http2FrameFlags.EndStream : 0), streamId);
            _output.Advance(Http2FrameHeader.Size + length);
            return;
        }
        _encodeBuffer.ResetWrittenCount();
        _encoder.BeginBlock(_encodeBuffer);
        Span<byte> span = _encodeBuffer.GetSpan(bound);
        _encodeBuffer.Advance(headers.EncodeTo(_encoder, span));
        Http2FrameWriter.WriteHeaders(_output, streamId, _encodeBuffer.WrittenSpan, endStream, _peerSettings.MaxFrameSize);
    }

    /// <summary>
    /// Encodes a field list into <paramref name="block"/>, or copies the octets it encoded to before: a
    /// proxy sends the same response head and trailers (and, upstream, the same request head) again and
    /// again. The same fields at the same <see cref="HpackEncoder.Generation"/> encode to the same octets;
    /// the last two lists that left the table as it was are kept (a response head and its trailers).
    /// </summary>
    private int EncodeOrRepeat(HeaderList headers, Span<byte> block)
    {
        ulong generation = _encoder.Generation;
        foreach (SentBlock? kept in _sent)
        {
            if (kept != null && kept.Generation == generation && headers.SameAs(kept.Fields))
            {
                kept.Octets.AsSpan(0, kept.Length).CopyTo(block);
                return kept.Length;
            }
        }
        int length = _encoder.BeginBlock(block);
        length += headers.EncodeTo(_encoder, block.Slice(length));
        if (length <= SentBlock.MaxOctets && _encoder.Generation == generation)
        {
            SentBlock keep = _sent[_sentNext] ??= new SentBlock();
            _sentNext ^= 1;
            keep.Fields.CopyFrom(headers);
            block.Slice(0, length).CopyTo(keep.Octets);
            keep.Length = length;
            keep.Generation = generation;
        }
        return length;
    }

    private readonly SentBlock?[] _sent = new SentBlock?[2];
    private int _sentNext;

    /// <summary>A field list and the octets it encoded to (see <see cref="EncodeOrRepeat"/>).</summary>
    private sealed class SentBlock
    {
        /// <summary>Longer blocks are not kept: they spell out literals, which cost more to keep than to encode.</summary>
        public const int MaxOctets = 128;

        public readonly HeaderList Fields = new(128, 8);
        public readonly byte[] Octets = new byte[MaxOctets];
        public int Length;
        public ulong Generation;
    }

    private bool TryGetSendable(int streamId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Http2Stream? stream)
    {
        if (!_closed && _streams.TryGetValue(streamId, out stream) && stream.CanSend)
        {
            return true;
        }
        stream = null;
        return false;
    }

    private int Allowed(Http2Stream stream, int wanted)
    {
        // Windows can be negative after SETTINGS_INITIAL_WINDOW_SIZE shrinks (§6.9.2).
        int window = Math.Min(stream.SendWindow, _connectionSendWindow);
        return window <= 0 ? 0 : Math.Min(window, wanted);
    }

    private int AfterDataSent(Http2Stream stream, int sent, bool endStream)
    {
        stream.SendWindow -= sent;
        _connectionSendWindow -= sent;
        if (endStream)
        {
            CloseLocal(stream);
        }
        return sent;
    }

    private void ConsumeLocked(Http2Stream stream, int bytes)
    {
        stream.UnannouncedConsumed += bytes;
        if (stream.UnannouncedConsumed >= _options.InitialStreamWindowSize / 2)
        {
            Http2FrameWriter.WriteWindowUpdate(_output, stream.Id, stream.UnannouncedConsumed);
            stream.ReceiveWindow += stream.UnannouncedConsumed;
            stream.UnannouncedConsumed = 0;
        }
        CreditConnection(bytes);
    }

    private void CreditConnection(int bytes)
    {
        _connectionUnannounced += bytes;
        if (_connectionUnannounced >= _options.ConnectionWindowSize / 2 && !_closed)
        {
            Http2FrameWriter.WriteWindowUpdate(_output, 0, _connectionUnannounced);
            _connectionReceiveWindow += _connectionUnannounced;
            _connectionUnannounced = 0;
        }
    }

    private bool IsPeerInitiated(int streamId) => (streamId & 1) == (_isServer ? 1 : 0);

    /// <summary>§5.1.1: a stream is idle until its identifier, or a higher one of the same initiator, is used.</summary>
    private bool IsIdle(int streamId) =>
        IsPeerInitiated(streamId) ? streamId > _highestPeerStreamId : (_nextLocalStreamId > 0 && streamId >= _nextLocalStreamId);

    private Http2Stream RentStream(int streamId, Http2StreamState state)
    {
        Http2Stream stream = _freeStreams.Count > 0 ? _freeStreams.Pop() : new Http2Stream();
        stream.Reset(streamId, state, _peerSettings.InitialWindowSize, _options.InitialStreamWindowSize);
        _streams.Add(streamId, stream);
        return stream;
    }

    private void CloseLocal(Http2Stream stream)
    {
        if (stream.State == Http2StreamState.Open)
        {
            stream.State = Http2StreamState.HalfClosedLocal;
        }
        else
        {
            CloseStream(stream);
        }
    }

    private void CloseRemote(Http2Stream stream)
    {
        if (stream.State == Http2StreamState.Open)
        {
            stream.State = Http2StreamState.HalfClosedRemote;
        }
        else
        {
            CloseStream(stream);
        }
    }

    private void CloseStream(Http2Stream stream)
    {
        if (!_streams.Remove(stream.Id))
        {
            return;
        }
        if (IsPeerInitiated(stream.Id))
        {
            _activePeerStreams--;
        }
        else
        {
            _activeLocalStreams--;
        }
        stream.State = Http2StreamState.Closed;
        _recentlyClosed[_recentlyClosedNext] = stream.Id;
        _recentlyClosedNext = (_recentlyClosedNext + 1) % _recentlyClosed.Length;
        // Reused only from the reading thread between frames, once no callback can still hold it.
        _closedStreams.Add(stream);
        _closedCount = _closedStreams.Count;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private void RecycleClosedStreams()
    {
        // Called before every frame: most frames close nothing, so the lock is taken only when a stream
        // closed. The count is read without it: a stale zero leaves the recycling to the next frame.
        if (Volatile.Read(ref _closedCount) != 0)
        {
            RecycleClosedStreamsLocked();
        }
    }

    private void RecycleClosedStreamsLocked()
    {
        using (_sync.Enter())
        {
            if (_closedStreams.Count == 0)
            {
                return;
            }
            foreach (Http2Stream stream in _closedStreams)
            {
                if (_freeStreams.Count < _options.MaxConcurrentStreams)
                {
                    stream.UserState = null;
                    _freeStreams.Push(stream);
                }
            }
            _closedStreams.Clear();
            _closedCount = 0;
        }
    }

    private void RememberReset(int streamId) => _resetStreams.Add(streamId);

    /// <summary>§5.4.2: whether we reset this stream (at any time: late frames for it are ignored, never an error).</summary>
    private bool WasResetRecently(int streamId) => _resetStreams.Contains(streamId);

    /// <summary>§5.4.2: RST_STREAM for a stream error; the connection goes on.</summary>
    private void ResetForStreamError(int streamId, Http2ErrorCode errorCode)
    {
        Http2Stream? stream;
        using (_sync.Enter())
        {
            if (_closed)
            {
                return;
            }
            Http2FrameWriter.WriteRstStream(_output, streamId, errorCode);
            RememberReset(streamId);
            if (!_streams.TryGetValue(streamId, out stream))
            {
                return;
            }
            CloseStream(stream);
        }
        _handler.OnStreamReset(stream, errorCode, remote: false);
    }

    /// <summary>§5.4.1: a connection error: GOAWAY with the last peer stream we processed, then close.</summary>
    private void Fail(Http2ErrorCode errorCode, string reason) => AbortAll(errorCode, remote: false, reason, writeGoAway: true);

    private void AbortAll(Http2ErrorCode errorCode, bool remote, string reason, bool writeGoAway)
    {
        List<Http2Stream> aborted; // cold path: a list of its own, since any thread may get here
        using (_sync.Enter())
        {
            if (_closed)
            {
                return;
            }
            if (writeGoAway)
            {
                WriteGoAway(errorCode, reason);
            }
            _closed = true;
            aborted = new List<Http2Stream>(_streams.Count);
            foreach (Http2Stream stream in _streams)
            {
                aborted.Add(stream);
            }
            _streams.Clear();
            _activeLocalStreams = 0;
            _activePeerStreams = 0;
            foreach (Http2Stream stream in aborted)
            {
                stream.State = Http2StreamState.Closed;
            }
            if (_headerBlock != null)
            {
                ArrayPool<byte>.Shared.Return(_headerBlock);
                _headerBlock = null;
            }
        }
        foreach (Http2Stream stream in aborted)
        {
            _handler.OnStreamReset(stream, errorCode, remote);
        }
        _handler.OnConnectionClosed(errorCode, remote, reason);
    }

    private void WriteGoAway(Http2ErrorCode errorCode, string? debugData)
    {
        Span<byte> debug = stackalloc byte[MaxGoAwayDebugBytes];
        int length = 0;
        if (!string.IsNullOrEmpty(debugData))
        {
            ReadOnlySpan<char> text = debugData.AsSpan(0, Math.Min(debugData.Length, MaxGoAwayDebugBytes));
            length = Encoding.ASCII.GetBytes(text, debug);
        }
        Http2FrameWriter.WriteGoAway(_output, _highestPeerStreamId, errorCode, debug.Slice(0, length));
    }
}
