using System.Buffers;
using System.Buffers.Text;
using System.Text;
using Microsoft.Extensions.ObjectPool;
using Proxy.Core.Forwarding;
using Proxy.Core.Peers;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Runtime;

/// <summary>
/// One call on the runtime API, from its request HEADERS to its trailers. InvokeService turns into an
/// HTTP request that an <see cref="Exchange"/> routes and forwards like any other; this object is that
/// exchange's downstream (<see cref="IExchangePeer"/>): it collects the response and answers the call
/// with it. Pooled; a generation guards against late events, as for exchanges.
/// Locks: the exchange's, then this call's, then the connection's — the exchange is never called with
/// this call's lock held.
/// </summary>
internal sealed class RuntimeCall : IExchangePeer
{
    /// <summary>Room before a response body for the gRPC prefix and the InvokeResponse/Any field headers.</summary>
    private const int HeadRoom = 32;
    private const int ExcerptLength = 128;

    private static readonly ObjectPool<RuntimeCall> s_pool = new DefaultObjectPool<RuntimeCall>(new Policy(), 1024);

    private static ReadOnlySpan<byte> InvokePath => "/spec.proto.runtime.v1.Runtime/InvokeService"u8;
    private static ReadOnlySpan<byte> HelloPath => "/spec.proto.runtime.v1.Runtime/SayHello"u8;

    private static readonly byte[][] s_verbs =
        [.. new[] { "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH" }.Select(Encoding.ASCII.GetBytes)];

    private enum Phase : byte
    {
        Idle,
        Receiving,      // the request message is arriving
        Forwarding,     // an exchange carries the request; its response comes back here
        Cancelled,      // the client went away while forwarding: the exchange is being reset
        Sending,        // the answer is written, its DATA waits for flow control
    }

    private enum Kind : byte
    {
        Invoke,
        Hello,
    }

    private RuntimeApiConnection? _connection;
    private int _streamId;
    private int _generation;
    private Phase _phase;
    private Kind _kind;
    private HeaderList _metadata = new();
    private HeaderList _request = new();
    private readonly HeaderList _answer = new();
    private long _deadlineAt;
    private bool _clientDone;
    private long _held;

    private readonly byte[] _prefix = new byte[5];
    private int _prefixCount;
    private byte[]? _message;
    private int _messageLength;
    private int _received;

    private Exchange? _exchange;
    private int _exchangeGeneration;

    private int _status;
    private bool _responseHeadersSeen;
    private byte[]? _body;
    private int _bodyCount;
    private byte[] _contentType = new byte[64];
    private int _contentTypeLength;
    private readonly byte[] _excerpt = new byte[ExcerptLength];
    private int _excerptLength;
    private readonly HeaderList _responseMetadata = new();
    private int _grpcStatusInResponse = -1;
    private bool _bodiless;     // a HEAD request: the answer has no body

    private byte[]? _out;
    private int _outStart;
    private int _outEnd;
    private bool _outBlocked;

    public static RuntimeCall Rent(RuntimeApiConnection connection, int streamId, out int generation)
    {
        RuntimeCall call = s_pool.Get();
        lock (call)
        {
            call._connection = connection;
            call._streamId = streamId;
            call._phase = Phase.Receiving;
            generation = call._generation;
        }
        return call;
    }

    private Http2Connection Protocol => _connection!.Protocol;
    private RuntimeApiOptions Options => _connection!.Server.Options;

    // ---- the client's side -----------------------------------------------------------------------

