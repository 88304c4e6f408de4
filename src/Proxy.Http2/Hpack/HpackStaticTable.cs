using System.Text;

namespace Proxy.Http2.Hpack;

/// <summary>The static table of RFC 7541 Appendix A (indices 1..61).</summary>
public static class HpackStaticTable
{
    public const int Count = 61;

    // Well-known indices, named for readability at call sites.
    public const int Authority = 1;
    public const int MethodGet = 2;
    public const int MethodPost = 3;
    public const int PathSlash = 4;
    public const int SchemeHttp = 6;
    public const int SchemeHttps = 7;
    public const int Status200 = 8;
    /// <summary>Entries 1..14 are the pseudo-header fields (:authority, :method, :path, :scheme, :status).</summary>
    public const int LastPseudoHeader = 14;
    public const int Authorization = 23;
    public const int ContentLength = 28;
    public const int ContentType = 31;
    public const int Cookie = 32;
    public const int Date = 33;
    public const int ETag = 34;
    public const int IfModifiedSince = 40;
    public const int LastModified = 44;
    public const int ProxyAuthorization = 49;
    public const int Host = 38;
    public const int TransferEncoding = 57;
    public const int UserAgent = 58;

    private static readonly (string Name, string Value)[] s_entries =
    [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
        ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
        ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
        ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
        ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
        ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
        ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    ];

    private static readonly byte[][] s_names = new byte[Count + 1][];
    private static readonly byte[][] s_values = new byte[Count + 1][];
    // Name lookup for the encoder: a small hash table of the distinct names (entries that share a name are
    // adjacent in the table), chained on collision. The first entry of a name is its lowest index.
    private const int Buckets = 128;
    private static readonly sbyte[] s_bucket = new sbyte[Buckets];
    private static readonly sbyte[] s_nextInBucket = new sbyte[Count + 1];
    private static readonly byte[] s_sameName = new byte[Count + 1]; // entries from this one on with its name
    private static readonly byte[] s_firstOfName = new byte[Count + 1];

    static HpackStaticTable()
    {
        Array.Fill(s_bucket, (sbyte)-1);
        for (int i = 1; i <= Count; i++)
        {
            s_names[i] = Encoding.ASCII.GetBytes(s_entries[i - 1].Name);
            s_values[i] = Encoding.ASCII.GetBytes(s_entries[i - 1].Value);
            s_firstOfName[i] = i > 1 && s_entries[i - 2].Name == s_entries[i - 1].Name ? s_firstOfName[i - 1] : (byte)i;
        }
        for (int i = Count; i >= 1; i--)
        {
            s_sameName[i] = (byte)(i < Count && s_entries[i].Name == s_entries[i - 1].Name ? s_sameName[i + 1] + 1 : 1);
        }
        for (int i = Count; i >= 1; i--)
        {
            if (i > 1 && s_entries[i - 2].Name == s_entries[i - 1].Name)
            {
                continue; // not the first of its name
            }
            int bucket = Hash(s_names[i]);
            s_nextInBucket[i] = s_bucket[bucket];
            s_bucket[bucket] = (sbyte)i;
        }
    }

    private static int Hash(ReadOnlySpan<byte> name) => (name.Length * 31 + name[0] * 7 + name[^1] * 3 + name[name.Length >> 1]) & (Buckets - 1);

    public static ReadOnlySpan<byte> Name(int index) => s_names[index];
    public static ReadOnlySpan<byte> Value(int index) => s_values[index];

    /// <summary>The lowest index with the name of entry <paramref name="index"/> (1..61): one key per distinct name.</summary>
    public static int FirstOfName(int index) => s_firstOfName[index];

    /// <summary>
    /// Finds <paramref name="name"/> (and ideally <paramref name="value"/>). Returns the index of a full
    /// match with <paramref name="fullMatch"/> set, else the first index with that name, else 0.
    /// </summary>
    public static int Find(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, out bool fullMatch)
    {
        fullMatch = false;
        if (name.IsEmpty)
        {
            return 0;
        }
        int first = s_bucket[Hash(name)];
        while (first > 0 && !name.SequenceEqual(s_names[first]))
        {
            first = s_nextInBucket[first];
        }
        if (first <= 0)
        {
            return 0;
        }
        for (int i = first, end = first + s_sameName[first]; i < end; i++)
        {
            if (value.SequenceEqual(s_values[i]))
            {
                fullMatch = true;
                return i;
            }
        }
        return first;
    }
}
