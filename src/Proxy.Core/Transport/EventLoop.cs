using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Proxy.Http2;

namespace Proxy.Core.Transport;

/// <summary>What an <see cref="EventLoop"/> calls when the kernel reports readiness on a registered socket.</summary>
public interface ILoopSocket
{
    /// <summary>Runs on the loop's thread with the epoll event bits.</summary>
    void OnEvents(uint events);

    /// <summary>The token <see cref="EventLoop.Register"/> gave it (events for an older registration of its slot are dropped).</summary>
    ulong LoopToken { get; set; }
}

/// <summary>
/// An event loop of our own for plaintext connections: one thread in <c>epoll_wait</c> over edge-triggered
/// registrations, calling each ready connection on that thread. Unlike the platform's socket engine it
/// never tries a read it has reason to think would block: after a read that returned less than it asked
/// for, the socket is drained and the next read waits for the next edge (the engine tries, gets EAGAIN,
/// then registers: one wasted system call per wait, a third of them on an HTTP/1.1 hop). Work from other
/// threads (resume a paused reader, finish a blocked send) is posted and runs on the loop's thread.
/// </summary>
public sealed unsafe partial class EventLoop
{
    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    private const uint EPOLLET = 0x80000000;
    private const uint EPOLLEXCLUSIVE = 1u << 28;
    private const int EPOLL_CTL_ADD = 1;
    private const int EPOLL_CTL_DEL = 2;
    private const int EFD_NONBLOCK = 0x800;
    private const int EFD_CLOEXEC = 0x80000;
    private const int EPOLL_CLOEXEC = 0x80000;
    private const int EINTR = 4;
    private const ulong WakeToken = ulong.MaxValue;
    private const int MaxEvents = 256;

    private static EventLoop[]? s_loops;
    private static int s_next;
    private static int s_count = 1;
    private static bool s_disabled = string.Equals(Environment.GetEnvironmentVariable("LAYOTTO_SOCKET_ENGINE"), "dotnet", StringComparison.OrdinalIgnoreCase);
    private static readonly Lock s_startLock = new();

    [ThreadStatic]
    private static EventLoop? t_current;

    private readonly int _epoll;
    private readonly int _wake;
    private readonly ConcurrentQueue<Action> _posted = new();
    private int _wakePending;
    private readonly Lock _slotsLock = new();
    private ILoopSocket?[] _slots = new ILoopSocket?[64];
    private uint[] _generations = new uint[64];
    private readonly Stack<int> _free = new();
    private int _used;

    /// <summary>This loop's place among the loops (0 ..).</summary>
    public int Index { get; }

    /// <summary>The managed thread id of the loop's thread.</summary>
    public int ThreadId { get; }

    /// <summary>
    /// A lock for state that lives on the calling thread's loop (none off the loops): the loop enters it
    /// without atomics, other threads at a higher price (see <see cref="OwnedLock"/>).
    /// </summary>
    public static OwnedLock NewLock() => new(t_current?.ThreadId ?? 0);

    /// <summary>
    /// A lock owned by the loop of a per-loop slot (<see cref="CurrentSlot"/>): slot i belongs to loop i;
    /// without loops, an ordinary lock.
    /// </summary>
    public static OwnedLock NewSlotLock(int slot) =>
        Enabled && (s_loops ?? Start()) is { } loops && slot < loops.Length ? new(loops[slot].ThreadId) : new(0);

    /// <summary>
    /// How many per-loop slots state kept per event loop needs (connection pools): one per loop, and slot 0
    /// also serves threads that are no loop (TLS on the platform's engine, timers).
    /// </summary>
    public static int SlotCount => s_loops?.Length ?? Math.Max(1, s_count); // the loops once started

    /// <summary>The calling thread's slot: its loop's index, else 0.</summary>
    public static int CurrentSlot => t_current?.Index ?? 0;

