using System.Buffers;

namespace Proxy.Http2.Hpack;

/// <summary>
/// Decodes complete field blocks (RFC 7541 §6) into <see cref="IHpackHeaderHandler"/> callbacks. Literal
/// values point into the block; Huffman-coded strings are decoded into a pooled scratch buffer. One
/// instance per connection direction; not thread-safe.
/// </summary>
public sealed class HpackDecoder
{
    /// <summary>The default bound on a field block's decoded size (RFC 9113 §6.5.2 SETTINGS_MAX_HEADER_LIST_SIZE).</summary>
    public const int DefaultMaxHeaderListSize = 64 * 1024;

    private readonly HpackDynamicTable _table;
    private int _maxTableSize;           // SETTINGS_HEADER_TABLE_SIZE in force: the largest size update allowed
    private bool _sizeUpdateRequired;
    private byte[]? _scratch;
    private byte[]? _smallScratch;       // owned, for the common short Huffman strings
    private bool _scratchRented;
    private int _scratchUsed;

    /// <param name="maxTableSizeLimit">The largest SETTINGS_HEADER_TABLE_SIZE this decoder will be given.
    /// The table starts at the protocol's initial 4096 octets (RFC 9113 §6.5.2) until the peer's encoder
    /// signals another size.</param>
    public HpackDecoder(int maxTableSizeLimit = Http2Settings.DefaultHeaderTableSize, int maxHeaderListSize = DefaultMaxHeaderListSize)
    {
        _maxTableSize = Http2Settings.DefaultHeaderTableSize;
        _table = new HpackDynamicTable(Http2Settings.DefaultHeaderTableSize, Math.Max(maxTableSizeLimit, Http2Settings.DefaultHeaderTableSize));
        MaxHeaderListSize = maxHeaderListSize;
    }

    /// <summary>A block whose decoded size (RFC 9113 §6.5.2: name + value + 32 per field) exceeds this is reported as too large.</summary>
    public int MaxHeaderListSize
    {
        get => _maxHeaderListSize;
        set
        {
            _maxHeaderListSize = value;
            _settingsVersion++;
        }
    }

    private int _maxHeaderListSize;
    private uint _settingsVersion;

    /// <summary>
    /// Changes with anything that could make a block decode differently: the dynamic table's contents and
    /// the limits. Two blocks of the same octets decoded at the same generation give the same fields.
    /// </summary>
    public ulong Generation => ((ulong)_settingsVersion << 32) | _table.Version;

    public HpackDynamicTable Table => _table;

