using System.Buffers;
using Proxy.Core.Peers;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>One multiplexed HTTP/2 connection from the proxy to an upstream endpoint.</summary>
public sealed class Http2Upstream : Http2ProxyConnection, IUpstreamConnection
{
    private readonly Http2UpstreamPool _pool;

    /// <summary>The pool slot (event loop) it was opened for.</summary>
    internal int Slot { get; init; }

    public Http2Upstream(SocketConnection connection, Http2UpstreamPool pool, Http2ConnectionOptions options)
        : base(connection, isServer: false, options)
    {
        _pool = pool;
    }

    public void Start()
    {
        Protocol.Start();
        Connection.Output.Flush();
    }

    public bool CanOpenStream => !Connection.IsClosed && Protocol.CanOpenStream;

    // Under its pool slot's lock: requests handed to it (max_requests_per_connection), since when it has had
    // no stream (0: busy, or handed a request since; for idle_timeout), and whether it takes no more.
    internal int Handed;
    internal long IdleSince;
    internal bool Retiring;

    public int OpenStream(HeaderList headers, bool endStream, ExchangeEvents exchange, int generation) =>
        Protocol.OpenStream(headers, endStream, exchange, generation);

    private Http2HeaderBlockKind _kind;

    public override void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind)
    {
        _kind = kind;
        Scratch.Clear();
    }

    public override void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        if (stream.UserState is not ExchangeEvents exchange)
        {
            return;
        }
        if (_kind == Http2HeaderBlockKind.Trailers)
        {
            exchange.OnResponseTrailers(stream.UserTag, ref Scratch);
        }
        else
        {
            exchange.OnResponseHeaders(stream.UserTag, ref Scratch, endStream);
        }
        if (endStream)
        {
            _pool.OnStreamCapacity(this);
        }
    }

    public override void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (stream.UserState is ExchangeEvents exchange)
        {
            exchange.OnResponseData(stream.UserTag, data, endStream);
        }
        else
        {
            Protocol.ConsumeData(stream.Id, (int)data.Length);
        }
        if (endStream)
        {
            _pool.OnStreamCapacity(this);
        }
    }

    public override void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote)
    {
        if (stream.UserState is ExchangeEvents exchange)
        {
            exchange.OnUpstreamReset(stream.UserTag, errorCode);
        }
        _pool.OnStreamCapacity(this);
    }

    public override void OnSettings(in Http2Settings peerSettings) => _pool.OnStreamCapacity(this);

    public override void OnGoAway(int lastStreamId, Http2ErrorCode errorCode) => _pool.Remove(this);

    public override void OnClosed()
    {
        _pool.Remove(this);
        base.OnClosed();
    }
}
