namespace Proxy.Http2;

/// <summary>
/// A connection error (RFC 9113 §5.4.1): the connection loop catches it once, sends GOAWAY with
/// <see cref="ErrorCode"/> and closes. Thrown on the cold path only.
/// </summary>
public sealed class Http2ConnectionException(Http2ErrorCode errorCode, string message) : Exception(message)
{
    public Http2ErrorCode ErrorCode { get; } = errorCode;
}

/// <summary>
/// A stream error (RFC 9113 §5.4.2): the stream is reset with RST_STREAM(<see cref="ErrorCode"/>);
/// the connection and its other streams go on.
/// </summary>
public sealed class Http2StreamException(int streamId, Http2ErrorCode errorCode, string message) : Exception(message)
{
    public int StreamId { get; } = streamId;
    public Http2ErrorCode ErrorCode { get; } = errorCode;
}