    public void OnHeaders(int generation, ref HeaderList headers, bool endStream)
    {
        lock (this)
        {
            if (generation != _generation || _phase != Phase.Receiving)
            {
                return;
            }
            (_metadata, headers) = (headers, _metadata);
            _clientDone = endStream;
            ReadOnlySpan<byte> path = default;
            bool post = false;
            bool grpc = false;
            long timeoutMs = Options.DefaultTimeoutMs;
            int encoding = -1;
            for (int i = 0; i < _metadata.Count; i++)
            {
                ReadOnlySpan<byte> name = _metadata.Name(i);
                ReadOnlySpan<byte> value = _metadata.Value(i);
                if (name.SequenceEqual(":path"u8))
                {
                    path = value;
                }
                else if (name.SequenceEqual(":method"u8))
                {
                    post = value.SequenceEqual("POST"u8);
                }
                else if (name.SequenceEqual("content-type"u8))
                {
                    grpc = value.StartsWith("application/grpc"u8) && (value.Length == 16 || value[16] is (byte)'+' or (byte)';');
                }
                else if (name.SequenceEqual("grpc-timeout"u8))
                {
                    if (Exchange.TryParseGrpcTimeout(value, out long grpcMs))
                    {
                        timeoutMs = Math.Min(timeoutMs, grpcMs);
                    }
                }
                else if (name.SequenceEqual("rpc_request_timeout"u8))
                {
                    // Layotto's metadata: the call's timeout in milliseconds.
                    if (Utf8Parser.TryParse(value, out long ms, out int consumed) && consumed == value.Length && ms > 0)
                    {
                        timeoutMs = Math.Min(timeoutMs, ms);
                    }
                }
                else if (name.SequenceEqual("grpc-encoding"u8) && !value.SequenceEqual("identity"u8))
                {
                    encoding = i;
                }
            }
            _deadlineAt = Environment.TickCount64 + Math.Max(timeoutMs, 1);
            if (!post || !grpc)
            {
                // gRPC over HTTP/2: only POST, only application/grpc (415 lets a non-gRPC client see why).
                Refuse(post ? "415"u8 : "405"u8);
                return;
            }
            if (path.SequenceEqual(InvokePath))
            {
                _kind = Kind.Invoke;
            }
            else if (path.SequenceEqual(HelloPath))
            {
                _kind = Kind.Hello;
            }
            else
            {
                Fail(GrpcStatus.Unimplemented, $"unknown method {Encoding.ASCII.GetString(path)}: this runtime serves InvokeService and SayHello");
                return;
            }
            if (encoding >= 0)
            {
                Fail(GrpcStatus.Unimplemented, $"grpc-encoding {Encoding.ASCII.GetString(_metadata.Value(encoding))} is not supported (identity only)");
                return;
            }
            if (endStream)
            {
                Fail(GrpcStatus.Internal, "the call has no request message");
            }
        }
    }

    /// <summary>Request DATA; false when the call did not take (and credit) it.</summary>
    public bool OnData(int generation, in ReadOnlySequence<byte> data, bool endStream)
    {
        int length = (int)data.Length;
        bool dispatch = false;
        lock (this)
        {
            if (generation != _generation || _phase != Phase.Receiving)
            {
                // Answered already (or a stale stream): the connection credits what it dropped.
                if (generation == _generation)
                {
                    _clientDone |= endStream;
                }
                return false;
            }
            Http2Connection protocol = Protocol;
            int streamId = _streamId;
            _clientDone |= endStream;
            ReadOnlySequence<byte> rest = data;
            if (_prefixCount < 5)
            {
                int take = (int)Math.Min(rest.Length, 5 - _prefixCount);
                rest.Slice(0, take).CopyTo(_prefix.AsSpan(_prefixCount));
                _prefixCount += take;
                rest = rest.Slice(take);
                if (_prefixCount == 5 && !StartMessage())
                {
                    protocol.ConsumeData(streamId, length);
                    return true;
                }
            }
            if (_message != null && !rest.IsEmpty)
            {
                int take = (int)Math.Min(rest.Length, _messageLength - _received);
                rest.Slice(0, take).CopyTo(_message.AsSpan(_received));
                _received += take;
                // Octets after the one request message of a unary call are dropped.
            }
            protocol.ConsumeData(streamId, length);
            if (_prefixCount == 5 && _received == _messageLength)
            {
                dispatch = true;
            }
            else if (_clientDone)
            {
                Fail(GrpcStatus.Internal, "the request message is incomplete");
                return true;
            }
            else
            {
                return true;
            }
        }
        if (dispatch)
        {
            Dispatch(generation);
        }
        return true;
    }

