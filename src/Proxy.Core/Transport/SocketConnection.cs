using System.Buffers;
using System.Net.Sockets;
using Proxy.Http2;

namespace Proxy.Core.Transport;

/// <summary>What a protocol tells the receive loop after consuming input.</summary>
public enum InputStatus : byte
{
    Continue,
    /// <summary>Stop reading until <see cref="SocketConnection.ResumeInput"/>: back-pressure from the other side.</summary>
    Pause,
    Close,
}

/// <summary>The protocol that runs on a connection (HTTP/1.1 or HTTP/2, either side).</summary>
public interface IConnectionProtocol
{
    /// <summary>Consumes what it can from the front of <paramref name="buffer"/>; what is left is offered again with more bytes.</summary>
    InputStatus OnInput(ref ReadOnlySequence<byte> buffer);

    /// <summary>The peer closed or reset the connection, or the protocol asked to close; called once.</summary>
    void OnClosed();

    /// <summary>
    /// The peer closed its sending side (a FIN after what was delivered). True: the protocol still owes
    /// an answer and closes the connection itself once it is out (an HTTP/1.1 client that half-closes
    /// after its request, as scripts with nc do); false: the connection closes now.
    /// </summary>
    bool OnInputEnded() => false;
}

/// <summary>
/// A connected socket: a receive loop that feeds an <see cref="IConnectionProtocol"/> and a
/// <see cref="SocketOutput"/> for the way back. The receive buffer is pooled, kept small while the
/// connection is idle (so ten thousand idle connections stay cheap) and grown only for a large frame.
/// </summary>
#pragma warning disable CA1001 // the event args live as long as the socket; see Close
public sealed class SocketConnection : ILoopSocket
{
    /// <summary>The receive buffer an idle connection keeps.</summary>
    public const int InitialBufferSize = 8 * 1024;
    /// <summary>Receive size while data is flowing.</summary>
    public const int ActiveBufferSize = 64 * 1024;

    private readonly Socket _socket;
    // Only for reads on the platform's engine (event args carry a finalizer: a loop connection makes none).
    private SocketAwaitableEventArgs? _receiveArgs;
    private SocketAwaitableEventArgs ReceiveArgs => _receiveArgs ??= new();
    // A paused awaited reader (TLS, or the platform's engine) waits here. On a loop (TLS on the loop) it
    // resumes inline on the loop's thread, where ResumeInput posts the signal; elsewhere on the thread pool.
    private readonly AsyncSignal _resume;
    private IConnectionProtocol? _protocol;
    private int _closed;

    /// <param name="loop">The event loop that runs this (plaintext) connection; null: the platform's socket engine (and TLS).</param>
    /// <param name="tlsOnLoop">The connection will terminate TLS on the loop (reads and writes then wait for the loop's edges).</param>
    public SocketConnection(Socket socket, int maxBufferSize = 1024 * 1024, EventLoop? loop = null, bool tlsOnLoop = false)
    {
        _socket = socket;
        _resume = new AsyncSignal(inline: loop != null);
        if (socket.ProtocolType == ProtocolType.Tcp)
        {
            socket.NoDelay = true; // not an option of unix sockets
        }
        // Sync sends must return WouldBlock rather than wait: see SocketOutput.
        socket.Blocking = false;
        // On a loop, only that loop enters the connection's lock without atomics (the rest is rare: drains, retirement).
        Output = new SocketOutput(socket, new OwnedLock(loop?.ThreadId ?? 0));
        Output.OnDrained(OnOutputDrained);
        MaxBufferSize = maxBufferSize;
        if (loop != null)
        {
            _loop = loop;
            _tlsOnLoop = tlsOnLoop;
            Output.Loop = loop;
            if (tlsOnLoop)
            {
                TlsReadable = new AsyncSignal(inline: true);
                TlsWritable = new AsyncSignal(inline: true);
                Output.Writable = TlsWritable;
            }
            loop.Register((int)socket.Handle, this);
        }
    }

    private readonly EventLoop? _loop;
    private readonly bool _tlsOnLoop;

    /// <summary>The event loop this connection runs on (null: the platform's socket engine).</summary>
    internal EventLoop? Loop => _loop;

    ulong ILoopSocket.LoopToken { get; set; }

    private volatile bool _closeWhenDrained;

