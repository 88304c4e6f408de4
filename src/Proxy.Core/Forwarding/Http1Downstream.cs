using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;
using Proxy.Core.Diagnostics;
using Proxy.Core.Http1;
using Proxy.Core.Peers;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

/// <summary>
/// A client's HTTP/1.1 connection: keep-alive, pipelining (one exchange at a time, the next request waits
/// in the buffer), content-length and chunked bodies, Expect: 100-continue (answered here, as Envoy
/// does), and responses framed by content-length, chunked coding or close.
/// </summary>
internal sealed class Http1Downstream : IDownstreamProtocol, IExchangePeer
{
    private enum State : byte
    {
        Head,
        Body,
        /// <summary>The request is read; the next one is not parsed until this response is done.</summary>
        AwaitingResponse,
        Closed,
    }

    private readonly SocketConnection _connection;
    private readonly Func<ListenerConfig> _listener;
    private readonly ListenerOptions _options;
    // Timeouts (Environment.TickCount64 ms; read by the listener's sweep): when the head of the request
    // being received began (0: none in progress), and since when the connection has been between requests.
    private long _headStartedAt;
    private long _idleSince = Environment.TickCount64;
    // How much of the pending head was already searched for its end: a head that arrives an octet at a
    // time is scanned once, not once per octet.
    private int _headScanned;
    private readonly OwnedLock _lock;
    private HeaderList _fields = new();
    private HeaderList _trailers = new(128, 4);
    private ChunkedDecoder _chunked;
    private State _state;
    private Exchange? _exchange;
    private int _generation;
    private BodyFraming _requestFraming;
    private long _requestRemaining;
    private bool _keepAlive;
    private bool _http10;
    private bool _isHead;
    private bool _webSocket;
    private long _unconsumed;
    private readonly BlockedExchange _blocked;

    // Response state, under _lock.
    private bool _responseStarted;
    private bool _responseDone;
    private BodyFraming _responseFraming;

    public Http1Downstream(SocketConnection connection, Func<ListenerConfig> listener, ListenerOptions options)
    {
        _connection = connection;
        _listener = listener;
        _options = options;
        _lock = connection.Output.SyncRoot;
        _blocked = new BlockedExchange(_lock);
        connection.Drained = _blocked.Wake;
    }

    public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
    {
        FlushBatch.Begin();
        try
        {
            return Process(ref buffer);
        }
        finally
        {
            FlushBatch.End();
        }
    }

    private InputStatus Process(ref ReadOnlySequence<byte> buffer)
    {
        ReadOnlySequence<byte> input = buffer;
        ReadOnlySpan<byte> span = input.IsSingleSegment ? input.FirstSpan : input.ToArray();
        int consumed = 0;
        try
        {
            while (true)
            {
                // Written under the lock; read without it here, on the input thread, each loop.
                State state = (State)Volatile.Read(ref Unsafe.As<State, byte>(ref _state));
                switch (state)
                {
                    case State.Head:
                    {
                        ReadOnlySpan<byte> rest = span.Slice(consumed);
                        if (rest.IsEmpty)
                        {
                            return InputStatus.Continue;
                        }
                        if (_headScanned == 0 && rest[0] == (byte)'\r' && (rest.Length == 1 || rest[1] == (byte)'\n'))
                        {
                            // RFC 9112 §2.2: empty lines before a request-line are ignored (some clients
                            // end a body with an extra CRLF).
                            if (rest.Length == 1)
                            {
                                return InputStatus.Continue;
                            }
                            consumed += 2;
                            continue;
                        }
                        var head = new Http1Parser.RequestHead();
                        Http1Error? error;
                        int end;
                        if (_headScanned == 0)
                        {
                            // The usual case, a head that came whole: found and parsed in one pass.
                            error = Http1Parser.TryParseRequest(rest.Slice(0, Math.Min(rest.Length, Http1Parser.DefaultMaxHeadSize)), _fields, ref head, out end, _options.MaxHeadersCount);
                        }
                        else
                        {
                            // The rest of a head that came in parts: only the new octets are searched for its end.
                            int from = Math.Max(0, Math.Min(_headScanned, rest.Length) - 3);
                            end = Http1Parser.FindHeadEnd(rest.Slice(from));
                            if (end >= 0 && end + from <= Http1Parser.DefaultMaxHeadSize)
                            {
                                end += from;
                                error = Http1Parser.ParseRequest(rest.Slice(0, end), _fields, ref head, _options.MaxHeadersCount);
                            }
                            else
                            {
                                error = end < 0 && Http1Parser.HasBareLf(rest, from) ? new Http1Error(400, "bare LF line terminator") : null;
                                end = 0;
                            }
                        }
                        if (error is Http1Error e)
                        {
                            return Reject(e.Status, e.Reason);
                        }
                        if (end == 0)
                        {
                            if (rest.Length > Http1Parser.DefaultMaxHeadSize)
                            {
                                return Reject(431, "request header section too large");
                            }
                            _headScanned = rest.Length;
                            if (_headStartedAt == 0)
                            {
                                _headStartedAt = Environment.TickCount64;
                            }
                            return InputStatus.Continue;
                        }
                        _headScanned = 0;
                        _headStartedAt = 0;
                        consumed += end;
                        if (StartExchange(ref head) is InputStatus refused)
                        {
                            return refused;
                        }
                        continue;
                    }
                    case State.Body:
                    {
                        if (Volatile.Read(ref _unconsumed) > _connection.BufferLimit / 2)
                        {
                            return InputStatus.Pause; // woken early: the upstream has not caught up yet
                        }
                        if (consumed == span.Length)
                        {
                            return InputStatus.Continue;
                        }
                        InputStatus? status = ReadBody(input, span, ref consumed);
                        if (status != null)
                        {
                            return status.Value;
                        }
                        continue;
                    }
                    case State.AwaitingResponse:
                        // Nothing more to read: keep the receive pending rather than pause, so the next
                        // request needs no thread hop to resume the loop. Only a pipelined request waits.
                        return consumed == span.Length ? InputStatus.Continue : InputStatus.Pause;
                    default:
                        return InputStatus.Close;
                }
            }
        }
        finally
        {
            buffer = buffer.Slice(consumed);
        }
    }

