namespace Proxy.Http2;

/// <summary>Stream states of RFC 9113 §5.1 (reserved states are never entered: push is disabled).</summary>
public enum Http2StreamState : byte
{
    Idle,
    Open,
    HalfClosedLocal,
    HalfClosedRemote,
    Closed,
}

/// <summary>
/// One stream of a connection, as the handler sees it during a callback. The object is recycled once the
/// stream closes: keep <see cref="Id"/>, not the object, and address the stream by id afterwards.
/// </summary>
public sealed class Http2Stream
{
    public int Id { get; internal set; }
    public Http2StreamState State { get; internal set; }
    /// <summary>The application's per-stream state, set when the stream is opened.</summary>
    public object? UserState { get; set; }
    /// <summary>A number the application keeps with <see cref="UserState"/> (for example the generation of a pooled object).</summary>
    public int UserTag { get; set; }

    internal int SendWindow;
    internal int ReceiveWindow;
    /// <summary>Bytes the application has consumed but not yet returned to the peer as WINDOW_UPDATE.</summary>
    internal int UnannouncedConsumed;
    internal long ExpectedContentLength;
    internal long ReceivedContentLength;
    /// <summary>The final (non-1xx) header block has arrived; a later HEADERS is a trailer block.</summary>
    internal bool FinalHeadersReceived;
    /// <summary>Client side: our request was HEAD, or the response was 304, so content-length describes no body.</summary>
    internal bool BodylessResponse;
    /// <summary>We sent a header block on this stream (server side: the response began).</summary>
    internal bool HeadersSent;

    internal void Reset(int id, Http2StreamState state, int sendWindow, int receiveWindow)
    {
        Id = id;
        State = state;
        UserState = null;
        UserTag = 0;
        SendWindow = sendWindow;
        ReceiveWindow = receiveWindow;
        UnannouncedConsumed = 0;
        ExpectedContentLength = -1;
        ReceivedContentLength = 0;
        FinalHeadersReceived = false;
        BodylessResponse = false;
        HeadersSent = false;
    }

    internal bool CanReceive => State is Http2StreamState.Open or Http2StreamState.HalfClosedLocal;
    internal bool CanSend => State is Http2StreamState.Open or Http2StreamState.HalfClosedRemote;

    public override string ToString() => $"stream {Id} {State}";
}
