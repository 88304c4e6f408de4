using System.Buffers.Text;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

public sealed partial class Exchange
{
    // The exchange's one timer (deadlines, idleness, per-try), armed with the generation it is for.
    private readonly DeadlineTimer _timer;

    private sealed class DeadlineTimer(Exchange exchange) : WheelTimer
    {
        protected internal override void OnExpired(int tag) => exchange.OnDeadline(tag);
    }

    // The second timer: a pause before the upstream is asked for (a retry's back-off, a fault's delay),
    // on the same wheel, so the request carries on on its loop.
    private readonly PauseTimer _pause;
    private FaultPolicy? _pauseAbort;   // a delayed fault that then aborts
    private bool _pauseIsFault;         // tag: the generation (fault) or the upstream token (retry)

    private sealed class PauseTimer(Exchange exchange) : WheelTimer
    {
        protected internal override void OnExpired(int tag) => exchange.OnPauseOver(tag);
    }

    /// <summary>Under the lock: asks for the upstream again after <paramref name="delay"/> (<paramref name="tag"/>: see _pauseIsFault).</summary>
    private void PauseThenAcquire(TimeSpan delay, int tag, bool fault, FaultPolicy? abort)
    {
        _pauseIsFault = fault;
        _pauseAbort = abort;
        TimerWheel.ForCurrentThread.Add(_pause, Environment.TickCount64 + Math.Max((long)delay.TotalMilliseconds, 1), tag);
    }

    private void OnPauseOver(int tag)
    {
        FlushBatch.Begin();
        try
        {
            int token;
            UpstreamPool pool;
            TimeSpan connectTimeout;
            using (_lock.Enter())
            {
                if (_finished || (_pauseIsFault ? tag != _generation : tag != UpstreamToken))
                {
                    return;
                }
                if (_pauseIsFault && _pauseAbort is { } abort)
                {
                    Abort(abort);
                    return;
                }
                _retryScheduled = false;
                token = _pauseIsFault ? tag << 8 : tag;
                // Read under the lock: once it is let go, the exchange may finish (and be reset) elsewhere.
                pool = _pool!;
                connectTimeout = _cluster!.ConnectTimeout;
            }
            pool.Acquire(this, token, connectTimeout);
        }
        finally
        {
            FlushBatch.End();
        }
    }

    private long _deadlineAt = long.MaxValue;   // absolute, Environment.TickCount64 ms
    private long _idleTimeout;                  // ms; 0 = none (the route's idle_timeout, on the wheel)
    private long _streamIdleMs;                 // ms; 0 = none (the HCM's stream_idle_timeout, checked by the sweep)
    private long _lastActivity;                 // ms, updated on every body or header event
    private long _perTryAt = long.MaxValue;     // absolute: the current try's per_try_timeout
    private long _requestDeadlineAt = long.MaxValue; // absolute: the HCM's request_timeout, until the request is complete
    private int _perTryToken;                   // the upstream token of the try it belongs to
    private long _callDeadlineAt = long.MaxValue; // absolute: the deadline of an internal caller (the runtime API)

    /// <summary>Notes traffic on the stream, for the route's idle_timeout (one store, no lock needed).</summary>
    private void Touch()
    {
        if ((_idleTimeout | _streamIdleMs) > 0)
        {
            Volatile.Write(ref _lastActivity, Environment.TickCount64);
        }
    }

    /// <summary>Arms the wheel for whichever comes first: the deadline, or idleness.</summary>
    private void ArmTimer()
    {
        long due = Math.Min(Math.Min(_deadlineAt, _perTryAt), RequestComplete ? long.MaxValue : _requestDeadlineAt);
        if (_idleTimeout > 0)
        {
            due = Math.Min(due, Volatile.Read(ref _lastActivity) + _idleTimeout);
        }
        if (due == long.MaxValue)
        {
            return;
        }
        // On the wheel of the loop the request arrived on (its deadline fires there), else the shared one.
        TimerWheel.ForCurrentThread.Add(_timer, due, _generation);
    }

    /// <summary>
    /// Arms the request's deadline: the route's timeout and, for gRPC, the client's grpc-timeout, whichever
    /// ends first (gRPC's PROTOCOL-HTTP2: the server side treats grpc-timeout as the call's deadline).
    /// </summary>
    private void ArmDeadline(TimeSpan routeTimeout, TimeSpan maxGrpcTimeout, TimeSpan idleTimeout = default)
    {
        if (idleTimeout > TimeSpan.Zero)
        {
            _idleTimeout = (long)idleTimeout.TotalMilliseconds;
            _lastActivity = Environment.TickCount64;
        }
        long milliseconds = routeTimeout > TimeSpan.Zero ? (long)routeTimeout.TotalMilliseconds : long.MaxValue;
        if (_isGrpc)
        {
            int index = RequestHeaders.IndexOf("grpc-timeout"u8);
            if (index >= 0 && TryParseGrpcTimeout(RequestHeaders.Value(index), out long grpcMilliseconds))
            {
                if (maxGrpcTimeout > TimeSpan.Zero)
                {
                    grpcMilliseconds = Math.Min(grpcMilliseconds, (long)maxGrpcTimeout.TotalMilliseconds);
                }
                milliseconds = Math.Min(milliseconds, grpcMilliseconds);
            }
        }
        if (milliseconds != long.MaxValue)
        {
            _deadlineAt = Environment.TickCount64 + Math.Max(milliseconds, 1);
        }
        _deadlineAt = Math.Min(_deadlineAt, _callDeadlineAt);
        ArmTimer();
    }

