using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Proxy.Http2.Hpack;

namespace Proxy.Http2;

/// <summary>
/// A reusable list of header fields whose bytes live in one growable arena. Filling it from HPACK
/// callbacks copies each field once; clearing and refilling it allocates nothing once it has grown to
/// the working size. Not thread-safe.
/// </summary>
public sealed class HeaderList
{
    private struct Field
    {
        public int NameOffset;
        public int NameLength;
        public int ValueOffset;
        public int ValueLength;
        public HeaderIndexing Indexing;
        /// <summary>The static-table index of the name as decoded (RFC 7541 Appendix A), or 0: a hint for re-encoding.</summary>
        public byte StaticIndex;
        /// <summary>Name and value are static entry <see cref="StaticIndex"/>.</summary>
        public bool StaticEntry;
        // Fills the struct's last octet, so that it has no padding and two fields compare as octets (SameAs).
        private readonly byte _reserved;
    }

    private byte[] _arena;
    private int _used;
    private Field[] _fields;
    // A bit per name hash of every name added since the last clear: most lookups are for a name that is
    // not there (x-request-id, upgrade, content-length...), and a clear bit answers them at once.
    private ulong _nameBits;

    public HeaderList(int initialBytes = 512, int initialFields = 16)
    {
        _arena = new byte[initialBytes];
        _fields = new Field[initialFields];
    }

    public int Count { get; private set; }

    /// <summary>Octets of names and values, plus 32 per field: the size RFC 9113 §6.5.2 limits.</summary>
    public long ListSize { get; private set; }

    public void Clear()
    {
        _nameBits = 0;
        Count = 0;
        _used = 0;
        ListSize = 0;
    }

    /// <summary>
    /// Clears, and gives back an arena or field table that grew past its working size for one unusually
    /// large header section (up to 64 KiB), so pooled lists do not each keep the largest they ever saw.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ClearAndTrim(int maxArenaBytes = 8 * 1024, int maxFields = 128)
    {
        Clear();
        if (_arena.Length > maxArenaBytes)
        {
            _arena = new byte[1024];
        }
        if (_fields.Length > maxFields)
        {
            _fields = new Field[32];
        }
    }

    /// <summary>Makes this list a copy of <paramref name="source"/> (two block copies; no allocation once grown).</summary>
    public void CopyFrom(HeaderList source)
    {
        if (_arena.Length < source._used)
        {
            _arena = new byte[Math.Max(source._used, _arena.Length * 2)];
        }
        if (_fields.Length < source.Count)
        {
            _fields = new Field[Math.Max(source.Count, _fields.Length * 2)];
        }
        source._arena.AsSpan(0, source._used).CopyTo(_arena);
        source._fields.AsSpan(0, source.Count).CopyTo(_fields);
        _used = source._used;
        Count = source.Count;
        ListSize = source.ListSize;
        _nameBits = source._nameBits;
    }

    /// <summary>
    /// Whether this list holds the same fields as <paramref name="other"/>, laid out the same way (the same
    /// additions and changes in the same order): then they encode alike. A false answer may be a list
    /// built differently that holds the same fields.
    /// </summary>
    public bool SameAs(HeaderList other) =>
        Count == other.Count && _used == other._used
        && _arena.AsSpan(0, _used).SequenceEqual(other._arena.AsSpan(0, _used))
        && MemoryMarshal.AsBytes(_fields.AsSpan(0, Count)).SequenceEqual(MemoryMarshal.AsBytes(other._fields.AsSpan(0, Count)));

    /// <summary>What the decoder knew of field <paramref name="index"/>, as the flags it delivered it with.</summary>
    public HpackFieldFlags DecodedFlags(int index)
    {
        ref Field f = ref FieldAt(index);
        return (f.Indexing == HeaderIndexing.NeverIndexed ? HpackFieldFlags.NeverIndexed : HpackFieldFlags.None)
            | (f.StaticEntry ? HpackFieldFlags.StaticEntry | HpackFieldFlags.Checked : HpackFieldFlags.None);
    }