    /// <summary>
    /// Applies a new SETTINGS_HEADER_TABLE_SIZE once the peer has acknowledged it. A value below the
    /// table's current maximum obliges the peer to start its next block with a size update (RFC 7541 §4.2).
    /// </summary>
    public void SetMaxTableSize(int maxTableSize)
    {
        if (maxTableSize > _table.CapacityLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(maxTableSize), maxTableSize, "exceeds the decoder's table size limit");
        }
        if (maxTableSize < _table.MaxSize)
        {
            _sizeUpdateRequired = true;
        }
        _maxTableSize = maxTableSize;
        _settingsVersion++;
    }

    /// <summary>
    /// Decodes one complete field block. Returns false when the decoded list exceeded
    /// <see cref="MaxHeaderListSize"/>: the handler then saw only a prefix of the fields, but the block was
    /// still decoded to its end so that the dynamic table stays in step with the peer (RFC 9113 §10.5.1).
    /// </summary>
    /// <exception cref="HpackException">The block is not valid HPACK: the compression context is lost.</exception>
    public bool Decode(ReadOnlySpan<byte> block, IHpackHeaderHandler handler)
    {
        try
        {
            return DecodeCore(block, handler);
        }
        finally
        {
            if (_scratchRented)
            {
                ArrayPool<byte>.Shared.Return(_scratch!);
                _scratchRented = false;
            }
            _scratch = null;
        }
    }

    private bool DecodeCore(ReadOnlySpan<byte> block, IHpackHeaderHandler handler)
    {
        int pos = 0;
        long listSize = 0;
        bool fieldSeen = false;
        bool withinLimit = true;

        if (_sizeUpdateRequired && (block.IsEmpty || (block[0] & 0xE0) != 0x20))
        {
            throw new HpackException("expected a dynamic table size update at the start of the block");
        }

        while (pos < block.Length)
        {
            byte b = block[pos];
            _scratchUsed = 0;
            if ((b & 0x80) != 0)
            {
                // §6.1 Indexed Header Field; one-octet indices (all but the largest) skip the integer decoder.
                int index = b & 0x7F;
                if (index == 0x7F)
                {
                    index = HpackInteger.Decode(block, ref pos, 7);
                }
                else
                {
                    pos++;
                }
                fieldSeen = true;
                if (index == 0)
                {
                    throw new HpackException("index 0 is not used");
                }
                ReadOnlySpan<byte> name;
                ReadOnlySpan<byte> value;
                int staticIndex = 0;
                HpackFieldFlags flags;
                if (index <= HpackStaticTable.Count)
                {
                    staticIndex = index;
                    name = HpackStaticTable.Name(index);
                    value = HpackStaticTable.Value(index);
                    flags = HpackFieldFlags.StaticEntry | HpackFieldFlags.Checked;
                }
                else
                {
                    // The entry keeps its name's static index when its literal had one: an encoder that
                    // re-sends the field needs no lookup to learn it.
                    _table.Get(index - HpackStaticTable.Count, out name, out value, out bool octetsChecked, out staticIndex);
                    flags = octetsChecked ? HpackFieldFlags.Checked : HpackFieldFlags.None;
                }
                listSize += name.Length + value.Length + HpackDynamicTable.EntryOverhead;
                withinLimit = Emit(handler, withinLimit, listSize, staticIndex, name, value, flags);
            }
            else if ((b & 0xE0) == 0x20)
            {
                // §6.3 Dynamic Table Size Update: only at the start of a block (§4.2), at most the setting.
                if (fieldSeen)
                {
                    throw new HpackException("dynamic table size update after a header field");
                }
                int size = HpackInteger.Decode(block, ref pos, 5);
                if (size > _maxTableSize)
                {
                    throw new HpackException($"dynamic table size update to {size} exceeds SETTINGS_HEADER_TABLE_SIZE {_maxTableSize}");
                }
                _table.SetMaxSize(size);
                _sizeUpdateRequired = false;
            }
            else
            {
                // §6.2.1 with incremental indexing (01), §6.2.2 without indexing (0000), §6.2.3 never indexed (0001).
                bool indexing = (b & 0xC0) == 0x40;
                bool neverIndexed = !indexing && (b & 0xF0) == 0x10;
                int index = HpackInteger.Decode(block, ref pos, indexing ? 6 : 4);
                fieldSeen = true;
                int staticIndex = 0;
                ReadOnlySpan<byte> name;
                bool nameFits = true;
                if (index == 0)
                {
                    name = ReadString(block, ref pos, out nameFits);
                }
                else if (index <= HpackStaticTable.Count)
                {
                    staticIndex = index;
                    name = HpackStaticTable.Name(index);
                }
                else
                {
                    name = _table.Name(index - HpackStaticTable.Count);
                    staticIndex = _table.StaticName(index - HpackStaticTable.Count);
                    if (indexing)
                    {
                        // §4.4: the referenced entry may be evicted by this very insertion; copy the name first.
                        name = CopyToScratch(name);
                    }
                }
                ReadOnlySpan<byte> value = ReadValue(block, ref pos, out bool valueFits, out bool valueClean);
                listSize += name.Length + value.Length + HpackDynamicTable.EntryOverhead;
                if (!nameFits || !valueFits)
                {
                    // A string too long to decode into the bounded scratch buffer: the field exceeds every
                    // limit we advertise, so it can neither be delivered nor stay in the table (§4.4).
                    listSize = long.MaxValue;
                    withinLimit = false;
                    if (indexing)
                    {
                        _table.Clear();
                    }
                    continue;
                }
                // A name from the static table and a value decoded before and found clean: nothing to scan.
                HpackFieldFlags literalFlags = neverIndexed ? HpackFieldFlags.NeverIndexed
                    : valueClean && staticIndex != 0 ? HpackFieldFlags.Checked : HpackFieldFlags.None;
                withinLimit = Emit(handler, withinLimit, listSize, staticIndex, name, value, literalFlags);
                if (indexing)
                {
                    // Checked once here, the entry's octets need no scan each time it is referenced.
                    _table.Add(name, value, FieldSyntax.IsClean(name, value), staticIndex);
                }
            }
        }
        if (_sizeUpdateRequired)
        {
            throw new HpackException("expected a dynamic table size update at the start of the block");
        }
        return withinLimit;
    }

    private bool Emit(IHpackHeaderHandler handler, bool withinLimit, long listSize, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HpackFieldFlags flags)
    {
        if (!withinLimit || listSize > MaxHeaderListSize)
        {
            return false;
        }
        handler.OnHeader(staticIndex, name, value, flags);
        return true;
    }

    /// <summary>RFC 7541 §5.2 string literal. <paramref name="fits"/> is false when it exceeds the scratch bound.</summary>
    private ReadOnlySpan<byte> ReadString(ReadOnlySpan<byte> block, scoped ref int pos, out bool fits)
    {
        if (pos >= block.Length)
        {
            throw new HpackException("truncated string literal");
        }
        bool huffman = (block[pos] & 0x80) != 0;
        int length = HpackInteger.Decode(block, ref pos, 7);
        if (length > block.Length - pos)
        {
            throw new HpackException($"string literal of {length} octets overruns the block");
        }
        ReadOnlySpan<byte> raw = block.Slice(pos, length);
        pos += length;
        fits = true;
        if (!huffman)
        {
            return raw;
        }

        // The shortest code is 5 bits, so the decoded string is at most 8/5 of the encoded one.
        int bound = (int)Math.Min((long)length * 8 / 5 + 1, ScratchLimit);
        Span<byte> destination = Reserve(bound);
        int written = Huffman.Decode(raw, destination);
        if (written < 0)
        {
            fits = false;
            return default;
        }
        _scratchUsed += written;
        return destination.Slice(0, written);
    }

    // The last two Huffman-coded values (short ones), as coded and as decoded: a literal that is not
    // indexed comes again with every request (h2load's :path, a content-length) and is copied, not decoded.
    // A slot: coded length, decoded length, clean (0/1), then the coded and the decoded octets.
    private const int MaxCachedCoded = 32;
    private const int MaxCachedDecoded = MaxCachedCoded * 8 / 5 + 1; // the shortest code is 5 bits
    private const int SlotSize = 3 + MaxCachedCoded + MaxCachedDecoded;
    private byte[]? _valueCache;
    private int _nextSlot;

    /// <summary>
    /// A field value (RFC 7541 §5.2), as <see cref="ReadString"/> reads it; a short Huffman-coded one seen
    /// in one of the last two literals is taken from the cache. <paramref name="clean"/>: the value is known
    /// to pass RFC 9113 §8.2.1 (it was checked when cached).
    /// </summary>
    private ReadOnlySpan<byte> ReadValue(ReadOnlySpan<byte> block, scoped ref int pos, out bool fits, out bool clean)
    {
        clean = false;
        int length = pos < block.Length ? block[pos] : 0;
        if ((length & 0x80) == 0 || (length &= 0x7F) > MaxCachedCoded || length == 0 || length > block.Length - pos - 1)
        {
            return ReadString(block, ref pos, out fits); // raw, long, empty or truncated (ReadString says so)
        }
        ReadOnlySpan<byte> coded = block.Slice(pos + 1, length);
        byte[] cache = _valueCache ??= new byte[2 * SlotSize];
        for (int at = 0; at < cache.Length; at += SlotSize)
        {
            if (cache[at] == length && coded.SequenceEqual(cache.AsSpan(at + 3, length)))
            {
                pos += 1 + length;
                fits = true;
                clean = cache[at + 2] != 0;
                return cache.AsSpan(at + 3 + MaxCachedCoded, cache[at + 1]);
            }
        }
        ReadOnlySpan<byte> value = ReadString(block, ref pos, out fits);
        if (fits && value.Length <= MaxCachedDecoded)
        {
            // The slot not stored last. The value handed out is the scratch buffer's, not the cache's.
            int at = _nextSlot * SlotSize;
            _nextSlot ^= 1;
            cache[at] = (byte)length;
            cache[at + 1] = (byte)value.Length;
            cache[at + 2] = !FieldSyntax.HasNulCrLf(value) && !FieldSyntax.HasEdgeWhitespace(value) ? (byte)1 : (byte)0;
            coded.CopyTo(cache.AsSpan(at + 3));
            value.CopyTo(cache.AsSpan(at + 3 + MaxCachedCoded));
        }
        return value;
    }

    private const int SmallScratchSize = 256;

    private int ScratchLimit => Math.Max(MaxHeaderListSize, _table.MaxSize) + 64;

    private ReadOnlySpan<byte> CopyToScratch(ReadOnlySpan<byte> source)
    {
        Span<byte> destination = Reserve(source.Length);
        source.CopyTo(destination);
        _scratchUsed += source.Length;
        return destination.Slice(0, source.Length);
    }

    private Span<byte> Reserve(int length)
    {
        _scratch ??= _smallScratch ??= new byte[SmallScratchSize];
        if (_scratchUsed + length > _scratch.Length)
        {
            // One pooled buffer for the rest of the block, large enough for a name and a value of the
            // largest size we decode. Spans already handed out keep pointing into the small buffer,
            // which is owned and not written again during this field.
            byte[] large = ArrayPool<byte>.Shared.Rent(2 * ScratchLimit);
            _scratch.AsSpan(0, _scratchUsed).CopyTo(large);
            _scratch = large;
            _scratchRented = true;
        }
        return _scratch.AsSpan(_scratchUsed, length);
    }
}