    /// <summary>The 5-octet gRPC message prefix is in: check it and make room for the message.</summary>
    private bool StartMessage()
    {
        if (_prefix[0] != 0)
        {
            Fail(GrpcStatus.Unimplemented, "compressed messages are not supported (grpc-encoding identity only)");
            return false;
        }
        int length = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(_prefix.AsSpan(1));
        if (length < 0 || length > Options.MaxMessageBytes)
        {
            Fail(GrpcStatus.ResourceExhausted, $"request message of {(uint)length} octets is larger than the limit of {Options.MaxMessageBytes}");
            return false;
        }
        if (!Hold(length))
        {
            Fail(GrpcStatus.ResourceExhausted, "the connection's calls hold too many message octets; try again later");
            return false;
        }
        _messageLength = length;
        _received = 0;
        _message = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
        return true;
    }

    /// <summary>Client trailers end its half of the stream.</summary>
    public void OnRequestEnd(int generation)
    {
        lock (this)
        {
            if (generation != _generation)
            {
                return;
            }
            _clientDone = true;
            if (_phase == Phase.Receiving)
            {
                Fail(GrpcStatus.Internal, "the request message is incomplete");
            }
        }
    }

    /// <summary>The client reset the stream, or its connection closed.</summary>
    public void OnClientReset(int generation)
    {
        Exchange? exchange;
        int exchangeGeneration;
        lock (this)
        {
            if (generation != _generation)
            {
                return;
            }
            _clientDone = true;
            if (_phase != Phase.Forwarding)
            {
                Done();
                return;
            }
            _phase = Phase.Cancelled;
            exchange = _exchange;
            exchangeGeneration = _exchangeGeneration;
        }
        // Cancellation travels upstream, as for any request.
        exchange!.OnDownstreamReset(exchangeGeneration);
        lock (this)
        {
            if (generation == _generation)
            {
                Done();
            }
        }
    }

    /// <summary>
    /// From the listener's sweep: a call past its deadline ends — with DEADLINE_EXCEEDED while its request
    /// is still arriving, with RST_STREAM(CANCEL) when its answer waits for a client that does not read
    /// (the buffered answer is let go). While forwarding, the exchange holds the same deadline.
    /// </summary>
    public void CheckDeadline(int generation, long now)
    {
        if (now < Volatile.Read(ref _deadlineAt))
        {
            return;
        }
        lock (this)
        {
            if (generation != _generation || now < _deadlineAt)
            {
                return;
            }
            if (_phase == Phase.Receiving)
            {
                Fail(GrpcStatus.DeadlineExceeded, "deadline exceeded while the request was arriving");
            }
            else if (_phase == Phase.Sending)
            {
                // Counted before the reset can leave (a flush outside a batch sends at once, and a client
                // that sees the reset may read the stats straight after).
                RuntimeApiStats.Answered(GrpcStatus.DeadlineExceeded);
                Protocol.ResetStream(_streamId, Http2ErrorCode.Cancel);
                FlushBatch.Add(_connection!.Connection.Output);
                Done();
            }
        }
    }

    // ---- dispatch ------------------------------------------------------------------------------

    private void Dispatch(int generation)
    {
        Exchange exchange;
        int exchangeGeneration;
        RouteConfiguration routes;
        byte[]? body;
        int start;
        int count;
        lock (this)
        {
            if (generation != _generation || _phase != Phase.Receiving)
            {
                return;
            }
            ReadOnlySpan<byte> message = _message.AsSpan(0, _messageLength);
            if (_kind == Kind.Hello)
            {
                AnswerHello(message);
                return;
            }
            if (!RuntimeMessages.TryReadInvoke(message, out RuntimeMessages.InvokeRequest request))
            {
                Fail(GrpcStatus.Internal, "cannot decode InvokeServiceRequest");
                return;
            }
            ReadOnlySpan<byte> id = message[request.Id];
            if (id.IsEmpty)
            {
                Fail(GrpcStatus.InvalidArgument, "id (the service to invoke) is empty");
                return;
            }
            if (!IsToken(id, "/?#@"u8) || !IsToken(message[request.Method], "#"u8) || !IsToken(message[request.QueryString], "#"u8)
                || !IsFieldValue(message[request.ContentType]))
            {
                Fail(GrpcStatus.InvalidArgument, "id, method, querystring and content_type must be printable ASCII without spaces (percent-encode the rest)");
                return;
            }
            if ((uint)request.Verb >= s_verbs.Length)
            {
                Fail(GrpcStatus.InvalidArgument, $"unknown HTTP verb {request.Verb}");
                return;
            }
            RouteConfiguration? found = _connection!.Server.Snapshots.Current.FindRoutesFor(id);
            if (found == null)
            {
                Fail(GrpcStatus.Unavailable, $"no route to '{Encoding.ASCII.GetString(id)}'");
                return;
            }
            if (Environment.TickCount64 >= _deadlineAt)
            {
                Fail(GrpcStatus.DeadlineExceeded, "deadline exceeded");
                return;
            }
            routes = found;
            _bodiless = request.Verb == 2;
            BuildRequest(message, request);
            (start, count) = request.Data.GetOffsetAndLength(_messageLength);
            body = _message;
            _message = null; // the exchange takes it over
            exchange = Exchange.Rent(this, _generation, out exchangeGeneration);
            _exchange = exchange;
            _exchangeGeneration = exchangeGeneration;
            _phase = Phase.Forwarding;
        }
        // Outside this call's lock: the exchange may answer on another thread at once.
        exchange.OnRequest(exchangeGeneration, ref _request, routes, body, start, count, _deadlineAt);
    }

