using System.Buffers;

namespace Proxy.Http2;

/// <summary>
/// The octets RFC 9113 §8.2.1 forbids in field names and values. The rules about which fields may
/// appear where (§8.2.2, §8.3) are <see cref="HeaderBlockValidator"/>'s.
/// </summary>
internal static class FieldSyntax
{
    // A field name MUST NOT contain 0x00-0x20, 'A'-'Z', 0x7f-0xff, nor (but for the leading colon of a
    // pseudo-header) ':'.
    private static readonly SearchValues<byte> s_invalidNameBytes = SearchValues.Create(InvalidNameBytes());
    // A field value MUST NOT contain NUL, LF or CR.
    private static readonly SearchValues<byte> s_invalidValueBytes = SearchValues.Create([0x00, 0x0A, 0x0D]);

    /// <summary>A regular field's name: only 0x21-0x7E, no uppercase, no colon.</summary>
    public static bool IsValidName(ReadOnlySpan<byte> name)
    {
        if (name.Length > 32)
        {
            return name.IndexOfAny(s_invalidNameBytes) < 0;
        }
        // Names are short: a byte loop costs less than setting up the vectorised search.
        foreach (byte b in name)
        {
            if ((uint)(b - 0x21) > 0x7E - 0x21 || (uint)(b - 'A') <= 'Z' - 'A' || b == ':')
            {
                return false;
            }
        }
        return true;
    }

    public static bool HasNulCrLf(ReadOnlySpan<byte> value)
    {
        if (value.Length > 32)
        {
            return value.IndexOfAny(s_invalidValueBytes) >= 0;
        }
        // A byte loop for short values (most of them): the vectorised search's setup costs more.
        foreach (byte b in value)
        {
            if (b <= 0x0D && (b == 0x00 || b == 0x0A || b == 0x0D))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>A value MUST NOT start or end with a space or a horizontal tab.</summary>
    public static bool HasEdgeWhitespace(ReadOnlySpan<byte> value) =>
        !value.IsEmpty && (value[0] is (byte)' ' or (byte)'\t' || value[^1] is (byte)' ' or (byte)'\t');

    /// <summary>
    /// Name and value pass §8.2.1: a field made of these octets needs no scan when it comes again from a
    /// table. A pseudo-header name is left to the block's checks (only five are defined).
    /// </summary>
    public static bool IsClean(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) =>
        !name.IsEmpty && (name[0] == (byte)':' || IsValidName(name)) && !HasNulCrLf(value) && !HasEdgeWhitespace(value);

    private static byte[] InvalidNameBytes()
    {
        var bytes = new List<byte>();
        for (int b = 0; b <= 0xFF; b++)
        {
            if (b <= 0x20 || (b >= 'A' && b <= 'Z') || b >= 0x7F || b == ':')
            {
                bytes.Add((byte)b);
            }
        }
        return bytes.ToArray();
    }
}