    private EventLoop(int index)
    {
        Index = index;
        _epoll = epoll_create1(EPOLL_CLOEXEC);
        _wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (_epoll < 0 || _wake < 0)
        {
            throw new InvalidOperationException($"epoll/eventfd: errno {Marshal.GetLastPInvokeError()}");
        }
        EpollEvent ev = new() { Events = EPOLLIN | EPOLLET, Data = WakeToken };
        if (epoll_ctl(_epoll, EPOLL_CTL_ADD, _wake, &ev) != 0)
        {
            throw new InvalidOperationException($"epoll_ctl(eventfd): errno {Marshal.GetLastPInvokeError()}");
        }
        var thread = new Thread(Run) { IsBackground = true, Name = $"event loop {index}" };
        ThreadId = thread.ManagedThreadId;
        Timers = new TimerWheel(ThreadId);
        thread.UnsafeStart();
    }

    /// <summary>
    /// How many loops to run (the proxy's --concurrency); set before the first connection. Connections spread
    /// over them round robin.
    /// </summary>
    public static void Configure(int count, bool enabled = true)
    {
        lock (s_startLock)
        {
            s_count = Math.Max(1, count);
            s_disabled |= !enabled;
        }
    }

    /// <summary>Whether plaintext connections run on our loops (off: on the platform's socket engine). LAYOTTO_SOCKET_ENGINE=dotnet turns it off.</summary>
    public static bool Enabled => !s_disabled && OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    /// <summary>The loops running now (none until the first connection, or when disabled).</summary>
    public static IReadOnlyList<EventLoop> Started => s_loops ?? [];

    /// <summary>The loop whose thread this is, else null.</summary>
    public static EventLoop? Current => t_current;

    /// <summary>A loop for a new connection: the calling loop's own (its exchanges stay on one thread), else the next round robin; null when disabled.</summary>
    public static EventLoop? ForNewConnection()
    {
        if (!Enabled)
        {
            return null;
        }
        if (t_current is { } current)
        {
            return current;
        }
        return Next();
    }

    /// <summary>The next loop round robin (for accepted connections); null when disabled.</summary>
    public static EventLoop? Next()
    {
        if (!Enabled)
        {
            return null;
        }
        EventLoop[] loops = s_loops ?? Start();
        return loops[(int)((uint)Interlocked.Increment(ref s_next) % (uint)loops.Length)];
    }

    private static EventLoop[] Start()
    {
        lock (s_startLock)
        {
            if (s_loops == null)
            {
                var loops = new EventLoop[s_count];
                for (int i = 0; i < loops.Length; i++)
                {
                    loops[i] = new EventLoop(i);
                }
                s_loops = loops;
            }
            return s_loops;
        }
    }

    public bool IsOwnThread => ReferenceEquals(t_current, this);

    /// <summary>This loop's timers, ticked by its thread between batches of events (see <see cref="TimerWheel"/>).</summary>
    public TimerWheel Timers { get; }

    /// <summary>Adds an edge-triggered registration for read, write and peer-close readiness; the token to unregister with.</summary>
    public ulong Register(int fd, ILoopSocket socket) => Register(fd, socket, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);

    /// <summary>
    /// Adds a listening socket: level-triggered, so a connection the loop leaves in the backlog is reported
    /// again at its next wait, and exclusive, so a connection wakes one sleeping loop, not all of them.
    /// </summary>
    public ulong RegisterListener(int fd, ILoopSocket socket) => Register(fd, socket, EPOLLIN | EPOLLEXCLUSIVE);

    /// <summary>Every loop (started now if they were not yet); none when the loops are disabled.</summary>
    public static IReadOnlyList<EventLoop> All => Enabled ? s_loops ?? Start() : [];

    private ulong Register(int fd, ILoopSocket socket, uint events)
    {
        ulong token;
        lock (_slotsLock)
        {
            int slot;
            if (_free.Count > 0)
            {
                slot = _free.Pop();
            }
            else
            {
                if (_used == _slots.Length)
                {
                    Array.Resize(ref _generations, _used * 2);
                    var grown = new ILoopSocket?[_used * 2];
                    Array.Copy(_slots, grown, _used);
                    Volatile.Write(ref _slots, grown);
                }
                slot = _used++;
            }
            uint generation = ++_generations[slot];
            Volatile.Write(ref _slots[slot], socket);
            token = (ulong)generation << 32 | (uint)slot;
            socket.LoopToken = token; // before the first event can arrive
        }
        EpollEvent ev = new() { Events = events, Data = token };
        if (epoll_ctl(_epoll, EPOLL_CTL_ADD, fd, &ev) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Unregister(token, -1);
            throw new System.Net.Sockets.SocketException(errno);
        }
        return token;
    }