    /// <summary>The request as Layotto's HTTP channel makes it: verb, path and query, Host = id, an id header, the metadata.</summary>
    private void BuildRequest(ReadOnlySpan<byte> message, in RuntimeMessages.InvokeRequest request)
    {
        HeaderList headers = _request;
        headers.Clear();
        headers.Add(":method"u8, s_verbs[request.Verb]);
        headers.Add(":scheme"u8, "http"u8);
        ReadOnlySpan<byte> id = message[request.Id];
        headers.Add(":authority"u8, id);
        ReadOnlySpan<byte> method = message[request.Method];
        ReadOnlySpan<byte> query = message[request.QueryString];
        int pathLength = (method.Length > 0 && method[0] == (byte)'/' ? 0 : 1) + method.Length + (query.IsEmpty ? 0 : 1 + query.Length);
        byte[]? rented = pathLength > 512 ? ArrayPool<byte>.Shared.Rent(pathLength) : null;
        Span<byte> path = rented ?? stackalloc byte[512];
        int n = 0;
        if (method.Length == 0 || method[0] != (byte)'/')
        {
            path[n++] = (byte)'/';
        }
        method.CopyTo(path.Slice(n));
        n += method.Length;
        if (!query.IsEmpty)
        {
            path[n++] = (byte)'?';
            query.CopyTo(path.Slice(n));
            n += query.Length;
        }
        headers.Add(":path"u8, path.Slice(0, n));
        if (rented != null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
        headers.Add("id"u8, id);
        ReadOnlySpan<byte> contentType = message[request.ContentType];
        if (!contentType.IsEmpty)
        {
            headers.Add("content-type"u8, contentType);
        }
        int bodyLength = request.Data.GetOffsetAndLength(message.Length).Length;
        if (bodyLength > 0 || request.Verb is 3 or 4 or 9)
        {
            Span<byte> digits = stackalloc byte[11];
            Utf8Formatter.TryFormat(bodyLength, digits, out int written);
            headers.Add("content-length"u8, digits.Slice(0, written));
        }
        for (int i = 0; i < _metadata.Count; i++)
        {
            ReadOnlySpan<byte> name = _metadata.Name(i);
            if (!IsDroppedRequestMetadata(name))
            {
                headers.Add(name, _metadata.Value(i), _metadata.Indexing(i));
            }
        }
    }

    private static bool IsDroppedRequestMetadata(ReadOnlySpan<byte> name) =>
        name[0] == (byte)':' || name.StartsWith("grpc-"u8) || IsHopByHop(name)
        || name.SequenceEqual("content-type"u8) || name.SequenceEqual("content-length"u8)
        || name.SequenceEqual("host"u8) || name.SequenceEqual("id"u8);

    private static bool IsHopByHop(ReadOnlySpan<byte> name) => name.Length switch
    {
        2 => name.SequenceEqual("te"u8),
        7 => name.SequenceEqual("upgrade"u8) || name.SequenceEqual("trailer"u8),
        10 => name.SequenceEqual("connection"u8) || name.SequenceEqual("keep-alive"u8),
        16 => name.SequenceEqual("proxy-connection"u8),
        17 => name.SequenceEqual("transfer-encoding"u8),
        _ => false,
    };

    /// <summary>Printable ASCII with no space and none of <paramref name="forbidden"/> (empty is fine).</summary>
    private static bool IsToken(ReadOnlySpan<byte> value, ReadOnlySpan<byte> forbidden)
    {
        foreach (byte b in value)
        {
            if (b is < 0x21 or > 0x7E || forbidden.Contains(b))
            {
                return false;
            }
        }
        return true;
    }

    private static bool IsFieldValue(ReadOnlySpan<byte> value)
    {
        foreach (byte b in value)
        {
            if (b is < 0x20 or > 0x7E)
            {
                return false;
            }
        }
        return value.IsEmpty || (value[0] != (byte)' ' && value[^1] != (byte)' ');
    }

    /// <summary>SayHello: the greeting (", name" when a name is given) and the request's data echoed.</summary>
    private void AnswerHello(ReadOnlySpan<byte> message)
    {
        if (!RuntimeMessages.TryReadHello(message, out RuntimeMessages.HelloRequest request))
        {
            Fail(GrpcStatus.Internal, "cannot decode SayHelloRequest");
            return;
        }
        string greeting = Options.Greeting;
        ReadOnlySpan<byte> name = message[request.Name];
        int helloLength = Encoding.UTF8.GetByteCount(greeting) + (name.IsEmpty ? 0 : 2 + name.Length);
        ReadOnlySpan<byte> data = message[request.Data];
        int messageLength = RuntimeMessages.FieldSize(helloLength) + (request.HasData ? RuntimeMessages.FieldSize(data.Length) : 0);
        if (messageLength > Options.MaxMessageBytes || !Hold(messageLength + 5))
        {
            Fail(GrpcStatus.ResourceExhausted, "the response would be larger than the message limit");
            return;
        }
        byte[] buffer = ArrayPool<byte>.Shared.Rent(messageLength + 5);
        Span<byte> b = buffer;
        RuntimeMessages.WriteGrpcPrefix(b, messageLength);
        int p = 5 + RuntimeMessages.WriteFieldHeader(b.Slice(5), 1, helloLength);
        p += Encoding.UTF8.GetBytes(greeting, b.Slice(p));
        if (!name.IsEmpty)
        {
            ", "u8.CopyTo(b.Slice(p));
            name.CopyTo(b.Slice(p + 2));
            p += 2 + name.Length;
        }
        if (request.HasData)
        {
            p += RuntimeMessages.WriteField(b.Slice(p), 2, data);
        }
        _body = buffer;
        _responseMetadata.Clear();
        SendAnswer(0, p);
    }

    // ---- the exchange's side (IExchangePeer: the exchange's lock is held) ----------------------------

    public bool SendHeaders(int streamId, HeaderList headers, bool endStream)
    {
        lock (this)
        {
            if (streamId != _generation || _phase != Phase.Forwarding)
            {
                return false;
            }
            if (!_responseHeadersSeen)
            {
                int status = headers.IndexOf(":status"u8) is int s and >= 0 && Utf8Parser.TryParse(headers.Value(s), out int parsed, out _) ? parsed : 0;
                if (status is >= 100 and < 200 && !endStream)
                {
                    return true; // interim responses are not the answer
                }
                _responseHeadersSeen = true;
                _status = status;
                if (status is >= 200 and < 300 && !StartBody(headers))
                {
                    return false;
                }
            }
            if (endStream)
            {
                Complete();
            }
            return true;
        }
    }

    public int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream)
    {
        lock (this)
        {
            if (streamId != _generation || _phase != Phase.Forwarding)
            {
                return -1;
            }
            int length = (int)data.Length;
            if (_status is >= 200 and < 300)
            {
                if (!EnsureBody(length))
                {
                    return -1;
                }
                data.CopyTo(_body.AsSpan(HeadRoom + _bodyCount));
                _bodyCount += length;
            }
            else if (_excerptLength < ExcerptLength)
            {
                int take = Math.Min(length, ExcerptLength - _excerptLength);
                data.Slice(0, take).CopyTo(_excerpt.AsSpan(_excerptLength));
                _excerptLength += take;
            }
            if (endStream)
            {
                Complete();
            }
            return length;
        }
    }