    /// <summary>Called (outside the lock) each time the output queue has been fully handed to the socket.</summary>
    public Action? Drained { get; set; }

    private void OnOutputDrained()
    {
        if (_closeWhenDrained)
        {
            // TLS ends with close_notify, so a body delimited by the close is not taken for a truncation.
            _tls?.SendCloseNotify(_socket);
            Close();
            return;
        }
        Drained?.Invoke();
    }

    public SocketOutput Output { get; }

    /// <summary>
    /// Envoy's per_connection_buffer_limit_bytes (default 1 MiB): the high watermark of this connection's
    /// queues. Above it a forwarder stops writing here (and so stops reading and crediting the other side
    /// of the exchange) until the queue has drained.
    /// </summary>
    public int BufferLimit { get; set; } = DefaultBufferLimit;

    /// <summary>Envoy's default per_connection_buffer_limit_bytes.</summary>
    public const int DefaultBufferLimit = 1024 * 1024;

    /// <summary>Whether the output queue is above the high watermark.</summary>
    public bool IsOutputFull => Output.PendingBytes >= BufferLimit;

    private System.Net.EndPoint? _remote;
    private System.Net.EndPoint? _local;

    /// <summary>The peer's address, read once and kept.</summary>
    public System.Net.EndPoint? RemoteEndPoint => _remote ??= ReadEndPoint(remote: true);

    /// <summary>The local address of the connection, read once and kept.</summary>
    public System.Net.EndPoint? LocalEndPoint => _local ??= ReadEndPoint(remote: false);

    private System.Net.EndPoint? ReadEndPoint(bool remote)
    {
        try
        {
            return remote ? _socket.RemoteEndPoint : _socket.LocalEndPoint;
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return null;
        }
    }

    /// <summary>The peer's address for log lines ("?" when unknown).</summary>
    public string RemoteAddress => RemoteEndPoint?.ToString() ?? "?";

    public Socket Socket => _socket;

    private Tls.TlsSession? _tls;

    /// <summary>TLS on this connection (null: plaintext): the peer's identity, the protocol ALPN chose.</summary>
    public Tls.TlsSession? Tls => _tls;

    /// <summary>Terminates TLS (before <see cref="RunAsync"/>); null when the handshake completed, else why it failed (the connection is then closed).</summary>
    /// <param name="timedByCaller">The caller closes this connection if the handshake takes too long (no timer per handshake).</param>
    public async Task<string?> AcceptTlsAsync(Tls.TlsServerContext context, string[]? offeredAlpn, CancellationToken cancel, bool timedByCaller = false)
    {
        (Tls.TlsSession? session, string? error) = await Transport.Tls.TlsSession.AcceptAsync(_socket, _loop != null ? null : ReceiveArgs, context, offeredAlpn, timedByCaller, cancel, _loop != null ? this : null);
        return UseTls(session) ? null : error ?? "connection closed";
    }

    /// <summary>Originates TLS (before <see cref="RunAsync"/>); null when the handshake completed, else why it failed (the connection is then closed).</summary>
    public async Task<string?> ConnectTlsAsync(Tls.TlsClientContext context, TimeSpan timeout)
    {
        (Tls.TlsSession? session, string? error) = await Transport.Tls.TlsSession.ConnectAsync(_socket, _loop != null ? null : ReceiveArgs, context, timeout, _loop != null ? this : null);
        return UseTls(session) ? null : error ?? "connection closed";
    }

    private bool UseTls(Tls.TlsSession? session)
    {
        if (session == null || IsClosed)
        {
            session?.Dispose();
            Close();
            return false;
        }
        _tls = session;
        Output.Tls = session;
        return true;
    }
    /// <summary>The most a protocol may leave unconsumed (one frame, one header section) before the connection is closed.</summary>
    public int MaxBufferSize { get; }
    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>A TLS reader on the loop waits here for the socket's readable edge.</summary>
    internal readonly AsyncSignal? TlsReadable;

    /// <summary>A TLS writer on the loop (handshake, ciphertext backlog) waits here for the writable edge.</summary>
    internal readonly AsyncSignal? TlsWritable;