    /// <summary>Forgets a registration (before the socket is closed: a closed descriptor leaves epoll by itself, but its slot must not).</summary>
    public void Unregister(ulong token, int fd)
    {
        if (fd >= 0)
        {
            EpollEvent ev = default;
            _ = epoll_ctl(_epoll, EPOLL_CTL_DEL, fd, &ev);
        }
        int slot = (int)(uint)token;
        lock (_slotsLock)
        {
            if (_generations[slot] == (uint)(token >> 32) && _slots[slot] != null)
            {
                Volatile.Write(ref _slots[slot], null);
                _free.Push(slot);
            }
        }
    }

    /// <summary>An awaitable that resumes on this loop's thread (at once when already on it).</summary>
    public LoopSwitch SwitchTo() => new(this);

    /// <summary>The awaiter of <see cref="SwitchTo"/>.</summary>
    public readonly struct LoopSwitch(EventLoop loop) : System.Runtime.CompilerServices.INotifyCompletion
    {
        public LoopSwitch GetAwaiter() => this;
        public bool IsCompleted => loop.IsOwnThread;
        public void OnCompleted(Action continuation) => loop.Post(continuation);
        public void GetResult()
        {
        }
    }

    /// <summary>Runs <paramref name="action"/> on the loop's thread (after the current batch of events when called from it).</summary>
    public void Post(Action action)
    {
        _posted.Enqueue(action);
        if (!IsOwnThread && Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            ulong one = 1;
            _ = write(_wake, &one, 8);
        }
    }

    /// <summary>This loop's io_uring for batched receives and sends (null: unavailable, or LAYOTTO_IO_URING=0).</summary>
    internal IoUring? Ring { get; private set; }

