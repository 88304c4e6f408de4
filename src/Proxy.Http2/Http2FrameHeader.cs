using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Proxy.Http2;

/// <summary>The 9-octet frame header of RFC 9113 §4.1.</summary>
public readonly struct Http2FrameHeader(int length, Http2FrameType type, Http2FrameFlags flags, int streamId)
{
    public const int Size = 9;
    /// <summary>The largest payload length a frame header can express (2^24-1).</summary>
    public const int MaxLength = 0xFFFFFF;

    public int Length { get; } = length;
    public Http2FrameType Type { get; } = type;
    public Http2FrameFlags Flags { get; } = flags;
    public int StreamId { get; } = streamId;

    public bool HasFlag(Http2FrameFlags flag) => (Flags & flag) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Http2FrameHeader Read(ReadOnlySpan<byte> source)
    {
        uint lengthAndType = BinaryPrimitives.ReadUInt32BigEndian(source);
        // RFC 9113 §4.1: the reserved bit of the stream identifier MUST be ignored on receipt.
        int streamId = (int)(BinaryPrimitives.ReadUInt32BigEndian(source.Slice(5)) & 0x7FFFFFFFu);
        return new Http2FrameHeader((int)(lengthAndType >> 8), (Http2FrameType)(byte)lengthAndType, (Http2FrameFlags)source[4], streamId);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(Span<byte> destination, int length, Http2FrameType type, Http2FrameFlags flags, int streamId)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, ((uint)length << 8) | (byte)type);
        destination[4] = (byte)flags;
        BinaryPrimitives.WriteUInt32BigEndian(destination.Slice(5), (uint)streamId & 0x7FFFFFFFu);
    }

    public override string ToString() => $"{Type} len={Length} flags=0x{(byte)Flags:x2} stream={StreamId}";
}