    public void Reset(int streamId, Http2ErrorCode errorCode)
    {
        lock (this)
        {
            if (streamId != _generation || _phase != Phase.Forwarding)
            {
                return;
            }
            if (Environment.TickCount64 >= _deadlineAt)
            {
                Fail(GrpcStatus.DeadlineExceeded, "deadline exceeded");
                return;
            }
            Fail(GrpcStatus.Unavailable, _responseHeadersSeen ? $"the upstream response (code {_status}) was cut off" : "the upstream request failed");
        }
    }

    public void Consume(int streamId, int bytes)
    {
        // The request message was credited as it arrived.
    }

    public void AddBlocked(ExchangeEvents exchange, int generation)
    {
        // SendData always takes everything: the exchange never waits on this side.
    }

    public void RemoveBlocked(ExchangeEvents exchange)
    {
    }

    public System.Net.EndPoint? RemoteEndPoint => _connection?.Connection.RemoteEndPoint;

    public bool TryReserveReplay(int bytes) => _connection?.TryReserveReplay(bytes) ?? false;

    public void ReleaseReplay(int bytes) => _connection?.ReleaseReplay(bytes);

    public void ScheduleFlush()
    {
        // The answer is flushed when it is written.
    }

    /// <summary>A 2xx head: its metadata and content type are kept, and room is made for the body.</summary>
    private bool StartBody(HeaderList headers)
    {
        _responseMetadata.Clear();
        int contentLength = -1;
        for (int i = 0; i < headers.Count; i++)
        {
            ReadOnlySpan<byte> name = headers.Name(i);
            ReadOnlySpan<byte> value = headers.Value(i);
            if (name.SequenceEqual("content-type"u8))
            {
                if (_contentType.Length < value.Length)
                {
                    _contentType = new byte[value.Length];
                }
                value.CopyTo(_contentType);
                _contentTypeLength = value.Length;
            }
            else if (name.SequenceEqual("content-length"u8))
            {
                if (Utf8Parser.TryParse(value, out int parsed, out int consumed) && consumed == value.Length)
                {
                    contentLength = parsed;
                }
            }
            else if (name.SequenceEqual("grpc-status"u8))
            {
                _grpcStatusInResponse = Utf8Parser.TryParse(value, out int code, out _) ? code : GrpcStatus.Unknown;
            }
            else if (name[0] != (byte)':' && !name.StartsWith("grpc-"u8) && !IsHopByHop(name))
            {
                _responseMetadata.Add(name, value, headers.Indexing(i));
            }
        }
        if (_bodiless || _status is 204 or 304)
        {
            contentLength = 0; // its content-length describes a body that does not come
        }
        return EnsureBody(Math.Max(contentLength, 0), exact: contentLength >= 0);
    }

