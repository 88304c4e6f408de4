using System.Buffers.Binary;

namespace Proxy.Http2.Hpack;

/// <summary>
/// The Huffman code of RFC 7541 Appendix B. The code is canonical, so the table below holds only the code
/// lengths; codes are assigned in order of (length, symbol). Decoding walks a 4-bit state machine built
/// once from those codes: each nibble emits at most one symbol, since no code is shorter than 5 bits.
/// </summary>
public static class Huffman
{
    private const int Eos = 256;

    // Code lengths in bits for symbols 0..255 and EOS (256), RFC 7541 Appendix B.
    private static ReadOnlySpan<byte> CodeLengths =>
    [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ];

    private static readonly uint[] s_codes = new uint[257];
    private static readonly byte[] s_lengths = new byte[257];

    // Decoder: 16 transitions per internal node. Entry bits 0..7 next node, bit 8 emits, bit 9 fails,
    // bits 16..23 the emitted symbol.
    private const uint Emit = 0x100;
    private const uint Fail = 0x200;
    private static readonly uint[] s_transitions;
    // A node where input may end: reached from the root by at most 7 one-bits (the EOS prefix, §5.2).
    private static readonly bool[] s_accepting;

    static Huffman()
    {
        // Canonical assignment: sort symbols by (length, symbol).
        var order = new int[257];
        for (int i = 0; i < 257; i++)
        {
            order[i] = i;
            s_lengths[i] = CodeLengths[i];
        }
        Array.Sort(order, static (a, b) => CodeLengths[a] != CodeLengths[b] ? CodeLengths[a].CompareTo(CodeLengths[b]) : a.CompareTo(b));
        uint code = 0;
        int prevLength = CodeLengths[order[0]];
        for (int k = 0; k < 257; k++)
        {
            int sym = order[k];
            int len = CodeLengths[sym];
            code <<= len - prevLength;
            prevLength = len;
            s_codes[sym] = code;
            code++;
        }

        // Binary tree: internal nodes 0..255 (root 0); a child is either an internal node or a leaf (~symbol).
        var children = new int[256 * 2];
        Array.Fill(children, int.MinValue);
        var depth = new int[256];
        var allOnes = new bool[256];
        allOnes[0] = true;
        int nodeCount = 1;
        for (int sym = 0; sym < 257; sym++)
        {
            int node = 0;
            int len = s_lengths[sym];
            for (int bit = len - 1; bit > 0; bit--)
            {
                int b = (int)(s_codes[sym] >> bit) & 1;
                ref int child = ref children[node * 2 + b];
                if (child == int.MinValue)
                {
                    child = nodeCount;
                    depth[nodeCount] = depth[node] + 1;
                    allOnes[nodeCount] = allOnes[node] && b == 1;
                    nodeCount++;
                }
                node = child;
            }
            children[node * 2 + (int)(s_codes[sym] & 1)] = ~sym;
        }

        s_accepting = new bool[nodeCount];
        for (int n = 0; n < nodeCount; n++)
        {
            s_accepting[n] = allOnes[n] && depth[n] <= 7;
        }

        s_transitions = new uint[nodeCount * 16];
        for (int n = 0; n < nodeCount; n++)
        {
            for (int nibble = 0; nibble < 16; nibble++)
            {
                int node = n;
                uint entry = 0;
                for (int bit = 3; bit >= 0; bit--)
                {
                    int child = children[node * 2 + ((nibble >> bit) & 1)];
                    if (child >= 0)
                    {
                        node = child;
                        continue;
                    }
                    int sym = ~child;
                    if (sym == Eos)
                    {
                        // §5.2: a string containing the EOS symbol MUST be treated as a decoding error.
                        entry = Fail;
                        break;
                    }
                    entry = Emit | ((uint)sym << 16);
                    node = 0;
                }
                s_transitions[n * 16 + nibble] = (entry & Fail) != 0 ? Fail : entry | (uint)node;
            }
        }
    }

