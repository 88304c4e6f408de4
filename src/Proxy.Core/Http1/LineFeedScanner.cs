using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Proxy.Core.Http1;

/// <summary>
/// The LF octets of a message head, in order: sixteen octets are compared at a time into a bit mask, and
/// each LF is then one bit scan. Finding the end of a head and splitting it into lines both walk LFs,
/// without a search call per line.
/// <para>
/// The same pass notes whether the octets seen so far are <see cref="Clean"/>: no control character but
/// HTAB, and every CR directly followed by an LF and every LF directly preceded by a CR. Field values and
/// request targets from a clean head need no search for control characters of their own (RFC 9110 §5.5,
/// RFC 9112 §2.2); once anything else is seen the parser checks each line itself.
/// </para>
/// </summary>
internal ref struct LineFeedScanner
{
    private const int Block = 16;
    private readonly ReadOnlySpan<byte> _buffer;
    private int _block;    // start of the current block
    private uint _mask;    // the block's LFs not yet returned
    private uint _carry;   // 1 when the octet before the current block is a CR
    private bool _dirty;   // an octet seen so far breaks the clean rules

    public LineFeedScanner(ReadOnlySpan<byte> buffer)
    {
        _buffer = buffer;
        _block = 0;
        _carry = 0;
        _dirty = false;
        _mask = Load(0);
    }

    /// <summary>Whether every octet loaded so far (at least up to the last LF returned) follows the clean rules.</summary>
    public readonly bool Clean => !_dirty;

    /// <summary>The position of the next LF, or -1 when there is none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Next()
    {
        while (_mask == 0)
        {
            _block += Block;
            if (_block >= _buffer.Length)
            {
                return -1;
            }
            _mask = Load(_block);
        }
        int lf = _block + BitOperations.TrailingZeroCount(_mask);
        _mask &= _mask - 1;
        return lf;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint Load(int start)
    {
        if (_buffer.Length - start < Block)
        {
            return LoadLast(start);
        }
        // In bounds: start + 16 <= length.
        return Classify(Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(_buffer), (nuint)start), shift: 0, count: Block);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint LoadLast(int start)
    {
        int remaining = _buffer.Length - start;
        if (_buffer.Length >= Block)
        {
            // The short last block: the buffer's last sixteen octets, without those already seen.
            return Classify(Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(_buffer), (nuint)(_buffer.Length - Block)), Block - remaining, remaining);
        }
        // A buffer shorter than a block, padded with a letter (neither a control character nor CR or LF).
        Span<byte> padded = stackalloc byte[Block];
        padded.Fill((byte)'a');
        _buffer.CopyTo(padded);
        return Classify(Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(padded)), 0, remaining);
    }

    /// <summary>
    /// The LF mask of <paramref name="count"/> octets (the vector's, after dropping <paramref name="shift"/>
    /// already seen), noting in passing whether they keep the head clean.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint Classify(Vector128<byte> octets, int shift, int count)
    {
        Vector128<byte> lfs = Vector128.Equals(octets, Vector128.Create((byte)'\n'));
        Vector128<byte> crs = Vector128.Equals(octets, Vector128.Create((byte)'\r'));
        // Octets below 0x20 other than HTAB, CR and LF, and DEL; obs-text (0x80 and up) is no control.
        Vector128<byte> controls = Vector128.AndNot(
            Vector128.Equals(octets & Vector128.Create((byte)0xE0), Vector128<byte>.Zero),
            Vector128.Equals(octets, Vector128.Create((byte)'\t')) | lfs | crs) | Vector128.Equals(octets, Vector128.Create((byte)0x7F));
        uint lf = lfs.ExtractMostSignificantBits() >> shift;
        uint cr = crs.ExtractMostSignificantBits() >> shift;
        uint valid = (1u << count) - 1;
        // Each LF's position is a CR's plus one; a CR that ends the block pairs with the next block's first octet.
        if (((controls.ExtractMostSignificantBits() >> shift) & valid) != 0 || (((cr << 1) | _carry) & valid) != lf)
        {
            _dirty = true;
        }
        _carry = (cr >> (count - 1)) & 1;
        return lf;
    }
}
