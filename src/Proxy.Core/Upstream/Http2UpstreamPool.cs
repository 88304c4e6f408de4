using System.Net;
using System.Net.Sockets;
using Proxy.Core.Peers;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>
/// HTTP/2 connections to one endpoint, multiplexed: a new connection is opened only when every existing
/// one is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS (or going away). Requests that arrive while a
/// connection is being set up wait for it. As in Envoy's workers, each event loop has its own connections
/// and waiters (a slot): a request's upstream stream is read on the loop that reads its downstream, and no
/// lock is shared between loops.
/// </summary>
public sealed class Http2UpstreamPool(EndPoint address, Http2ConnectionOptions options, int maxConnections = 16) : UpstreamPool
{
    /// <summary>One event loop's connections and the requests waiting for one.</summary>
    private sealed class Slot(int index)
    {
        public readonly int Index = index;
        public readonly OwnedLock Lock = EventLoop.NewSlotLock(index); // its loop enters without atomics
        public readonly List<Http2Upstream> Connections = [];
        public readonly Queue<(ExchangeEvents Exchange, int Generation)> Waiters = new();
        public int Connecting;
        public int Waiting; // Waiters.Count, readable without the lock
        public int Open;    // Connections.Count, readable without the lock (diagnostics from other threads)
        /// <summary>Closes connections idle past the cluster's idle_timeout; armed while one may be.</summary>
        public IdleSweep? Sweep;
        public bool SweepArmed;
    }

    /// <summary>Under the slot's lock: whether <paramref name="connection"/> may take one more request.</summary>
    private bool Usable(Http2Upstream connection) =>
        connection.CanOpenStream && !connection.Retiring && !(Cluster?.Exhausted(connection.Handed) ?? false);

    /// <summary>Under the slot's lock: <paramref name="connection"/> is given a request.</summary>
    private static Http2Upstream Hand(Http2Upstream connection)
    {
        connection.Handed++;
        connection.IdleSince = 0;
        return connection;
    }

    private readonly Slot[] _slots = NewSlots();

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

    public override int OpenConnections => ConnectionCount;

    public int ConnectionCount
    {
        get
        {
            int count = 0;
            foreach (Slot slot in _slots)
            {
                count += Volatile.Read(ref slot.Open); // no lock: each would cost the slot's loop a barrier
            }
            return count;
        }
    }

    public override void Acquire(ExchangeEvents exchange, int generation, TimeSpan connectTimeout)
    {
        Slot slot = _slots[Math.Min(EventLoop.CurrentSlot, _slots.Length - 1)];
        Http2Upstream? ready = null;
        bool connect = false;
        bool full = false;
        using (slot.Lock.Enter())
        {
            foreach (Http2Upstream connection in slot.Connections)
            {
                if (Usable(connection))
                {
                    ready = Hand(connection);
                    break;
                }
            }
            if (ready == null)
            {
                if (slot.Connecting > 0 || (slot.Connections.Count < maxConnections && TryReserveConnection()))
                {
                    slot.Waiters.Enqueue((exchange, generation));
                    slot.Waiting = slot.Waiters.Count;
                    if (slot.Connecting == 0)
                    {
                        slot.Connecting++;
                        connect = true;
                    }
                }
                else
                {
                    // Every connection is at its stream limit and no more may be opened: fail fast.
                    full = true;
                }
            }
        }
        if (ready != null)
        {
            exchange.OnUpstreamReady(generation, ready);
        }
        else if (connect)
        {
            _ = ConnectAsync(slot, connectTimeout);
        }
        else if (full)
        {
            exchange.OnUpstreamFailed(generation, "upstream connection and stream limits reached");
        }
    }

    private async Task ConnectAsync(Slot slot, TimeSpan timeout)
    {
        (SocketConnection? connection, string? error) = await OpenAsync(Address, timeout);
        if (connection == null)
        {
            List<(ExchangeEvents, int)> failed;
            ConnectFailed();
            using (slot.Lock.Enter())
            {
                slot.Connecting--;
                failed = [.. slot.Waiters];
                slot.Waiters.Clear();
                slot.Waiting = 0;
            }
            foreach (var (exchange, generation) in failed)
            {
                exchange.OnUpstreamFailed(generation, error!);
            }
            return;
        }

        // The cluster's max_headers_count (of the snapshot now live) holds for the connection's life.
        Http2ConnectionOptions connectionOptions = Cluster is { MaxHeadersCount: int maxHeaders } && maxHeaders != options.MaxHeaderFields
            ? options with { MaxHeaderFields = maxHeaders } : options;
        var upstream = new Http2Upstream(connection, this, connectionOptions) { Slot = slot.Index };
        using (slot.Lock.Enter())
        {
            slot.Connecting--;
            slot.Connections.Add(upstream);
            Volatile.Write(ref slot.Open, slot.Connections.Count);
        }
        FlushBatch.Begin();
        try
        {
            upstream.Start();
            ServeWaiters(this, slot);
            OnStreamCapacity(upstream, serve: false); // no request took it: its idle time starts now
        }
        finally
        {
            FlushBatch.End();
        }
        _ = connection.RunAsync(upstream);
    }

    /// <summary>A stream of <paramref name="connection"/> ended or the peer raised its limit: requests waiting in its slot may fit now.</summary>
    internal void OnStreamCapacity(Http2Upstream connection) => OnStreamCapacity(connection, serve: true);

