using System.Buffers;
using System.Buffers.Text;
using Microsoft.Extensions.ObjectPool;
using Proxy.Core.Diagnostics;
using Proxy.Core.Peers;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

/// <summary>
/// One request and its response as they cross the proxy: the downstream stream it arrived on, the route
/// it matched, the upstream stream it went out on, and the body octets waiting for flow control in
/// either direction. Events come from both connections' threads; the exchange's lock orders them.
/// Pooled: every field is reset between requests.
/// </summary>
public sealed partial class Exchange : ExchangeEvents, IDeferred
{
    // A pool per event loop (the last for threads off the loops): an exchange is made on, and stays with,
    // the loop that rents it, so that loop enters its lock without atomics (see OwnedLock).
    private static ObjectPool<Exchange>[]? s_pools;
    private readonly ObjectPool<Exchange> _home;
    private readonly OwnedLock _lock = EventLoop.NewLock();

    public HeaderList RequestHeaders = new();
    public HeaderList RequestTrailers = new(128, 4);
    public HeaderList ResponseHeaders = new();
    public HeaderList ResponseTrailers = new(128, 4);

    private IExchangePeer? _down;
    private int _downId;
    private IExchangePeer? _up;
    private int _upId;
    private UpstreamPool? _pool;
    private Route? _route;
    private Cluster? _cluster;
    private UpstreamEndpoint? _endpoint;
    private bool _clusterCounted;
    private bool _blockedOnUp;
    private bool _blockedOnDown;
    private bool _pendingCounted;

    private void EndPending()
    {
        if (_pendingCounted)
        {
            _pendingCounted = false;
            _cluster!.State.PendingEnded();
        }
    }
    private int _weightedIndex = -1;
    private bool _retryCounted;
    private bool _overloaded;
    private VirtualHost? _virtualHost;
    private RouteConfiguration? _routeConfiguration;
    private PendingData _requestPending;
    private PendingData _responsePending;
    // The exchange as two state machines, one per direction, each moving forward only (a retry takes the
    // request back to Received to replay it):
    //   request:  Receiving -> Received (the client's END_STREAM) [-> TrailersWaiting] -> Forwarded (END_STREAM upstream)
    //   response: Awaiting -> Streaming (final headers went down) [-> TrailersWaiting] -> Complete (END_STREAM down)
    // and which sides have ended (_upstreamClosed, _downstreamClosed) and whether it is over (_finished).
    private enum RequestPhase : byte
    {
        Receiving,       // body still coming from the client
        Received,        // the client's END_STREAM seen; what is pending still goes upstream
        TrailersWaiting, // received, and its trailers wait for the pending body to go first
        Forwarded,       // END_STREAM went upstream
    }

    private enum ResponsePhase : byte
    {
        Awaiting,        // no final response yet (interim 1xx pass through): a retry is still possible
        Streaming,       // final headers went to the client; the body follows
        TrailersWaiting, // the upstream ended with trailers, which wait for the pending body
        Complete,        // END_STREAM went to the client
    }

    private RequestPhase _request;
    private ResponsePhase _response;

    private bool RequestComplete => _request != RequestPhase.Receiving;

    private void RequestReceived()
    {
        if (_request == RequestPhase.Receiving)
        {
            _request = RequestPhase.Received;
        }
    }

    private void SetRequestForwarded(bool forwarded)
    {
        if (forwarded)
        {
            _request = RequestPhase.Forwarded;
        }
        else if (_request == RequestPhase.Forwarded)
        {
            _request = RequestPhase.Received;
        }
    }

    private void SetRequestTrailersWaiting(bool waiting)
    {
        if (waiting)
        {
            _request = RequestPhase.TrailersWaiting;
        }
        else if (_request == RequestPhase.TrailersWaiting)
        {
            _request = RequestPhase.Received;
        }
    }

    private void ResponseStarted()
    {
        if (_response == ResponsePhase.Awaiting)
        {
            _response = ResponsePhase.Streaming;
        }
    }
    private bool _upstreamClosed;         // the upstream stream ended (END_STREAM received, or reset)
    private bool _downstreamClosed;       // the downstream stream was reset
    private bool _finished;
    private int _generation;
    private bool _isGrpc;
    private bool _isHead;
    private bool _isWebSocket;            // an HTTP/1.1 WebSocket upgrade: after a 101, a tunnel

    /// <summary>
    /// Takes an exchange from the pool. Holders keep the returned generation with the reference and pass
    /// it to every event: once the exchange finishes, its generation moves on and late events from any
    /// thread are ignored, so the object can be reused at once.
    /// </summary>
    private static long s_active;

    // Stats: when the request came and when the current upstream attempt went out (Stopwatch ticks), and
    // the connection manager's stats to count it in (null for requests from inside the proxy).
    private long _startTicks;
    private long _upstreamTicks;
    private int _upstreamStatus; // the last attempt's final status, counted when the exchange ends
    private Diagnostics.HttpConnectionManagerStats? _hcm;

