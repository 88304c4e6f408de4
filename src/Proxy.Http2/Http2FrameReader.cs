using System.Buffers;
using System.Runtime.CompilerServices;

namespace Proxy.Http2;

/// <summary>Splits a byte stream into frames (RFC 9113 §4.1) without copying the payload.</summary>
public static class Http2FrameReader
{
    /// <summary>
    /// Reads the frame header at the start of <paramref name="buffer"/>; true when the whole frame (header
    /// and payload) is there. The contiguous-input twin of <see cref="TryReadFrame"/>.
    /// </summary>
    /// <exception cref="Http2ConnectionException">FRAME_SIZE_ERROR when the length exceeds <paramref name="maxFrameSize"/>.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryReadFrame(ReadOnlySpan<byte> buffer, int maxFrameSize, out Http2FrameHeader header)
    {
        if (buffer.Length < Http2FrameHeader.Size)
        {
            header = default;
            return false;
        }
        header = Http2FrameHeader.Read(buffer);
        CheckLength(header, maxFrameSize);
        return buffer.Length - Http2FrameHeader.Size >= header.Length;
    }

    private static void CheckLength(in Http2FrameHeader header, int maxFrameSize)
    {
        // RFC 9113 §4.2: a frame larger than SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR; since it may
        // carry a field block (and so alter compression state) it is treated as a connection error.
        if (header.Length > maxFrameSize)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError,
                $"{header.Type} frame of {header.Length} octets exceeds SETTINGS_MAX_FRAME_SIZE {maxFrameSize}");
        }
    }

    /// <summary>
    /// Reads one complete frame from the start of <paramref name="buffer"/>. Returns false when more bytes
    /// are needed. On success the payload is a slice of <paramref name="buffer"/> (valid until the caller
    /// advances the pipe) and <paramref name="buffer"/> is moved past the frame.
    /// </summary>
    /// <exception cref="Http2ConnectionException">FRAME_SIZE_ERROR when the length exceeds <paramref name="maxFrameSize"/>.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxFrameSize, out Http2FrameHeader header, out ReadOnlySequence<byte> payload)
    {
        if (buffer.Length < Http2FrameHeader.Size)
        {
            header = default;
            payload = default;
            return false;
        }

        ReadOnlySpan<byte> first = buffer.FirstSpan;
        if (first.Length >= Http2FrameHeader.Size)
        {
            header = Http2FrameHeader.Read(first);
        }
        else
        {
            // The header straddles segments: copy its 9 bytes to the stack rather than allocate.
            Span<byte> copy = stackalloc byte[Http2FrameHeader.Size];
            buffer.Slice(0, Http2FrameHeader.Size).CopyTo(copy);
            header = Http2FrameHeader.Read(copy);
        }

        CheckLength(header, maxFrameSize);

        long total = Http2FrameHeader.Size + (long)header.Length;
        if (buffer.Length < total)
        {
            payload = default;
            return false;
        }

        payload = buffer.Slice(Http2FrameHeader.Size, header.Length);
        buffer = buffer.Slice(total);
        return true;
    }
}