    /// <summary>Room for <paramref name="more"/> body octets (and the content_type field after them), within the limits.</summary>
    private bool EnsureBody(int more, bool exact = false)
    {
        int needed = HeadRoom + _bodyCount + more + 6 + _contentTypeLength;
        if (_bodyCount + (long)more + _contentTypeLength > Options.MaxMessageBytes - 16)
        {
            Fail(GrpcStatus.ResourceExhausted, $"the response is larger than the message limit of {Options.MaxMessageBytes} octets");
            return false;
        }
        if (_body != null && _body.Length >= needed)
        {
            return true;
        }
        int size = exact ? needed : Math.Max(needed, Math.Min(Math.Max((_body?.Length ?? 0) * 2, 16 * 1024), Options.MaxMessageBytes + HeadRoom + 6 + _contentTypeLength));
        if (!Hold(size - (_body?.Length ?? 0)))
        {
            Fail(GrpcStatus.ResourceExhausted, "the connection's calls hold too many message octets; try again later");
            return false;
        }
        byte[] grown = ArrayPool<byte>.Shared.Rent(size);
        if (_body != null)
        {
            _body.AsSpan(HeadRoom, _bodyCount).CopyTo(grown.AsSpan(HeadRoom));
            ReturnBody();
        }
        _body = grown;
        return true;
    }

