namespace Proxy.Http2.Hpack;

/// <summary>Integer representation of RFC 7541 §5.1.</summary>
public static class HpackInteger
{
    /// <summary>
    /// Decodes an integer whose prefix occupies the low <paramref name="prefixBits"/> bits of
    /// <c>source[pos]</c>; advances <paramref name="pos"/>. Values above 2^31-1 or a truncated encoding
    /// are decoding errors (RFC 7541 §5.1 lets an implementation limit the value).
    /// </summary>
    public static int Decode(ReadOnlySpan<byte> source, ref int pos, int prefixBits)
    {
        int mask = (1 << prefixBits) - 1;
        int prefix = source[pos++] & mask;
        if (prefix < mask)
        {
            return prefix;
        }
        long value = prefix;
        int shift = 0;
        while (true)
        {
            if ((uint)pos >= (uint)source.Length)
            {
                throw new HpackException("truncated integer");
            }
            byte b = source[pos++];
            value += (long)(b & 0x7F) << shift;
            if (value > int.MaxValue)
            {
                throw new HpackException("integer exceeds 2^31-1");
            }
            if ((b & 0x80) == 0)
            {
                return (int)value;
            }
            shift += 7;
            if (shift > 28)
            {
                throw new HpackException("integer encoding too long");
            }
        }
    }

    /// <summary>
    /// Encodes <paramref name="value"/> with a <paramref name="prefixBits"/>-bit prefix, OR-ing
    /// <paramref name="firstByteFlags"/> into the first octet. Returns the octets written (at most 6).
    /// </summary>
    public static int Encode(int value, int prefixBits, byte firstByteFlags, Span<byte> destination)
    {
        int mask = (1 << prefixBits) - 1;
        if (value < mask)
        {
            destination[0] = (byte)(firstByteFlags | value);
            return 1;
        }
        destination[0] = (byte)(firstByteFlags | mask);
        value -= mask;
        int pos = 1;
        while (value >= 0x80)
        {
            destination[pos++] = (byte)((value & 0x7F) | 0x80);
            value >>= 7;
        }
        destination[pos++] = (byte)value;
        return pos;
    }
}
