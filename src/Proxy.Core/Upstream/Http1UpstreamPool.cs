using System.Net;
using System.Net.Sockets;
using Proxy.Core.Forwarding;
using Proxy.Core.Transport;

namespace Proxy.Core.Upstream;

/// <summary>Keep-alive HTTP/1.1 connections to one endpoint: an idle one is reused, else a new one is opened.</summary>
public sealed class Http1UpstreamPool(EndPoint address, int maxConnections = 1024) : UpstreamPool
{
    private readonly Stack<Http1Upstream> _idle = new();
    private int _open;

    public EndPoint Address { get; } = address;

    /// <summary>Connections open or being opened (idle ones included).</summary>
    public int OpenCount
    {
        get
        {
            lock (_idle)
            {
                return _open;
            }
        }
    }

    public override int OpenConnections => OpenCount;

    public int IdleCount
    {
        get
        {
            lock (_idle)
            {
                return _idle.Count;
            }
        }
    }

    public override void Acquire(Exchange exchange, int generation, TimeSpan connectTimeout)
    {
        while (true)
        {
            Http1Upstream? idle = null;
            lock (_idle)
            {
                while (_idle.Count > 0 && idle == null)
                {
                    Http1Upstream candidate = _idle.Pop();
                    if (!candidate.IsClosed)
                    {
                        idle = candidate;
                    }
                }
                if (idle == null)
                {
                    if (_open >= maxConnections || !TryReserveConnection())
                    {
                        break;
                    }
                    _open++;
                }
            }
            if (idle == null)
            {
                _ = ConnectAsync(exchange, generation, connectTimeout);
                return;
            }
            if (!exchange.OnUpstreamReady(generation, idle))
            {
                Return(idle); // the request was cancelled meanwhile: the connection stays free
            }
            return;
        }
        exchange.OnUpstreamFailed(generation, "upstream connection limit reached");
    }

    private async Task ConnectAsync(Exchange exchange, int generation, TimeSpan timeout)
    {
        (SocketConnection? connection, string? error) = await OpenAsync(Address, timeout);
        if (connection == null)
        {
            lock (_idle)
            {
                _open--;
            }
            ConnectFailed();
            exchange.OnUpstreamFailed(generation, error!);
            return;
        }
        var upstream = new Http1Upstream(connection, this);
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
        lock (_idle)
        {
            if (!IsRetired)
            {
                _idle.Push(connection);
                return;
            }
        }
        connection.CloseIdle();
    }

    public override void Retire()
    {
        Http1Upstream[] idle;
        lock (_idle)
        {
            MarkRetired();
            idle = [.. _idle];
            _idle.Clear();
        }
        foreach (Http1Upstream connection in idle)
        {
            connection.CloseIdle();
        }
    }

    internal void Remove(Http1Upstream connection)
    {
        lock (_idle)
        {
            _open--;
        }
        ReleaseConnection();
        _ = connection;
    }
}
