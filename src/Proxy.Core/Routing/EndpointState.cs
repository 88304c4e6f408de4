namespace Proxy.Core.Routing;

/// <summary>
/// What outlives snapshots for one upstream endpoint (Envoy's host): the requests in flight to it (the
/// least-request balancer reads them), outlier detection's count and ejection, and the TLS context its
/// connections use. The endpoint's connection pool is one; routing needs no more of it than this.
/// </summary>
public abstract class EndpointState
{
    private int _activeRequests;

    /// <summary>The cluster these connections belong to (Envoy pools per cluster); its max_connections bounds them.</summary>
    public ClusterState? Cluster { get; init; }

    /// <summary>The endpoint's transport socket: TLS originated with this context (null: plaintext). Pools are per context.</summary>
    public Transport.Tls.TlsClientContext? Tls { get; init; }

    /// <summary>Connections open (or being opened) to this endpoint, for the admin endpoint.</summary>
    public abstract int OpenConnections { get; }

    /// <summary>Requests in flight to this endpoint, across snapshots (the least-request balancer reads it).</summary>
    public int ActiveRequests => Volatile.Read(ref _activeRequests);

    public void RequestStarted() => Interlocked.Increment(ref _activeRequests);

    public void RequestEnded() => Interlocked.Decrement(ref _activeRequests);

    // Outlier detection state of this endpoint (guarded by this object as a lock).
    private int _consecutive5xx;
    private int _consecutiveGateway;
    private int _ejections;
    private long _ejectedUntil;

    /// <summary>Whether outlier detection has this endpoint out of rotation now.</summary>
    public bool IsEjected => Volatile.Read(ref _ejectedUntil) is var until && until != 0 && until > Environment.TickCount64;

    /// <summary>Counts one outcome; returns true when it should be ejected now (the caller checks the cluster's limit).</summary>
    public bool RecordOutcome(bool failure, bool gatewayFailure, OutlierDetection policy)
    {
        if (!failure)
        {
            // Shared by every loop: a success only clears the runs, and clearing needs no lock (a failure
            // counted at the same moment on another loop may be lost or kept: either is a fair count).
            if (Volatile.Read(ref _consecutive5xx) != 0 || Volatile.Read(ref _consecutiveGateway) != 0)
            {
                Volatile.Write(ref _consecutive5xx, 0);
                Volatile.Write(ref _consecutiveGateway, 0);
            }
            return false;
        }
        lock (this)
        {
            _consecutive5xx++;
            if (gatewayFailure)
            {
                _consecutiveGateway++;
            }
            bool by5xx = _consecutive5xx >= policy.Consecutive5xx && Enforced(policy.Enforcing5xx);
            bool byGateway = gatewayFailure && _consecutiveGateway >= policy.ConsecutiveGatewayFailure && Enforced(policy.EnforcingGatewayFailure);
            return (by5xx || byGateway) && !IsEjected;
        }
    }

    public void Eject(OutlierDetection policy)
    {
        lock (this)
        {
            _ejections++;
            double ms = Math.Min(policy.BaseEjectionTime.TotalMilliseconds * _ejections, Math.Max(policy.MaxEjectionTime.TotalMilliseconds, policy.BaseEjectionTime.TotalMilliseconds));
            Volatile.Write(ref _ejectedUntil, Environment.TickCount64 + (long)ms);
            _consecutive5xx = 0;
            _consecutiveGateway = 0;
        }
    }

    private static bool Enforced(double fraction) => fraction >= 1 || (fraction > 0 && Random.Shared.NextDouble() < fraction);
}