    private bool Hold(long bytes)
    {
        if (bytes <= 0)
        {
            return true;
        }
        if (!_connection!.TryHold(bytes))
        {
            return false;
        }
        _held += bytes;
        return true;
    }

    /// <summary>The upstream response is complete: answer the call with it.</summary>
    private void Complete()
    {
        if (_status is < 200 or >= 300 || _grpcStatusInResponse > 0)
        {
            if (Environment.TickCount64 >= _deadlineAt)
            {
                Fail(GrpcStatus.DeadlineExceeded, "deadline exceeded");
                return;
            }
            // Layotto's words for a failed HTTP call.
            string body = Encoding.UTF8.GetString(_excerpt, 0, _excerptLength);
            Fail(GrpcStatus.Unavailable, _grpcStatusInResponse > 0
                ? $"upstream answered grpc-status {_grpcStatusInResponse}"
                : $"http response code {_status}, body: {body}");
            return;
        }
        if (!EnsureBody(0))
        {
            return;
        }
        int bodyLength = _bodyCount;
        int contentType = _contentTypeLength;
        int anyLength = bodyLength > 0 ? RuntimeMessages.FieldSize(bodyLength) : 0;
        int messageLength = RuntimeMessages.FieldSize(anyLength) + (contentType > 0 ? RuntimeMessages.FieldSize(contentType) : 0);
        int head = 5 + 1 + RuntimeMessages.VarintSize(anyLength) + (bodyLength > 0 ? 1 + RuntimeMessages.VarintSize(bodyLength) : 0);
        int start = HeadRoom - head;
        Span<byte> b = _body;
        RuntimeMessages.WriteGrpcPrefix(b.Slice(start), messageLength);
        int p = start + 5;
        p += RuntimeMessages.WriteFieldHeader(b.Slice(p), 1, anyLength);
        if (bodyLength > 0)
        {
            RuntimeMessages.WriteFieldHeader(b.Slice(p), 2, bodyLength);
        }
        int end = HeadRoom + bodyLength;
        if (contentType > 0)
        {
            end += RuntimeMessages.WriteField(b.Slice(end), 2, _contentType.AsSpan(0, contentType));
        }
        SendAnswer(start, end);
    }

    // ---- the answer ------------------------------------------------------------------------------

    /// <summary>Response headers (with the upstream's metadata), the message in <see cref="_body"/>, then OK trailers.</summary>
    private void SendAnswer(int start, int end)
    {
        HeaderList headers = _answer;
        headers.Clear();
        headers.Add(":status"u8, "200"u8);
        headers.Add("content-type"u8, "application/grpc"u8);
        for (int i = 0; i < _responseMetadata.Count; i++)
        {
            headers.Add(_responseMetadata.Name(i), _responseMetadata.Value(i), _responseMetadata.Indexing(i));
        }
        if (!Protocol.SendHeaders(_streamId, headers, endStream: false))
        {
            Done();
            return;
        }
        _out = _body;
        _outStart = start;
        _outEnd = end;
        _phase = Phase.Sending;
        ContinueSending();
    }

    /// <summary>Sends what flow control and the send queue allow; the rest goes when they open (<see cref="OnWritable"/>).</summary>
    private void ContinueSending()
    {
        RuntimeApiConnection connection = _connection!;
        bool registered = false;
        while (_outStart < _outEnd)
        {
            int sent = connection.Connection.IsOutputFull ? (connection.Connection.IsClosed ? -1 : 0)
                : Protocol.SendData(_streamId, _out.AsSpan(_outStart, _outEnd - _outStart), endStream: false);
            if (sent < 0)
            {
                Done();
                return;
            }
            _outStart += sent;
            if (sent == 0)
            {
                if (registered)
                {
                    _outBlocked = true;
                    FlushBatch.Add(connection.Connection.Output);
                    return;
                }
                connection.AddBlocked(this, _generation);
                registered = true;
            }
        }
        if (registered)
        {
            connection.RemoveBlocked(this);
        }
        HeaderList trailers = _answer;
        trailers.Clear();
        trailers.Add("grpc-status"u8, "0"u8);
        Protocol.SendHeaders(_streamId, trailers, endStream: true);
        EndAnswer(GrpcStatus.Ok);
    }

