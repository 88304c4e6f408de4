using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Proxy.Http2;

/// <summary>
/// Copies and comparisons of header-sized strings (mostly under 32 octets) without a call: two
/// overlapping loads (and stores) cover any length in a size class. Longer strings go to the runtime.
/// </summary>
internal static class ShortCopy
{
    /// <summary>Copies <paramref name="source"/> to <paramref name="destination"/>, which the caller has made long enough.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void To(ReadOnlySpan<byte> source, ref byte destination)
    {
        nuint n = (nuint)source.Length;
        ref byte s = ref MemoryMarshal.GetReference(source);
        if (n <= 16)
        {
            if (n >= 8)
            {
                ulong head = Unsafe.ReadUnaligned<ulong>(ref s);
                ulong tail = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref s, n - 8));
                Unsafe.WriteUnaligned(ref destination, head);
                Unsafe.WriteUnaligned(ref Unsafe.Add(ref destination, n - 8), tail);
            }
            else if (n >= 4)
            {
                uint head = Unsafe.ReadUnaligned<uint>(ref s);
                uint tail = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref s, n - 4));
                Unsafe.WriteUnaligned(ref destination, head);
                Unsafe.WriteUnaligned(ref Unsafe.Add(ref destination, n - 4), tail);
            }
            else if (n != 0)
            {
                // 1 to 3 octets: the first, the middle (n / 2) and the last cover them all.
                byte first = s;
                byte middle = Unsafe.Add(ref s, n >> 1);
                byte last = Unsafe.Add(ref s, n - 1);
                destination = first;
                Unsafe.Add(ref destination, n >> 1) = middle;
                Unsafe.Add(ref destination, n - 1) = last;
            }
        }
        else if (n <= 32)
        {
            Vector128<byte> head = Vector128.LoadUnsafe(ref s);
            Vector128<byte> tail = Vector128.LoadUnsafe(ref s, n - 16);
            head.StoreUnsafe(ref destination);
            tail.StoreUnsafe(ref destination, n - 16);
        }
        else
        {
            source.CopyTo(MemoryMarshal.CreateSpan(ref destination, source.Length));
        }
    }

    /// <summary>Whether <paramref name="a"/> and <paramref name="b"/> hold the same octets.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Equal(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (a.Length != b.Length)
        {
            return false;
        }
        nuint n = (nuint)a.Length;
        ref byte x = ref MemoryMarshal.GetReference(a);
        ref byte y = ref MemoryMarshal.GetReference(b);
        if (n >= 8 && n <= 16)
        {
            return (Unsafe.ReadUnaligned<ulong>(ref x) ^ Unsafe.ReadUnaligned<ulong>(ref y)
                | Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref x, n - 8)) ^ Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref y, n - 8))) == 0;
        }
        if (n >= 4 && n < 8)
        {
            return (Unsafe.ReadUnaligned<uint>(ref x) ^ Unsafe.ReadUnaligned<uint>(ref y)
                | Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref x, n - 4)) ^ Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref y, n - 4))) == 0;
        }
        if (n < 4)
        {
            return n == 0 || (x == y && Unsafe.Add(ref x, n >> 1) == Unsafe.Add(ref y, n >> 1) && Unsafe.Add(ref x, n - 1) == Unsafe.Add(ref y, n - 1));
        }
        return a.SequenceEqual(b);
    }
}
