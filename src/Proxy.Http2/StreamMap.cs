using System.Diagnostics.CodeAnalysis;

namespace Proxy.Http2;

/// <summary>
/// A connection's open streams by identifier: open addressing with linear probing and backward-shift
/// deletion, at most half full. A lookup is a multiply, a shift and usually one comparison; nothing is
/// allocated but the slot array when it grows. Not thread-safe (the connection's lock covers it).
/// </summary>
internal sealed class StreamMap
{
    private Http2Stream?[] _slots = new Http2Stream?[16];
    private int _shift = 32 - 4;   // 32 - log2(slots)

    public int Count { get; private set; }

    /// <summary>The streams, in no particular order; the map must not change while they are enumerated.</summary>
    public StreamMap Values => this;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public bool TryGetValue(int streamId, [NotNullWhen(true)] out Http2Stream? stream)
    {
        Http2Stream?[] slots = _slots;
        int mask = slots.Length - 1;
        for (int i = Home(streamId); ; i = (i + 1) & mask)
        {
            Http2Stream? s = slots[i];
            if (s == null || s.Id == streamId)
            {
                stream = s;
                return s != null;
            }
        }
    }

    /// <exception cref="ArgumentException">A stream with that identifier is there already.</exception>
    public void Add(int streamId, Http2Stream stream)
    {
        if (stream.Id != streamId)
        {
            throw new ArgumentException($"stream {stream.Id} added as {streamId}", nameof(stream));
        }
        if ((Count + 1) * 2 > _slots.Length)
        {
            Grow();
        }
        int mask = _slots.Length - 1;
        int i = Home(streamId);
        while (_slots[i] is Http2Stream existing)
        {
            if (existing.Id == streamId)
            {
                throw new ArgumentException($"stream {streamId} is already open", nameof(streamId));
            }
            i = (i + 1) & mask;
        }
        _slots[i] = stream;
        Count++;
    }

    public bool Remove(int streamId)
    {
        Http2Stream?[] slots = _slots;
        int mask = slots.Length - 1;
        int i = Home(streamId);
        while (true)
        {
            Http2Stream? s = slots[i];
            if (s == null)
            {
                return false;
            }
            if (s.Id == streamId)
            {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: every entry after the hole that may sit in it (its home is not in the cyclic
        // range (hole, entry]) moves into it, so no probe sequence is broken and no tombstone is needed.
        int hole = i;
        for (int j = (hole + 1) & mask; slots[j] is Http2Stream next; j = (j + 1) & mask)
        {
            int home = Home(next.Id);
            if (((j - home) & mask) >= ((j - hole) & mask))
            {
                slots[hole] = next;
                hole = j;
            }
        }
        slots[hole] = null;
        Count--;
        return true;
    }

    public void Clear()
    {
        Array.Clear(_slots);
        Count = 0;
    }

    public Enumerator GetEnumerator() => new(_slots);

    private int Home(int streamId) => (int)(((uint)streamId * 0x9E3779B1u) >> _shift);

    private void Grow()
    {
        Http2Stream?[] old = _slots;
        _slots = new Http2Stream?[old.Length * 2];
        _shift--;
        int mask = _slots.Length - 1;
        foreach (Http2Stream? s in old)
        {
            if (s != null)
            {
                int i = Home(s.Id);
                while (_slots[i] != null)
                {
                    i = (i + 1) & mask;
                }
                _slots[i] = s;
            }
        }
    }

    public struct Enumerator(Http2Stream?[] slots)
    {
        private int _index = -1;

        public readonly Http2Stream Current => slots[_index]!;

        public bool MoveNext()
        {
            while (++_index < slots.Length)
            {
                if (slots[_index] != null)
                {
                    return true;
                }
            }
            return false;
        }
    }
}
