using System.Diagnostics.CodeAnalysis;

namespace Proxy.Core.Transport;

/// <summary>
/// Buffers one thread (an event loop's) keeps for reuse, at most <c>capacity</c> of them: a stack without
/// locks or atomics, so it lives in a <c>[ThreadStatic]</c> field and only its thread touches it.
/// </summary>
internal sealed class KeptBuffers(int capacity)
{
    private readonly byte[][] _items = new byte[capacity][];
    private int _count;

    /// <summary>A kept buffer, if there is one.</summary>
    public bool TryTake([NotNullWhen(true)] out byte[]? buffer)
    {
        if (_count == 0)
        {
            buffer = null;
            return false;
        }
        buffer = _items[--_count];
        _items[_count] = null!;
        return true;
    }

    /// <summary>Keeps <paramref name="buffer"/>; false when full (the caller lets it go elsewhere).</summary>
    public bool TryKeep(byte[] buffer)
    {
        if (_count == _items.Length)
        {
            return false;
        }
        _items[_count++] = buffer;
        return true;
    }
}