    public static uint Code(int symbol) => s_codes[symbol];
    public static int CodeLength(int symbol) => s_lengths[symbol];

    /// <summary>The octets <paramref name="source"/> takes once Huffman-encoded.</summary>
    public static int GetEncodedLength(ReadOnlySpan<byte> source)
    {
        long bits = 0;
        byte[] lengths = s_lengths;
        foreach (byte b in source)
        {
            bits += lengths[b];
        }
        return (int)((bits + 7) >> 3);
    }

    /// <summary>
    /// Encodes <paramref name="source"/>, padding the last octet with the most significant bits of EOS
    /// (all ones). <paramref name="destination"/> must hold <see cref="GetEncodedLength"/> octets.
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        int written = TryEncode(source, destination, destination.Length);
        if (written < 0)
        {
            throw new ArgumentException("destination is shorter than the encoded string", nameof(destination));
        }
        return written;
    }

    /// <summary>
    /// Encodes <paramref name="source"/> if that takes at most <paramref name="maxLength"/> octets (at most
    /// <paramref name="destination"/>'s length); returns the octets written, or -1 as soon as it is clear
    /// that it would take more. One pass: no length computed first.
    /// </summary>
    public static int TryEncode(ReadOnlySpan<byte> source, Span<byte> destination, int maxLength)
    {
        maxLength = Math.Min(maxLength, destination.Length);
        ulong acc = 0;   // the low `bits` bits are pending; codes are at most 30 bits, so 32 + 30 fit
        int bits = 0;
        int pos = 0;
        uint[] codes = s_codes;
        byte[] lengths = s_lengths;
        foreach (byte b in source)
        {
            int len = lengths[b];
            acc = (acc << len) | codes[b];
            bits += len;
            if (bits >= 32)
            {
                bits -= 32;
                if (pos + 4 > maxLength)
                {
                    return -1;
                }
                BinaryPrimitives.WriteUInt32BigEndian(destination.Slice(pos), (uint)(acc >> bits));
                pos += 4;
            }
        }
        int tail = (bits + 7) >> 3;
        if (pos + tail > maxLength)
        {
            return -1;
        }
        while (bits >= 8)
        {
            bits -= 8;
            destination[pos++] = (byte)(acc >> bits);
        }
        if (bits > 0)
        {
            destination[pos++] = (byte)((acc << (8 - bits)) | (0xFFu >> bits));
        }
        return pos;
    }

    /// <summary>
    /// Decodes <paramref name="source"/> into <paramref name="destination"/>. Returns the octets written,
    /// or -1 if <paramref name="destination"/> is too small. Throws <see cref="HpackException"/> for EOS in
    /// the string, padding longer than 7 bits, or padding that is not the EOS prefix (RFC 7541 §5.2).
    /// </summary>
    public static int Decode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        uint[] table = s_transitions;
        int state = 0;
        int pos = 0;
        foreach (byte b in source)
        {
            uint e = table[(state << 4) | (b >> 4)];
            if ((e & (Emit | Fail)) != 0)
            {
                if ((e & Fail) != 0)
                {
                    throw new HpackException("Huffman string contains EOS");
                }
                if ((uint)pos >= (uint)destination.Length)
                {
                    return -1;
                }
                destination[pos++] = (byte)(e >> 16);
            }
            state = (int)(e & 0xFF);

            e = table[(state << 4) | (b & 0xF)];
            if ((e & (Emit | Fail)) != 0)
            {
                if ((e & Fail) != 0)
                {
                    throw new HpackException("Huffman string contains EOS");
                }
                if ((uint)pos >= (uint)destination.Length)
                {
                    return -1;
                }
                destination[pos++] = (byte)(e >> 16);
            }
            state = (int)(e & 0xFF);
        }
        if (!s_accepting[state])
        {
            throw new HpackException("invalid Huffman padding");
        }
        return pos;
    }
}
