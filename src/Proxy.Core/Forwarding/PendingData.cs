using System.Buffers;

namespace Proxy.Core.Forwarding;

/// <summary>
/// Body octets one side sent that the other side could not take yet (its flow-control window or send
/// queue was full). Bounded by the sender's window, since nothing here is acknowledged until it moves on.
/// </summary>
internal struct PendingData
{
    private byte[]? _buffer;
    private int _start;
    private int _count;

    public readonly int Count => _count;
    public bool EndStream;

    public readonly ReadOnlySequence<byte> Data => _count == 0 ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(_buffer!, _start, _count);

    public void Append(in ReadOnlySequence<byte> data)
    {
        int length = (int)data.Length;
        if (length == 0)
        {
            return;
        }
        if (_buffer == null || _start + _count + length > _buffer.Length)
        {
            byte[] grown = ArrayPool<byte>.Shared.Rent(Math.Max(_count + length, 4096));
            if (_buffer != null)
            {
                _buffer.AsSpan(_start, _count).CopyTo(grown);
                ArrayPool<byte>.Shared.Return(_buffer);
            }
            _buffer = grown;
            _start = 0;
        }
        data.CopyTo(_buffer.AsSpan(_start + _count));
        _count += length;
    }

    /// <summary>
    /// Takes over <paramref name="buffer"/> (rented from <see cref="ArrayPool{T}.Shared"/>) instead of
    /// copying it: its octets from <paramref name="start"/> are the pending data, and it goes back to the
    /// pool when they have been sent. If data is already pending, the octets are appended and the buffer returned.
    /// </summary>
    public void Adopt(byte[] buffer, int start, int count)
    {
        if (_buffer != null || count == 0)
        {
            Append(new ReadOnlySequence<byte>(buffer, start, count));
            ArrayPool<byte>.Shared.Return(buffer);
            return;
        }
        _buffer = buffer;
        _start = start;
        _count = count;
    }

    public void Consume(int bytes)
    {
        _start += bytes;
        _count -= bytes;
        if (_count == 0)
        {
            Release();
        }
    }

    public void Release()
    {
        if (_buffer != null)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = null;
        }
        _start = 0;
        _count = 0;
        EndStream = false;
    }
}
