using System.Buffers;
using System.Buffers.Binary;

namespace Proxy.Http2;

/// <summary>Writes frames of RFC 9113 §6 into an <see cref="IBufferWriter{T}"/>. Not thread-safe.</summary>
public static class Http2FrameWriter
{
    /// <summary>The client connection preface (RFC 9113 §3.4).</summary>
    public static ReadOnlySpan<byte> ClientPreface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    public static void WriteData(IBufferWriter<byte> output, int streamId, ReadOnlySpan<byte> data, bool endStream, int padLength = -1)
    {
        int padded = padLength >= 0 ? 1 + padLength : 0;
        var flags = (endStream ? Http2FrameFlags.EndStream : 0) | (padLength >= 0 ? Http2FrameFlags.Padded : 0);
        int length = data.Length + padded;
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + length);
        Http2FrameHeader.Write(span, length, Http2FrameType.Data, flags, streamId);
        int pos = Http2FrameHeader.Size;
        if (padLength >= 0)
        {
            span[pos++] = (byte)padLength;
        }
        data.CopyTo(span.Slice(pos));
        pos += data.Length;
        if (padLength > 0)
        {
            span.Slice(pos, padLength).Clear();
            pos += padLength;
        }
        output.Advance(pos);
    }

    /// <summary>Writes a DATA frame whose payload is a sequence, without an intermediate copy.</summary>
    public static void WriteData(IBufferWriter<byte> output, int streamId, in ReadOnlySequence<byte> data, bool endStream)
    {
        int length = (int)data.Length;
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + length);
        Http2FrameHeader.Write(span, length, Http2FrameType.Data, endStream ? Http2FrameFlags.EndStream : 0, streamId);
        data.CopyTo(span.Slice(Http2FrameHeader.Size));
        output.Advance(Http2FrameHeader.Size + length);
    }

    /// <summary>
    /// Writes a field block as one HEADERS frame followed by as many CONTINUATION frames as
    /// <paramref name="maxFrameSize"/> requires (RFC 9113 §6.2, §6.10). No other frame may be written in
    /// between, so the caller holds the connection's write lock.
    /// </summary>
    public static void WriteHeaders(IBufferWriter<byte> output, int streamId, ReadOnlySpan<byte> fieldBlock, bool endStream, int maxFrameSize, int padLength = -1)
    {
        int overhead = padLength >= 0 ? 1 + padLength : 0;
        int first = Math.Min(fieldBlock.Length, maxFrameSize - overhead);
        var flags = (endStream ? Http2FrameFlags.EndStream : 0)
                    | (first == fieldBlock.Length ? Http2FrameFlags.EndHeaders : 0)
                    | (padLength >= 0 ? Http2FrameFlags.Padded : 0);
        int length = first + overhead;
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + length);
        Http2FrameHeader.Write(span, length, Http2FrameType.Headers, flags, streamId);
        int pos = Http2FrameHeader.Size;
        if (padLength >= 0)
        {
            span[pos++] = (byte)padLength;
        }
        fieldBlock.Slice(0, first).CopyTo(span.Slice(pos));
        pos += first;
        if (padLength > 0)
        {
            span.Slice(pos, padLength).Clear();
            pos += padLength;
        }
        output.Advance(pos);
        WriteContinuations(output, streamId, fieldBlock.Slice(first), maxFrameSize);
    }

    public static void WriteContinuation(IBufferWriter<byte> output, int streamId, ReadOnlySpan<byte> fragment, bool endHeaders)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + fragment.Length);
        Http2FrameHeader.Write(span, fragment.Length, Http2FrameType.Continuation, endHeaders ? Http2FrameFlags.EndHeaders : 0, streamId);
        fragment.CopyTo(span.Slice(Http2FrameHeader.Size));
        output.Advance(Http2FrameHeader.Size + fragment.Length);
    }

    private static void WriteContinuations(IBufferWriter<byte> output, int streamId, ReadOnlySpan<byte> rest, int maxFrameSize)
    {
        while (!rest.IsEmpty)
        {
            int chunk = Math.Min(rest.Length, maxFrameSize);
            WriteContinuation(output, streamId, rest.Slice(0, chunk), chunk == rest.Length);
            rest = rest.Slice(chunk);
        }
    }

    public static void WritePriority(IBufferWriter<byte> output, int streamId, int streamDependency, bool exclusive, byte weight)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + 5);
        Http2FrameHeader.Write(span, 5, Http2FrameType.Priority, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(9), (uint)streamDependency | (exclusive ? 0x80000000u : 0));
        span[13] = weight;
        output.Advance(Http2FrameHeader.Size + 5);
    }

    public static void WriteRstStream(IBufferWriter<byte> output, int streamId, Http2ErrorCode errorCode)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + 4);
        Http2FrameHeader.Write(span, 4, Http2FrameType.RstStream, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(9), (uint)errorCode);
        output.Advance(Http2FrameHeader.Size + 4);
    }

    /// <summary>Writes a SETTINGS frame with the parameters that differ from RFC 9113's initial values.</summary>
    public static void WriteSettings(IBufferWriter<byte> output, in Http2Settings settings)
    {
        Http2Settings initial = Http2Settings.Initial;
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + 6 * 6);
        int pos = Http2FrameHeader.Size;
        if (settings.HeaderTableSize != initial.HeaderTableSize)
        {
            pos = WriteSetting(span, pos, Http2SettingsParameter.HeaderTableSize, settings.HeaderTableSize);
        }
        if (settings.EnablePush != initial.EnablePush)
        {
            pos = WriteSetting(span, pos, Http2SettingsParameter.EnablePush, settings.EnablePush ? 1u : 0u);
        }
        if (settings.MaxConcurrentStreams != initial.MaxConcurrentStreams)
        {
            pos = WriteSetting(span, pos, Http2SettingsParameter.MaxConcurrentStreams, settings.MaxConcurrentStreams);
        }
        if (settings.InitialWindowSize != initial.InitialWindowSize)
        {
            pos = WriteSetting(span, pos, Http2SettingsParameter.InitialWindowSize, (uint)settings.InitialWindowSize);
        }
        if (settings.MaxFrameSize != initial.MaxFrameSize)
        {
            pos = WriteSetting(span, pos, Http2SettingsParameter.MaxFrameSize, (uint)settings.MaxFrameSize);
        }
        if (settings.MaxHeaderListSize != initial.MaxHeaderListSize)
        {
            pos = WriteSetting(span, pos, Http2SettingsParameter.MaxHeaderListSize, settings.MaxHeaderListSize);
        }
        Http2FrameHeader.Write(span, pos - Http2FrameHeader.Size, Http2FrameType.Settings, 0, 0);
        output.Advance(pos);
    }

    /// <summary>Writes a SETTINGS frame with exactly the given (identifier, value) pairs, for tests and tools.</summary>
    public static void WriteSettings(IBufferWriter<byte> output, ReadOnlySpan<(Http2SettingsParameter Parameter, uint Value)> parameters)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + 6 * parameters.Length);
        int pos = Http2FrameHeader.Size;
        foreach (var (parameter, value) in parameters)
        {
            pos = WriteSetting(span, pos, parameter, value);
        }
        Http2FrameHeader.Write(span, pos - Http2FrameHeader.Size, Http2FrameType.Settings, 0, 0);
        output.Advance(pos);
    }

    private static int WriteSetting(Span<byte> span, int pos, Http2SettingsParameter parameter, uint value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(span.Slice(pos), (ushort)parameter);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(pos + 2), value);
        return pos + 6;
    }

    public static void WriteSettingsAck(IBufferWriter<byte> output)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size);
        Http2FrameHeader.Write(span, 0, Http2FrameType.Settings, Http2FrameFlags.Ack, 0);
        output.Advance(Http2FrameHeader.Size);
    }

    public static void WritePushPromise(IBufferWriter<byte> output, int streamId, int promisedStreamId, ReadOnlySpan<byte> fieldBlock, int maxFrameSize)
    {
        int first = Math.Min(fieldBlock.Length, maxFrameSize - 4);
        int length = 4 + first;
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + length);
        Http2FrameHeader.Write(span, length, Http2FrameType.PushPromise, first == fieldBlock.Length ? Http2FrameFlags.EndHeaders : 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(9), (uint)promisedStreamId & 0x7FFFFFFFu);
        fieldBlock.Slice(0, first).CopyTo(span.Slice(13));
        output.Advance(Http2FrameHeader.Size + length);
        WriteContinuations(output, streamId, fieldBlock.Slice(first), maxFrameSize);
    }

    public static void WritePing(IBufferWriter<byte> output, ulong opaqueData, bool ack)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + 8);
        Http2FrameHeader.Write(span, 8, Http2FrameType.Ping, ack ? Http2FrameFlags.Ack : 0, 0);
        BinaryPrimitives.WriteUInt64BigEndian(span.Slice(9), opaqueData);
        output.Advance(Http2FrameHeader.Size + 8);
    }

    public static void WriteGoAway(IBufferWriter<byte> output, int lastStreamId, Http2ErrorCode errorCode, ReadOnlySpan<byte> debugData = default)
    {
        int length = 8 + debugData.Length;
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + length);
        Http2FrameHeader.Write(span, length, Http2FrameType.GoAway, 0, 0);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(9), (uint)lastStreamId & 0x7FFFFFFFu);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(13), (uint)errorCode);
        debugData.CopyTo(span.Slice(17));
        output.Advance(Http2FrameHeader.Size + length);
    }

    public static void WriteWindowUpdate(IBufferWriter<byte> output, int streamId, int increment)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + 4);
        Http2FrameHeader.Write(span, 4, Http2FrameType.WindowUpdate, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(9), (uint)increment & 0x7FFFFFFFu);
        output.Advance(Http2FrameHeader.Size + 4);
    }

    /// <summary>Writes an arbitrary frame (extension types, or deliberately malformed frames in tests).</summary>
    public static void WriteRaw(IBufferWriter<byte> output, byte type, byte flags, int streamId, ReadOnlySpan<byte> payload)
    {
        Span<byte> span = output.GetSpan(Http2FrameHeader.Size + payload.Length);
        Http2FrameHeader.Write(span, payload.Length, (Http2FrameType)type, (Http2FrameFlags)flags, streamId);
        payload.CopyTo(span.Slice(Http2FrameHeader.Size));
        output.Advance(Http2FrameHeader.Size + payload.Length);
    }
}
