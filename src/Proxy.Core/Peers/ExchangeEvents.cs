using System.Buffers;
using Proxy.Http2;

namespace Proxy.Core.Peers;

/// <summary>
/// What the connections on either side of a request, and the upstream pools, tell the exchange that
/// carries it (Forwarding's Exchange is the one implementation). Every event carries the generation (or
/// upstream token) the caller was given: an event for a request the exchange has moved on from is ignored.
/// </summary>
public abstract class ExchangeEvents
{
    /// <summary>A connection this exchange waits on can take more data (WINDOW_UPDATE, or its send queue drained).</summary>
    public abstract void OnWritable(int generation);

    /// <summary>
    /// The pool has a connection for the request: it opens its upstream stream. False when the exchange no
    /// longer wants it (the client reset or went away meanwhile): the pool takes the connection back at once.
    /// </summary>
    public abstract bool OnUpstreamReady(int generation, IUpstreamConnection connection);

    /// <summary>No upstream connection can be had (connect failure, limits): the client gets the error.</summary>
    public abstract void OnUpstreamFailed(int generation, string reason);

    /// <summary>A response header block (1xx or final), swapped in from the upstream connection's scratch list.</summary>
    public abstract void OnResponseHeaders(int generation, ref HeaderList headers, bool endStream);

    /// <summary>Response body octets; they stay valid only for the call.</summary>
    public abstract void OnResponseData(int generation, in ReadOnlySequence<byte> data, bool endStream);

    /// <summary>The response's trailers, swapped in from the upstream connection's scratch list; the response ends.</summary>
    public abstract void OnResponseTrailers(int generation, ref HeaderList trailers);

    /// <summary>The upstream reset the stream, or its connection was lost.</summary>
    public abstract void OnUpstreamReset(int generation, Http2ErrorCode errorCode);
}