    /// <summary>
    /// From the listener's sweep: ends the stream if it has been idle for the connection manager's
    /// stream_idle_timeout (408 before the response began, a reset after, as Envoy does).
    /// </summary>
    internal void CheckStreamIdle(int generation, long now)
    {
        if (Volatile.Read(ref _streamIdleMs) == 0 || now - Volatile.Read(ref _lastActivity) < Volatile.Read(ref _streamIdleMs))
        {
            return;
        }
        FlushBatch.Begin();
        try
        {
            using (_lock.Enter())
            {
                if (generation != _generation || _finished || _streamIdleMs == 0 || now - _lastActivity < _streamIdleMs)
                {
                    return;
                }
                if (_up != null && !_upstreamClosed)
                {
                    _up.Reset(_upId, Http2ErrorCode.Cancel);
                    _up.ScheduleFlush();
                }
                _upstreamClosed = true;
                SendLocalReply(408, GrpcStatus.DeadlineExceeded, "stream idle timeout");
            }
        }
        finally
        {
            FlushBatch.End();
        }
    }

    /// <summary>grpc-timeout = 1*8DIGIT unit, unit one of H M S m u n.</summary>
    internal static bool TryParseGrpcTimeout(ReadOnlySpan<byte> value, out long milliseconds)
    {
        milliseconds = 0;
        if (value.Length is < 2 or > 9 || !Utf8Parser.TryParse(value[..^1], out long amount, out int consumed) || consumed != value.Length - 1 || amount < 0)
        {
            return false;
        }
        milliseconds = value[^1] switch
        {
            (byte)'H' => amount * 3_600_000,
            (byte)'M' => amount * 60_000,
            (byte)'S' => amount * 1000,
            (byte)'m' => amount,
            (byte)'u' => (amount + 999) / 1000,
            (byte)'n' => (amount + 999_999) / 1_000_000,
            _ => -1,
        };
        return milliseconds >= 0;
    }

    /// <summary>The deadline passed: the upstream call is cancelled and the client gets 504 / DEADLINE_EXCEEDED.</summary>
    internal void OnDeadline(int generation)
    {
        using (_lock.Enter())
        {
            if (generation != _generation || _finished)
            {
                return;
            }
            long now = Environment.TickCount64;
            if (OnPerTryDeadline(now))
            {
                return;
            }
            if (!RequestComplete && now >= _requestDeadlineAt)
            {
                // request_timeout: the client took too long to send its request (Envoy: 408).
                if (_up != null && !_upstreamClosed)
                {
                    _up.Reset(_upId, Http2ErrorCode.Cancel);
                    _up.ScheduleFlush();
                }
                _upstreamClosed = true;
                SendLocalReply(408, GrpcStatus.DeadlineExceeded, "request timeout");
                return;
            }
            bool timedOut = now >= _deadlineAt;
            bool idle = !timedOut && _idleTimeout > 0 && now >= Volatile.Read(ref _lastActivity) + _idleTimeout;
            if (!timedOut && !idle)
            {
                ArmTimer(); // traffic since: wait for the rest of the idle period
                return;
            }
            if (_up != null && !_upstreamClosed)
            {
                _up.Reset(_upId, Http2ErrorCode.Cancel);
                _up.ScheduleFlush();
            }
            _upstreamClosed = true;
            if (idle)
            {
                // Envoy: 408 when no response headers came yet, otherwise the stream is reset.
                SendLocalReply(408, GrpcStatus.DeadlineExceeded, "stream idle timeout");
                return;
            }
            if (_response != ResponsePhase.Awaiting && _isGrpc && _response != ResponsePhase.Complete && !_downstreamClosed && _responsePending.Count == 0)
            {
                // Headers already went out: end the call with a DEADLINE_EXCEEDED trailer block.
                ResponseTrailers.Clear();
                ResponseTrailers.Add("grpc-status"u8, "4"u8);
                ResponseTrailers.Add("grpc-message"u8, "upstream request timeout"u8);
                _down!.SendHeaders(_downId, ResponseTrailers, endStream: true);
                _down.ScheduleFlush();
                _response = ResponsePhase.Complete;
                Finish();
                return;
            }
            _cluster?.State.Stats.UpstreamRqTimeout.Inc();
            SendLocalReply(504, GrpcStatus.DeadlineExceeded, "upstream request timeout");
        }
    }
}