    /// <summary>Runs the receive loop until the connection closes.</summary>
    public Task RunAsync(IConnectionProtocol protocol)
    {
        if (_loop != null && _tls == null)
        {
            _protocol = protocol;
            _finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            // Octets that came before the registration raised their edge then; those after raise one now.
            _loop.Post(_readReady ??= ReadReady);
            if (IsClosed)
            {
                _finished.TrySetResult();
            }
            return _finished.Task;
        }
        return RunAwaitedAsync(protocol);
    }

    // ---- On an event loop: reads happen when the loop says the socket is readable, on its thread. ----

    private TaskCompletionSource? _finished;
    private Action? _readReady;
    private byte[] _buffer = [];
    private int _start;
    private int _end;
    private bool _paused;
    private bool _inRead;

    void ILoopSocket.OnEvents(uint events)
    {
        if (OnEventsButRead(events))
        {
            ReadReady();
        }
    }

    /// <summary>Handles the readiness bits but the loop's own read; true when that read is due.</summary>
    private bool OnEventsButRead(uint events)
    {
        if (_tlsOnLoop)
        {
            // TLS reads and writes await the edges (the engine's state machines run on, on this thread).
            if ((events & (EventLoop.EPOLLOUT | EventLoop.EPOLLERR | EventLoop.EPOLLHUP)) != 0)
            {
                TlsWritable!.Set();
            }
            if ((events & (EventLoop.EPOLLIN | EventLoop.EPOLLRDHUP | EventLoop.EPOLLERR | EventLoop.EPOLLHUP)) != 0)
            {
                TlsReadable!.Set();
            }
            return false;
        }
        if ((events & (EventLoop.EPOLLOUT | EventLoop.EPOLLERR | EventLoop.EPOLLHUP)) != 0)
        {
            Output.OnWritable();
        }
        if ((events & (EventLoop.EPOLLRDHUP | EventLoop.EPOLLERR | EventLoop.EPOLLHUP)) != 0)
        {
            // The peer's FIN (or an error) came, perhaps on the same edge as its last octets: the reads
            // go on past a short one until recv says so, or no edge would ever tell.
            _peerClosed = true;
        }
        return (events & (EventLoop.EPOLLIN | EventLoop.EPOLLRDHUP | EventLoop.EPOLLERR | EventLoop.EPOLLHUP)) != 0;
    }

    private bool _peerClosed;
    private bool _inputEnded;

    /// <summary>On the loop's thread: reads until the socket is drained (a short read), handing each read to the protocol.</summary>
    private void ReadReady()
    {
        if (!BeginRead())
        {
            return;
        }
        try
        {
            ReadOn();
        }
        catch (Exception e)
        {
            Failed(e);
        }
        finally
        {
            EndRead();
        }
    }

    /// <summary>Whether a read may start now (none is running, the connection is open and not paused); marks it running.</summary>
    private bool BeginRead()
    {
        if (_inRead || _protocol == null)
        {
            return false;
        }
        if (IsClosed)
        {
            ReleaseBuffer();
            return false;
        }
        if (_paused || _inputEnded)
        {
            return false;
        }
        _inRead = true;
        return true;
    }

    private void EndRead()
    {
        _inRead = false;
        if (IsClosed || _start == _end)
        {
            ReleaseBuffer(); // an idle connection holds no buffer
        }
    }

    /// <summary>Receives and delivers until the socket is drained, input pauses or the connection closes.</summary>
    private void ReadOn()
    {
        while (true)
        {
            if (!MakeRoom())
            {
                Close(); // the protocol could not make progress within its limit
                return;
            }
            int space = _buffer.Length - _end;
            if (!Took(EventLoop.Receive(_socket.SafeHandle, _buffer.AsSpan(_end)), space))
            {
                return;
            }
        }
    }

    /// <summary>Handles one receive's result (octets, 0 at the end of the stream, or -errno); true when the socket may hold more.</summary>
    private bool Took(int received, int space)
    {
        if (received < 0)
        {
            if (received != -EventLoop.EAGAIN)
            {
                Close();
            }
            return false;
        }
        if (received == 0)
        {
            if (_protocol!.OnInputEnded())
            {
                _inputEnded = true; // nothing more to read; the protocol closes when its answer is out
                return false;
            }
            Close(); // the peer closed its side
            return false;
        }
        _end += received;
        // Paused or closed, or drained (a short read): the next edge says when there is more. A FIN that came
        // on the same edge as the last octets raises no other: read on until recv says so.
        return Deliver() && (received == space || _peerClosed);
    }

