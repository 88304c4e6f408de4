namespace Proxy.Http2.Hpack;

/// <summary>
/// The dynamic table of RFC 7541 §2.3.2 and §4. Entries are stored back to back in one byte array; when the
/// newest entry does not fit at the end, the live entries are moved to the front (amortised: the array grows
/// to at most twice the table's maximum size), so inserting and evicting allocate nothing once it has grown.
/// </summary>
public sealed class HpackDynamicTable
{
    /// <summary>RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.</summary>
    public const int EntryOverhead = 32;

    private struct Entry
    {
        public int Offset;
        public int NameLength;
        public int ValueLength;
        /// <summary>The insertion number of the next older entry whose name falls in the same bucket.</summary>
        public int OlderInBucket;
        /// <summary>The octets passed RFC 9113 §8.2.1 when the entry was inserted.</summary>
        public bool Checked;
        /// <summary>The static-table index of the entry's name, when the table tracks them (0: none).</summary>
        public byte StaticName;
    }

    // An encoder looks fields up by name: a bucket per name hash holds the insertion number of the newest
    // entry there, each entry the next older one. Built on the first lookup (a decoder's table never pays).
    private const int Buckets = 64;
    private int[]? _bucketHeads;
    private int _inserted;        // insertion number of the next entry (wraps; only differences are used)

    // An encoder's table also knows, per static-table name, the insertion number (plus one; 0: never) of
    // the newest entry with that name: a field whose name the decoder found in the static table is then
    // matched against one entry, not looked up. See TrackStaticNames.
    private int[]? _newestByStaticName;   // allocated with the first such entry (an idle connection holds none)
    private bool _tracksStaticNames;

    private readonly int _capacityLimit;
    private Entry[] _entries = [];
    private byte[] _bytes = [];
    private int _oldest;          // ring index of the oldest entry
    private int _count;
    private int _end;             // first free byte after the newest entry

    /// <param name="capacityLimit">The largest maximum size this table will ever be set to; storage is allocated lazily up to it.</param>
    public HpackDynamicTable(int maxSize, int capacityLimit)
    {
        _capacityLimit = Math.Max(maxSize, capacityLimit);
        MaxSize = maxSize;
    }

    public int Count => _count;
    public int CapacityLimit => _capacityLimit;
    /// <summary>Sum of entry sizes (RFC 7541 §4.1).</summary>
    public int Size { get; private set; }
    public int MaxSize { get; private set; }

    /// <summary>
    /// Counts the changes to the table (insertions, evictions, size changes, clears): while it stands still,
    /// every index names the same entry as before.
    /// </summary>
    public uint Version { get; private set; }

    public ReadOnlySpan<byte> Name(int index)
    {
        ref Entry e = ref At(index);
        return _bytes.AsSpan(e.Offset, e.NameLength);
    }

    public ReadOnlySpan<byte> Value(int index)
    {
        ref Entry e = ref At(index);
        return _bytes.AsSpan(e.Offset + e.NameLength, e.ValueLength);
    }

    public void Get(int index, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value) => Get(index, out name, out value, out _);

    /// <param name="octetsChecked">The entry was inserted as checked (see <see cref="Add"/>).</param>
    public void Get(int index, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value, out bool octetsChecked) =>
        Get(index, out name, out value, out octetsChecked, out _);

    /// <param name="staticName">The static-table index of the name given when the entry was added, or 0.</param>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Get(int index, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value, out bool octetsChecked, out int staticName)
    {
        ref Entry e = ref At(index);
        name = Octets(e.Offset, e.NameLength);
        value = Octets(e.Offset + e.NameLength, e.ValueLength);
        octetsChecked = e.Checked;
        staticName = e.StaticName;
    }

