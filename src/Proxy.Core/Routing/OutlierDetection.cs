using Proxy.Core.Diagnostics;

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
    private readonly string _name = "";
    private ClusterStats? _stats;

    public string Name
    {
        get => _name;
        init => _name = value;
    }

    /// <summary>Envoy's cluster.NAME.* stats (registered on first use; a nameless test cluster's are not shown).</summary>
    public ClusterStats Stats => _stats ?? Interlocked.CompareExchange(ref _stats, new ClusterStats(this), null) ?? _stats;

    /// <summary>per_connection_buffer_limit_bytes of the current snapshot: the watermark of each upstream connection.</summary>
    public int BufferLimit { get; set; } = Transport.SocketConnection.DefaultBufferLimit;

    /// <summary>max_headers_count of the current snapshot: the most field lines a response head of this cluster may have.</summary>
    public int MaxHeadersCount { get; set; } = Http1.Http1Parser.DefaultMaxHeadersCount;

    /// <summary>idle_timeout of the current snapshot's cluster, in milliseconds (0: none).</summary>
    public long IdleTimeoutMs { get; set; } = (long)Cluster.DefaultIdleTimeout.TotalMilliseconds;

    /// <summary>max_requests_per_connection of the current snapshot's cluster (0: no limit).</summary>
    public int MaxRequestsPerConnection { get; set; }

    /// <summary>Whether a connection that has carried <paramref name="requests"/> requests may take no more.</summary>
    public bool Exhausted(int requests) => MaxRequestsPerConnection > 0 && requests >= MaxRequestsPerConnection;

    /// <summary>upstream_bind_config of the current snapshot (updated on every load).</summary>
    public Transport.UpstreamBind? Bind { get; set; }

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
                Stats.UpstreamCxTotal.Inc();
                return true;
            }
        }
    }

    public void ReleaseConnection() => Interlocked.Decrement(ref _connections);

    /// <summary>Requests waiting for an upstream connection (max_pending_requests).</summary>
    public int PendingRequests => Volatile.Read(ref _pending);
    public void PendingStarted() => Interlocked.Increment(ref _pending);
    public void PendingEnded() => Interlocked.Decrement(ref _pending);

    /// <summary>Requests failed at once by the circuit breakers (Envoy's upstream_rq_pending_overflow).</summary>
    public long Overflows => Stats.UpstreamRqPendingOverflow.Value;
    public void Overflowed() => Stats.UpstreamRqPendingOverflow.Inc();
}

/// <summary>A cluster's stats under Envoy's names; the exchange and the pools write them directly.</summary>
public sealed class ClusterStats
{
    private const string Tag = "envoy_cluster_name";

    internal ClusterStats(ClusterState state)
    {
        StatsStore store = state.Name.Length == 0 ? new StatsStore() : StatsStore.Default;
        string name = state.Name;
        // One block for the cluster's counters and histogram: a few cache lines per stripe in all.
        var block = new StatBlock(13 + Histogram.Slots);
        UpstreamRqTotal = store.Counter("cluster", name, "upstream_rq_total", Tag, block);
        UpstreamRqClass = [.. Enumerable.Range(1, 5).Select(c => store.Counter("cluster", name, $"upstream_rq_{c}xx", Tag, block))];
        UpstreamRqTime = store.Histogram("cluster", name, "upstream_rq_time", Tag, block);
        UpstreamRqRetry = store.Counter("cluster", name, "upstream_rq_retry", Tag, block);
        UpstreamRqTimeout = store.Counter("cluster", name, "upstream_rq_timeout", Tag, block);
        UpstreamRqPendingOverflow = store.Counter("cluster", name, "upstream_rq_pending_overflow", Tag, block);
        UpstreamCxTotal = store.Counter("cluster", name, "upstream_cx_total", Tag, block);
        UpstreamCxConnectFail = store.Counter("cluster", name, "upstream_cx_connect_fail", Tag, block);
        SslHandshake = store.Counter("cluster", name, "ssl.handshake", Tag, block);
        SslConnectionError = store.Counter("cluster", name, "ssl.connection_error", Tag, block);
        UpstreamCxOverflow = store.Counter("cluster", name, "upstream_cx_overflow", Tag, block);
        OutlierEjectionsTotal = store.Counter("cluster", name, "outlier_detection.ejections_enforced_total", Tag, block);
        store.Gauge("cluster", name, "upstream_rq_active", Tag, () => state.ActiveRequests);
        store.Gauge("cluster", name, "upstream_rq_pending_active", Tag, () => state.PendingRequests);
        store.Gauge("cluster", name, "upstream_cx_active", Tag, () => state.Connections);
    }

    public Counter UpstreamRqTotal { get; }

    /// <summary>upstream_rq_1xx … upstream_rq_5xx, by index class - 1.</summary>
    public Counter[] UpstreamRqClass { get; }

    public Histogram UpstreamRqTime { get; }
    public Counter UpstreamRqRetry { get; }
    public Counter UpstreamRqTimeout { get; }
    public Counter UpstreamRqPendingOverflow { get; }
    public Counter UpstreamCxTotal { get; }
    public Counter UpstreamCxConnectFail { get; }
    /// <summary>TLS handshakes to the cluster's endpoints completed / failed (Envoy's cluster.NAME.ssl.*).</summary>
    public Counter SslHandshake { get; }
    public Counter SslConnectionError { get; }

    /// <summary>Connections not made because the cluster was at max_connections (tcp_proxy closes the downstream).</summary>
    public Counter UpstreamCxOverflow { get; }
    public Counter OutlierEjectionsTotal { get; }

    /// <summary>A response from upstream (or the proxy's answer for it: 503 on a failed connect, 504 on a timeout).</summary>
    public void Responded(int status, StatLine line)
    {
        if (status is >= 100 and < 600)
        {
            UpstreamRqClass[(status / 100) - 1].Inc(line);
        }
    }
}
