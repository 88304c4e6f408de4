namespace Proxy.Http2;

/// <summary>
/// The streams this endpoint reset, however many (RFC 9113 §5.4.2, §6.4: frames the peer sent before it
/// saw our RST_STREAM must be ignored, not treated as errors). Stream identifiers only grow, so a bit per
/// identifier over a sliding window of the most recent identifiers (at most <see cref="WindowIds"/>) is
/// exact for them; once the window has slid, anything older is taken as reset too (a frame that late
/// cannot be told apart, and ignoring it is the safe reading), while streams before the first reset of a
/// window that never slid stay "not reset" (a frame on them is still STREAM_CLOSED). The window starts at 64 identifiers and doubles only as
/// far as the reset streams are spread, so a connection with a few resets costs a few bytes, and none
/// before the first.
/// </summary>
internal sealed class ResetStreamSet
{
    /// <summary>The most identifiers covered (both parities): 128 Ki identifiers in 16 KiB.</summary>
    public const int WindowIds = 128 * 1024;

    private ulong[]? _bits;
    private int _base; // lowest identifier the window covers
    private bool _slid; // the window has moved up: everything below it counts as reset

    public void Add(int streamId)
    {
        if (_bits == null)
        {
            _bits = new ulong[1];
            _base = streamId & ~63;
        }
        if (streamId < _base)
        {
            if (_slid || !ExtendDown(streamId))
            {
                return; // below a window that slid: already "reset"; or too far back to hold
            }
        }
        while (streamId - _base >= _bits.Length * 64)
        {
            if (_bits.Length * 64 < WindowIds)
            {
                Array.Resize(ref _bits, _bits.Length * 2);
            }
            else
            {
                Slide(streamId);
            }
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
            return _slid;
        }
        int offset = streamId - _base;
        return offset < _bits.Length * 64 && (_bits[offset >> 6] & (1UL << (offset & 63))) != 0;
    }

    /// <summary>An older stream reset after newer ones: the window grows down to it while it fits.</summary>
    private bool ExtendDown(int streamId)
    {
        int newBase = streamId & ~63;
        int shiftWords = (_base - newBase) >> 6;
        int words = _bits!.Length;
        int needed = words + shiftWords;
        if (needed * 64 > WindowIds)
        {
            return false;
        }
        while (words < needed)
        {
            words *= 2;
        }
        var grown = new ulong[words];
        Array.Copy(_bits, 0, grown, shiftWords, _bits.Length);
        _bits = grown;
        _base = newBase;
        return true;
    }

    /// <summary>Moves the full-size window up so that <paramref name="streamId"/> is in its upper half.</summary>
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
        _slid = true;
    }
}
