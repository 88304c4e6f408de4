namespace Proxy.Core.Routing;

/// <summary>
/// Envoy's OutlierDetection, the consecutive-error part: an endpoint that fails consecutive_5xx times in
/// a row (or consecutive_gateway_failure times with 502/503/504, connect failures and resets) is ejected
/// for base_ejection_time × the number of times it was ejected, while at most max_ejection_percent of the
/// cluster (and always at least one endpoint) is out.
/// </summary>
public sealed class OutlierDetection
{
    public int Consecutive5xx { get; init; } = 5;
    public int ConsecutiveGatewayFailure { get; init; } = 5;
    /// <summary>enforcing_consecutive_5xx, as a fraction (Envoy's default 100 %).</summary>
    public double Enforcing5xx { get; init; } = 1;
    /// <summary>enforcing_consecutive_gateway_failure (Envoy's default 0 %: counted, not enforced).</summary>
    public double EnforcingGatewayFailure { get; init; }
    public TimeSpan BaseEjectionTime { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan MaxEjectionTime { get; init; } = TimeSpan.FromSeconds(300);
    public double MaxEjectionPercent { get; init; } = 10;
}

/// <summary>Envoy's circuit_breakers thresholds (default priority) that are enforced.</summary>
public sealed class CircuitBreakers
{
    public long MaxRequests { get; init; } = 1024;
    public long MaxRetries { get; init; } = 3;
    public long MaxConnections { get; init; } = 1024;
    public long MaxPendingRequests { get; init; } = 1024;
}

/// <summary>Live state of a cluster by name, kept across snapshots (request and retry counts).</summary>
public sealed class ClusterState
{
    private int _activeRequests;
    private int _activeRetries;

    public int ActiveRequests => Volatile.Read(ref _activeRequests);
    public int ActiveRetries => Volatile.Read(ref _activeRetries);
    public void RequestStarted() => Interlocked.Increment(ref _activeRequests);
    public void RequestEnded() => Interlocked.Decrement(ref _activeRequests);
    public void RetryStarted() => Interlocked.Increment(ref _activeRetries);
    public void RetryEnded() => Interlocked.Decrement(ref _activeRetries);

    private int _pending;
    private long _connections;

    public string Name { get; init; } = "";

    /// <summary>per_connection_buffer_limit_bytes of the current snapshot: the watermark of each upstream connection.</summary>
    public int BufferLimit { get; set; } = Transport.SocketConnection.DefaultBufferLimit;

    /// <summary>circuit_breakers max_connections of the current snapshot (updated on every load).</summary>
    public long MaxConnections { get; set; } = long.MaxValue;

    public long Connections => Volatile.Read(ref _connections);

    /// <summary>Takes a connection slot under max_connections; false when the cluster is at its limit.</summary>
    public bool TryReserveConnection()
    {
        while (true)
        {
            long current = Volatile.Read(ref _connections);
            if (current >= MaxConnections)
            {
                return false;
            }
            if (Interlocked.CompareExchange(ref _connections, current + 1, current) == current)
            {
                return true;
            }
        }
    }

    public void ReleaseConnection() => Interlocked.Decrement(ref _connections);

    /// <summary>Requests waiting for an upstream connection (max_pending_requests).</summary>
    public int PendingRequests => Volatile.Read(ref _pending);
    public void PendingStarted() => Interlocked.Increment(ref _pending);
    public void PendingEnded() => Interlocked.Decrement(ref _pending);

    private long _overflows;

    /// <summary>Requests failed at once by the circuit breakers (Envoy's upstream_rq_pending_overflow).</summary>
    public long Overflows => Volatile.Read(ref _overflows);
    public void Overflowed() => Interlocked.Increment(ref _overflows);
}