    private InputStatus? StartExchange(ref Http1Parser.RequestHead head)
    {
        if (head.Http10)
        {
            if (!_options.AcceptHttp10)
            {
                return Reject(426, "HTTP/1.0 is not accepted here (http_protocol_options.accept_http_10)"); // Envoy's default
            }
            if (_options.DefaultHostForHttp10 is { } host && _fields.IndexOf(":authority"u8) is int at and >= 0 && _fields.Value(at).IsEmpty)
            {
                _fields.SetValue(at, host); // default_host_for_http_10: for a request without Host
            }
        }
        if (head.WebSocket && !_options.WebSocket)
        {
            return Reject(403, "upgrade not allowed"); // Envoy: an upgrade its upgrade_configs do not name
        }
        // A WebSocket upgrade: what follows the head is the tunnel's octets, until either side closes.
        _webSocket = head.WebSocket;
        _requestFraming = head.WebSocket ? BodyFraming.UntilClose : head.Framing;
        _requestRemaining = head.ContentLength;
        _keepAlive = head.KeepAlive && !_drainClose && !head.WebSocket;
        _http10 = head.Http10;
        _isHead = head.IsHead;
        _chunked.Reset();
        bool endStream = _requestFraming == BodyFraming.None;
        using (_lock.Enter())
        {
            _responseStarted = false;
            _responseDone = false;
            _state = endStream ? State.AwaitingResponse : State.Body;
            if (head.ExpectContinue && !endStream)
            {
                Http1Writer.Write(_connection.Output, "HTTP/1.1 100 Continue\r\n\r\n"u8);
                FlushBatch.Add(_connection.Output);
            }
        }
        Exchange exchange = Exchange.Rent(this, 1, out int generation);
        _exchange = exchange;
        _generation = generation;
        ListenerConfig config = _listener();
        exchange.OnRequestHeaders(generation, ref _fields, config.Routes, endStream, config.Options);
        return null;
    }