    /// <summary>Exchanges in flight in this process (what a graceful shutdown waits for).</summary>
    public static long ActiveCount => Volatile.Read(ref s_active);

    private Exchange(ObjectPool<Exchange> home)
    {
        _home = home;
        _timer = new DeadlineTimer(this);
        _pause = new PauseTimer(this);
    }

    public static Exchange Rent(IExchangePeer downstream, int downstreamStreamId, out int generation)
    {
        Interlocked.Increment(ref s_active);
        ObjectPool<Exchange>[] pools = s_pools ?? NewPools();
        Exchange exchange = pools[EventLoop.Current?.Index ?? pools.Length - 1].Get();
        using (exchange._lock.Enter())
        {
            exchange._down = downstream;
            exchange._downId = downstreamStreamId;
            generation = exchange._generation;
        }
        return exchange;
    }

    /// <summary>
    /// Runs <paramref name="work"/> outside the caller's locks: after the current batch on the calling event
    /// loop (the exchange keeps its loop, and with it the loop's slot of the upstream pool), else on the
    /// thread pool. For rare paths only (a lost race for a stream slot, a mirror): it allocates.
    /// </summary>
    private static void Soon<TState>(Action<TState> work, TState state)
    {
        if (EventLoop.Current is { } loop)
        {
            loop.Post(() => work(state));
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(work, state, preferLocal: true);
        }
    }

    private static ObjectPool<Exchange>[] NewPools()
    {
        var pools = new ObjectPool<Exchange>[EventLoop.SlotCount + 1];
        for (int i = 0; i < pools.Length; i++)
        {
            var policy = new ExchangePolicy();
            pools[i] = policy.Pool = new DefaultObjectPool<Exchange>(policy, 4096);
        }
        return Interlocked.CompareExchange(ref s_pools, pools, null) ?? pools;
    }

    public bool IsGrpc => _isGrpc;
    public Route? Route => _route;

    // ---- downstream events -------------------------------------------------------------------

