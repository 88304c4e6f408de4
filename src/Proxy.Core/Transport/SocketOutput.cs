using System.Buffers;
using System.Net.Sockets;
using Proxy.Http2;

namespace Proxy.Core.Transport;

/// <summary>
/// The send side of a connection: an <see cref="IBufferWriter{T}"/> over pooled segments, written under
/// the owner's lock, and drained to the socket by whichever thread calls <see cref="Flush"/> first while
/// no send is running. Sends that complete synchronously never leave that thread; a send that must wait
/// for the socket continues on the socket engine's thread. Nothing is allocated in steady state.
/// </summary>
#pragma warning disable CA1001 // the event args live as long as the socket; disposing them under a pending send would race it
public sealed class SocketOutput : IBufferWriter<byte>
{
    private const int SegmentSize = 16 * 1024;

    private readonly OwnedLock _lock;
    private readonly Socket _socket;
    private SocketAwaitableEventArgs? _args; // asynchronous sends on the platform's engine only (made in a sending turn, when first needed)
    private readonly Queue<(byte[] Buffer, int Count)> _filled = new();
    private byte[]? _current;
    private int _currentCount;
    private long _pending;
    private bool _sending;
    private bool _closed;
    private Action? _drained;
    private Tls.TlsSession? _tls;

    /// <summary>TLS on this connection: from the end of the handshake, segments are encrypted as they are sent.</summary>
    internal Tls.TlsSession? Tls
    {
        get => _tls;
        set => _tls = value;
    }

    /// <param name="syncRoot">The lock that every writer holds while writing (for HTTP/2, the connection's).</param>
    public SocketOutput(Socket socket, OwnedLock syncRoot)
    {
        _socket = socket;
        _lock = syncRoot;
    }

    /// <summary>The lock writers hold.</summary>
    public OwnedLock SyncRoot => _lock;

    /// <summary>Octets written but not yet handed to the socket (a back-pressure signal for forwarders).</summary>
    public long PendingBytes => Volatile.Read(ref _pending) + Volatile.Read(ref _currentCount);

    /// <summary>Called (outside the lock) whenever the queue has been fully handed to the socket.</summary>
    public void OnDrained(Action callback) => _drained = callback;

