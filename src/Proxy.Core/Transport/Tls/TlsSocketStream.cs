using System.Buffers;
using System.Net.Sockets;

namespace Proxy.Core.Transport.Tls;

/// <summary>
/// The socket as the TLS engine sees it: ciphertext in by the socket's own awaitable receive, ciphertext
/// out by a non-blocking send on the writer's thread. What the kernel does not take at once is kept in a
/// backlog that <see cref="SocketOutput"/> sends asynchronously before it encrypts more, so a slow reader
/// holds at most one record's worth of ciphertext here; in the usual case nothing is copied.
/// </summary>
internal sealed class TlsSocketStream(Socket socket, SocketAwaitableEventArgs? receiveArgs, SocketConnection? onLoop = null) : Stream
{
    // On an event loop of ours (onLoop set): reads and handshake writes go straight to the socket and wait
    // for the loop's readable/writable edges; the platform's engine never sees the socket.
    private bool _drained = true;

    // Receives complete on the socket engine's thread (no hop through the thread pool per read), as the
    // plaintext receive loop's do; the connection's own event args serve, since TLS reads replace its own.
    private SocketAwaitableEventArgs? _receive = receiveArgs; // made when first needed: a stream on a loop never is

    private byte[]? _backlog;
    private int _backlogCount;

    /// <summary>Set once the handshake is done: from then on writes come from the output's sending turn.</summary>
    public bool Established { get; set; }

    /// <summary>A send failed: the connection is broken.</summary>
    public bool Failed { get; private set; }

    public bool HasBacklog => _backlogCount > 0;

    public ReadOnlyMemory<byte> Backlog => _backlog.AsMemory(0, _backlogCount);

    /// <summary>The socket took <paramref name="count"/> octets of the backlog.</summary>
    public void BacklogSent(int count)
    {
        _backlogCount -= count;
        if (_backlogCount > 0)
        {
            Buffer.BlockCopy(_backlog!, count, _backlog!, 0, _backlogCount);
        }
        else
        {
            ArrayPool<byte>.Shared.Return(_backlog!);
            _backlog = null;
        }
    }

    public void ReleasePrefix()
    {
        if (_prefix is { } prefix)
        {
            _prefix = null;
            ArrayPool<byte>.Shared.Return(prefix);
        }
    }

    public void ReleaseBacklog()
    {
        if (_backlog != null)
        {
            ArrayPool<byte>.Shared.Return(_backlog);
            _backlog = null;
            _backlogCount = 0;
        }
    }

    // Octets already read from the socket (the ClientHello, read to see its ALPN offer): served first.
    private byte[]? _prefix;
    private int _prefixStart;
    private int _prefixEnd;

    /// <summary>Hands over octets read ahead (a pooled buffer, returned once they are consumed).</summary>
    public void SetPrefix(byte[] buffer, int count)
    {
        _prefix = buffer;
        _prefixStart = 0;
        _prefixEnd = count;
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_prefix is { } prefix)
        {
            int n = Math.Min(buffer.Length, _prefixEnd - _prefixStart);
            prefix.AsSpan(_prefixStart, n).CopyTo(buffer.Span);
            _prefixStart += n;
            if (_prefixStart == _prefixEnd)
            {
                _prefix = null;
                ArrayPool<byte>.Shared.Return(prefix);
            }
            return new ValueTask<int>(n);
        }
        return onLoop != null ? ReadOnLoopAsync(onLoop, buffer) : (_receive ??= new SocketAwaitableEventArgs()).ReceiveOrThrowAsync(socket, buffer);
    }

    // Pooled: a read that waits for the edge would otherwise allocate its state machine each time.
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> ReadOnLoopAsync(SocketConnection connection, Memory<byte> buffer)
    {
        if (buffer.IsEmpty)
        {
            // A zero-byte read waits for octets without taking them: at once unless the socket was drained.
            if (_drained)
            {
                await connection.TlsReadable!.WaitAsync();
                _drained = false;
            }
            if (connection.IsClosed)
            {
                throw new IOException("the connection closed");
            }
            return 0;
        }
        while (true)
        {
            int n = EventLoop.Receive(socket.SafeHandle, buffer.Span);
            if (n > 0)
            {
                _drained = n < buffer.Length;
                return n;
            }
            if (n == 0)
            {
                return 0;
            }
            if (n != -EventLoop.EAGAIN)
            {
                throw new IOException("the connection failed", new SocketException(-n));
            }
            _drained = true;
            await connection.TlsReadable!.WaitAsync();
        }
    }

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteOnLoopAsync(SocketConnection connection, ReadOnlyMemory<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int n = EventLoop.Send(socket.SafeHandle, buffer.Span);
            if (n > 0)
            {
                buffer = buffer.Slice(n);
                continue;
            }
            if (n != -EventLoop.EAGAIN)
            {
                throw new IOException("the peer closed the connection during the TLS handshake");
            }
            await connection.TlsWritable!.WaitAsync();
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (Failed || buffer.IsEmpty)
        {
            return;
        }
        int sent = 0;
        if (_backlogCount == 0)
        {
            SocketError error;
            if (onLoop != null)
            {
                sent = EventLoop.Send(socket.SafeHandle, buffer);
                error = sent >= 0 ? SocketError.Success : sent == -EventLoop.EAGAIN ? SocketError.WouldBlock : SocketError.ConnectionReset;
            }
            else
            {
                sent = socket.Send(buffer, SocketFlags.None, out error);
            }
            if (error == SocketError.WouldBlock)
            {
                sent = 0;
            }
            else if (error != SocketError.Success)
            {
                Failed = true;
                return;
            }
        }
        if (sent < buffer.Length)
        {
            Append(buffer.Slice(sent));
        }
    }

    private void Append(ReadOnlySpan<byte> data)
    {
        int needed = _backlogCount + data.Length;
        if (_backlog == null || _backlog.Length < needed)
        {
            byte[] grown = ArrayPool<byte>.Shared.Rent(Math.Max(needed, 32 * 1024));
            if (_backlog != null)
            {
                Buffer.BlockCopy(_backlog, 0, grown, 0, _backlogCount);
                ArrayPool<byte>.Shared.Return(_backlog);
            }
            _backlog = grown;
        }
        data.CopyTo(_backlog.AsSpan(_backlogCount));
        _backlogCount += data.Length;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (Established)
        {
            // Only the output's own turn writes after the handshake (its encryptions are synchronous);
            // an alert the engine sends on its own goes the same way.
            Write(buffer.Span);
            return;
        }
        // The handshake: nothing else writes yet.
        if (onLoop != null)
        {
            await WriteOnLoopAsync(onLoop, buffer);
            return;
        }
        while (!buffer.IsEmpty)
        {
            int sent = await socket.SendAsync(buffer, SocketFlags.None, cancellationToken);
            if (sent <= 0)
            {
                throw new IOException("the peer closed the connection during the TLS handshake");
            }
            buffer = buffer.Slice(sent);
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("TLS reads are asynchronous");

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
