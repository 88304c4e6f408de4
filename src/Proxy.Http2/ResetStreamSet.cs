namespace Proxy.Http2;

/// <summary>
/// The streams this endpoint reset, however many (RFC 9113 §5.4.2, §6.4: frames the peer sent before it
/// saw our RST_STREAM must be ignored, not treated as errors). Stream identifiers only grow, so a bit per
/// identifier over a sliding window of the most recent <see cref="WindowIds"/> identifiers is exact for
/// them; anything older than the window is taken as reset too (a frame that late cannot be told apart, and
/// ignoring it is the safe reading). Nothing is allocated until the first reset.
/// </summary>
internal sealed class ResetStreamSet
{
    /// <summary>Identifiers covered (both parities): 128 Ki identifiers in 16 KiB.</summary>
    public const int WindowIds = 128 * 1024;

    private ulong[]? _bits;
    private int _base = -1; // lowest identifier the window covers; -1 while empty

    public void Add(int streamId)
    {
        if (_bits == null)
        {
            _bits = new ulong[WindowIds / 64];
            _base = streamId & ~63;
        }
        if (streamId < _base)
        {
            return; // already below the window, so already "reset"
        }
        if (streamId >= _base + WindowIds)
        {
            Slide(streamId);
        }
        int offset = streamId - _base;
        _bits[offset >> 6] |= 1UL << (offset & 63);
    }

    /// <summary>Whether <paramref name="streamId"/> (a stream that is no longer open) was reset by us.</summary>
    public bool Contains(int streamId)
    {
        if (_bits == null)
        {
            return false;
        }
        if (streamId < _base)
        {
            return true;
        }
        int offset = streamId - _base;
        return offset < WindowIds && (_bits[offset >> 6] & (1UL << (offset & 63))) != 0;
    }

    /// <summary>Moves the window up so that <paramref name="streamId"/> is in its upper half.</summary>
    private void Slide(int streamId)
    {
        int newBase = (streamId - WindowIds / 2) & ~63;
        int shiftWords = (newBase - _base) >> 6;
        ulong[] bits = _bits!;
        if (shiftWords >= bits.Length)
        {
            Array.Clear(bits);
        }
        else
        {
            Array.Copy(bits, shiftWords, bits, 0, bits.Length - shiftWords);
            Array.Clear(bits, bits.Length - shiftWords, shiftWords);
        }
        _base = newBase;
    }
}