    /// <summary>Passes body octets on; null to keep going, or the status to return.</summary>
    private InputStatus? ReadBody(in ReadOnlySequence<byte> input, ReadOnlySpan<byte> span, ref int consumed)
    {
        Exchange exchange = _exchange!;
        if (_requestFraming == BodyFraming.UntilClose)
        {
            // A tunnel (WebSocket): every octet goes through; the request ends when the client closes.
            int take = span.Length - consumed;
            Interlocked.Add(ref _unconsumed, take);
            exchange.OnRequestData(_generation, input.Slice(consumed, take), false);
            consumed += take;
        }
        else if (_requestFraming == BodyFraming.ContentLength)
        {
            int take = (int)Math.Min(span.Length - consumed, _requestRemaining);
            _requestRemaining -= take;
            bool end = _requestRemaining == 0;
            if (end)
            {
                SetState(State.AwaitingResponse);
            }
            Interlocked.Add(ref _unconsumed, take);
            exchange.OnRequestData(_generation, input.Slice(consumed, take), end);
            consumed += take;
        }
        else
        {
            while (true)
            {
                int before = consumed;
                ChunkedDecoder.Result result = _chunked.Decode(span, ref consumed, out ReadOnlySpan<byte> data);
                if (result == ChunkedDecoder.Result.NeedMore)
                {
                    return InputStatus.Continue;
                }
                if (result == ChunkedDecoder.Result.Error)
                {
                    return RejectBody("bad chunked encoding");
                }
                if (result == ChunkedDecoder.Result.Data)
                {
                    Interlocked.Add(ref _unconsumed, data.Length);
                    exchange.OnRequestData(_generation, input.Slice(consumed - data.Length, data.Length), false);
                    if (Volatile.Read(ref _unconsumed) > _connection.BufferLimit / 2)
                    {
                        break;
                    }
                    continue;
                }
                if (result == ChunkedDecoder.Result.Trailer)
                {
                    // Trailer fields are checked like header fields (RFC 9112 §7.1.2, §5).
                    Span<byte> lower = stackalloc byte[256];
                    if (_trailers.Count > 64 || Http1Parser.ParseTrailerLine(data, lower, out int nameLength, out ReadOnlySpan<byte> value) is not null)
                    {
                        return RejectBody("bad trailer field");
                    }
                    ReadOnlySpan<byte> name = lower.Slice(0, nameLength);
                    if (!Http1Writer.IsHopByHop(name) && !name.SequenceEqual("content-length"u8) && !name.SequenceEqual("host"u8) && !name.SequenceEqual("transfer-encoding"u8))
                    {
                        _trailers.Add(name, value);
                    }
                    continue;
                }
                // Done: the last chunk and its trailer section.
                SetState(State.AwaitingResponse);
                if (_trailers.Count > 0)
                {
                    exchange.OnRequestTrailers(_generation, ref _trailers);
                    _trailers.Clear();
                }
                else
                {
                    exchange.OnRequestData(_generation, ReadOnlySequence<byte>.Empty, true);
                }
                _ = before;
                break;
            }
        }
        if (Volatile.Read(ref _unconsumed) > _connection.BufferLimit / 2)
        {
            // The upstream is slower than the client: stop reading until it catches up (Consume resumes).
            return InputStatus.Pause;
        }
        return null;
    }

    private void SetState(State state)
    {
        using (_lock.Enter())
        {
            if (_state != State.Closed)
            {
                _state = state;
            }
        }
    }

    /// <summary>A malformed request: answer with <paramref name="status"/> and close (RFC 9112 §2.2).</summary>
    private InputStatus Reject(int status, string reason)
    {
        ProxyLog.Peer(LogLevel.Info, $"downstream {_connection.RemoteAddress}: rejected HTTP/1.1 request: {status} {reason}");
        using (_lock.Enter())
        {
            _state = State.Closed;
            if (!_responseStarted || _responseDone)
            {
                byte[] body = Encoding.ASCII.GetBytes(reason + "\n");
                SocketOutput output = _connection.Output;
                Http1Writer.WriteStatusLine(output, status);
                Http1Writer.Write(output, "content-type: text/plain\r\nconnection: close\r\ncontent-length: "u8);
                Http1Writer.WriteNumber(output, body.Length);
                Http1Writer.Write(output, "\r\n\r\n"u8);
                Http1Writer.Write(output, body);
            }
        }
        _connection.CloseAfterFlush();
        return InputStatus.Close;
    }

    /// <summary>
    /// A malformed request body (bad chunk size or trailer): 400 when nothing of the response has gone out
    /// (RFC 9112 §7.1), otherwise the exchange is cut off; either way the upstream request is cancelled and
    /// the connection closes, since the message boundaries are lost.
    /// </summary>
    private InputStatus RejectBody(string reason)
    {
        bool answering;
        using (_lock.Enter())
        {
            answering = _responseStarted && !_responseDone;
        }
        _exchange?.OnDownstreamReset(_generation);
        return answering ? Abort(reason) : Reject(400, reason);
    }

    /// <summary>A broken body after the request went upstream: the exchange is cut off and the connection closed.</summary>
    private InputStatus Abort(string reason)
    {
        ProxyLog.Peer(LogLevel.Info, $"downstream {_connection.RemoteAddress}: closing HTTP/1.1 connection: {reason}");
        _exchange?.OnDownstreamReset(_generation);
        using (_lock.Enter())
        {
            _state = State.Closed;
        }
        _connection.CloseAfterFlush();
        return InputStatus.Close;
    }