    public ReadOnlySpan<byte> Name(int index)
    {
        ref Field f = ref FieldAt(index);
        return _arena.AsSpan(f.NameOffset, f.NameLength);
    }

    public ReadOnlySpan<byte> Value(int index)
    {
        ref Field f = ref FieldAt(index);
        return _arena.AsSpan(f.ValueOffset, f.ValueLength);
    }

    public HeaderIndexing Indexing(int index) => FieldAt(index).Indexing;

    /// <summary>The static-table index of field <paramref name="index"/>'s name, when the decoder knew it (RFC 7541 Appendix A), else 0.</summary>
    public int StaticIndex(int index) => FieldAt(index).StaticIndex;

    public void Add(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HeaderIndexing indexing = HeaderIndexing.Auto) =>
        Add(name, value, indexing, 0, false);

    /// <summary>
    /// Adds a field as an HPACK decoder delivered it, keeping what the decoder knew (its static-table
    /// index, whether it was a whole static entry, never-indexed) so that re-encoding it skips the lookups.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HpackFieldFlags flags) =>
        Add(name, value, (flags & HpackFieldFlags.NeverIndexed) != 0 ? HeaderIndexing.NeverIndexed : HeaderIndexing.Auto,
            (uint)staticIndex <= HpackStaticTable.Count ? (byte)staticIndex : (byte)0, (flags & HpackFieldFlags.StaticEntry) != 0 && staticIndex != 0);

