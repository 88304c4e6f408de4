using System.Buffers;
using Proxy.Http2;

namespace Proxy.Core.Peers;

/// <summary>
/// One side of an exchange: the downstream connection the request came in on, or the
/// upstream connection it was sent out on. HTTP/2 and HTTP/1.1 connections both implement it; for
/// HTTP/1.1 the stream id is ignored.
/// </summary>
public interface IExchangePeer
{
    bool SendHeaders(int streamId, HeaderList headers, bool endStream);

    /// <summary>Sends what flow control allows now; returns the octets taken, or -1 when the stream is gone.</summary>
    int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream);

    void Reset(int streamId, Http2ErrorCode errorCode);

    /// <summary>
    /// The exchange is over (its response complete) while the client is still sending the request (RFC
    /// 9113 §8.1 lets a complete response come first). By default the stream is reset with NO_ERROR: the
    /// client stops sending without an error.
    /// </summary>
    void AbandonRequest(int streamId) => Reset(streamId, Http2ErrorCode.NoError);

    /// <summary>The exchange has passed on <paramref name="bytes"/> received octets: the sender may send more.</summary>
    void Consume(int streamId, int bytes);

    /// <summary>Calls <see cref="ExchangeEvents.OnWritable"/> when this connection can take more data.</summary>
    void AddBlocked(ExchangeEvents exchange, int generation);

    void RemoveBlocked(ExchangeEvents exchange);

    /// <summary>The peer's address (for source-IP hashing); null when unknown.</summary>
    System.Net.EndPoint? RemoteEndPoint { get; }

    /// <summary>The address the connection was accepted on (RBAC's destination_ip/port); null when unknown.</summary>
    System.Net.EndPoint? LocalEndPoint => null;

    /// <summary>TLS on the connection (the peer's identity); null when plaintext.</summary>
    Transport.Tls.TlsSession? Tls => null;

    /// <summary>Where an intercepted connection was going (SO_ORIGINAL_DST); null when it was not redirected.</summary>
    System.Net.EndPoint? OriginalDestination => null;

    /// <summary>
    /// Takes <paramref name="bytes"/> of this (downstream) connection's budget for request bodies kept for
    /// a retry; false when its streams together already keep per_connection_buffer_limit_bytes.
    /// </summary>
    bool TryReserveReplay(int bytes) => true;

    /// <summary>Gives back what <see cref="TryReserveReplay"/> took.</summary>
    void ReleaseReplay(int bytes)
    {
    }

    /// <summary>Schedules a flush of what was written at the end of the current input batch.</summary>
    void ScheduleFlush();
}

/// <summary>An upstream connection as the exchange sees it: a peer on which it can open a stream.</summary>
public interface IUpstreamConnection : IExchangePeer
{
    /// <summary>Opens a stream with the request's header block; returns its id, or 0 when this connection has no room.</summary>
    int OpenStream(HeaderList headers, bool endStream, ExchangeEvents exchange, int generation);
}
