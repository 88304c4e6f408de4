using System.Net;
using System.Net.Sockets;
using Proxy.Core.Peers;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>
/// Keep-alive HTTP/1.1 connections to one endpoint: an idle one is reused, else a new one is opened. As in
/// Envoy's workers, each event loop keeps its own idle connections (a request reuses one its own loop
/// reads, and no lock is shared between loops); the connection count and limits are the endpoint's.
/// </summary>
public sealed class Http1UpstreamPool(EndPoint address, int maxConnections = 1024) : UpstreamPool
{
    /// <summary>One event loop's idle connections, under a lock that loop enters without atomics.</summary>
    private sealed class Slot(int index) : Stack<Http1Upstream>
    {
        public readonly OwnedLock Lock = EventLoop.NewSlotLock(index);
        /// <summary>Closes connections idle past the cluster's idle_timeout; armed while any connection idles here.</summary>
        public IdleSweep? Sweep;
        public bool SweepArmed;
    }

    /// <summary>The cluster's idle_timeout in milliseconds; 0: none.</summary>
    private long IdleTimeoutMs => Cluster?.IdleTimeoutMs ?? 0;

    private readonly Slot[] _idle = NewSlots();
    private int _open;

    private static Slot[] NewSlots()
    {
        var slots = new Slot[EventLoop.SlotCount];
        for (int i = 0; i < slots.Length; i++)
        {
            slots[i] = new Slot(i);
        }
        return slots;
    }


    public EndPoint Address { get; } = address;

    /// <summary>Connections open or being opened (idle ones included).</summary>
    public int OpenCount => Volatile.Read(ref _open);

    public override int OpenConnections => OpenCount;

    public int IdleCount
    {
        get
        {
            int idle = 0;
            foreach (Slot slot in _idle)
            {
                using (slot.Lock.Enter())
                {
                    idle += slot.Count;
                }
            }
            return idle;
        }
    }

    public override void Acquire(ExchangeEvents exchange, int generation, TimeSpan connectTimeout)
    {
        int slotIndex = Math.Min(EventLoop.CurrentSlot, _idle.Length - 1);
        Slot slot = _idle[slotIndex];
        Http1Upstream? idle = null;
        // Connections idle past idle_timeout are closed by the slot's sweep, within a tick of expiring.
        using (slot.Lock.Enter())
        {
            while (slot.Count > 0 && idle == null)
            {
                Http1Upstream candidate = slot.Pop();
                if (!candidate.IsClosed)
                {
                    idle = candidate;
                }
            }
        }
        if (idle == null)
        {
            if (Interlocked.Increment(ref _open) > maxConnections || !TryReserveConnection())
            {
                Interlocked.Decrement(ref _open);
                exchange.OnUpstreamFailed(generation, "upstream connection limit reached");
                return;
            }
            _ = ConnectAsync(exchange, generation, connectTimeout, slotIndex);
            return;
        }
        if (!exchange.OnUpstreamReady(generation, idle))
        {
            Return(idle); // the request was cancelled meanwhile: the connection stays free
        }
    }

    private async Task ConnectAsync(ExchangeEvents exchange, int generation, TimeSpan timeout, int slot)
    {
        (SocketConnection? connection, string? error) = await OpenAsync(Address, timeout);
        if (connection == null)
        {
            Interlocked.Decrement(ref _open);
            ConnectFailed();
            exchange.OnUpstreamFailed(generation, error!);
            return;
        }
        var upstream = new Http1Upstream(connection, this) { Slot = slot };
        _ = connection.RunAsync(upstream);
        FlushBatch.Begin();
        try
        {
            if (!exchange.OnUpstreamReady(generation, upstream))
            {
                Return(upstream); // the request was cancelled while we connected: keep the connection for the next
            }
        }
        finally
        {
            FlushBatch.End();
        }
    }

    internal void Return(Http1Upstream connection)
    {
        Slot slot = _idle[connection.Slot];
        long idleTimeoutMs = IdleTimeoutMs;
        bool arm = false, pushed = false;
        using (slot.Lock.Enter())
        {
            if (!IsRetired)
            {
                pushed = true;
                connection.IdleSince = Environment.TickCount64;
                slot.Push(connection);
                if (idleTimeoutMs > 0 && !slot.SweepArmed)
                {
                    slot.SweepArmed = arm = true;
                }
            }
        }
        if (arm)
        {
            (slot.Sweep ??= NewSweep(slot)).Arm(connection.IdleSince + idleTimeoutMs);
        }
        else if (!pushed)
        {
            connection.CloseIdle();
        }
    }

    /// <summary>
    /// The sweep of one slot: connections idle past idle_timeout close (Envoy's upstream idle timer); the
    /// sweep comes again when the oldest of the others would expire, and stops when none idles here.
    /// </summary>
    // Its own method: a lambda capturing the slot in the caller would allocate its closure on every call.
    private IdleSweep NewSweep(Slot slot) => new(() => SweepIdle(slot));

    private void SweepIdle(Slot slot)
    {
        long idleTimeoutMs = IdleTimeoutMs;
        long now = Environment.TickCount64;
        long oldest = long.MaxValue;
        List<Http1Upstream>? expired = null;
        using (slot.Lock.Enter())
        {
            Http1Upstream[] idle = slot.ToArray(); // newest first
            slot.Clear();
            for (int i = idle.Length - 1; i >= 0; i--)
            {
                Http1Upstream connection = idle[i];
                if (connection.IsClosed)
                {
                    continue;
                }
                if (idleTimeoutMs <= 0 || now - connection.IdleSince < idleTimeoutMs)
                {
                    slot.Push(connection);
                    oldest = Math.Min(oldest, connection.IdleSince);
                }
                else
                {
                    (expired ??= []).Add(connection);
                }
            }
            slot.SweepArmed = idleTimeoutMs > 0 && slot.Count > 0 && !IsRetired;
        }
        if (expired != null)
        {
            foreach (Http1Upstream connection in expired)
            {
                connection.CloseIdle();
            }
        }
        if (slot.SweepArmed)
        {
            slot.Sweep!.Arm(oldest + idleTimeoutMs);
        }
    }

    public override void Retire()
    {
        MarkRetired(); // a connection returned after this closes instead (Return reads it under the slot's lock)
        var idle = new List<Http1Upstream>();
        foreach (Slot slot in _idle)
        {
            using (slot.Lock.Enter())
            {
                idle.AddRange(slot);
                slot.Clear();
                slot.SweepArmed = false;
            }
            slot.Sweep?.Dispose(); // the timer lets the pool go
        }
        foreach (Http1Upstream connection in idle)
        {
            connection.CloseIdle();
        }
    }

    internal void Remove(Http1Upstream connection)
    {
        Interlocked.Decrement(ref _open);
        ReleaseConnection();
        _ = connection;
    }
}
