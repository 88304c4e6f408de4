using System.Buffers;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

/// <summary>A client's HTTP/2 connection to the proxy: each request stream becomes an <see cref="Exchange"/>.</summary>
public sealed class Http2Downstream(SocketConnection connection, Func<RouteConfiguration?> routes, Http2ConnectionOptions options)
    : Http2ProxyConnection(connection, isServer: true, options)
{
    public void Start()
    {
        Protocol.Start();
        Connection.Output.Flush();
    }

    public override void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind) => Scratch.Clear();

    public override void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        if (stream.UserState is Exchange existing)
        {
            existing.OnRequestTrailers(stream.UserTag, ref Scratch);
            return;
        }
        RouteConfiguration? table = routes();
        Exchange exchange = Exchange.Rent(this, stream.Id, out int generation);
        stream.UserState = exchange;
        stream.UserTag = generation;
        if (table == null)
        {
            table = RouteConfiguration.Empty;
        }
        exchange.OnRequestHeaders(generation, ref Scratch, table, endStream);
    }

    public override void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (stream.UserState is Exchange exchange)
        {
            exchange.OnRequestData(stream.UserTag, data, endStream);
        }
        else
        {
            Protocol.ConsumeData(stream.Id, (int)data.Length);
        }
    }

    public override void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote)
    {
        if (!remote && ProxyLog.IsEnabled(LogLevel.Debug))
        {
            ProxyLog.Peer(LogLevel.Debug, $"downstream {Connection.RemoteAddress}: stream {stream.Id} reset with {errorCode}");
        }
        if (stream.UserState is Exchange exchange)
        {
            exchange.OnDownstreamReset(stream.UserTag);
        }
    }
}
