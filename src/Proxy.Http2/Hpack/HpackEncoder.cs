using System.Buffers;

namespace Proxy.Http2.Hpack;

/// <summary>How a field may be entered in the dynamic table (RFC 7541 §6.2).</summary>
public enum HeaderIndexing : byte
{
    /// <summary>The encoder decides: frequent, stable fields are indexed; volatile or secret ones are not.</summary>
    Auto,
    WithoutIndexing,
    /// <summary>RFC 7541 §6.2.3: never indexed, and re-encoded the same way by every intermediary.</summary>
    NeverIndexed,
}

/// <summary>
/// Encodes header fields (RFC 7541 §6) into an <see cref="IBufferWriter{T}"/>: full matches become
/// indexed fields, strings are Huffman-coded when that is shorter. One instance per connection direction;
/// not thread-safe (the connection's write lock covers it).
/// </summary>
public sealed class HpackEncoder
{
    private readonly HpackDynamicTable _table;
    private readonly int _maxTableSizeLimit;
    private int _pendingMinSize = -1;   // smallest size set since the last block (§4.2: signal it first)
    private int _pendingSize = -1;

    // The last literal that was not indexed and named by a static entry (whose index never moves), as
    // encoded: a value that repeats without being indexed (date, within its second) is copied, not re-coded.
    private const int MaxCachedValue = 48;
    private int _cachedNameIndex;
    private HeaderIndexing _cachedIndexing;
    private byte[]? _cachedValue;
    private int _cachedValueLength;
    private byte[]? _cachedBytes;
    private int _cachedLength;

    /// <param name="maxTableSizeLimit">The most memory this encoder spends on its table, whatever the peer allows.</param>
    public HpackEncoder(int maxTableSizeLimit = Http2Settings.DefaultHeaderTableSize)
    {
        _maxTableSizeLimit = maxTableSizeLimit;
        int initial = Math.Min(Http2Settings.DefaultHeaderTableSize, maxTableSizeLimit);
        _table = new HpackDynamicTable(Http2Settings.DefaultHeaderTableSize, Math.Max(initial, maxTableSizeLimit));
        _table.TrackStaticNames(); // every insertion below passes the name's static index
        if (initial != Http2Settings.DefaultHeaderTableSize)
        {
            SetTableSize(initial);
        }
    }

    public HpackDynamicTable Table => _table;

    private uint _settingsVersion;

    /// <summary>
    /// Changes with anything that could make the same fields encode differently: the dynamic table's
    /// contents and a pending size update. The same fields encoded at the same generation give the same octets.
    /// </summary>
    public ulong Generation => ((ulong)_settingsVersion << 32) | _table.Version;

    /// <summary>Applies the peer's SETTINGS_HEADER_TABLE_SIZE; the change is signalled at the start of the next block.</summary>
    public void SetPeerMaxTableSize(uint peerSetting) => SetTableSize((int)Math.Min(peerSetting, (uint)_maxTableSizeLimit));

    private void SetTableSize(int size)
    {
        int current = _pendingSize >= 0 ? _pendingSize : _table.MaxSize;
        if (size == current)
        {
            return;
        }
        _pendingMinSize = _pendingMinSize < 0 ? Math.Min(size, _table.MaxSize) : Math.Min(_pendingMinSize, size);
        _pendingSize = size;
        _settingsVersion++;
    }

    /// <summary>The most octets <see cref="BeginBlock(Span{byte})"/> writes.</summary>
    public const int MaxBlockStartOctets = 12;

    /// <summary>The most octets one field takes encoded: three integers of at most 6 octets, and the strings (Huffman is only used when shorter).</summary>
    public static int MaxFieldOctets(int nameLength, int valueLength) => 18 + nameLength + valueLength;

    /// <summary>Starts a field block: emits any pending dynamic table size updates (RFC 7541 §4.2, §6.3).</summary>
    public void BeginBlock(IBufferWriter<byte> output)
    {
        if (_pendingSize >= 0)
        {
            output.Advance(BeginBlock(output.GetSpan(MaxBlockStartOctets)));
        }
    }

