using System.Buffers;
using System.Buffers.Text;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

public sealed partial class Exchange
{
    private RetryPolicy? _retry;
    private int _attempt;
    /// <summary>Every request body octet seen so far, kept while a retry could still need to replay it.</summary>
    private PendingData _retained;
    private bool _retainOverflow;
    /// <summary>Leading octets of the pending request body whose flow-control credit the client already got (a replay).</summary>
    private int _creditedAhead;
    private bool _hasRequestTrailers;
    private bool _retryScheduled;

    /// <summary>
    /// What upstream events carry: the generation and the attempt, so that an event from an abandoned
    /// attempt (a reset stream, a late response) is ignored once a retry is under way.
    /// </summary>
    private int UpstreamToken => (_generation << 8) | (_attempt & 0xFF);

    private void ResetRetry()
    {
        _retry = null;
        _attempt = 0;
        ReleaseRetained();
        _retainOverflow = false;
        _creditedAhead = 0;
        _hasRequestTrailers = false;
        _retryScheduled = false;
        _perTryAt = long.MaxValue;
    }

    /// <summary>Keeps a copy of request body octets for a possible retry, up to the policy's buffer limit (Envoy: 1 MiB).</summary>
    private void Retain(in ReadOnlySequence<byte> data)
    {
        if (_retry == null || _retainOverflow || data.IsEmpty)
        {
            return;
        }
        if (_retained.Count + data.Length > _retry.BufferLimit || !_down!.TryReserveReplay((int)data.Length))
        {
            // Too large to replay, or the connection's replay budget is spent by its other streams:
            // this request will not be retried (Envoy's per-connection buffer limit does the same).
            _retainOverflow = true;
            ReleaseRetained();
            return;
        }
        _retained.Append(data);
    }

    /// <summary>Drops the replay copy and gives its octets back to the downstream connection's budget.</summary>
    private void ReleaseRetained()
    {
        if (_retained.Count > 0)
        {
            _down?.ReleaseReplay(_retained.Count);
        }
        _retained.Release();
    }

    /// <summary>Returns flow-control credit to the client, except for replayed octets it already had credit for.</summary>
    private void CreditDownstream(int sent)
    {
        if (sent <= 0)
        {
            return;
        }
        int credit = sent - _creditedAhead;
        if (credit <= 0)
        {
            _creditedAhead -= sent;
            return;
        }
        _creditedAhead = 0;
        _down!.Consume(_downId, credit);
    }

    /// <summary>Outlier detection: a final response's status counts for or against the endpoint.</summary>
    private void RecordResponseOutcome()
    {
        int statusIndex = ResponseHeaders.IndexOf(":status"u8);
        if (_endpoint == null || statusIndex < 0 || !Utf8Parser.TryParse(ResponseHeaders.Value(statusIndex), out int status, out _) || status < 200)
        {
            return;
        }
        _cluster!.RecordOutcome(_endpoint, failure: status >= 500, gatewayFailure: status is 502 or 503 or 504);
    }

    /// <summary>The final response just received calls for a retry (5xx, gateway errors, listed codes, gRPC statuses in a trailers-only response).</summary>
    private bool ShouldRetryResponse()
    {
        int statusIndex = ResponseHeaders.IndexOf(":status"u8);
        if (statusIndex < 0 || !Utf8Parser.TryParse(ResponseHeaders.Value(statusIndex), out int status, out _) || status < 200)
        {
            return false;
        }
        int grpcStatus = -1;
        int grpcIndex = ResponseHeaders.IndexOf("grpc-status"u8);
        if (grpcIndex >= 0 && Utf8Parser.TryParse(ResponseHeaders.Value(grpcIndex), out int g, out _))
        {
            grpcStatus = g;
        }
        return _retry!.OnResponse(status, grpcStatus);
    }

