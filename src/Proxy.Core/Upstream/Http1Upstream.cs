using System.Buffers;
using Proxy.Core.Diagnostics;
using Proxy.Core.Http1;
using Proxy.Core.Peers;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>
/// One HTTP/1.1 connection to an upstream endpoint, carrying one exchange at a time and going back to its
/// pool for reuse when both the request and the response completed cleanly with keep-alive.
/// </summary>
public sealed class Http1Upstream : IConnectionProtocol, IUpstreamConnection
{
    private enum ResponseState : byte
    {
        Idle,
        Head,
        Body,
        Done,
    }

    private readonly SocketConnection _connection;

    /// <summary>The pool slot (event loop) it was opened for and idles in.</summary>
    internal int Slot { get; init; }
    private readonly Http1UpstreamPool _pool;
    private readonly OwnedLock _lock;
    private HeaderList _fields = new();
    private HeaderList _trailers = new(128, 4);
    private ChunkedDecoder _chunked;
    private ExchangeEvents? _exchange;
    private int _generation;
    private bool _requestChunked;
    private bool _requestDone;
    private bool _requestWasHead;
    private int _headScanned;       // octets of an incomplete response head already searched for its end
    private bool _webSocket;
    private ResponseState _response;
    private BodyFraming _responseFraming;
    private long _responseRemaining;
    private bool _keepAlive;
    private long _unconsumed;
    private readonly BlockedExchange _blocked;

    /// <summary>The cluster's max_headers_count, for response heads.</summary>
    private int MaxHeadersCount => _pool.Cluster?.MaxHeadersCount ?? Http1Parser.DefaultMaxHeadersCount;

    public Http1Upstream(SocketConnection connection, Http1UpstreamPool pool)
    {
        _connection = connection;
        _pool = pool;
        _requestsLeft = pool.Cluster is { MaxRequestsPerConnection: > 0 and int max } ? max : int.MaxValue;
        _lock = connection.Output.SyncRoot;
        _blocked = new BlockedExchange(_lock);
        connection.Drained = _blocked.Wake;
    }

    public bool IsClosed => _connection.IsClosed;

    /// <summary>When it last went back to its pool (Environment.TickCount64), for the cluster's idle_timeout.</summary>
    internal long IdleSince;

    /// <summary>Requests it may still carry: the cluster's max_requests_per_connection when it opened (else unbounded).</summary>
    private int _requestsLeft;

    /// <summary>Closes a connection that is between requests (its pool was retired).</summary>
    internal void CloseIdle() => _connection.Close();

    public int OpenStream(HeaderList headers, bool endStream, ExchangeEvents exchange, int generation)
    {
        using (_lock.Enter())
        {
            if (_exchange != null || _connection.IsClosed)
            {
                return 0;
            }
            _exchange = exchange;
            _generation = generation;
            _requestsLeft--;
            _response = ResponseState.Head;
            _headScanned = 0;
            _requestDone = endStream;
            _keepAlive = true;
            _unconsumed = 0;
            _chunked.Reset();

            SocketOutput output = _connection.Output;
            if (headers.IndexOf("cookie"u8) is int cookie and >= 0)
            {
                headers.FoldInto(cookie, "cookie"u8, "; "u8); // RFC 9113 §8.2.3: HTTP/2's cookie crumbs become one field
            }
            int method = headers.IndexOf(":method"u8);
            int path = headers.IndexOf(":path"u8);
            int authority = headers.IndexOf(":authority"u8);
            ReadOnlySpan<byte> methodValue = method >= 0 ? headers.Value(method) : "GET"u8;
            _requestWasHead = methodValue.SequenceEqual("HEAD"u8);
            Http1Writer.Write(output, methodValue);
            Http1Writer.Write(output, " "u8);
            Http1Writer.Write(output, path >= 0 ? headers.Value(path) : "/"u8);
            Http1Writer.Write(output, " HTTP/1.1\r\n"u8);
            if (authority >= 0)
            {
                Http1Writer.WriteField(output, "host"u8, headers.Value(authority));
            }
            Http1Writer.WriteFields(output, headers, skipHost: authority >= 0);
            // A WebSocket upgrade (the downstream kept Upgrade as a field): the octets after the head
            // are the tunnel's, sent as they come, and the connection is not reused.
            _webSocket = headers.IndexOf("upgrade"u8) >= 0;
            if (_webSocket)
            {
                Http1Writer.Write(output, "connection: upgrade\r\nupgrade: websocket\r\n"u8);
            }
            bool hasLength = headers.IndexOf("content-length"u8) >= 0;
            _requestChunked = !endStream && !hasLength && !_webSocket;
            if (_requestChunked)
            {
                Http1Writer.Write(output, "transfer-encoding: chunked\r\n"u8);
            }
            else if (endStream && !hasLength && (methodValue.SequenceEqual("POST"u8) || methodValue.SequenceEqual("PUT"u8) || methodValue.SequenceEqual("PATCH"u8)))
            {
                Http1Writer.Write(output, "content-length: 0\r\n"u8);
            }
            Http1Writer.Write(output, "\r\n"u8);
            return 1;
        }
    }

