using System.Buffers;

namespace Proxy.Http2;

/// <summary>Which header block of a stream is arriving.</summary>
public enum Http2HeaderBlockKind : byte
{
    /// <summary>Server side: the request's header block (a new stream).</summary>
    Request,
    /// <summary>Client side: a response header block (1xx informational or final).</summary>
    Response,
    /// <summary>Trailers: the last block of the stream, with END_STREAM.</summary>
    Trailers,
}

/// <summary>
/// The application side of an <see cref="Http2Connection"/>. Every callback comes from the thread that
/// calls <see cref="Http2Connection.ProcessInput"/>, outside the connection's lock, so a callback may call
/// the connection's send methods (and those of other connections). Spans and sequences are valid only
/// during the call.
/// </summary>
public interface IHttp2ConnectionHandler
{
    void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind);

    /// <summary>
    /// One validated field (RFC 9113 §8.2–8.3). Pseudo-header fields come first. <paramref name="staticIndex"/>
    /// and <paramref name="flags"/> say what the decoder knew (a static name or entry, never indexed);
    /// <see cref="HeaderList.Add(int, ReadOnlySpan{byte}, ReadOnlySpan{byte}, Hpack.HpackFieldFlags)"/> keeps it for re-encoding.
    /// </summary>
    void OnHeader(Http2Stream stream, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Hpack.HpackFieldFlags flags);

    /// <summary>
    /// Every field of a block at once, in place of one <see cref="OnHeader"/> per field: the connection
    /// delivers so a block that repeats one it decoded before, octet for octet with the compression context
    /// unchanged (a gRPC client's requests, a server's responses and trailers). The default delivers them one by one.
    /// </summary>
    void OnHeaders(Http2Stream stream, HeaderList fields)
    {
        for (int i = 0; i < fields.Count; i++)
        {
            OnHeader(stream, fields.StaticIndex(i), fields.Name(i), fields.Value(i), fields.DecodedFlags(i));
        }
    }

    /// <summary>The block was complete and well-formed. Not called when the block was malformed: <see cref="OnStreamReset"/> is, instead.</summary>
    void OnHeadersEnd(Http2Stream stream, bool endStream);

    /// <summary>
    /// DATA payload (padding removed). The bytes count against flow control until the application calls
    /// <see cref="Http2Connection.ConsumeData"/>; that is how back-pressure reaches the peer.
    /// </summary>
    void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream);

    /// <summary>
    /// The stream ended abnormally: the peer sent RST_STREAM (<paramref name="remote"/>), or we reset it for
    /// a stream error (malformed message, flow control, content-length mismatch), or a GOAWAY or connection
    /// error cut it off. No further callback names this stream.
    /// </summary>
    void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote);

    /// <summary>Send windows grew (WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE): blocked DATA may go on. <paramref name="streamId"/> 0 means the connection window or all streams.</summary>
    void OnWindowUpdate(int streamId);

    /// <summary>The peer's settings changed (for example SETTINGS_MAX_CONCURRENT_STREAMS).</summary>
    void OnSettings(in Http2Settings peerSettings);

    /// <summary>The peer sent GOAWAY: no new streams on this connection; streams above <paramref name="lastStreamId"/> were already reset with REFUSED_STREAM.</summary>
    void OnGoAway(int lastStreamId, Http2ErrorCode errorCode);

    /// <summary>The connection is finished (a connection error in either direction). <see cref="Http2Connection.ProcessInput"/> returns false.</summary>
    void OnConnectionClosed(Http2ErrorCode errorCode, bool remote, string reason);
}