    public bool OnInputEnded()
    {
        using (_lock.Enter())
        {
            // A client that half-closes after its request still gets the answer, then the connection
            // closes; half-closed between requests or within a body, it is done.
            if (_state != State.AwaitingResponse || _responseDone)
            {
                return false;
            }
            _keepAlive = false;
            return true;
        }
    }

    public void OnClosed()
    {
        using (_lock.Enter())
        {
            _state = State.Closed;
        }
        _exchange?.OnDownstreamReset(_generation);
    }

    // ---- IExchangePeer: the response goes out here --------------------------------------------

    public bool SendHeaders(int streamId, HeaderList headers, bool endStream)
    {
        using (_lock.Enter())
        {
            if (_state == State.Closed || _responseDone)
            {
                return false;
            }
            SocketOutput output = _connection.Output;
            if (_responseStarted)
            {
                // Trailers: in the chunked coding's trailer section; other framings cannot carry them.
                if (_responseFraming == BodyFraming.Chunked)
                {
                    Http1Writer.Write(output, "0\r\n"u8);
                    Http1Writer.WriteFields(output, headers);
                    Http1Writer.Write(output, "\r\n"u8);
                }
                CompleteResponse();
                return true;
            }
            int statusIndex = headers.IndexOf(":status"u8);
            ReadOnlySpan<byte> status = statusIndex >= 0 ? headers.Value(statusIndex) : "502"u8;
            int code = Http1Writer.ParseStatus(status);
            if (code == 101 && _webSocket)
            {
                // The upgrade is accepted: the 101 goes out and the connection becomes the tunnel.
                Http1Writer.WriteStatusLine(output, status);
                Http1Writer.WriteFields(output, headers);
                Http1Writer.Write(output, "connection: upgrade\r\nupgrade: websocket\r\n\r\n"u8);
                _responseFraming = BodyFraming.UntilClose;
                _keepAlive = false;
                _responseStarted = true;
                if (endStream)
                {
                    CompleteResponse();
                }
                return true;
            }
            if (code is >= 100 and < 200)
            {
                // Informational responses: 100 was answered already; others pass to HTTP/1.1 clients.
                if (code != 100 && code != 101 && !_http10)
                {
                    Http1Writer.WriteStatusLine(output, status);
                    Http1Writer.WriteFields(output, headers);
                    Http1Writer.Write(output, "\r\n"u8);
                }
                return true;
            }
            bool bodyless = _isHead || code is 204 or 304;
            bool hasLength = headers.IndexOf("content-length"u8) >= 0;
            Http1Writer.WriteStatusLine(output, status);
            Http1Writer.WriteFields(output, headers);
            if (bodyless)
            {
                _responseFraming = BodyFraming.None;
            }
            else if (hasLength)
            {
                _responseFraming = BodyFraming.ContentLength;
            }
            else if (endStream)
            {
                _responseFraming = BodyFraming.None;
                Http1Writer.Write(output, "content-length: 0\r\n"u8);
            }
            else if (_http10)
            {
                _responseFraming = BodyFraming.UntilClose;
                _keepAlive = false;
            }
            else
            {
                _responseFraming = BodyFraming.Chunked;
                Http1Writer.Write(output, "transfer-encoding: chunked\r\n"u8);
            }
            if (!_keepAlive || _state == State.Body && endStream)
            {
                Http1Writer.Write(output, "connection: close\r\n"u8);
                _keepAlive = false;
            }
            else if (_http10)
            {
                Http1Writer.Write(output, "connection: keep-alive\r\n"u8);
            }
            Http1Writer.Write(output, "\r\n"u8);
            _responseStarted = true;
            if (endStream)
            {
                CompleteResponse();
            }
            return true;
        }
    }

