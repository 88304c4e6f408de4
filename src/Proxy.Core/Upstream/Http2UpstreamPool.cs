using System.Net;
using System.Net.Sockets;
using Proxy.Core.Forwarding;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>
/// HTTP/2 connections to one endpoint, multiplexed: a new connection is opened only when every existing
/// one is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS (or going away). Requests that arrive while a
/// connection is being set up wait for it.
/// </summary>
public sealed class Http2UpstreamPool(EndPoint address, Http2ConnectionOptions options, int maxConnections = 16) : UpstreamPool
{
    private readonly List<Http2Upstream> _connections = [];
    private readonly Queue<(Exchange Exchange, int Generation)> _waiters = new();
    private int _connecting;

    public EndPoint Address { get; } = address;

    public override int OpenConnections => ConnectionCount;

    public int ConnectionCount
    {
        get
        {
            lock (_connections)
            {
                return _connections.Count;
            }
        }
    }

    public override void Acquire(Exchange exchange, int generation, TimeSpan connectTimeout)
    {
        Http2Upstream? ready = null;
        bool connect = false;
        bool full = false;
        lock (_connections)
        {
            foreach (Http2Upstream connection in _connections)
            {
                if (connection.CanOpenStream)
                {
                    ready = connection;
                    break;
                }
            }
            if (ready == null)
            {
                if (_connecting > 0 || (_connections.Count < maxConnections && TryReserveConnection()))
                {
                    _waiters.Enqueue((exchange, generation));
                    _waiting = _waiters.Count;
                    if (_connecting == 0)
                    {
                        _connecting++;
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
            _ = ConnectAsync(connectTimeout);
        }
        else if (full)
        {
            exchange.OnUpstreamFailed(generation, "upstream connection and stream limits reached");
        }
    }

    private async Task ConnectAsync(TimeSpan timeout)
    {
        (SocketConnection? connection, string? error) = await OpenAsync(Address, timeout);
        if (connection == null)
        {
            List<(Exchange, int)> failed;
            ConnectFailed();
            lock (_connections)
            {
                _connecting--;
                failed = [.. _waiters];
                _waiters.Clear();
                _waiting = 0;
            }
            foreach (var (exchange, generation) in failed)
            {
                exchange.OnUpstreamFailed(generation, error!);
            }
            return;
        }

        var upstream = new Http2Upstream(connection, this, options);
        lock (_connections)
        {
            _connecting--;
            _connections.Add(upstream);
        }
        FlushBatch.Begin();
        try
        {
            upstream.Start();
            ServeWaiters();
        }
        finally
        {
            FlushBatch.End();
        }
        _ = connection.RunAsync(upstream);
    }

    /// <summary>A stream ended or the peer raised its limit: waiting requests may fit now.</summary>
    internal void OnStreamCapacity()
    {
        if (IsRetired)
        {
            CloseIdleConnections();
        }
        if (Volatile.Read(ref _waiting) == 0)
        {
            return;
        }
        ServeWaiters();
    }

    public override void Retire()
    {
        MarkRetired();
        CloseIdleConnections();
    }

    private void CloseIdleConnections()
    {
        List<Http2Upstream> idle;
        lock (_connections)
        {
            if (_waiters.Count > 0)
            {
                return;
            }
            idle = _connections.FindAll(static c => c.Protocol.ActiveStreamCount == 0);
        }
        foreach (Http2Upstream connection in idle)
        {
            connection.Protocol.GoAway(Http2ErrorCode.NoError, "cluster removed");
            connection.Connection.CloseAfterFlush();
        }
    }

    private int _waiting; // _waiters.Count, readable without the lock

    private void ServeWaiters()
    {
        while (true)
        {
            Http2Upstream? ready = null;
            (Exchange Exchange, int Generation) waiter;
            lock (_connections)
            {
                if (_waiters.Count == 0)
                {
                    return;
                }
                foreach (Http2Upstream connection in _connections)
                {
                    if (connection.CanOpenStream)
                    {
                        ready = connection;
                        break;
                    }
                }
                if (ready == null)
                {
                    return;
                }
                waiter = _waiters.Dequeue();
                _waiting = _waiters.Count;
            }
            waiter.Exchange.OnUpstreamReady(waiter.Generation, ready);
        }
    }

    internal void Remove(Http2Upstream connection)
    {
        bool removed;
        lock (_connections)
        {
            removed = _connections.Remove(connection);
        }
        if (removed)
        {
            ReleaseConnection();
        }
    }
}
