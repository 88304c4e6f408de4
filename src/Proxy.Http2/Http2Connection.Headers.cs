using System.Buffers;
using System.Buffers.Binary;
using Proxy.Http2.Hpack;

namespace Proxy.Http2;

public sealed partial class Http2Connection
{
    private void ProcessHeaders(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        int streamId = header.StreamId;
        if (streamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "HEADERS on stream 0"); // §6.2
        }
        bool hasPriority = header.HasFlag(Http2FrameFlags.Priority);
        int padLength = ReadPadLength(header, payload, reserved: hasPriority ? 5 : 0);
        int offset = header.HasFlag(Http2FrameFlags.Padded) ? 1 : 0;
        bool selfDependent = false;
        if (hasPriority)
        {
            if (header.Length < offset + 5)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "HEADERS too short for its priority fields");
            }
            Span<byte> fields = stackalloc byte[4];
            payload.Slice(offset, 4).CopyTo(fields);
            selfDependent = (BinaryPrimitives.ReadUInt32BigEndian(fields) & 0x7FFFFFFF) == (uint)streamId; // §5.3.1
            offset += 5;
        }
        ReadOnlySequence<byte> fragment = Part(header, payload, offset, header.Length - offset - padLength);
        bool endStream = header.HasFlag(Http2FrameFlags.EndStream);

        if (!header.HasFlag(Http2FrameFlags.EndHeaders))
        {
            _continuationStreamId = streamId;
            _continuationEndStream = endStream;
            _continuationSelfDependent = selfDependent;
            _headerBlockLength = 0;
            AppendHeaderBlock(fragment);
            return;
        }

        if (fragment.IsSingleSegment)
        {
            DecodeHeaderBlock(streamId, FirstSpanOf(fragment), endStream, selfDependent);
            return;
        }
        _headerBlockLength = 0;
        AppendHeaderBlock(fragment);
        DecodeBufferedHeaderBlock(streamId, endStream, selfDependent);
    }

    private void ProcessContinuation(in Http2FrameHeader header, in ReadOnlySequence<byte> payload)
    {
        if (_continuationStreamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "CONTINUATION without a preceding HEADERS"); // §6.10
        }
        AppendHeaderBlock(payload);
        if (header.HasFlag(Http2FrameFlags.EndHeaders))
        {
            int streamId = _continuationStreamId;
            _continuationStreamId = 0;
            DecodeBufferedHeaderBlock(streamId, _continuationEndStream, _continuationSelfDependent);
        }
    }

    private void AppendHeaderBlock(in ReadOnlySequence<byte> fragment)
    {
        int needed = _headerBlockLength + (int)fragment.Length;
        // A compressed block is never larger than the decoded list it may produce plus one frame of slack;
        // anything beyond is a CONTINUATION flood, which no legitimate peer sends.
        if (needed > _options.MaxHeaderListSize + Http2Settings.MinMaxFrameSize)
        {
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, $"field block exceeds {_options.MaxHeaderListSize + Http2Settings.MinMaxFrameSize} octets");
        }
        if (_headerBlock == null || _headerBlock.Length < needed)
        {
            byte[] grown = ArrayPool<byte>.Shared.Rent(Math.Max(needed, 1024));
            if (_headerBlock != null)
            {
                _headerBlock.AsSpan(0, _headerBlockLength).CopyTo(grown);
                ArrayPool<byte>.Shared.Return(_headerBlock);
            }
            _headerBlock = grown;
        }
        fragment.CopyTo(_headerBlock.AsSpan(_headerBlockLength));
        _headerBlockLength = needed;
    }

    private void DecodeBufferedHeaderBlock(int streamId, bool endStream, bool selfDependent)
    {
        byte[] block = _headerBlock!;
        try
        {
            DecodeHeaderBlock(streamId, block.AsSpan(0, _headerBlockLength), endStream, selfDependent);
        }
        finally
        {
            _headerBlock = null;
            _headerBlockLength = 0;
            ArrayPool<byte>.Shared.Return(block);
        }
    }

    private void DecodeHeaderBlock(int streamId, ReadOnlySpan<byte> block, bool endStream, bool selfDependent)
    {
        Http2Stream? stream;
        Http2HeaderBlockKind kind;
        Http2ErrorCode refuseWith = Http2ErrorCode.NoError;
        using (_sync.Enter())
        {
            if (_streams.TryGetValue(streamId, out stream))
            {
                if (!stream.CanReceive)
                {
                    refuseWith = Http2ErrorCode.StreamClosed; // §5.1 half-closed (remote)
                }
                kind = _isServer || stream.FinalHeadersReceived ? Http2HeaderBlockKind.Trailers : Http2HeaderBlockKind.Response;
            }
            else if (IsPeerInitiated(streamId) && streamId > _highestPeerStreamId)
            {
                if (!_isServer)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"HEADERS opening server stream {streamId}, but push is disabled");
                }
                // §5.1.1: a new stream's identifier is greater than every one the peer opened before.
                _highestPeerStreamId = streamId;
                kind = Http2HeaderBlockKind.Request;
                if (_goAwaySent && streamId > _goAwayLastStreamId)
                {
                    refuseWith = Http2ErrorCode.RefusedStream; // §6.8: not processed after our GOAWAY
                }
                else if (_activePeerStreams >= _options.MaxConcurrentStreams)
                {
                    refuseWith = Http2ErrorCode.RefusedStream; // §5.1.2
                }
                else
                {
                    // The stream opens with HEADERS; END_STREAM is applied once the block is known to be valid.
                    stream = RentStream(streamId, Http2StreamState.Open);
                    _activePeerStreams++;
                    CountStreamOpened();
                }
            }
            else if (IsIdle(streamId))
            {
                throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"HEADERS on idle stream {streamId} of the wrong parity or order"); // §5.1.1
            }
            else if (WasResetRecently(streamId))
            {
                kind = Http2HeaderBlockKind.Trailers;
                refuseWith = Http2ErrorCode.Cancel; // decoded for the compression context, then dropped
            }
            else
            {
                throw ClosedStreamError(streamId, "HEADERS");
            }
        }

        bool deliver = stream != null && refuseWith == Http2ErrorCode.NoError;
        _sink.Begin(deliver ? stream : null, kind);
        if (deliver)
        {
            _handler.OnHeadersBegin(stream!, kind);
        }
        // The block is decoded even when its stream is refused: the dynamic table must stay in step (§4.3).
        bool withinLimit = deliver && block.Length <= RepeatBlock.MaxOctets ? DecodeOrRepeat(stream!, kind, block) : _decoder.Decode(block, _sink);

        if (refuseWith == Http2ErrorCode.Cancel)
        {
            return;
        }
        if (refuseWith != Http2ErrorCode.NoError)
        {
            throw new Http2StreamException(streamId, refuseWith, "stream refused or closed");
        }
        if (selfDependent)
        {
            throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, "stream depends on itself"); // §5.3.1
        }
        if (!withinLimit)
        {
            throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, $"header list exceeds SETTINGS_MAX_HEADER_LIST_SIZE {_options.MaxHeaderListSize}");
        }
        if (!_sink.Validator.Finish(endStream))
        {
            throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, "malformed message: " + _sink.Validator.Error);
        }

        using (_sync.Enter())
        {
            ref HeaderBlockValidator v = ref _sink.Validator;
            if (kind != Http2HeaderBlockKind.Trailers && (kind == Http2HeaderBlockKind.Request || v.Status >= 200))
            {
                stream!.FinalHeadersReceived = true;
                stream.ExpectedContentLength = v.ContentLength;
                if (v.Status is 204 or 304)
                {
                    stream.BodylessResponse = true;
                }
            }
            if (endStream)
            {
                if (stream!.ExpectedContentLength > 0 && !stream.BodylessResponse && stream.ReceivedContentLength != stream.ExpectedContentLength)
                {
                    throw new Http2StreamException(streamId, Http2ErrorCode.ProtocolError, "stream ended before content-length octets arrived"); // §8.1.1
                }
                CloseRemote(stream);
            }
        }
        _handler.OnHeadersEnd(stream!, endStream);
    }

    /// <summary>
    /// Decodes a short block, or replays it: peers on a long-lived connection send the same block again and
    /// again (a gRPC client's requests, once its fields are in the dynamic table, are the same few index
    /// octets each time; so are a server's response heads and trailers). A block of the same octets decoded
    /// at the same <see cref="HpackDecoder.Generation"/> gives the same fields and the same verdict, so the
    /// third and later sightings are handed over from the copy kept at the second, without decoding or
    /// validating anything. Only blocks that left the compression context as it was are kept.
    /// </summary>
    private bool DecodeOrRepeat(Http2Stream stream, Http2HeaderBlockKind kind, ReadOnlySpan<byte> block)
    {
        RepeatBlock repeat = _repeats[(int)kind] ??= new RepeatBlock();
        ulong generation = _decoder.Generation;
        bool same = repeat.Generation == generation && block.SequenceEqual(repeat.Octets.AsSpan(0, repeat.Length));
        if (same && repeat.Recorded)
        {
            _sink.Validator = repeat.Validator;
            _handler.OnHeaders(stream, repeat.Fields);
            return true;
        }
        HeaderList? record = null;
        if (same)
        {
            record = repeat.Fields;
            record.Clear();
        }
        _sink.Record = record;
        bool withinLimit;
        try
        {
            withinLimit = _decoder.Decode(block, _sink);
        }
        finally
        {
            _sink.Record = null;
        }
        if (!withinLimit || _sink.Validator.IsMalformed || _decoder.Generation != generation)
        {
            repeat.Length = 0; // not a block to keep (it changed the table, or was refused)
            repeat.Generation = ulong.MaxValue;
            repeat.Recorded = false;
        }
        else if (same)
        {
            repeat.Validator = _sink.Validator;
            repeat.Recorded = true;
        }
        else
        {
            block.CopyTo(repeat.Octets);
            repeat.Length = block.Length;
            repeat.Generation = generation;
            repeat.Recorded = false;
        }
        return withinLimit;
    }

    /// <summary>The last short, context-neutral block of one kind (see <see cref="DecodeOrRepeat"/>).</summary>
    private sealed class RepeatBlock
    {
        /// <summary>Longer blocks are not kept: a repeated head is a few index octets, a new one spells out literals.</summary>
        public const int MaxOctets = 64;

        public readonly byte[] Octets = new byte[MaxOctets];
        public int Length;
        public ulong Generation = ulong.MaxValue; // no decoder's: nothing kept yet
        /// <summary><see cref="Fields"/> and <see cref="Validator"/> hold what the block decodes to.</summary>
        public bool Recorded;
        public readonly HeaderList Fields = new(128, 8);
        /// <summary>The validator's state after the block's fields (before <see cref="HeaderBlockValidator.Finish"/>).</summary>
        public HeaderBlockValidator Validator;
    }

    /// <summary>Validates decoded fields and forwards them to the handler while the block is well-formed.</summary>
    private sealed class HeaderSink(Http2Connection connection) : IHpackHeaderHandler
    {
        private Http2Stream? _stream;
        public HeaderBlockValidator Validator;
        /// <summary>Also keeps the delivered fields here (a block seen for the second time, see <see cref="DecodeOrRepeat"/>).</summary>
        public HeaderList? Record;

        public void Begin(Http2Stream? stream, Http2HeaderBlockKind kind)
        {
            _stream = stream;
            Validator.Begin(kind, connection._options.MaxHeaderFields);
        }

        public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HpackFieldFlags flags)
        {
            if (_stream == null || Validator.IsMalformed || !Validator.Check(staticIndex, name, value, (flags & HpackFieldFlags.Checked) != 0))
            {
                return;
            }
            connection._handler.OnHeader(_stream, staticIndex, name, value, flags);
            Record?.Add(staticIndex, name, value, flags);
        }
    }
}