    private bool AllowedByRbac(RbacPolicySet[] filters)
    {
        ReadOnlySpan<byte> path = RequestPath();
        int query = path.IndexOfAny((byte)'?', (byte)'#');
        var remote = _down!.RemoteEndPoint as System.Net.IPEndPoint;
        var request = new RbacRequest
        {
            Headers = RequestHeaders,
            Path = query >= 0 ? path.Slice(0, query) : path,
            DirectRemote = remote,
            Remote = _clientAddress ?? remote,
            Local = _down.LocalEndPoint as System.Net.IPEndPoint,
            Principal = _down.Tls?.PeerPrincipalUtf8,
        };
        foreach (RbacPolicySet rbac in filters)
        {
            if (!rbac.Allows(request))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>The request header block is complete: route it and find an upstream.</summary>
    public void OnRequestHeaders(int generation, ref HeaderList headers, RouteConfiguration routes, bool endStream, ListenerOptions? options = null)
    {
        UpstreamEndpoint? endpoint;
        UpstreamPool pool;
        TimeSpan connectTimeout;
        FaultPolicy? fault;
        using (_lock.Enter())
        {
            if (generation != _generation)
            {
                return;
            }
            (RequestHeaders, headers) = (headers, RequestHeaders);
            _request = endStream ? RequestPhase.Received : RequestPhase.Receiving;
            _startTicks = System.Diagnostics.Stopwatch.GetTimestamp();
            if ((_hcm = options?.Stats) != null)
            {
                _hcm.DownstreamRqTotal.Inc();
            }
            ScanRequest();
            if (options != null && options.RewritesPath && _pathIndex >= 0 && !RewritePath(options))
            {
                return;
            }
            StartConnectionManager(options);
            if (options != null && options.HttpRbac.Length > 0 && !AllowedByRbac(options.HttpRbac))
            {
                // envoy.filters.http.rbac: 403 with Envoy's body (gRPC: PERMISSION_DENIED).
                Transport.DownstreamLimits.Denied();
                SendLocalReply(403, GrpcStatus.PermissionDenied, "RBAC: access denied");
                return;
            }
            VirtualHost? host = routes.FindVirtualHost(RequestAuthority());
            // No :path is a CONNECT (both codecs require one otherwise): as in Envoy, it matches only a
            // route with a connect_matcher, which we do not offer, so it is not forwarded as a GET of "/".
            _route = _pathIndex < 0 ? null : host?.FindRoute(RequestPath(), RequestHeaders, _isGrpc);
            _virtualHost = host;
            _routeConfiguration = routes;
            if (_route == null)
            {
                // gRPC's HTTP mapping: no route is UNIMPLEMENTED.
                SendLocalReply(404, GrpcStatus.Unimplemented, "no route");
                return;
            }
            RouteAction action = _route.Action;
            if ((_route.Cors ?? host!.Cors) is { } cors && ApplyCors(cors))
            {
                return;
            }
            if (action.Kind == RouteActionKind.DirectResponse)
            {
                SendDirectResponse(action.DirectStatus, action.DirectBody);
                return;
            }
            if (action.Kind == RouteActionKind.Redirect)
            {
                SendRedirect(_route);
                return;
            }
            Cluster? cluster = action.PickCluster(RequestHeaders, out _weightedIndex);
            if (cluster == null)
            {
                SendLocalReply(503, GrpcStatus.Unavailable, "no cluster for the request");
                return;
            }
            if (_isWebSocket && cluster.Protocol != UpstreamProtocol.Http1)
            {
                // No extended CONNECT (RFC 8441) towards HTTP/2 upstreams: the upgrade cannot be carried.
                SendLocalReply(503, GrpcStatus.Unavailable, "websocket upgrade needs an HTTP/1.1 upstream");
                return;
            }
            endpoint = cluster.UsesOriginalDestination ? OriginalDestinationEndpoints.For(cluster.OriginalDestinationOf(_down!.OriginalDestination, RequestHeaders), cluster)
                : action.HashPolicies.Length > 0 && cluster.LbPolicy is LbPolicy.RingHash or LbPolicy.Maglev
                ? cluster.PickEndpoint(HashPolicy.Compute(action.HashPolicies, RequestHeaders, RequestPath(), _down!.RemoteEndPoint))
                : cluster.PickEndpoint();
            if (endpoint == null)
            {
                SendLocalReply(503, GrpcStatus.Unavailable, "no healthy upstream");
                return;
            }
            if (cluster.CircuitBreakers is { } breakers
                && (cluster.State.ActiveRequests >= breakers.MaxRequests || cluster.State.PendingRequests >= breakers.MaxPendingRequests))
            {
                // Envoy's circuit breaker: 503 with x-envoy-overloaded, no upstream attempt.
                _overloaded = true;
                cluster.State.Overflowed();
                SendLocalReply(503, GrpcStatus.Unavailable, "upstream overflow");
                return;
            }
            cluster.State.RequestStarted();
            _clusterCounted = true;
            if (cluster.CircuitBreakers != null)
            {
                // Pending until a connection takes the request (max_pending_requests).
                cluster.State.PendingStarted();
                _pendingCounted = true;
            }
            ApplyRewrites(_route, endpoint);
            // Most specific first; the route configuration's own list is applied last (Envoy's default order).
            if (_weightedIndex >= 0 && _weightedIndex < action.WeightedMutations.Length)
            {
                action.WeightedMutations[_weightedIndex].Request?.Apply(RequestHeaders);
            }
            _route.RequestHeaderMutations?.Apply(RequestHeaders);
            host!.RequestHeaders?.Apply(RequestHeaders);
            routes.RequestHeaders?.Apply(RequestHeaders);
            _cluster = cluster;
            _endpoint = endpoint;
            _retry = action.RetryPolicy;
            pool = _pool = endpoint.Pool;
            pool.RequestStarted();
            connectTimeout = cluster.ConnectTimeout;
            if (action.Mirror is { } mirror && !_isWebSocket)
            {
                StartMirror(mirror, action.Timeout);
            }
            // The route's idle_timeout is armed on the wheel; the connection manager's stream_idle_timeout
            // (Envoy: 5 min, on every stream) is checked by the listener's sweep instead, so the common
            // case touches no shared timer structure per request.
            if (action.IdleTimeout <= TimeSpan.Zero && options?.StreamIdleTimeout is { } streamIdle && streamIdle > TimeSpan.Zero)
            {
                _streamIdleMs = (long)streamIdle.TotalMilliseconds;
                _lastActivity = Environment.TickCount64;
            }
            TimeSpan idleTimeout = action.IdleTimeout;
            if (!endStream && options?.RequestTimeout is { } requestTimeout && requestTimeout > TimeSpan.Zero)
            {
                _requestDeadlineAt = Environment.TickCount64 + (long)requestTimeout.TotalMilliseconds;
            }
            ArmDeadline(action.Timeout, action.MaxGrpcTimeout, idleTimeout);
            fault = _route.Fault ?? host.Fault;
            if (fault != null && ApplyFault(fault))
            {
                return;
            }
        }
        if (endStream)
        {
            // No body: the upstream is asked for at the end of this read, so a stream the client resets in
            // the same read (rapid reset's HEADERS + RST_STREAM) never reaches it. A request with a body
            // asks at once: its DATA, usually in the same read, then goes straight out instead of being copied.
            FlushBatch.Defer(this, generation << 8);
        }
        else
        {
            pool.Acquire(this, generation << 8, connectTimeout);
        }
    }

    /// <summary>
    /// A whole request from inside the proxy (the runtime API): routed exactly as one from a client, with
    /// <paramref name="deadlineAt"/> (Environment.TickCount64 ms) as the call's deadline on top of the
    /// route's timeout. The body, if any, is in <paramref name="body"/> (rented from ArrayPool.Shared): the
    /// exchange takes it over and returns it to the pool, so its octets are not copied again.
    /// </summary>
    public void OnRequest(int generation, ref HeaderList headers, RouteConfiguration routes, byte[]? body, int start, int count, long deadlineAt)
    {
        using (_lock.Enter())
        {
            if (generation != _generation)
            {
                if (body != null)
                {
                    ArrayPool<byte>.Shared.Return(body);
                }
                return;
            }
            _callDeadlineAt = deadlineAt;
        }
        bool bodyless = body == null || count == 0;
        OnRequestHeaders(generation, ref headers, routes, endStream: bodyless);
        if (body == null)
        {
            return;
        }
        if (bodyless)
        {
            ArrayPool<byte>.Shared.Return(body);
            return;
        }
        OnRequestBody(generation, body, start, count);
    }

    /// <summary>The complete request body in a pooled array the exchange takes over (see <see cref="OnRequest"/>).</summary>
    private void OnRequestBody(int generation, byte[] body, int start, int count)
    {
        using (_lock.Enter())
        {
            if (generation != _generation || _finished)
            {
                ArrayPool<byte>.Shared.Return(body);
                return;
            }
            RequestReceived();
            var data = new ReadOnlySequence<byte>(body, start, count);
            Touch();
            _shadow?.OnRequestData(_shadowGeneration, data, endStream: true);
            Retain(data);
            if (_up == null || _requestPending.Count > 0 || _upstreamClosed)
            {
                if (_upstreamClosed && !_retryScheduled)
                {
                    ArrayPool<byte>.Shared.Return(body);
                    return;
                }
                _requestPending.Adopt(body, start, count);
                _requestPending.EndStream = true;
                return;
            }
            int sent = _up.SendData(_upId, data, endStream: true);
            if (sent >= 0)
            {
                _up.ScheduleFlush();
            }
            if (sent < 0 || sent == count)
            {
                if (sent == count)
                {
                    _request = RequestPhase.Forwarded;
                }
                ArrayPool<byte>.Shared.Return(body);
                return;
            }
            _requestPending.Adopt(body, start + sent, count - sent);
            _requestPending.EndStream = true;
            FlushRequest();
        }
    }

    /// <summary>
    /// The upstream asked for at the end of the batch the request came in (see <see cref="OnRequestHeaders"/>),
    /// unless the exchange has finished or moved on to another attempt since.
    /// </summary>
    void IDeferred.RunDeferred(int token)
    {
        // Pool and cluster are read first: should the exchange finish elsewhere meanwhile, it is reset (none)
        // or reused (another token), and a stale request for a connection is refused by the token.
        UpstreamPool? pool = Volatile.Read(ref _pool);
        Cluster? cluster = Volatile.Read(ref _cluster);
        if (pool != null && cluster != null && !Volatile.Read(ref _finished) && token == UpstreamToken)
        {
            pool.Acquire(this, token, cluster.ConnectTimeout);
        }
    }

    /// <summary>Request body from the client; false when this exchange no longer takes it (over, or another request's now).</summary>
    public bool OnRequestData(int generation, in ReadOnlySequence<byte> data, bool endStream)
    {
        using (_lock.Enter())
        {
            if (generation != _generation || _finished)
            {
                return false;
            }
            if (endStream)
            {
                RequestReceived();
            }
            int length = (int)data.Length;
            _bytesReceived += length;
            Touch();
            _shadow?.OnRequestData(_shadowGeneration, data, endStream);
            if (_isShadow && _requestPending.Count + length > RetryPolicy.DefaultBufferLimit)
            {
                // The mirror is slower than the client: give the shadow up rather than buffer without bound.
                _downstreamClosed = true;
                if (_up != null && !_upstreamClosed)
                {
                    _up.Reset(_upId, Http2ErrorCode.Cancel);
                    _up.ScheduleFlush();
                    _upstreamClosed = true;
                }
                Finish();
                return true;
            }
            Retain(data);
            if (_up == null || _requestPending.Count > 0 || _upstreamClosed)
            {
                if (_upstreamClosed && !_retryScheduled)
                {
                    CreditDownstream(length); // the upstream is gone: drain and drop
                    return true;
                }
                _requestPending.Append(data);
                _requestPending.EndStream |= endStream;
                return true;
            }
            int sent = _up.SendData(_upId, data, endStream);
            if (sent < 0)
            {
                CreditDownstream(length);
                return true;
            }
            _up.ScheduleFlush();
            CreditDownstream(sent);
            if (sent == length)
            {
                if (endStream)
                {
                    _request = RequestPhase.Forwarded;
                }
                return true;
            }
            _requestPending.Append(data.Slice(sent));
            _requestPending.EndStream = endStream;
            FlushRequest();
            return true;
        }
    }

    public void OnRequestTrailers(int generation, ref HeaderList trailers)
    {
        using (_lock.Enter())
        {
            if (generation != _generation)
            {
                return;
            }
            (RequestTrailers, trailers) = (trailers, RequestTrailers);
            RequestReceived();
            _hasRequestTrailers = true;
            if (_shadow != null)
            {
                MirrorTrailers();
            }
            if (_finished || _upstreamClosed)
            {
                return;
            }
            if (_up == null || _requestPending.Count > 0)
            {
                _request = RequestPhase.TrailersWaiting;
                return;
            }
            _up.SendHeaders(_upId, RequestTrailers, endStream: true);
            _request = RequestPhase.Forwarded;
            _up.ScheduleFlush();
        }
    }

    /// <summary>The client reset its stream, or its connection closed.</summary>
    public void OnDownstreamReset(int generation)
    {
        using (_lock.Enter())
        {
            if (generation != _generation || _finished)
            {
                return;
            }
            _downstreamClosed = true;
            if (_shadow != null && !RequestComplete)
            {
                _shadow.OnDownstreamReset(_shadowGeneration); // a mirror of a cut-off request is cut off too
            }
            if (_up != null && !_upstreamClosed)
            {
                // Cancellation travels upstream (gRPC: the server sees CANCELLED).
                _up.Reset(_upId, Http2ErrorCode.Cancel);
                _up.ScheduleFlush();
                _upstreamClosed = true;
            }
            Finish();
        }
    }

    // ---- upstream events ---------------------------------------------------------------------

    /// <summary>
    /// The pool has a connection for us: open the upstream stream. False when the exchange no longer wants
    /// it (the client reset or went away meanwhile): the pool takes the connection back at once, so a
    /// cancelled request never holds upstream capacity.
    /// </summary>
    public override bool OnUpstreamReady(int generation, IUpstreamConnection connection)
    {
        using (_lock.Enter())
        {
            if (generation != UpstreamToken || _finished)
            {
                return false;
            }
            bool endStream = RequestComplete && _requestPending.Count == 0 && _request != RequestPhase.TrailersWaiting;
            if (_virtualHost is { IncludeRequestAttemptCount: true })
            {
                SetAttemptCount(RequestHeaders);
            }
            // :scheme says how this hop is secured (Envoy's upstream scheme): https over TLS, http in the clear.
            int scheme = RequestHeaders.IndexOf(":scheme"u8);
            ReadOnlySpan<byte> wanted = connection.Tls != null ? "https"u8 : "http"u8;
            if (scheme >= 0 && !RequestHeaders.Value(scheme).SequenceEqual(wanted))
            {
                RequestHeaders.SetValue(scheme, wanted);
            }
            int id = connection.OpenStream(RequestHeaders, endStream, this, UpstreamToken);
            if (id <= 0)
            {
                // Lost a race for the last stream slot: ask again.
                UpstreamPool pool = _pool!;
                TimeSpan timeout = _cluster!.ConnectTimeout;
                Soon(static state => state.pool.Acquire(state.exchange, state.generation, state.timeout), (pool, exchange: this, generation, timeout));
                return true;
            }
            _up = connection;
            EndPending();
            _upstreamTicks = System.Diagnostics.Stopwatch.GetTimestamp();
            _cluster?.State.Stats.UpstreamRqTotal.Inc();
            if (_retry is { PerTryTimeout: var perTry } && perTry > TimeSpan.Zero)
            {
                ArmPerTryTimeout(perTry);
            }
            _upId = id;
            SetRequestForwarded(endStream);
            connection.ScheduleFlush();
            FlushRequest();
            return true;
        }
    }

    public override void OnUpstreamFailed(int generation, string reason)
    {
        using (_lock.Enter())
        {
            if (generation != UpstreamToken || _finished)
            {
                return;
            }
            _upstreamClosed = true;
            EndPending();
            ProxyLog.Peer(LogLevel.Warning, reason);
            if (_endpoint != null)
            {
                _cluster?.RecordOutcome(_endpoint, failure: true, gatewayFailure: true);
            }
            if (_retry != null && _retry.OnConnectFailure && TryRetry())
            {
                return;
            }
            _flags ??= "UF";
            SendLocalReply(503, GrpcStatus.Unavailable, reason);
        }
    }

    /// <summary>A response header block (1xx or final), swapped in from the upstream connection's scratch list.</summary>
    public override void OnResponseHeaders(int generation, ref HeaderList headers, bool endStream)
    {
        using (_lock.Enter())
        {
            if (generation != UpstreamToken || _finished)
            {
                return;
            }
            (ResponseHeaders, headers) = (headers, ResponseHeaders);
            int status = ResponseStatus();
            if (status is < 200 or 204 && ResponseHeaders.IndexOf("content-length"u8) is int contentLength and >= 0)
            {
                ResponseHeaders.RemoveAt(contentLength); // RFC 9110 §8.6: never on a 1xx or 204, whatever the upstream sent
            }
            if (status is >= 100 and < 200 && !(status == 101 && _isWebSocket) && !endStream)
            {
                // An interim response (103 Early Hints, ...) passes on as it is; the response has not
                // started: a failure after it still gets a status of its own, and retries stay possible.
                _down!.SendHeaders(_downId, ResponseHeaders, endStream: false);
                _down.ScheduleFlush();
                return;
            }
            if (_cluster != null && status >= 200)
            {
                if (_upstreamStatus != 0)
                {
                    _cluster.State.Stats.Responded(_upstreamStatus, StatLine.Current); // an earlier attempt's, retried
                }
                _upstreamStatus = status;
            }
            if (_cluster?.OutlierDetection != null)
            {
                RecordResponseOutcome();
            }
            if (_retry != null && ShouldRetryResponse() && TryRetry())
            {
                return;
            }
            if (_route != null && _weightedIndex >= 0 && _weightedIndex < _route.Action.WeightedMutations.Length)
            {
                _route.Action.WeightedMutations[_weightedIndex].Response?.Apply(ResponseHeaders);
            }
            _route?.ResponseHeaderMutations?.Apply(ResponseHeaders);
            _virtualHost?.ResponseHeaders?.Apply(ResponseHeaders);
            if (_virtualHost is { IncludeAttemptCountInResponse: true })
            {
                SetAttemptCount(ResponseHeaders);
            }
            _routeConfiguration?.ResponseHeaders?.Apply(ResponseHeaders);
            if (_cors != null)
            {
                AddCorsResponseHeaders();
            }
            if (_isWebSocket && status == 101)
            {
                // The tunnel is up: the route's timeouts were for the handshake; idleness still counts.
                _deadlineAt = _perTryAt = _requestDeadlineAt = _callDeadlineAt = long.MaxValue;
            }
            _upstreamClosed |= endStream;
            ResponseStarted();
            if (_retry != null)
            {
                // No retry once a response has started: the replay copy of the request goes now, not at
                // the end (a long upload or a WebSocket tunnel would otherwise hold up to 1 MiB of it).
                _retainOverflow = true;
                ReleaseRetained();
            }
            SendResponseHeaders(ResponseHeaders, endStream, proxied: true);
            _down!.ScheduleFlush();
            if (endStream)
            {
                _response = ResponsePhase.Complete;
                Finish();
            }
        }
    }

    public override void OnResponseData(int generation, in ReadOnlySequence<byte> data, bool endStream)
    {
        using (_lock.Enter())
        {
            if (generation != UpstreamToken)
            {
                return;
            }
            _upstreamClosed |= endStream;
            int length = (int)data.Length;
            _bytesSent += length;
            Touch();
            if (_finished || _downstreamClosed)
            {
                _up?.Consume(_upId, length);
                return;
            }
            if (_responsePending.Count > 0)
            {
                _responsePending.Append(data);
                _responsePending.EndStream |= endStream;
                return;
            }
            int sent = _down!.SendData(_downId, data, endStream);
            if (sent < 0)
            {
                // The downstream stream is gone (or refused the response): the upstream one is cancelled.
                _up!.Consume(_upId, length);
                _downstreamClosed = true;
                Finish();
                return;
            }
            _down.ScheduleFlush();
            if (sent > 0)
            {
                _up!.Consume(_upId, sent);
            }
            if (sent == length)
            {
                if (endStream)
                {
                    _response = ResponsePhase.Complete;
                    Finish();
                }
                return;
            }
            _responsePending.Append(data.Slice(sent));
            _responsePending.EndStream = endStream;
            FlushResponse();
        }
    }

    public override void OnResponseTrailers(int generation, ref HeaderList trailers)
    {
        using (_lock.Enter())
        {
            if (generation != UpstreamToken)
            {
                return;
            }
            (ResponseTrailers, trailers) = (trailers, ResponseTrailers);
            _upstreamClosed = true;
            if (_finished || _downstreamClosed)
            {
                return;
            }
            if (_responsePending.Count > 0)
            {
                _response = ResponsePhase.TrailersWaiting;
                return;
            }
            _down!.SendHeaders(_downId, ResponseTrailers, endStream: true);
            _down.ScheduleFlush();
            _response = ResponsePhase.Complete;
            Finish();
        }
    }

    /// <summary>The upstream reset the stream, or its connection was lost.</summary>
    public override void OnUpstreamReset(int generation, Http2ErrorCode errorCode)
    {
        using (_lock.Enter())
        {
            if (generation != UpstreamToken || _finished)
            {
                return;
            }
            _upstreamClosed = true;
            if (_response == ResponsePhase.Awaiting && _endpoint != null)
            {
                _cluster?.RecordOutcome(_endpoint, failure: true, gatewayFailure: true);
            }
            if (_response == ResponsePhase.Awaiting && _retry != null && _retry.OnReset(errorCode == Http2ErrorCode.RefusedStream) && TryRetry())
            {
                return;
            }
            if (_response == ResponsePhase.Awaiting)
            {
                SendLocalReply(503, GrpcStatus.Unavailable, errorCode == Http2ErrorCode.RefusedStream ? "upstream refused the stream" : "upstream reset before response");
                return;
            }
            // Response bytes already went downstream: the reset travels on.
            IExchangePeer down = _down!;
            int current = _generation;
            _downstreamClosed = true;
            down.Reset(_downId, errorCode == Http2ErrorCode.NoError ? Http2ErrorCode.InternalError : errorCode);
            down.ScheduleFlush();
            if (current == _generation)
            {
                Finish(); // (unless the peer's close came back at once and finished it)
            }
        }
    }

    /// <summary>A connection this exchange waits on can take more data (WINDOW_UPDATE, or its send queue drained).</summary>
    public override void OnWritable(int generation)
    {
        using (_lock.Enter())
        {
            if (generation != _generation || _finished)
            {
                return;
            }
            if (_requestPending.Count > 0 || _request == RequestPhase.TrailersWaiting)
            {
                FlushRequest();
            }
            if (_responsePending.Count > 0 || _response == ResponsePhase.TrailersWaiting)
            {
                FlushResponse();
            }
        }
    }

    /// <summary>
    /// Sends pending request octets. When the upstream cannot take them all, the exchange registers for a
    /// wake-up and then tries once more: a window that opened between the first try and the registration
    /// is not missed.
    /// </summary>
    private void FlushRequest()
    {
        if (_up == null || _upstreamClosed)
        {
            return;
        }
        bool registered = false;
        while (_requestPending.Count > 0 || (_requestPending.EndStream && _request != RequestPhase.Forwarded))
        {
            bool end = _requestPending.EndStream && _request != RequestPhase.TrailersWaiting;
            int count = _requestPending.Count;
            int sent = _up.SendData(_upId, _requestPending.Data, end);
            if (sent < 0)
            {
                CreditDownstream(count);
                _requestPending.Release();
                break;
            }
            _up.ScheduleFlush();
            if (sent > 0)
            {
                CreditDownstream(sent);
                _requestPending.Consume(sent);
            }
            if (sent == count)
            {
                if (end)
                {
                    _request = RequestPhase.Forwarded;
                }
                _requestPending.EndStream = false;
                break;
            }
            if (sent == 0)
            {
                if (registered)
                {
                    return;
                }
                _up.AddBlocked(this, _generation);
                _blockedOnUp = true;
                registered = true;
            }
        }
        if (_requestPending.Count > 0)
        {
            return;
        }
        if (_request == RequestPhase.TrailersWaiting)
        {
            _up.SendHeaders(_upId, RequestTrailers, endStream: true);
            _request = RequestPhase.Forwarded;
            _up.ScheduleFlush();
        }
        if (_blockedOnUp)
        {
            _up.RemoveBlocked(this);
            _blockedOnUp = false;
        }
    }

    /// <summary>Sends pending response octets; registers for a wake-up the same way as <see cref="FlushRequest"/>.</summary>
    private void FlushResponse()
    {
        bool registered = false;
        while (_responsePending.Count > 0 || (_responsePending.EndStream && _response != ResponsePhase.Complete))
        {
            bool end = _responsePending.EndStream && _response != ResponsePhase.TrailersWaiting;
            int count = _responsePending.Count;
            int sent = _down!.SendData(_downId, _responsePending.Data, end);
            if (sent < 0)
            {
                _up?.Consume(_upId, count);
                _responsePending.Release();
                _downstreamClosed = true;
                Finish();
                return;
            }
            _down.ScheduleFlush();
            if (sent > 0)
            {
                _up?.Consume(_upId, sent);
                _responsePending.Consume(sent);
            }
            if (sent == count)
            {
                if (end)
                {
                    _responsePending.EndStream = false;
                    _response = ResponsePhase.Complete;
                }
                break;
            }
            if (sent == 0)
            {
                if (registered)
                {
                    return;
                }
                _down.AddBlocked(this, _generation);
                _blockedOnDown = true;
                registered = true;
            }
        }
        if (_responsePending.Count > 0)
        {
            return;
        }
        if (_response == ResponsePhase.TrailersWaiting)
        {
            _response = ResponsePhase.Streaming;
            _down!.SendHeaders(_downId, ResponseTrailers, endStream: true);
            _down.ScheduleFlush();
            _response = ResponsePhase.Complete;
        }
        if (_blockedOnDown)
        {
            _down!.RemoveBlocked(this);
            _blockedOnDown = false;
        }
        if (_response == ResponsePhase.Complete)
        {
            Finish();
        }
    }

    /// <summary>
    /// Ends the exchange once the response is complete (or a side reset): whatever is still open upstream is
    /// reset, a request the client is still sending is abandoned (RFC 9113 §8.1: see
    /// <see cref="IExchangePeer.AbandonRequest"/>), and the exchange goes back to the pool.
    /// </summary>
    private void Finish()
    {
        if (_finished || !(_response == ResponsePhase.Complete || _downstreamClosed))
        {
            return;
        }
        // Finished before anything is reset, so a close that comes straight back (on this thread, the
        // lock being re-entrant) finds the exchange done instead of finishing it a second time.
        _finished = true;
        if (!_upstreamClosed && _up != null)
        {
            _up.Reset(_upId, Http2ErrorCode.Cancel);
            _up.ScheduleFlush();
        }
        if (!_downstreamClosed && !RequestComplete)
        {
            IExchangePeer down = _down!;
            down.AbandonRequest(_downId);
            down.ScheduleFlush();
        }
        _shadow = null;
        CountFinished();
        EndPending();
        _pool?.RequestEnded();
        if (_clusterCounted)
        {
            _cluster!.State.RequestEnded();
        }
        if (_retryCounted)
        {
            _cluster!.State.RetryEnded();
        }
        _timer.Cancel();
        _pause.Cancel();
        if (_blockedOnUp)
        {
            _up?.RemoveBlocked(this);
        }
        if (_blockedOnDown)
        {
            _down?.RemoveBlocked(this);
        }
        _blockedOnUp = _blockedOnDown = false;
        _requestPending.Release();
        _responsePending.Release();
        ReleaseRetained();
        // Late events from either connection carry the old generation and are ignored from here on.
        _generation++;
        Interlocked.Decrement(ref s_active);
        _home.Return(this);
    }

    /// <summary>The response status now in <see cref="ResponseHeaders"/> (0 when there is none).</summary>
    private int ResponseStatus()
    {
        int index = ResponseHeaders.IndexOf(":status"u8);
        return index >= 0 && Utf8Parser.TryParse(ResponseHeaders.Value(index), out int status, out _) ? status : 0;
    }

    /// <summary>The request's stats: the downstream status class and time, the last upstream attempt's time.</summary>
    private void CountFinished()
    {
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        StatLine line = StatLine.Current;
        // The upstream's status went downstream as it was, unless the proxy answered itself.
        int status = _hcm == null && _accessLogs == null ? 0
            : _response == ResponsePhase.Awaiting ? 0 : _upstreamStatus != 0 && _upstreamTicks != 0 ? _upstreamStatus : ResponseStatus();
        if (_accessLogs is { } logs)
        {
            WriteAccessLogs(logs, status, now);
            _accessLogs = null;
        }
        if (_hcm != null)
        {
            if (status is >= 100 and < 600)
            {
                _hcm.DownstreamRqClass[(status / 100) - 1].Inc(line);
            }
            _hcm.DownstreamRqTime.RecordTicks(now - _startTicks, line);
            _hcm = null;
        }
        if (_upstreamStatus != 0)
        {
            _cluster?.State.Stats.Responded(_upstreamStatus, line);
            _upstreamStatus = 0;
        }
        if (_upstreamTicks != 0)
        {
            _cluster?.State.Stats.UpstreamRqTime.RecordTicks(now - _upstreamTicks, line);
            _upstreamTicks = 0;
        }
    }

    private void Reset()
    {
        RequestHeaders.ClearAndTrim();
        RequestTrailers.ClearAndTrim();
        ResponseHeaders.ClearAndTrim();
        ResponseTrailers.ClearAndTrim();
        _requestPending.Release();
        _responsePending.Release();
        _down = null;
        _up = null;
        _pool = null;
        _route = null;
        _cluster = null;
        _endpoint = null;
        _clusterCounted = _retryCounted = _overloaded = _pendingCounted = false;
        _blockedOnUp = _blockedOnDown = false;
        _weightedIndex = -1;
        _deadlineAt = long.MaxValue;
        _perTryAt = long.MaxValue;
        _requestDeadlineAt = long.MaxValue;
        _callDeadlineAt = long.MaxValue;
        _idleTimeout = 0;
        _streamIdleMs = 0;
        _cors = null;
        _corsOriginIndex = -1;
        _shadow = null;
        _isShadow = false;
        _pauseAbort = null;
        ResetRetry();
        _virtualHost = null;
        _routeConfiguration = null;
        ResetConnectionManager();
        _downId = _upId = 0;
        _request = RequestPhase.Receiving;
        _response = ResponsePhase.Awaiting;
        _upstreamClosed = _downstreamClosed = _isGrpc = _isHead = _isWebSocket = false;
        _finished = false;
    }

    private sealed class ExchangePolicy : IPooledObjectPolicy<Exchange>
    {
        public ObjectPool<Exchange>? Pool;

        public Exchange Create() => new(Pool!);

        public bool Return(Exchange obj)
        {
            obj.Reset();
            return true;
        }
    }
}