    /// <summary>
    /// Under the lock: abandons the current attempt and schedules the next one after the back-off, on a
    /// different endpoint when previous_hosts asks for it. False when no retry is possible: response
    /// octets already went downstream, the body outgrew the retry buffer, or the attempts are used up.
    /// </summary>
    private bool TryRetry()
    {
        if (_retry == null || _response != ResponsePhase.Awaiting || _retainOverflow || _attempt >= _retry.NumRetries || _downstreamClosed || _finished || _cluster == null)
        {
            return false;
        }
        if (!_retryCounted)
        {
            // The cluster's max_retries circuit breaker bounds retries in flight.
            if (_cluster.CircuitBreakers is { } breakers && _cluster.State.ActiveRetries >= breakers.MaxRetries)
            {
                return false;
            }
            _cluster.State.RetryStarted();
            _retryCounted = true;
        }
        if (_up != null && !_upstreamClosed)
        {
            _up.Reset(_upId, Http2ErrorCode.Cancel);
            _up.ScheduleFlush();
        }
        if (_blockedOnUp)
        {
            _up?.RemoveBlocked(this);
            _blockedOnUp = false;
        }
        _up = null;
        _upId = 0;
        _upstreamClosed = false;
        SetRequestForwarded(false);
        _attempt++;
        _retryScheduled = true;
        _upstreamTicks = 0;
        _cluster.State.Stats.UpstreamRqRetry.Inc();
        if (_upstreamStatus != 0)
        {
            _cluster.State.Stats.Responded(_upstreamStatus, Diagnostics.StatLine.Current); // the attempt given up
            _upstreamStatus = 0;
        }

        // Replay: the body so far (its prefix was already credited to the client), then the trailers.
        int credited = _retained.Count - _requestPending.Count;
        _requestPending.Release();
        _requestPending.Append(_retained.Data);
        _requestPending.EndStream = RequestComplete && !_hasRequestTrailers;
        SetRequestTrailersWaiting(_hasRequestTrailers);
        _creditedAhead = Math.Max(0, credited);

        UpstreamEndpoint? previous = _endpoint;
        UpstreamEndpoint? endpoint = _cluster.PickEndpoint();
        for (int i = 0; _retry.AvoidPreviousHosts && i < _retry.HostSelectionRetryMaxAttempts && ReferenceEquals(endpoint, previous); i++)
        {
            endpoint = _cluster.PickEndpoint();
        }
        if (endpoint == null)
        {
            return false;
        }
        _pool?.RequestEnded();
        _endpoint = endpoint;
        _pool = endpoint.Pool;
        _pool.RequestStarted();
        PauseThenAcquire(_retry.BackOff(_attempt), UpstreamToken, fault: false, abort: null);
        return true;
    }

    /// <summary>
    /// per_try_timeout, on the exchange's own timer (so it costs no timer of its own
    /// and goes away with the try): the attempt still without a response when it fires is abandoned, and
    /// retried or answered with 504. Under the exchange's lock.
    /// </summary>
    private void ArmPerTryTimeout(TimeSpan limit)
    {
        _perTryAt = Environment.TickCount64 + Math.Max((long)limit.TotalMilliseconds, 1);
        _perTryToken = UpstreamToken;
        ArmTimer(); // in place of what was armed
    }

    /// <summary>Under the lock, from <see cref="OnDeadline"/>: whether the current try's own deadline passed, and if so deals with it.</summary>
    private bool OnPerTryDeadline(long now)
    {
        if (now < _perTryAt)
        {
            return false;
        }
        _perTryAt = long.MaxValue;
        if (_perTryToken != UpstreamToken || _response != ResponsePhase.Awaiting)
        {
            return false; // that try is over (retried, or answered): nothing to do
        }
        if (_endpoint != null)
        {
            _cluster?.RecordOutcome(_endpoint, failure: true, gatewayFailure: true);
        }
        if (_retry!.OnPerTryTimeout && TryRetry())
        {
            ArmTimer();
            return true;
        }
        if (_up != null && !_upstreamClosed)
        {
            _up.Reset(_upId, Http2ErrorCode.Cancel);
            _up.ScheduleFlush();
        }
        _upstreamClosed = true;
        _cluster?.State.Stats.UpstreamRqTimeout.Inc();
        SendLocalReply(504, GrpcStatus.DeadlineExceeded, "upstream per-try timeout");
        return true;
    }
}