    public int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream)
    {
        using (_lock.Enter())
        {
            if (_state == State.Closed || _responseDone || !_responseStarted)
            {
                return -1;
            }
            SocketOutput output = _connection.Output;
            if (_connection.IsOutputFull && !data.IsEmpty)
            {
                return 0; // the client reads slowly: the exchange waits for OnDrained
            }
            switch (_responseFraming)
            {
                case BodyFraming.Chunked:
                    if (!data.IsEmpty)
                    {
                        Http1Writer.WriteChunk(output, data);
                    }
                    if (endStream)
                    {
                        Http1Writer.Write(output, "0\r\n\r\n"u8);
                    }
                    break;
                case BodyFraming.None:
                    break;
                default:
                    Http1Writer.WriteData(output, data);
                    break;
            }
            if (endStream)
            {
                CompleteResponse();
            }
            return (int)data.Length;
        }
    }

    /// <summary>Under the lock: the response is out; go on with the next request, or close.</summary>
    private void CompleteResponse()
    {
        _responseDone = true;
        if (_responseFraming == BodyFraming.UntilClose || !_keepAlive || _state == State.Body)
        {
            // A request body still arriving cannot be skipped safely: close after the response.
            _state = State.Closed;
            _exchange = null;
            _connection.CloseAfterFlush();
            return;
        }
        if (_state == State.AwaitingResponse)
        {
            _state = State.Head;
            _exchange = null;
            _idleSince = Environment.TickCount64;
            _connection.ResumeInput();
        }
    }

    /// <summary>
    /// The listener's sweep: a request head that takes longer than request_headers_timeout (or stops
    /// arriving for stream_idle_timeout) gets 408 and the connection closes; a connection that has been
    /// between requests for idle_timeout is closed. A request in flight is its exchange's to time out.
    /// </summary>
    public void CheckTimeouts(long now)
    {
        bool headTimedOut;
        Exchange? inFlight = null;
        int generation = 0;
        using (_lock.Enter())
        {
            if (_state != State.Head)
            {
                inFlight = _state == State.Closed ? null : _exchange;
                generation = _generation;
            }
        }
        if (inFlight != null)
        {
            inFlight.CheckStreamIdle(generation, now);
            return;
        }
        using (_lock.Enter())
        {
            if (_state != State.Head)
            {
                return;
            }
            long headStarted = _headStartedAt;
            if (headStarted == 0)
            {
                long idle = (long)_options.IdleTimeout.TotalMilliseconds;
                if (idle <= 0 || now - _idleSince < idle)
                {
                    return;
                }
                _state = State.Closed;
                headTimedOut = false;
            }
            else
            {
                long limit = _options.HeadTimeoutMs(preface: false);
                if (limit <= 0 || now - headStarted < limit)
                {
                    return;
                }
                headTimedOut = true;
            }
        }
        DownstreamLimits.TimedOut();
        if (headTimedOut)
        {
            Reject(408, "request header timeout");
        }
        else
        {
            _connection.Close(); // idle between requests: nothing to say (Envoy closes quietly too)
        }
    }

    public void Drain() => CloseWhenIdle();

    // A graceful drain: every response from here on says connection: close (and the connection ends after it).
    private volatile bool _drainClose;

    public void DrainGracefully()
    {
        _drainClose = true;
        using (_lock.Enter())
        {
            _keepAlive = false; // the response in progress, if its head is not out yet
        }
    }

    public void Reset(int streamId, Http2ErrorCode errorCode)
    {
        using (_lock.Enter())
        {
            if (_responseDone && errorCode == Http2ErrorCode.NoError)
            {
                return;
            }
            // HTTP/1.1 has no stream reset: a response cut short ends the connection. The exchange asked
            // for it and is ending: it is not told again when the close comes back (possibly at once,
            // on this thread, inside its own call).
            _state = State.Closed;
            _exchange = null;
        }
        _connection.CloseAfterFlush();
    }

    /// <summary>Draining: the connection closes after the response in progress, or now if it is between requests.</summary>
    public void CloseWhenIdle()
    {
        bool idle;
        using (_lock.Enter())
        {
            _keepAlive = false;
            idle = _state == State.Head;
            if (idle)
            {
                _state = State.Closed;
            }
        }
        if (idle)
        {
            _connection.CloseAfterFlush();
        }
    }

    public void Consume(int streamId, int bytes)
    {
        long left = Interlocked.Add(ref _unconsumed, -bytes);
        if (left <= _connection.BufferLimit / 4)
        {
            _connection.ResumeInput();
        }
    }

    public void AddBlocked(ExchangeEvents exchange, int generation) => _blocked.Set(exchange, generation);

    public void RemoveBlocked(ExchangeEvents exchange) => _blocked.Clear(exchange);

    public void ScheduleFlush() => FlushBatch.Add(_connection.Output);

    private ReplayBudget _replay;

    /// <inheritdoc/>
    public bool TryReserveReplay(int bytes) => _replay.TryReserve(bytes, _connection.BufferLimit);

    /// <inheritdoc/>
    public void ReleaseReplay(int bytes) => _replay.Release(bytes);

    public System.Net.EndPoint? RemoteEndPoint => _connection.RemoteEndPoint;

    public System.Net.EndPoint? LocalEndPoint => _connection.LocalEndPoint;

    public Transport.Tls.TlsSession? Tls => _connection.Tls;

    /// <summary>Where the connection was going before an iptables redirect (set by the listener); null when not redirected.</summary>
    public System.Net.EndPoint? OriginalDestination { get; set; }

}