    // ---- Receives batched by the loop (see EventLoop): readiness is handled, the receive goes into the ----
    // ---- loop's io_uring with those of the other ready sockets, and the result comes back here.        ----

    private int _preparedSpace;

    /// <summary>
    /// On the loop's thread, for the events of one <c>epoll_wait</c>: handles all but the read, and when a read
    /// is due, prepares it on <paramref name="ring"/> (true: the loop submits it and calls
    /// <see cref="ReleasePreparedReceive"/>, then <see cref="CompleteReceive"/>). Otherwise the read, if any,
    /// has been done here.
    /// </summary>
    internal unsafe bool OnEventsPreparingReceive(uint events, IoUring ring, ulong userData)
    {
        if (!OnEventsButRead(events) || !BeginRead())
        {
            return false;
        }
        bool prepared = false;
        bool held = false;
        try
        {
            if (!MakeRoom())
            {
                Close();
                return false;
            }
            if (!_bufferPinned)
            {
                ReadOn(); // a grown buffer (pooled, movable): read it here
                return false;
            }
            // Held until the kernel is done: a close elsewhere cannot hand the descriptor number to another socket.
            try
            {
                _socket.SafeHandle.DangerousAddRef(ref held);
            }
            catch (ObjectDisposedException)
            {
            }
            if (!held)
            {
                Close();
                return false;
            }
            _preparedSpace = _buffer.Length - _end;
            byte* at = (byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_buffer)) + _end;
            ring.PrepareReceive((int)_socket.SafeHandle.DangerousGetHandle(), at, _preparedSpace, userData);
            prepared = true;
            return true;
        }
        catch (Exception e)
        {
            if (held && !prepared)
            {
                _socket.SafeHandle.DangerousRelease();
            }
            Failed(e);
            return false;
        }
        finally
        {
            if (!prepared)
            {
                EndRead();
            }
        }
    }

    /// <summary>Lets go of the handle a prepared receive held (the kernel is done with it).</summary>
    internal void ReleasePreparedReceive() => _socket.SafeHandle.DangerousRelease();

    /// <summary>The prepared receive the kernel did not take (a refused submission): done here, one by one.</summary>
    internal int ReceiveNow() => EventLoop.Receive(_socket.SafeHandle, _buffer.AsSpan(_end, _preparedSpace));

    /// <summary>Goes on with a prepared receive's result as <see cref="ReadReady"/> would with its own.</summary>
    internal void CompleteReceive(int result)
    {
        try
        {
            if (!IsClosed && Took(result, _preparedSpace))
            {
                ReadOn();
            }
        }
        catch (Exception e)
        {
            Failed(e);
        }
        finally
        {
            EndRead();
        }
    }

    /// <summary>Offers what is buffered to the protocol; false when it paused input or the connection closed.</summary>
    private bool Deliver()
    {
        var sequence = new ReadOnlySequence<byte>(_buffer, _start, _end - _start);
        InputStatus status = _protocol!.OnInput(ref sequence);
        _start = _end - (int)sequence.Length;
        if (_start == _end)
        {
            _start = _end = 0;
        }
        if (status == InputStatus.Close || IsClosed)
        {
            Close();
            return false;
        }
        if (status == InputStatus.Pause)
        {
            _paused = true;
            return false;
        }
        return true;
    }

    /// <summary>Makes sure there is room to read into: rents, compacts or grows (within <see cref="MaxBufferSize"/>).</summary>
    private bool MakeRoom()
    {
        if (_buffer.Length == 0)
        {
            _buffer = RentPinned();
            _bufferPinned = true;
            _start = _end = 0;
            return true;
        }
        if (_end < _buffer.Length)
        {
            return true;
        }
        byte[] before = _buffer;
        if (!MakeRoom(ref _buffer, ref _start, ref _end, MaxBufferSize, returnOld: !_bufferPinned))
        {
            return false;
        }
        if (_bufferPinned && !ReferenceEquals(before, _buffer))
        {
            ReturnPinned(before); // grown into a pooled one
            _bufferPinned = false;
        }
        return true;
    }

    // Receive buffers kept by each loop's thread, allocated pinned, so that a receive batched through the
    // loop's io_uring needs no pin of its own. A loop connection gives its buffer back whenever it has
    // consumed all it read, so a loop needs about one per connection with a read in flight in an iteration.
    [ThreadStatic]
    private static KeptBuffers? t_pinned;
    private const int PinnedKeptPerLoop = 256; // 2 MiB at most per loop
    private bool _bufferPinned;

    private static byte[] RentPinned() =>
        t_pinned != null && t_pinned.TryTake(out byte[]? buffer) ? buffer : GC.AllocateUninitializedArray<byte>(InitialBufferSize, pinned: true);

    // Past what the loop keeps, a buffer is left to the collector (not to the shared pool: it is pinned).
    private static void ReturnPinned(byte[] buffer) => (t_pinned ??= new KeptBuffers(PinnedKeptPerLoop)).TryKeep(buffer);

    /// <summary>
    /// A full buffer: moves the unconsumed octets to the front when they take less than half, else grows
    /// it (pooled, within <paramref name="maxBufferSize"/>); false when it is at the limit already.
    /// </summary>
    private static bool MakeRoom(ref byte[] buffer, ref int start, ref int end, int maxBufferSize, bool returnOld = true)
    {
        int used = end - start;
        if (start > 0 && used < buffer.Length / 2)
        {
            Buffer.BlockCopy(buffer, start, buffer, 0, used);
        }
        else
        {
            if (buffer.Length >= maxBufferSize)
            {
                return false;
            }
            byte[] grown = ArrayPool<byte>.Shared.Rent(Math.Min(Math.Max(buffer.Length * 2, ActiveBufferSize), maxBufferSize));
            Buffer.BlockCopy(buffer, start, grown, 0, used);
            if (returnOld)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            buffer = grown;
        }
        start = 0;
        end = used;
        return true;
    }

    private void ReleaseBuffer()
    {
        if (_buffer.Length > 0)
        {
            if (_bufferPinned)
            {
                ReturnPinned(_buffer); // on the loop's thread, the only one that reads a loop connection
                _bufferPinned = false;
            }
            else
            {
                ArrayPool<byte>.Shared.Return(_buffer);
            }
            _buffer = [];
        }
        _start = _end = 0;
    }

    /// <summary>On the loop's thread: a paused connection offers its buffered input again, then reads on.</summary>
    private void ResumeOnLoop()
    {
        if (!_paused || _inRead)
        {
            return;
        }
        _paused = false;
        if (IsClosed)
        {
            ReleaseBuffer();
            return;
        }
        if (_end > _start)
        {
            _inRead = true;
            bool more;
            try
            {
                more = Deliver();
            }
            catch (Exception e)
            {
                Failed(e);
                more = false;
            }
            finally
            {
                _inRead = false;
            }
            if (!more)
            {
                if (IsClosed)
                {
                    ReleaseBuffer();
                }
                return;
            }
        }
        // The socket may hold octets whose edge came while paused: read until it is drained.
        ReadReady();
    }

    private Action? _resumeOnLoop;

    /// <summary>A protocol threw while handling input: the connection ends (as the engine's receive loop ends it).</summary>
    private void Failed(Exception e)
    {
        if (e is not ObjectDisposedException)
        {
            Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Error, $"connection {RemoteAddress}: {e.GetType().Name}: {e.Message}");
            if (Diagnostics.ProxyLog.IsEnabled(Diagnostics.LogLevel.Debug))
            {
                Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Debug, e.ToString()); // the stack, only when asked for
            }
        }
        Close();
    }

    // ---- Awaited reads: TLS (SslStream over the loop's edges, or the engine's), or everything with the loops off. ----

    private async Task RunAwaitedAsync(IConnectionProtocol protocol)
    {
        static bool tlsFailure(Exception e) => e is IOException or System.Security.Authentication.AuthenticationException or InvalidOperationException or SocketException;
        _protocol = protocol;
        byte[] buffer = [];
        int start = 0;
        int end = 0;
        try
        {
            // A connection that has sent nothing yet holds no buffer: a zero-byte receive waits for its
            // first octets (one extra call per connection, none per request), so thousands of silent
            // connections cost only their socket and this loop.
            Tls.TlsSession? tls = _tls;
            int ready = tls != null ? await tls.ReadAsync(Memory<byte>.Empty) : await ReceiveArgs.ReceiveAsync(_socket, Memory<byte>.Empty);
            if (ready < 0 || IsClosed)
            {
                return;
            }
            buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
            bool drained = false;
            while (true)
            {
                if (start == end)
                {
                    start = end = 0;
                    if (buffer.Length > InitialBufferSize)
                    {
                        // Drained after a burst: give the large buffer back.
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
                    }
                }
                else if (end == buffer.Length && !MakeRoom(ref buffer, ref start, ref end, MaxBufferSize))
                {
                    break; // the protocol could not make progress within its limit
                }

                if (start == end && drained && ReleaseBufferWhenIdle)
                {
                    // Everything read is consumed and the socket had no more: wait without a buffer, so an
                    // idle connection holds none (the wait is the would-block attempt a read makes anyway).
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = [];
                    ready = tls != null ? await tls.ReadAsync(Memory<byte>.Empty) : await ReceiveArgs.ReceiveAsync(_socket, Memory<byte>.Empty);
                    buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
                    if (ready < 0 || IsClosed)
                    {
                        break;
                    }
                }
                int space = buffer.Length - end;
                int received = tls != null ? await tls.ReadAsync(buffer.AsMemory(end)) : await ReceiveArgs.ReceiveAsync(_socket, buffer.AsMemory(end));
                if (received == 0 && protocol.OnInputEnded())
                {
                    // The peer closed its side; the protocol still owes an answer and closes when it is out.
                    _finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    if (!IsClosed)
                    {
                        await _finished.Task;
                    }
                    break;
                }
                if (received <= 0)
                {
                    break; // 0: the peer closed its side; negative: a socket error
                }
                end += received;
                drained = received < space;

                InputStatus status;
                while (true)
                {
                    var sequence = new ReadOnlySequence<byte>(buffer, start, end - start);
                    status = protocol.OnInput(ref sequence);
                    start = end - (int)sequence.Length;
                    if (status != InputStatus.Pause)
                    {
                        break;
                    }
                    await _resume.WaitAsync();
                    if (IsClosed)
                    {
                        status = InputStatus.Close;
                        break;
                    }
                }
                if (status == InputStatus.Close)
                {
                    break;
                }
            }
        }
        catch (ObjectDisposedException)
        {
        }
        catch (Exception e) when (tlsFailure(e))
        {
            // A record that does not decrypt, a protocol alert, a reset under TLS: the connection ends.
        }
        finally
        {
            if (buffer.Length > 0)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            Close();
        }
    }

    /// <summary>
    /// Whether the receive loop gives its buffer back while it waits on a drained socket (on for TLS, where
    /// a connection mostly idles between requests and memory per connection is what a handshake costs).
    /// </summary>
    public bool ReleaseBufferWhenIdle => _tls != null;

    /// <summary>Lets a paused receive loop go on.</summary>
    public void ResumeInput()
    {
        if (_loop == null)
        {
            _resume.Set();
        }
        else if (_tls == null)
        {
            _loop.Post(_resumeOnLoop ??= ResumeOnLoop); // the loop's own reads (see ReadReady)
        }
        else
        {
            _loop.Post(_resumeAwaited ??= _resume.Set); // TLS on the loop: its awaited reader goes on, on the loop
        }
    }

    private Action? _resumeAwaited;

    /// <summary>Closes both directions once; the protocol's <see cref="IConnectionProtocol.OnClosed"/> runs once.</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }
        Output.Close();
        _resume.Set();
        if (_loop != null)
        {
            _loop.Unregister(((ILoopSocket)this).LoopToken, fd: -1); // closing the descriptor takes it out of epoll
            TlsReadable?.Set(); // a TLS reader or writer waiting on the loop wakes to find the socket closed
            TlsWritable?.Set();
            // The loop's thread gives the buffer back (a read may be using it right now).
            _loop.Post(_readReady ??= ReadReady);
        }
        try
        {
            _socket.Dispose();
        }
        catch (ObjectDisposedException)
        {
        }
        _tls?.Dispose();
        _protocol?.OnClosed();
        _finished?.TrySetResult();
    }

    /// <summary>Flushes what is queued, then closes (for a GOAWAY or a final HTTP/1.1 response).</summary>
    public void CloseAfterFlush()
    {
        _closeWhenDrained = true;
        Output.Flush();
        if (Output.PendingBytes == 0)
        {
            Close();
        }
    }
}