    public void OnWritable(int generation)
    {
        lock (this)
        {
            if (generation == _generation && _phase == Phase.Sending)
            {
                _outBlocked = false;
                ContinueSending();
            }
        }
    }

    /// <summary>A trailers-only answer: HTTP 200 with grpc-status and grpc-message (percent-encoded, as gRPC says).</summary>
    private void Fail(int status, string message)
    {
        if (_phase is Phase.Sending or Phase.Idle)
        {
            return;
        }
        HeaderList headers = _answer;
        headers.Clear();
        headers.Add(":status"u8, "200"u8);
        headers.Add("content-type"u8, "application/grpc"u8);
        Span<byte> digits = stackalloc byte[11];
        Utf8Formatter.TryFormat(status, digits, out int n);
        headers.Add("grpc-status"u8, digits.Slice(0, n));
        headers.Add("grpc-message"u8, PercentEncode(message));
        if (status == GrpcStatus.Unimplemented)
        {
            headers.Add("grpc-accept-encoding"u8, "identity"u8);
        }
        Protocol.SendHeaders(_streamId, headers, endStream: true);
        EndAnswer(status);
    }

    /// <summary>A plain HTTP error for a request that is no gRPC call.</summary>
    private void Refuse(ReadOnlySpan<byte> httpStatus)
    {
        HeaderList headers = _answer;
        headers.Clear();
        headers.Add(":status"u8, httpStatus);
        headers.Add("content-length"u8, "0"u8);
        Protocol.SendHeaders(_streamId, headers, endStream: true);
        EndAnswer(-1);
    }

    private void EndAnswer(int status)
    {
        if (!_clientDone)
        {
            // The answer is complete while the client still sends: RFC 9113 §8.1's RST_STREAM(NO_ERROR).
            Protocol.ResetStream(_streamId, Http2ErrorCode.NoError);
        }
        if (status >= 0)
        {
            RuntimeApiStats.Answered(status); // counted before the answer can leave (see CheckDeadline)
        }
        FlushBatch.Add(_connection!.Connection.Output);
        Done();
    }

    internal static byte[] PercentEncode(string message)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(message);
        var encoded = new List<byte>(utf8.Length + 16);
        foreach (byte b in utf8)
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%')
            {
                encoded.Add(b);
            }
            else
            {
                encoded.Add((byte)'%');
                encoded.Add((byte)"0123456789ABCDEF"[b >> 4]);
                encoded.Add((byte)"0123456789ABCDEF"[b & 15]);
            }
        }
        return [.. encoded];
    }

    /// <summary>The call is over: its buffers and budget are given back and it returns to the pool.</summary>
    private void Done()
    {
        if (_phase == Phase.Idle)
        {
            return;
        }
        if (_outBlocked || _phase == Phase.Sending)
        {
            _connection?.RemoveBlocked(this);
        }
        _phase = Phase.Idle;
        _generation++;
        s_pool.Return(this);
    }

    private void ReturnBody()
    {
        if (_body != null)
        {
            ArrayPool<byte>.Shared.Return(_body);
            _body = null;
        }
    }

    private void Clear()
    {
        if (_held > 0)
        {
            _connection?.Release(_held);
            _held = 0;
        }
        if (_message != null)
        {
            ArrayPool<byte>.Shared.Return(_message);
            _message = null;
        }
        ReturnBody();
        _out = null;
        _outStart = _outEnd = 0;
        _outBlocked = false;
        _connection = null;
        _exchange = null;
        _exchangeGeneration = 0;
        _streamId = 0;
        _prefixCount = 0;
        _messageLength = 0;
        _received = 0;
        _clientDone = false;
        _status = 0;
        _responseHeadersSeen = false;
        _bodyCount = 0;
        _contentTypeLength = 0;
        _excerptLength = 0;
        _grpcStatusInResponse = -1;
        _bodiless = false;
        _metadata.ClearAndTrim();
        _request.ClearAndTrim();
        _answer.ClearAndTrim();
        _responseMetadata.ClearAndTrim();
    }

    private sealed class Policy : IPooledObjectPolicy<RuntimeCall>
    {
        public RuntimeCall Create() => new();

        public bool Return(RuntimeCall obj)
        {
            obj.Clear();
            return true;
        }
    }
}
