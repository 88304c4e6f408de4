using System.Buffers;
using Proxy.Core.Diagnostics;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Peers;

/// <summary>
/// An HTTP/2 connection of the proxy, either side: the socket, the protocol engine, and the exchanges
/// waiting for its flow-control windows to open. Subclasses turn protocol events into exchange events.
/// </summary>
public abstract class Http2ProxyConnection : IConnectionProtocol, IHttp2ConnectionHandler, IExchangePeer
{
    private readonly List<(ExchangeEvents Exchange, int Generation)> _blocked = [];
    private readonly OwnedLock _blockedLock;
    private (ExchangeEvents Exchange, int Generation)[] _wakeScratch = new (ExchangeEvents, int)[8];
    /// <summary>Fields of the header block being decoded; handed to the exchange by swapping lists.</summary>
    protected HeaderList Scratch = new();

    protected Http2ProxyConnection(SocketConnection connection, bool isServer, Http2ConnectionOptions options)
    {
        Connection = connection;
        _blockedLock = new OwnedLock(connection.Output.SyncRoot.OwnerThreadId);
        Protocol = new Http2Connection(isServer, this, connection.Output, options, connection.Output.SyncRoot);
        connection.Drained = OnOutputDrained;
    }

    /// <summary>
    /// The send queue emptied: input that was paused for it resumes, and exchanges that stopped writing at
    /// the high watermark go on (the low watermark is an empty queue).
    /// </summary>
    private void OnOutputDrained()
    {
        Connection.ResumeInput();
        if (!HasBlocked)
        {
            return;
        }
        FlushBatch.Begin();
        try
        {
            OnWindowUpdate(0);
        }
        finally
        {
            FlushBatch.End();
        }
    }

    private int _blockedCount; // _blocked.Count, readable without the lock

    /// <summary>Whether anything waits for this connection's windows or send queue.</summary>
    protected virtual bool HasBlocked => Volatile.Read(ref _blockedCount) > 0;

    public SocketConnection Connection { get; }
    public Http2Connection Protocol { get; }

    // ---- IConnectionProtocol ------------------------------------------------------------------

    public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
    {
        FlushBatch.Begin();
        bool open;
        try
        {
            open = Protocol.ProcessInput(ref buffer);
            // SETTINGS ACKs, PING answers and WINDOW_UPDATEs written while processing.
            FlushBatch.Add(Connection.Output);
        }
        finally
        {
            FlushBatch.End();
        }
        if (!open)
        {
            Connection.CloseAfterFlush();
            return InputStatus.Close;
        }
        // A peer that sends (PINGs, SETTINGS, resets) but does not read would grow our queue of answers
        // without bound: stop reading it until what we owe it has gone out.
        return Connection.IsOutputFull ? InputStatus.Pause : InputStatus.Continue;
    }

    public virtual void OnClosed() => Protocol.OnTransportClosed();

    // ---- IExchangePeer ------------------------------------------------------------------------

    public bool SendHeaders(int streamId, HeaderList headers, bool endStream) => Protocol.SendHeaders(streamId, headers, endStream);

    public int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (!data.IsEmpty && Connection.IsOutputFull)
        {
            // High watermark: the peer is not reading. The exchange keeps what it has (and so withholds
            // credit from its other side) and is woken when the queue drains.
            return Connection.IsClosed ? -1 : 0;
        }
        return Protocol.SendData(streamId, data, endStream);
    }

    public void Reset(int streamId, Http2ErrorCode errorCode) => Protocol.ResetStream(streamId, errorCode);

    public virtual void AbandonRequest(int streamId) => Reset(streamId, Http2ErrorCode.NoError);

    public void Consume(int streamId, int bytes)
    {
        Protocol.ConsumeData(streamId, bytes);
        // A WINDOW_UPDATE may have been written.
        FlushBatch.Add(Connection.Output);
    }

    public void ScheduleFlush() => FlushBatch.Add(Connection.Output);

    private ReplayBudget _replay;

    /// <inheritdoc/>
    public bool TryReserveReplay(int bytes) => _replay.TryReserve(bytes, Connection.BufferLimit);

    /// <inheritdoc/>
    public void ReleaseReplay(int bytes) => _replay.Release(bytes);

    public System.Net.EndPoint? RemoteEndPoint => Connection.RemoteEndPoint;

    public System.Net.EndPoint? LocalEndPoint => Connection.LocalEndPoint;

    public Transport.Tls.TlsSession? Tls => Connection.Tls;

    /// <summary>Where the connection was going before an iptables redirect (set by the listener); null when not redirected.</summary>
    public System.Net.EndPoint? OriginalDestination { get; set; }

    public void AddBlocked(ExchangeEvents exchange, int generation)
    {
        using (_blockedLock.Enter())
        {
            foreach (var entry in _blocked)
            {
                if (ReferenceEquals(entry.Exchange, exchange) && entry.Generation == generation)
                {
                    return;
                }
            }
            _blocked.Add((exchange, generation));
            _blockedCount = _blocked.Count;
        }
    }

    public void RemoveBlocked(ExchangeEvents exchange)
    {
        using (_blockedLock.Enter())
        {
            for (int i = _blocked.Count - 1; i >= 0; i--)
            {
                if (ReferenceEquals(_blocked[i].Exchange, exchange))
                {
                    _blocked.RemoveAt(i);
                }
            }
            _blockedCount = _blocked.Count;
        }
    }

    // ---- IHttp2ConnectionHandler --------------------------------------------------------------

    public abstract void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind);

    public void OnHeader(Http2Stream stream, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Http2.Hpack.HpackFieldFlags flags) =>
        Scratch.Add(staticIndex, name, value, flags);

    public void OnHeaders(Http2Stream stream, HeaderList fields) => Scratch.CopyFrom(fields);

    public abstract void OnHeadersEnd(Http2Stream stream, bool endStream);

    public abstract void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream);

    public abstract void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote);

    /// <summary>Windows opened: every exchange waiting on this connection tries again.</summary>
    public virtual void OnWindowUpdate(int streamId)
    {
        int count;
        using (_blockedLock.Enter())
        {
            count = _blocked.Count;
            if (count == 0)
            {
                return;
            }
            if (_wakeScratch.Length < count)
            {
                _wakeScratch = new (ExchangeEvents, int)[Math.Max(count, _wakeScratch.Length * 2)];
            }
            _blocked.CopyTo(_wakeScratch);
        }
        for (int i = 0; i < count; i++)
        {
            var (exchange, generation) = _wakeScratch[i];
            _wakeScratch[i] = default;
            exchange.OnWritable(generation);
        }
    }

    public virtual void OnSettings(in Http2Settings peerSettings)
    {
    }

    public virtual void OnGoAway(int lastStreamId, Http2ErrorCode errorCode)
    {
    }

    public virtual void OnConnectionClosed(Http2ErrorCode errorCode, bool remote, string reason)
    {
        if (!remote && errorCode != Http2ErrorCode.NoError)
        {
            ProxyLog.Peer(LogLevel.Info, $"{(Protocol.IsServer ? "downstream" : "upstream")} {Connection.RemoteAddress}: HTTP/2 connection error {errorCode}: {reason}");
        }
        Connection.CloseAfterFlush();
    }
}