    /// <summary>Starts a field block in <paramref name="destination"/> (room for <see cref="MaxBlockStartOctets"/>); returns the octets written.</summary>
    public int BeginBlock(Span<byte> destination)
    {
        if (_pendingSize < 0)
        {
            return 0;
        }
        int pos = 0;
        if (_pendingMinSize < _pendingSize)
        {
            pos += HpackInteger.Encode(_pendingMinSize, 5, 0x20, destination);
            _table.SetMaxSize(_pendingMinSize);
        }
        pos += HpackInteger.Encode(_pendingSize, 5, 0x20, destination.Slice(pos));
        _table.SetMaxSize(_pendingSize);
        _pendingSize = -1;
        _pendingMinSize = -1;
        return pos;
    }

    public void Encode(IBufferWriter<byte> output, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HeaderIndexing indexing = HeaderIndexing.Auto) =>
        Encode(output, name, value, indexing, 0, false);

    /// <summary>
    /// Encodes one field with what a decoder knew of it: <paramref name="staticIndex"/> (the name's
    /// static-table index, or 0 when unknown) and <paramref name="staticEntry"/> (name and value are that
    /// static entry). A known name skips the static-table lookup; a whole entry skips every lookup.
    /// </summary>
    public void Encode(IBufferWriter<byte> output, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HeaderIndexing indexing, int staticIndex, bool staticEntry)
    {
        Span<byte> span = output.GetSpan(MaxFieldOctets(name.Length, value.Length));
        output.Advance(Encode(span, name, value, indexing, staticIndex, staticEntry));
    }

    /// <summary>
    /// Encodes one field into <paramref name="destination"/>, which has room for
    /// <see cref="MaxFieldOctets"/>; returns the octets written. Hints as for the writer overload.
    /// </summary>
    public int Encode(Span<byte> destination, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HeaderIndexing indexing, int staticIndex, bool staticEntry)
    {
        if (staticEntry && indexing != HeaderIndexing.NeverIndexed)
        {
            return HpackInteger.Encode(staticIndex, 7, 0x80, destination);
        }
        if (staticIndex != 0)
        {
            staticIndex = HpackStaticTable.FirstOfName(staticIndex); // one index per name, whichever the peer used
        }
        if (indexing == HeaderIndexing.Auto)
        {
            indexing = staticIndex != 0 ? ChooseIndexing(staticIndex, value) : ChooseIndexing(name, value);
        }

        // The dynamic table first: a field sent before is found there (never one the static table holds
        // whole, which is never inserted), and then the static lookup is not needed.
        // A name the static table holds is matched against the newest entry of that name first.
        bool dynamicFull = false;
        int dynamicIndex = staticIndex != 0 ? _table.FindByStaticName(staticIndex, value, out dynamicFull) : -1;
        if (dynamicIndex < 0)
        {
            dynamicIndex = _table.Find(name, value, out dynamicFull);
        }
        if (dynamicFull && indexing != HeaderIndexing.NeverIndexed)
        {
            return HpackInteger.Encode(dynamicIndex + HpackStaticTable.Count, 7, 0x80, destination);
        }
        bool staticFull = false;
        if (staticIndex == 0)
        {
            staticIndex = HpackStaticTable.Find(name, value, out staticFull);
        }
        if (staticFull && indexing != HeaderIndexing.NeverIndexed)
        {
            return HpackInteger.Encode(staticIndex, 7, 0x80, destination);
        }

        int nameIndex = staticIndex != 0 ? staticIndex : dynamicIndex != 0 ? dynamicIndex + HpackStaticTable.Count : 0;
        // An entry that would flush most of the table is not worth it. A volatile field whose name is in
        // no table is indexed once all the same, so that later values can refer to its name.
        bool fits = name.Length + value.Length + HpackDynamicTable.EntryOverhead <= _table.MaxSize * 3 / 4;
        bool addToTable = fits && (indexing == HeaderIndexing.Auto || (indexing == HeaderIndexing.WithoutIndexing && nameIndex == 0));

        bool cacheable = !addToTable && indexing != HeaderIndexing.NeverIndexed && (uint)(nameIndex - 1) < HpackStaticTable.Count && value.Length <= MaxCachedValue;
        if (cacheable && _cachedLength > 0 && _cachedNameIndex == nameIndex && _cachedIndexing == indexing && value.SequenceEqual(_cachedValue.AsSpan(0, _cachedValueLength)))
        {
            // The same literal as last time (a date, within its second): its octets again.
            _cachedBytes.AsSpan(0, _cachedLength).CopyTo(destination);
            return _cachedLength;
        }
        int pos;
        if (addToTable)
        {
            pos = HpackInteger.Encode(nameIndex, 6, 0x40, destination);
        }
        else
        {
            pos = HpackInteger.Encode(nameIndex, 4, indexing == HeaderIndexing.NeverIndexed ? (byte)0x10 : (byte)0x00, destination);
        }
        if (nameIndex == 0)
        {
            pos += WriteString(name, destination.Slice(pos));
        }
        pos += WriteString(value, destination.Slice(pos));
        if (addToTable)
        {
            _table.Add(name, value, staticName: staticIndex); // the first index of the name, or 0 (not in the static table)
        }
        else if (cacheable)
        {
            _cachedNameIndex = nameIndex;
            _cachedIndexing = indexing;
            value.CopyTo(_cachedValue ??= new byte[MaxCachedValue]);
            _cachedValueLength = value.Length;
            destination.Slice(0, pos).CopyTo(_cachedBytes ??= new byte[MaxFieldOctets(0, MaxCachedValue)]);
            _cachedLength = pos;
        }
        return pos;
    }