    private void Add(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HeaderIndexing indexing, byte staticIndex, bool staticEntry)
    {
        if (Count == _fields.Length)
        {
            Array.Resize(ref _fields, _fields.Length * 2);
        }
        int needed = _used + name.Length + value.Length;
        if (needed > _arena.Length)
        {
            Array.Resize(ref _arena, Math.Max(needed, _arena.Length * 2));
        }
        ref byte arena = ref MemoryMarshal.GetArrayDataReference(_arena);
        ShortCopy.To(name, ref Unsafe.Add(ref arena, _used));               // _used + both lengths <= _arena.Length
        ShortCopy.To(value, ref Unsafe.Add(ref arena, _used + name.Length));
        _fields[Count++] = new Field
        {
            NameOffset = _used,
            NameLength = name.Length,
            ValueOffset = _used + name.Length,
            ValueLength = value.Length,
            Indexing = indexing,
            StaticIndex = staticIndex,
            StaticEntry = staticEntry,
        };
        _used = needed;
        ListSize += name.Length + value.Length + HpackDynamicTable.EntryOverhead;
        _nameBits |= NameBit(name);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong NameBit(ReadOnlySpan<byte> name) =>
        name.IsEmpty ? 1UL : 1UL << ((name.Length * 7 + name[0] * 3 + name[^1]) & 63);

    /// <summary>Replaces the value of field <paramref name="index"/>.</summary>
    public void SetValue(int index, ReadOnlySpan<byte> value)
    {
        ref Field f = ref FieldAt(index);
        ListSize += value.Length - f.ValueLength;
        f.StaticEntry = false; // the name's static index still holds
        if (value.Length <= f.ValueLength)
        {
            value.CopyTo(_arena.AsSpan(f.ValueOffset));
            f.ValueLength = value.Length;
            return;
        }
        int needed = _used + value.Length;
        if (needed > _arena.Length)
        {
            Array.Resize(ref _arena, Math.Max(needed, _arena.Length * 2));
        }
        value.CopyTo(_arena.AsSpan(_used));
        f = ref FieldAt(index);
        f.ValueOffset = _used;
        f.ValueLength = value.Length;
        _used = needed;
    }

    public void RemoveAt(int index)
    {
        ref Field f = ref FieldAt(index);
        ListSize -= f.NameLength + f.ValueLength + HpackDynamicTable.EntryOverhead;
        Array.Copy(_fields, index + 1, _fields, index, Count - index - 1);
        Count--;
    }

    /// <summary>The index of the first field named <paramref name="name"/>, or -1.</summary>
    public int IndexOf(ReadOnlySpan<byte> name)
    {
        if ((_nameBits & NameBit(name)) == 0)
        {
            return -1;
        }
        for (int i = 0; i < Count; i++)
        {
            ref Field f = ref _fields[i];
            if (f.NameLength == name.Length && ShortCopy.Equal(_arena.AsSpan(f.NameOffset, f.NameLength), name))
            {
                return i;
            }
        }
        return -1;
    }

    /// <summary>
    /// Folds every later field named <paramref name="name"/> into the first one, at <paramref name="first"/>,
    /// their values joined by <paramref name="separator"/> in order; returns how many fields were folded in.
    /// RFC 9113 §8.2.3: cookie crumbs are joined with "; " before they leave HTTP/2.
    /// </summary>
    public int FoldInto(int first, ReadOnlySpan<byte> name, ReadOnlySpan<byte> separator)
    {
        int folded = 0;
        for (int i = first + 1; i < Count; i++)
        {
            Field crumb = _fields[i];
            if (crumb.NameLength != name.Length || !ShortCopy.Equal(_arena.AsSpan(crumb.NameOffset, crumb.NameLength), name))
            {
                continue;
            }
            // The joined value goes at the arena's end: the first field's value, the separator, this one's.
            ref Field head = ref FieldAt(first);
            int length = head.ValueLength + separator.Length + crumb.ValueLength;
            int needed = _used + length;
            if (needed > _arena.Length)
            {
                Array.Resize(ref _arena, Math.Max(needed, _arena.Length * 2));
            }
            Span<byte> joined = _arena.AsSpan(_used, length);
            _arena.AsSpan(head.ValueOffset, head.ValueLength).CopyTo(joined);
            separator.CopyTo(joined.Slice(head.ValueLength));
            _arena.AsSpan(crumb.ValueOffset, crumb.ValueLength).CopyTo(joined.Slice(head.ValueLength + separator.Length));
            ListSize += separator.Length + crumb.ValueLength; // the crumb's own entry goes with RemoveAt
            head.ValueOffset = _used;
            head.ValueLength = length;
            head.StaticEntry = false;
            _used = needed;
            RemoveAt(i);
            i--;
            folded++;
        }
        return folded;
    }

    /// <summary>The most octets <see cref="EncodeTo"/> can write.</summary>
    internal int EncodedLengthBound() =>
        // The sum of MaxFieldOctets over the fields, from the running list size (octets plus 32 per field).
        (int)Math.Min(ListSize - (HpackDynamicTable.EntryOverhead - HpackEncoder.MaxFieldOctets(0, 0)) * (long)Count, int.MaxValue);

    /// <summary>
    /// Encodes every field into <paramref name="destination"/> (room for <see cref="EncodedLengthBound"/>),
    /// passing each field's static-table hint to <paramref name="encoder"/>; returns the octets written.
    /// </summary>
    internal int EncodeTo(HpackEncoder encoder, Span<byte> destination)
    {
        Field[] fields = _fields;
        byte[] arena = _arena;
        int pos = 0;
        for (int i = 0; i < Count; i++)
        {
            ref Field f = ref fields[i];
            if (f.StaticEntry && f.Indexing != HeaderIndexing.NeverIndexed)
            {
                destination[pos++] = (byte)(0x80 | f.StaticIndex); // §6.1, a one-octet index (61 < 127)
                continue;
            }
            pos += encoder.Encode(destination.Slice(pos), arena.AsSpan(f.NameOffset, f.NameLength), arena.AsSpan(f.ValueOffset, f.ValueLength), f.Indexing, f.StaticIndex, f.StaticEntry);
        }
        return pos;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref Field FieldAt(int index)
    {
        if ((uint)index >= (uint)Count)
        {
            ThrowIndexOutOfRange(index);
        }
        return ref _fields[index];
    }

    [DoesNotReturn]
    private static void ThrowIndexOutOfRange(int index) => throw new ArgumentOutOfRangeException(nameof(index), index, "no such field");
}