    /// <summary>A live entry's octets: within the store by construction, so not checked again.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private ReadOnlySpan<byte> Octets(int offset, int length) =>
        System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(
            ref System.Runtime.CompilerServices.Unsafe.Add(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_bytes), offset), length);

    /// <summary>The static-table index of entry <paramref name="index"/>'s name given when it was added, or 0.</summary>
    public int StaticName(int index) => At(index).StaticName;

    /// <summary>Entry <paramref name="index"/> (1 = newest), as RFC 7541 §2.3.3 numbers the dynamic part.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private ref Entry At(int index)
    {
        if ((uint)(index - 1) >= (uint)_count)
        {
            ThrowOutOfRange(index);
        }
        int ring = _oldest + _count - index;
        if (ring >= _entries.Length)
        {
            ring -= _entries.Length;
        }
        return ref _entries[ring];
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private void ThrowOutOfRange(int index) =>
        throw new HpackException($"dynamic table index {index} out of range (table has {_count} entries)");

    /// <summary>RFC 7541 §4.3: a smaller maximum evicts from the oldest end until the table fits.</summary>
    public void SetMaxSize(int maxSize)
    {
        if ((uint)maxSize > (uint)_capacityLimit)
        {
            throw new HpackException($"dynamic table size {maxSize} exceeds the limit {_capacityLimit}");
        }
        MaxSize = maxSize;
        Version++;
        while (Size > MaxSize)
        {
            EvictOldest();
        }
    }

    /// <summary>
    /// RFC 7541 §4.4: evicts until the entry fits, then inserts it; an entry larger than the maximum size
    /// empties the table and is not inserted. <paramref name="name"/> and <paramref name="value"/> must not
    /// point into this table's storage. <paramref name="octetsChecked"/>: the caller found the octets
    /// free of what RFC 9113 §8.2.1 forbids; <see cref="Get(int, out ReadOnlySpan{byte}, out ReadOnlySpan{byte}, out bool)"/> reports it.
    /// </summary>
    /// <param name="staticName">In a table that tracks static names: the static-table index of
    /// <paramref name="name"/>, which must be given whenever the name is in the static table.</param>
    public void Add(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, bool octetsChecked = false, int staticName = 0)
    {
        Version++;
        int entrySize = name.Length + value.Length + EntryOverhead;
        if (entrySize > MaxSize)
        {
            Clear();
            return;
        }
        while (Size + entrySize > MaxSize)
        {
            EvictOldest();
        }

        int bytes = name.Length + value.Length;
        if (_end + bytes > _bytes.Length)
        {
            MakeRoom(bytes);
        }
        if (_count == _entries.Length)
        {
            GrowEntries();
        }

        int ring = _oldest + _count;
        if (ring >= _entries.Length)
        {
            ring -= _entries.Length;
        }
        int older = 0;
        if (_bucketHeads != null)
        {
            ref int head = ref _bucketHeads[Bucket(name)];
            older = head;
            head = _inserted;
        }
        _entries[ring] = new Entry { Offset = _end, NameLength = name.Length, ValueLength = value.Length, OlderInBucket = older, Checked = octetsChecked, StaticName = (byte)staticName };
        if (_tracksStaticNames && (uint)(staticName - 1) < HpackStaticTable.Count)
        {
            (_newestByStaticName ??= new int[HpackStaticTable.Count + 1])[staticName] = _inserted + 1;
        }
        _inserted++;
        name.CopyTo(_bytes.AsSpan(_end));
        value.CopyTo(_bytes.AsSpan(_end + name.Length));
        _end += bytes;
        _count++;
        Size += entrySize;
    }

    /// <summary>
    /// Finds the newest entry equal to (<paramref name="name"/>, <paramref name="value"/>): returns its
    /// index with <paramref name="fullMatch"/> set, else the newest index with that name, else 0.
    /// </summary>
    public int Find(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, out bool fullMatch)
    {
        fullMatch = false;
        if (_count == 0)
        {
            return 0;
        }
        int[] heads = _bucketHeads ?? BuildIndex();
        int nameIndex = 0;
        byte[] bytes = _bytes;
        Entry[] entries = _entries;
        int oldestNumber = _inserted - _count;
        int number = heads[Bucket(name)];
        // Newest first along the bucket's chain. A number outside the live range ends it (evicted); the
        // step bound guards against a stale number that wrapped back into range: whatever an entry is
        // reached by, its index is computed from where it is, so a match is always right.
        for (int steps = 0; steps < _count; steps++)
        {
            int age = number - oldestNumber;   // 0 = oldest
            if ((uint)age >= (uint)_count)
            {
                break;
            }
            int ring = _oldest + age;
            if (ring >= entries.Length)
            {
                ring -= entries.Length;
            }
            ref Entry e = ref entries[ring];
            if (e.NameLength == name.Length && ShortCopy.Equal(bytes.AsSpan(e.Offset, e.NameLength), name))
            {
                int index = _count - age;
                if (e.ValueLength == value.Length && ShortCopy.Equal(bytes.AsSpan(e.Offset + e.NameLength, e.ValueLength), value))
                {
                    fullMatch = true;
                    return index;
                }
                if (nameIndex == 0)
                {
                    nameIndex = index;
                }
            }
            number = e.OlderInBucket;
        }
        return nameIndex;
    }

    /// <summary>
    /// From now on every entry is added with its name's static-table index (an encoder's table, whose
    /// encoder resolves it before inserting): <see cref="FindByStaticName"/> can then answer.
    /// </summary>
    public void TrackStaticNames()
    {
        if (_count != 0)
        {
            throw new InvalidOperationException("static names are tracked from an empty table");
        }
        _tracksStaticNames = true;
    }

    /// <summary>
    /// The field named by static entry <paramref name="staticName"/> with <paramref name="value"/>, looked
    /// up without a search: its index with <paramref name="fullMatch"/> when the newest entry of that name
    /// holds that value, 0 when no entry has that name, and -1 when only <see cref="Find"/> can tell (an
    /// older entry of that name may hold it, or the table does not track static names).
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public int FindByStaticName(int staticName, ReadOnlySpan<byte> value, out bool fullMatch)
    {
        fullMatch = false;
        if (!_tracksStaticNames || (uint)(staticName - 1) >= HpackStaticTable.Count)
        {
            return -1;
        }
        int[]? newest = _newestByStaticName;
        if (newest == null || newest[staticName] == 0)
        {
            return 0; // never inserted
        }
        // The newest entry of a name goes first when entries are evicted oldest first: when it is gone, so
        // is every older one. Whatever entry a stale number reaches, its name is checked.
        int age = newest[staticName] - 1 - (_inserted - _count);
        if ((uint)age >= (uint)_count)
        {
            return 0;
        }
        int ring = _oldest + age;
        if (ring >= _entries.Length)
        {
            ring -= _entries.Length;
        }
        ref Entry e = ref _entries[ring];
        if (e.StaticName != staticName)
        {
            return -1;
        }
        if (e.ValueLength == value.Length && ShortCopy.Equal(Octets(e.Offset + e.NameLength, e.ValueLength), value))
        {
            fullMatch = true;
            return _count - age;
        }
        return -1;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static int Bucket(ReadOnlySpan<byte> name) =>
        name.IsEmpty ? 0 : (name.Length * 31 + name[0] * 7 + name[^1] * 3 + name[name.Length >> 1]) & (Buckets - 1);

    private int[] BuildIndex()
    {
        var heads = new int[Buckets];
        int number = _inserted - _count;
        heads.AsSpan().Fill(number - 1); // before the oldest: an empty chain
        for (int i = 0, ring = _oldest; i < _count; i++, number++)
        {
            ref Entry e = ref _entries[ring];
            ref int head = ref heads[Bucket(_bytes.AsSpan(e.Offset, e.NameLength))];
            e.OlderInBucket = head;
            head = number;
            ring = ring + 1 == _entries.Length ? 0 : ring + 1;
        }
        return _bucketHeads = heads;
    }

    public void Clear()
    {
        Version++;
        _count = 0;
        _oldest = 0;
        _end = 0;
        Size = 0;
    }

    private void EvictOldest()
    {
        ref Entry e = ref _entries[_oldest];
        Size -= e.NameLength + e.ValueLength + EntryOverhead;
        _count--;
        _oldest = _oldest + 1 == _entries.Length ? 0 : _oldest + 1;
        if (_count == 0)
        {
            _oldest = 0;
            _end = 0;
        }
    }

    private void MakeRoom(int bytes)
    {
        int start = _count == 0 ? _end : _entries[_oldest].Offset;
        int live = _end - start;
        // The store grows by doubling up to twice the largest possible content, so a connection that only
        // ever indexes a few hundred octets keeps a few hundred octets (most connections: one request's
        // headers), and moving the live entries to the front always frees at least half of it (amortised).
        int full = Math.Max(2 * MaxSize, 256);
        if (_bytes.Length < full && live + bytes > _bytes.Length / 2)
        {
            int size = Math.Min(full, Math.Max(256, Math.Max(2 * _bytes.Length, 2 * (live + bytes))));
            var grown = new byte[size];
            _bytes.AsSpan(start, live).CopyTo(grown);
            _bytes = grown;
            Rebase(start);
            return;
        }
        _bytes.AsSpan(start, live).CopyTo(_bytes);
        Rebase(start);
    }

    private void Rebase(int start)
    {
        for (int i = 0, ring = _oldest; i < _count; i++)
        {
            _entries[ring].Offset -= start;
            ring = ring + 1 == _entries.Length ? 0 : ring + 1;
        }
        _end -= start;
    }

    private void GrowEntries()
    {
        int size = Math.Max(16, Math.Min(_entries.Length * 2, _capacityLimit / EntryOverhead + 1));
        var grown = new Entry[size];
        for (int i = 0, ring = _oldest; i < _count; i++)
        {
            grown[i] = _entries[ring];
            ring = ring + 1 == _entries.Length ? 0 : ring + 1;
        }
        _entries = grown;
        _oldest = 0;
    }
}