    /// <summary>RFC 7541 §5.2: Huffman when it is strictly shorter.</summary>
    private static int WriteString(ReadOnlySpan<byte> value, Span<byte> destination)
    {
        if (value.Length < 127)
        {
            // The usual short string: Huffman-coded straight after a one-octet length, given up as soon as
            // it is no shorter than the raw string.
            int coded = Huffman.TryEncode(value, destination.Slice(1), value.Length - 1);
            if (coded >= 0)
            {
                destination[0] = (byte)(0x80 | coded);
                return 1 + coded;
            }
            destination[0] = (byte)value.Length;
            value.CopyTo(destination.Slice(1));
            return 1 + value.Length;
        }
        int huffmanLength = Huffman.GetEncodedLength(value);
        if (huffmanLength < value.Length)
        {
            int pos = HpackInteger.Encode(huffmanLength, 7, 0x80, destination);
            return pos + Huffman.Encode(value, destination.Slice(pos));
        }
        int p = HpackInteger.Encode(value.Length, 7, 0x00, destination);
        value.CopyTo(destination.Slice(p));
        return p + value.Length;
    }

    /// <summary><see cref="ChooseIndexing(ReadOnlySpan{byte}, ReadOnlySpan{byte})"/> for a name known by its static index.</summary>
    private static HeaderIndexing ChooseIndexing(int staticIndex, ReadOnlySpan<byte> value) => staticIndex switch
    {
        HpackStaticTable.ContentLength or HpackStaticTable.Date or HpackStaticTable.ETag
            or HpackStaticTable.IfModifiedSince or HpackStaticTable.LastModified => HeaderIndexing.WithoutIndexing,
        HpackStaticTable.Authorization or HpackStaticTable.ProxyAuthorization => HeaderIndexing.NeverIndexed,
        HpackStaticTable.Cookie when value.Length < 20 => HeaderIndexing.NeverIndexed,
        _ => HeaderIndexing.Auto,
    };

    /// <summary>
    /// Secrets are never indexed (RFC 7541 §7.1.3: authorization, and short cookies that could be guessed);
    /// values that change with every request are not indexed, so they do not churn the table.
    /// </summary>
    private static HeaderIndexing ChooseIndexing(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        switch (name.Length)
        {
            case 4 when name.SequenceEqual("date"u8):
            case 4 when name.SequenceEqual("etag"u8):
            case 12 when name.SequenceEqual("grpc-timeout"u8):
            case 14 when name.SequenceEqual("content-length"u8):
            case 17 when name.SequenceEqual("if-modified-since"u8):
            case 13 when name.SequenceEqual("last-modified"u8):
                return HeaderIndexing.WithoutIndexing;
            case 12 when name.SequenceEqual("x-request-id"u8):
                return HeaderIndexing.WithoutIndexing;
            case 13 when name.SequenceEqual("authorization"u8):
            case 19 when name.SequenceEqual("proxy-authorization"u8):
                return HeaderIndexing.NeverIndexed;
            case 6 when name.SequenceEqual("cookie"u8) && value.Length < 20:
                return HeaderIndexing.NeverIndexed;
            default:
                return HeaderIndexing.Auto;
        }
    }
}