    private void Run()
    {
        t_current = this;
        OwnedLock.BecomeOwner(ThreadId);
        Ring = IoUring.TryCreate(MaxEvents);
        if (Index == 0)
        {
            Diagnostics.ProxyLog.Write(Diagnostics.LogLevel.Debug, Ring != null
                ? "event loops: the receives of each wait, and each iteration's sends, go to the kernel together through io_uring"
                : "event loops: io_uring unavailable (kernel, seccomp or LAYOTTO_IO_URING=0): one receive and one send per connection");
        }
        EpollEvent* events = stackalloc EpollEvent[MaxEvents];
        while (true)
        {
            int timeout = !_posted.IsEmpty ? 0 : Timers.IsEmpty ? -1 : TimerWheel.TickMilliseconds;
            int n = epoll_wait(_epoll, events, MaxEvents, timeout);
            if (n < 0)
            {
                if (Marshal.GetLastPInvokeError() == EINTR)
                {
                    continue;
                }
                Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Error, $"event loop: epoll_wait failed, errno {Marshal.GetLastPInvokeError()}");
                Thread.Sleep(10);
                continue;
            }
            // Everything the iteration writes is sent at its end, together (see FlushBatch).
            FlushBatch.Begin();
            try
            {
                RunBatch(events, n);
            }
            finally
            {
                FlushBatch.End();
            }
        }
    }

    private void RunBatch(EpollEvent* events, int n)
    {
        IoUring? ring = Ring;
        int reads = 0;
        for (int i = 0; i < n; i++)
        {
            ulong token = events[i].Data;
            if (token == WakeToken)
            {
                ulong value;
                _ = read(_wake, &value, 8);
                Volatile.Write(ref _wakePending, 0);
                continue;
            }
            ILoopSocket? socket = Volatile.Read(ref _slots)[(int)(uint)token];
            if (socket == null || socket.LoopToken != token)
            {
                continue; // closed while its event was on the way
            }
            if (ring != null && socket is SocketConnection connection)
            {
                PrepareReceive(connection, events[i].Events, ring, ref reads);
                continue;
            }
            Dispatch(socket, events[i].Events);
        }
        if (reads > 0)
        {
            ReceiveTogether(ring!, reads);
        }
        while (_posted.TryDequeue(out Action? action))
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Error, $"event loop: {e}");
            }
        }
        if (!Timers.IsEmpty)
        {
            Timers.TickIfDue();
        }
    }

    /// <summary>How many receives went to the kernel in a batch of two or more (read by tests; written by the loop alone).</summary>
    internal long ReceivesBatched { get; private set; }

    // The connections whose receives the current iteration prepared on the ring, by user data.
    private readonly SocketConnection?[] _receiving = new SocketConnection?[MaxEvents];

    private void PrepareReceive(SocketConnection connection, uint events, IoUring ring, ref int reads)
    {
        try
        {
            if (connection.OnEventsPreparingReceive(events, ring, (ulong)reads))
            {
                _receiving[reads++] = connection;
            }
        }
        catch (Exception e)
        {
            Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Error, $"event loop: {e}");
        }
    }

    /// <summary>
    /// The receives of every socket the wait reported readable go to the kernel in one submission (one system
    /// call for all of them; a single one goes alone, as a plain <c>recv</c>); each connection then goes on
    /// as after its own receive: it delivers to its protocol and reads on if the socket may hold more.
    /// </summary>
    private void ReceiveTogether(IoUring ring, int reads)
    {
        Span<int> results = stackalloc int[reads];
        int taken = 0;
        if (reads > 1)
        {
            taken = ring.Submit();
            ReceivesBatched += taken;
            results.Fill(-5); // EIO: taken with no completion seen (never expected): the connection closes
            while (ring.TryReap(out ulong index, out int result))
            {
                if (index < (ulong)reads)
                {
                    results[(int)index] = result;
                }
            }
        }
        else
        {
            ring.Discard();
        }
        // Handles are let go before any connection goes on (which may run other code, close sockets).
        for (int i = 0; i < reads; i++)
        {
            SocketConnection connection = _receiving[i]!;
            connection.ReleasePreparedReceive();
            if (i >= taken)
            {
                results[i] = connection.ReceiveNow(); // alone, or the kernel refused the submission
            }
        }
        for (int i = 0; i < reads; i++)
        {
            SocketConnection connection = _receiving[i]!;
            _receiving[i] = null;
            connection.CompleteReceive(results[i]);
        }
    }

    private static void Dispatch(ILoopSocket socket, uint events)
    {
        try
        {
            socket.OnEvents(events);
        }
        catch (Exception e)
        {
            Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Error, $"event loop: {e}");
        }
    }

    /// <summary>
    /// A non-blocking receive: the byte count, 0 at the end of the stream, or -errno. The handle is held for
    /// the call, so a close on another thread cannot hand its descriptor number to a new socket meanwhile.
    /// </summary>
    public static int Receive(SafeHandle handle, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return Transfer(handle, p, buffer.Length, send: false);
        }
    }

    /// <summary>
    /// A non-blocking send (never SIGPIPE): the byte count or -errno (-<see cref="EAGAIN"/>: the kernel's
    /// buffer is full). The handle is held for the call, as in <see cref="Receive"/>.
    /// </summary>
    public static int Send(SafeHandle handle, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            return Transfer(handle, p, data.Length, send: true);
        }
    }

    private const int EBADF = 9;
    private const int MSG_NOSIGNAL = 0x4000;

    private static int Transfer(SafeHandle handle, byte* p, int length, bool send)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            int fd = (int)handle.DangerousGetHandle();
            while (true)
            {
                nint n = send ? EventLoop.send(fd, p, length, MSG_NOSIGNAL) : recv(fd, p, length, 0);
                if (n >= 0)
                {
                    return (int)n;
                }
                int errno = Marshal.GetLastPInvokeError();
                if (errno != EINTR)
                {
                    return -errno;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            return -EBADF; // closed: neither a byte count nor EAGAIN, so the caller ends the connection
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>errno for a would-block result of <see cref="Receive"/>.</summary>
    public const int EAGAIN = 11;

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    private struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int epoll_create1(int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int epoll_ctl(int epfd, int op, int fd, EpollEvent* ev);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int epoll_wait(int epfd, EpollEvent* events, int maxevents, int timeout);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int eventfd(uint initval, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint read(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint write(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recv(int fd, byte* buf, nint len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint send(int fd, byte* buf, nint len, int flags);
}