    public bool SendHeaders(int streamId, HeaderList headers, bool endStream)
    {
        using (_lock.Enter())
        {
            if (_exchange == null || _requestDone)
            {
                return false;
            }
            if (_requestChunked)
            {
                Http1Writer.Write(_connection.Output, "0\r\n"u8);
                Http1Writer.WriteFields(_connection.Output, headers);
                Http1Writer.Write(_connection.Output, "\r\n"u8);
            }
            _requestDone = true;
            return true;
        }
    }

    public int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream)
    {
        using (_lock.Enter())
        {
            if (_exchange == null || _requestDone || _connection.IsClosed)
            {
                return -1;
            }
            SocketOutput output = _connection.Output;
            if (_connection.IsOutputFull && !data.IsEmpty)
            {
                return 0;
            }
            if (_requestChunked)
            {
                if (!data.IsEmpty)
                {
                    Http1Writer.WriteChunk(output, data);
                }
                if (endStream)
                {
                    Http1Writer.Write(output, "0\r\n\r\n"u8);
                }
            }
            else
            {
                Http1Writer.WriteData(output, data);
            }
            if (endStream)
            {
                _requestDone = true;
                ReleaseIfDone();
            }
            return (int)data.Length;
        }
    }

    public void Reset(int streamId, Http2ErrorCode errorCode)
    {
        using (_lock.Enter())
        {
            _exchange = null;
        }
        // HTTP/1.1 cannot cancel one request: the connection goes.
        _connection.Close();
    }

    public void Consume(int streamId, int bytes)
    {
        if (Interlocked.Add(ref _unconsumed, -bytes) <= _connection.BufferLimit / 4)
        {
            _connection.ResumeInput();
        }
    }

    public void AddBlocked(ExchangeEvents exchange, int generation) => _blocked.Set(exchange, generation);

    public void RemoveBlocked(ExchangeEvents exchange) => _blocked.Clear(exchange);

    public void ScheduleFlush() => FlushBatch.Add(_connection.Output);

    public System.Net.EndPoint? RemoteEndPoint => _connection.RemoteEndPoint;


    // ---- the response ------------------------------------------------------------------------

    public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
    {
        FlushBatch.Begin();
        ReadOnlySequence<byte> input = buffer;
        ReadOnlySpan<byte> span = input.IsSingleSegment ? input.FirstSpan : input.ToArray();
        int consumed = 0;
        try
        {
            while (consumed < span.Length || _response == ResponseState.Done)
            {
                ExchangeEvents? exchange;
                int generation;
                using (_lock.Enter())
                {
                    exchange = _exchange;
                    generation = _generation;
                }
                if (exchange == null || _response is ResponseState.Idle or ResponseState.Done)
                {
                    if (consumed < span.Length)
                    {
                        return Fail("data from the upstream with no request outstanding");
                    }
                    break;
                }
                if (_response == ResponseState.Head)
                {
                    ReadOnlySpan<byte> rest = span.Slice(consumed);
                    var head = new Http1Parser.ResponseHead();
                    Http1Error? error;
                    int end;
                    if (_headScanned == 0)
                    {
                        // A head that came whole: found and parsed in one pass.
                        error = Http1Parser.TryParseResponse(rest.Slice(0, Math.Min(rest.Length, Http1Parser.DefaultMaxHeadSize)), _fields, _requestWasHead, ref head, out end, MaxHeadersCount);
                    }
                    else
                    {
                        // The rest of a head that came in parts: only the new octets are searched for its end.
                        int from = Math.Max(0, Math.Min(_headScanned, rest.Length) - 3);
                        end = Http1Parser.FindHeadEnd(rest.Slice(from));
                        if (end >= 0 && end + from <= Http1Parser.DefaultMaxHeadSize)
                        {
                            end += from;
                            error = Http1Parser.ParseResponse(rest.Slice(0, end), _fields, _requestWasHead, ref head, MaxHeadersCount);
                        }
                        else
                        {
                            error = end < 0 && Http1Parser.HasBareLf(rest, from) ? new Http1Error(502, "bare LF line terminator in the response head") : null;
                            end = 0;
                        }
                    }
                    if (error is Http1Error bad)
                    {
                        return Fail(bad.Reason);
                    }
                    if (end == 0)
                    {
                        if (rest.Length > Http1Parser.DefaultMaxHeadSize)
                        {
                            return Fail("response header section too large");
                        }
                        _headScanned = rest.Length;
                        return InputStatus.Continue;
                    }
                    _headScanned = 0;
                    consumed += end;
                    if (head.Status == 101)
                    {
                        if (!_webSocket)
                        {
                            return Fail("101 to a request that asked for no upgrade");
                        }
                        // Switched: the rest of the connection is the tunnel's, until the upstream closes.
                        _keepAlive = false;
                        _responseFraming = BodyFraming.UntilClose;
                        _response = ResponseState.Body;
                        exchange.OnResponseHeaders(generation, ref _fields, endStream: false);
                        continue;
                    }
                    if (head.Status < 200)
                    {
                        exchange.OnResponseHeaders(generation, ref _fields, endStream: false);
                        continue;
                    }
                    _keepAlive = head.KeepAlive;
                    _responseFraming = head.Framing;
                    _responseRemaining = head.ContentLength;
                    bool endStream = head.Framing == BodyFraming.None;
                    _response = endStream ? ResponseState.Done : ResponseState.Body;
                    exchange.OnResponseHeaders(generation, ref _fields, endStream);
                    continue;
                }
                if (_response == ResponseState.Body)
                {
                    if (Volatile.Read(ref _unconsumed) > _connection.BufferLimit / 2)
                    {
                        return InputStatus.Pause;
                    }
                    InputStatus? status = ReadBody(exchange, generation, input, span, ref consumed);
                    if (status != null)
                    {
                        return status.Value;
                    }
                    continue;
                }
            }
            if (_response == ResponseState.Done)
            {
                using (_lock.Enter())
                {
                    ReleaseIfDone();
                }
            }
            return InputStatus.Continue;
        }
        finally
        {
            buffer = buffer.Slice(consumed);
            FlushBatch.End();
        }
    }

    private InputStatus? ReadBody(ExchangeEvents exchange, int generation, in ReadOnlySequence<byte> input, ReadOnlySpan<byte> span, ref int consumed)
    {
        switch (_responseFraming)
        {
            case BodyFraming.ContentLength:
            case BodyFraming.UntilClose:
            {
                int available = span.Length - consumed;
                int take = _responseFraming == BodyFraming.UntilClose ? available : (int)Math.Min(available, _responseRemaining);
                _responseRemaining -= take;
                bool end = _responseFraming == BodyFraming.ContentLength && _responseRemaining == 0;
                if (end)
                {
                    _response = ResponseState.Done;
                }
                Interlocked.Add(ref _unconsumed, take);
                exchange.OnResponseData(generation, input.Slice(consumed, take), end);
                consumed += take;
                break;
            }
            default:
            {
                ChunkedDecoder.Result result = _chunked.Decode(span, ref consumed, out ReadOnlySpan<byte> data);
                switch (result)
                {
                    case ChunkedDecoder.Result.NeedMore:
                        return InputStatus.Continue;
                    case ChunkedDecoder.Result.Error:
                        return Fail("bad chunked encoding from the upstream");
                    case ChunkedDecoder.Result.Data:
                        Interlocked.Add(ref _unconsumed, data.Length);
                        exchange.OnResponseData(generation, input.Slice(consumed - data.Length, data.Length), false);
                        break;
                    case ChunkedDecoder.Result.Trailer:
                        int colon = data.IndexOf((byte)':');
                        if (colon > 0 && colon <= 256 && _trailers.Count < 64)
                        {
                            Span<byte> lower = stackalloc byte[colon];
                            System.Text.Ascii.ToLower(data.Slice(0, colon), lower, out _);
                            _trailers.Add(lower, data.Slice(colon + 1).Trim(" \t"u8));
                        }
                        break;
                    default:
                        _response = ResponseState.Done;
                        if (_trailers.Count > 0)
                        {
                            exchange.OnResponseTrailers(generation, ref _trailers);
                            _trailers.Clear();
                        }
                        else
                        {
                            exchange.OnResponseData(generation, ReadOnlySequence<byte>.Empty, true);
                        }
                        break;
                }
                break;
            }
        }
        if (Volatile.Read(ref _unconsumed) > _connection.BufferLimit / 2)
        {
            return InputStatus.Pause;
        }
        return null;
    }

    /// <summary>Under the lock: both directions done cleanly → back to the pool; otherwise close.</summary>
    private void ReleaseIfDone()
    {
        if (_response != ResponseState.Done)
        {
            return;
        }
        if (!_requestDone || !_keepAlive || _requestsLeft <= 0)
        {
            _exchange = null;
            _response = ResponseState.Idle;
            _connection.CloseAfterFlush();
            return;
        }
        _exchange = null;
        _response = ResponseState.Idle;
        _pool.Return(this);
    }

    private InputStatus Fail(string reason)
    {
        ExchangeEvents? exchange;
        int generation;
        using (_lock.Enter())
        {
            exchange = _exchange;
            generation = _generation;
            _exchange = null;
        }
        ProxyLog.Peer(LogLevel.Warning, $"upstream {_connection.RemoteAddress}: {reason}");
        exchange?.OnUpstreamReset(generation, Http2ErrorCode.ProtocolError);
        _connection.Close();
        return InputStatus.Close;
    }

    public void OnClosed()
    {
        ExchangeEvents? exchange;
        int generation;
        bool untilClose;
        using (_lock.Enter())
        {
            exchange = _exchange;
            generation = _generation;
            untilClose = _response == ResponseState.Body && _responseFraming == BodyFraming.UntilClose;
            _exchange = null;
        }
        _pool.Remove(this);
        if (exchange == null)
        {
            return;
        }
        FlushBatch.Begin();
        try
        {
            if (untilClose)
            {
                exchange.OnResponseData(generation, ReadOnlySequence<byte>.Empty, true);
            }
            else
            {
                exchange.OnUpstreamReset(generation, Http2ErrorCode.ConnectError);
            }
        }
        finally
        {
            FlushBatch.End();
        }
    }
}