    public void Advance(int count)
    {
        _currentCount += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0) => Reserve(sizeHint);

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        // Fast path: room left in the current segment.
        byte[]? current = _current;
        if (current != null && !_closed && current.Length - _currentCount >= Math.Max(sizeHint, 1))
        {
            return current.AsSpan(_currentCount);
        }
        return Reserve(sizeHint).Span;
    }

    private Memory<byte> Reserve(int sizeHint)
    {
        sizeHint = Math.Max(sizeHint, 1);
        if (_closed)
        {
            // Writes after close go nowhere; one scratch buffer absorbs them.
            if (_current == null || _current.Length < sizeHint)
            {
                _current = new byte[Math.Max(sizeHint, 256)];
            }
            _currentCount = 0;
            return _current;
        }
        if (_current == null || _current.Length - _currentCount < sizeHint)
        {
            if (_current != null && _currentCount > 0)
            {
                _filled.Enqueue((_current, _currentCount));
                Interlocked.Add(ref _pending, _currentCount);
            }
            else if (_current != null)
            {
                ReturnSegment(_current);
            }
            _current = RentSegment(sizeHint);
            _currentCount = 0;
        }
        return _current.AsMemory(_currentCount);
    }

    // Segments kept by each loop's thread for its outputs: the loop sends what an iteration wrote together
    // at its end (FlushBatch), so it may hold a segment for each of dozens of connections at once, more
    // than the shared pool keeps per core (past that it would allocate, and the collector would run).
    [ThreadStatic]
    private static KeptBuffers? t_segments;
    private const int SegmentsKeptPerLoop = 128; // 2 MiB at most per loop

    private static byte[] RentSegment(int sizeHint) =>
        sizeHint <= SegmentSize && t_segments != null && t_segments.TryTake(out byte[]? segment)
            ? segment
            : ArrayPool<byte>.Shared.Rent(Math.Max(sizeHint, SegmentSize));

    private static void ReturnSegment(byte[] segment)
    {
        if (segment.Length != SegmentSize || EventLoop.Current == null || !(t_segments ??= new KeptBuffers(SegmentsKeptPerLoop)).TryKeep(segment))
        {
            ArrayPool<byte>.Shared.Return(segment);
        }
    }

    /// <summary>Hands what was written to the socket. Safe from any thread, with or without the lock held.</summary>
    public void Flush()
    {
        using (_lock.Enter())
        {
            if (_sending || _closed || (_currentCount == 0 && _filled.Count == 0))
            {
                return;
            }
            _sending = true;
        }
        SendSynchronously();
    }

    /// <summary>
    /// Sends with non-blocking calls on this thread for as long as the socket takes the data (the usual case:
    /// no state machine, no allocation); only when the kernel's buffer is full does an asynchronous send
    /// take over and wait for the socket to become writable.
    /// </summary>
    private void SendSynchronously()
    {
        while (true)
        {
            byte[] buffer;
            int count;
            if (!TryTakeSegment(out buffer, out count))
            {
                break;
            }
            if (_tls is { } tls)
            {
                // Encrypted and sent on this thread; what the socket did not take goes out before more is encrypted.
                bool ok = tls.Write(buffer, count);
                Sent(buffer, count);
                if (!ok)
                {
                    Close();
                    return;
                }
                if (tls.HasBacklog)
                {
                    _ = SendBacklogAsync(tls);
                    return;
                }
                continue;
            }
            int offset = 0;
            while (offset < count)
            {
                int sent;
                SocketError error;
                if (_loop != null)
                {
                    sent = EventLoop.Send(_socket.SafeHandle, buffer.AsSpan(offset, count - offset));
                    error = sent >= 0 ? SocketError.Success : sent == -EventLoop.EAGAIN ? SocketError.WouldBlock : SocketError.ConnectionReset;
                }
                else
                {
                    sent = _socket.Send(buffer, offset, count - offset, SocketFlags.None, out error);
                }
                if (error == SocketError.WouldBlock)
                {
                    if (_loop != null)
                    {
                        // The loop's thread goes on when the socket is writable again (still this sending turn).
                        _blocked = (buffer, offset, count);
                        _loop.Post(_continueBlocked ??= ContinueBlockedSend);
                        return;
                    }
                    _ = SendAsynchronously(buffer, offset, count);
                    return;
                }
                if (error != SocketError.Success || sent <= 0)
                {
                    ReturnSegment(buffer);
                    Close();
                    return;
                }
                offset += sent;
            }
            Sent(buffer, count);
        }
        _drained?.Invoke();
    }

    private EventLoop? _loop;
    private (byte[]? Buffer, int Offset, int Count) _blocked;
    private bool _waitingWritable;
    private Action? _continueBlocked;

    /// <summary>The event loop of a plaintext connection that runs on one: a send that would block waits for its writable edge.</summary>
    internal EventLoop? Loop
    {
        get => _loop;
        set => _loop = value;
    }

    /// <summary>On the loop's thread: the socket reported writable (on most events; cheap unless a send waits).</summary>
    internal void OnWritable()
    {
        if (_waitingWritable)
        {
            _waitingWritable = false;
            ContinueBlockedSend();
        }
    }

    /// <summary>On the loop's thread: sends the rest of the segment that would have blocked, then goes on with the queue.</summary>
    private void ContinueBlockedSend()
    {
        (byte[]? buffer, int offset, int count) = _blocked;
        if (buffer == null)
        {
            return;
        }
        while (offset < count)
        {
            int sent = 0;
            SocketError error = SocketError.Shutdown;
            if (!IsClosed)
            {
                sent = EventLoop.Send(_socket.SafeHandle, buffer.AsSpan(offset, count - offset));
                error = sent >= 0 ? SocketError.Success : sent == -EventLoop.EAGAIN ? SocketError.WouldBlock : SocketError.ConnectionReset;
            }
            if (error == SocketError.WouldBlock)
            {
                // Would block again: the next writable edge goes on (this attempt set the socket's no-space flag).
                _blocked = (buffer, offset, count);
                _waitingWritable = true;
                return;
            }
            if (error != SocketError.Success || sent <= 0)
            {
                _blocked = default;
                ReturnSegment(buffer);
                Close();
                return;
            }
            offset += sent;
        }
        _blocked = default;
        Sent(buffer, count);
        SendSynchronously();
    }

    private async Task SendAsynchronously(byte[] buffer, int offset, int count)
    {
        while (offset < count)
        {
            int sent = await (_args ??= new()).SendAsync(_socket, buffer.AsMemory(offset, count - offset));
            if (sent <= 0)
            {
                ReturnSegment(buffer);
                Close();
                return;
            }
            offset += sent;
        }
        Sent(buffer, count);
        SendSynchronously();
    }

    /// <summary>TLS on an event loop: a ciphertext backlog waits for the writable edge here.</summary>
    internal AsyncSignal? Writable { get; set; }

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> SendOnLoopAsync(ReadOnlyMemory<byte> data)
    {
        while (true)
        {
            int sent = EventLoop.Send(_socket.SafeHandle, data.Span);
            if (sent != -EventLoop.EAGAIN)
            {
                return sent > 0 ? sent : 0;
            }
            await Writable!.WaitAsync();
        }
    }

    private async Task SendBacklogAsync(Tls.TlsSession tls)
    {
        while (tls.HasBacklog)
        {
            int sent = Writable != null ? await SendOnLoopAsync(tls.Backlog) : await (_args ??= new()).SendAsync(_socket, tls.Backlog);
            if (sent <= 0 || IsClosed)
            {
                Close();
                using (_lock.Enter())
                {
                    tls.ReleaseBacklog(); // the sending turn ends here: nobody else touches it
                }
                return;
            }
            tls.BacklogSent(sent);
        }
        SendSynchronously();
    }

    /// <summary>
    /// Starts a sending turn whose first send goes out in the loop's batch (<see cref="FlushBatch"/>): the
    /// segment to send, or false when this output is not for a batch (TLS, no loop) or has nothing to send.
    /// </summary>
    internal bool TryBeginBatchedSend(out byte[] buffer, out int count)
    {
        buffer = null!;
        count = 0;
        if (_tls != null || _loop == null)
        {
            return false;
        }
        using (_lock.Enter())
        {
            if (_sending || _closed || (_currentCount == 0 && _filled.Count == 0))
            {
                return false;
            }
            _sending = true;
        }
        return TryTakeSegment(out buffer, out count);
    }

    /// <summary>The socket's handle (for a batched send).</summary>
    internal System.Runtime.InteropServices.SafeHandle Handle => _socket.SafeHandle;

    /// <summary>
    /// Goes on with the turn <see cref="TryBeginBatchedSend"/> started, given what the batched send of its
    /// segment did (octets taken, or -errno), exactly as <see cref="SendSynchronously"/> would have.
    /// </summary>
    internal void CompleteBatchedSend(byte[] buffer, int count, int result)
    {
        if (result == count)
        {
            Sent(buffer, count);
            SendSynchronously();
            return;
        }
        if (result == -EventLoop.EAGAIN)
        {
            _blocked = (buffer, 0, count);
            _loop!.Post(_continueBlocked ??= ContinueBlockedSend);
            return;
        }
        if (result <= 0)
        {
            ReturnSegment(buffer);
            Close();
            return;
        }
        _blocked = (buffer, result, count); // part of it: the rest goes now, or waits for the writable edge
        ContinueBlockedSend();
    }

    /// <summary>Takes the next segment to send, or ends the sending turn when there is none.</summary>
    private bool TryTakeSegment(out byte[] buffer, out int count)
    {
        using (_lock.Enter())
        {
            if (_filled.Count == 0)
            {
                if (_currentCount == 0 || _closed)
                {
                    _sending = false;
                    buffer = null!;
                    count = 0;
                    return false;
                }
                // Take the partly filled segment; the next write starts a new one.
                _filled.Enqueue((_current!, _currentCount));
                Interlocked.Add(ref _pending, _currentCount);
                _current = null;
                _currentCount = 0;
            }
            (buffer, count) = _filled.Dequeue();
            return true;
        }
    }

    private void Sent(byte[] buffer, int count)
    {
        ReturnSegment(buffer);
        Interlocked.Add(ref _pending, -count);
    }

    /// <summary>Stops sending and returns every buffer; later writes are dropped.</summary>
    public void Close()
    {
        using (_lock.Enter())
        {
            _closed = true;
            bool wasSending = _sending;
            _sending = false;
            while (_filled.Count > 0)
            {
                ReturnSegment(_filled.Dequeue().Buffer);
            }
            Volatile.Write(ref _pending, 0);
            if (!wasSending)
            {
                _tls?.ReleaseBacklog();
            }
            if (_current != null)
            {
                ReturnSegment(_current);
                _current = null;
                _currentCount = 0;
            }
        }
        try
        {
            _socket.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public bool IsClosed
    {
        get
        {
            using (_lock.Enter())
            {
                return _closed;
            }
        }
    }
}