    private void OnStreamCapacity(Http2Upstream connection, bool serve)
    {
        if (IsRetired)
        {
            CloseIdleConnections();
        }
        Slot slot = _slots[connection.Slot];
        if (serve && Volatile.Read(ref slot.Waiting) > 0)
        {
            ServeWaiters(this, slot);
        }
        if (connection.Protocol.ActiveStreamCount == 0)
        {
            OnIdle(slot, connection);
        }
    }

    /// <summary>
    /// <paramref name="connection"/> has no stream: one that carried max_requests_per_connection goes away
    /// now; another starts its idle time (the slot's sweep closes it after idle_timeout unless a request takes it).
    /// </summary>
    private void OnIdle(Slot slot, Http2Upstream connection)
    {
        long idleTimeoutMs = Cluster?.IdleTimeoutMs ?? 0;
        bool exhausted = false, arm = false;
        using (slot.Lock.Enter())
        {
            if (connection.Retiring || connection.Protocol.ActiveStreamCount != 0)
            {
                return;
            }
            if (Cluster?.Exhausted(connection.Handed) ?? false)
            {
                connection.Retiring = exhausted = true;
            }
            else if (idleTimeoutMs > 0)
            {
                connection.IdleSince = Environment.TickCount64;
                if (!slot.SweepArmed)
                {
                    slot.SweepArmed = arm = true;
                }
            }
        }
        if (exhausted)
        {
            GoAway(connection, "max_requests_per_connection reached");
        }
        else if (arm)
        {
            (slot.Sweep ??= NewSweep(slot)).Arm(connection.IdleSince + idleTimeoutMs);
        }
    }

    /// <summary>Closes the slot's connections idle past idle_timeout; comes again while others idle.</summary>
    // Its own method: a lambda capturing the slot in the caller would allocate its closure on every call.
    private IdleSweep NewSweep(Slot slot) => new(() => SweepIdle(slot));

    private void SweepIdle(Slot slot)
    {
        long idleTimeoutMs = Cluster?.IdleTimeoutMs ?? 0;
        long now = Environment.TickCount64;
        long next = long.MaxValue;
        List<Http2Upstream>? expired = null;
        using (slot.Lock.Enter())
        {
            foreach (Http2Upstream connection in slot.Connections)
            {
                if (connection.Protocol.ActiveStreamCount != 0)
                {
                    connection.IdleSince = 0; // busy: its idle time starts again when its last stream ends
                    continue;
                }
                if (connection.Retiring || connection.IdleSince == 0)
                {
                    continue;
                }
                if (idleTimeoutMs > 0 && now - connection.IdleSince >= idleTimeoutMs)
                {
                    connection.Retiring = true;
                    (expired ??= []).Add(connection);
                }
                else if (idleTimeoutMs > 0)
                {
                    next = Math.Min(next, connection.IdleSince + idleTimeoutMs);
                }
            }
            slot.SweepArmed = next != long.MaxValue && !IsRetired;
        }
        if (expired != null)
        {
            foreach (Http2Upstream connection in expired)
            {
                GoAway(connection, "idle timeout");
            }
        }
        if (slot.SweepArmed)
        {
            slot.Sweep!.Arm(next);
        }
    }

    private static void GoAway(Http2Upstream connection, string reason)
    {
        connection.Protocol.GoAway(Http2ErrorCode.NoError, reason);
        connection.Connection.CloseAfterFlush();
    }

    public override void Retire()
    {
        MarkRetired();
        CloseIdleConnections();
        foreach (Slot slot in _slots)
        {
            slot.Sweep?.Dispose(); // the timer lets the pool go
        }
    }

    private void CloseIdleConnections()
    {
        foreach (Slot slot in _slots)
        {
            List<Http2Upstream> idle;
            using (slot.Lock.Enter())
            {
                if (slot.Waiters.Count > 0)
                {
                    continue;
                }
                idle = slot.Connections.FindAll(static c => c.Protocol.ActiveStreamCount == 0);
            }
            foreach (Http2Upstream connection in idle)
            {
                GoAway(connection, "cluster removed");
            }
        }
    }

    private static void ServeWaiters(Http2UpstreamPool pool, Slot slot)
    {
        while (true)
        {
            Http2Upstream? ready = null;
            (ExchangeEvents Exchange, int Generation) waiter;
            using (slot.Lock.Enter())
            {
                if (slot.Waiters.Count == 0)
                {
                    return;
                }
                foreach (Http2Upstream connection in slot.Connections)
                {
                    if (pool.Usable(connection))
                    {
                        ready = Hand(connection);
                        break;
                    }
                }
                if (ready == null)
                {
                    return;
                }
                waiter = slot.Waiters.Dequeue();
                slot.Waiting = slot.Waiters.Count;
            }
            waiter.Exchange.OnUpstreamReady(waiter.Generation, ready);
        }
    }

    internal void Remove(Http2Upstream connection)
    {
        Slot slot = _slots[connection.Slot];
        bool removed;
        using (slot.Lock.Enter())
        {
            removed = slot.Connections.Remove(connection);
            Volatile.Write(ref slot.Open, slot.Connections.Count);
        }
        if (removed)
        {
            ReleaseConnection();
        }
    }
}
