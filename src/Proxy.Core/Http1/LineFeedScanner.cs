using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Proxy.Core.Http1;

/// <summary>
/// The LF octets of a message head, in order: sixteen octets are compared at a time into a bit mask, and
/// each LF is then one bit scan. Finding the end of a head and splitting it into lines both walk LFs,
/// without a search call per line.
/// </summary>
internal ref struct LineFeedScanner
{
    private const int Block = 16;
    private readonly ReadOnlySpan<byte> _buffer;
    private int _block;    // start of the current block
    private uint _mask;    // the block's LFs not yet returned

    public LineFeedScanner(ReadOnlySpan<byte> buffer)
    {
        _buffer = buffer;
        _block = 0;
        _mask = Load(buffer, 0);
    }

    /// <summary>The position of the next LF, or -1 when there is none.</summary>
    public int Next()
    {
        while (_mask == 0)
        {
            _block += Block;
            if (_block >= _buffer.Length)
            {
                return -1;
            }
            _mask = Load(_buffer, _block);
        }
        int lf = _block + BitOperations.TrailingZeroCount(_mask);
        _mask &= _mask - 1;
        return lf;
    }

    private static uint Load(ReadOnlySpan<byte> buffer, int start)
    {
        int remaining = buffer.Length - start;
        ref byte first = ref MemoryMarshal.GetReference(buffer);
        if (remaining >= Block)
        {
            // In bounds: start + 16 <= length.
            return Vector128.Equals(Vector128.LoadUnsafe(ref first, (nuint)start), Vector128.Create((byte)'\n')).ExtractMostSignificantBits();
        }
        if (buffer.Length >= Block)
        {
            // The short last block: the buffer's last sixteen octets, without those already seen.
            uint last = Vector128.Equals(Vector128.LoadUnsafe(ref first, (nuint)(buffer.Length - Block)), Vector128.Create((byte)'\n')).ExtractMostSignificantBits();
            return last >> (Block - remaining);
        }
        uint mask = 0;
        for (int i = 0; i < remaining; i++)
        {
            if (buffer[start + i] == (byte)'\n')
            {
                mask |= 1u << i;
            }
        }
        return mask;
    }
}
