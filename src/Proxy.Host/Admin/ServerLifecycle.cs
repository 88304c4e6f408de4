using Proxy.Core;
using Proxy.Core.Diagnostics;

namespace Proxy.Host.Admin;

/// <summary>Envoy's server states, with its numbers (the <c>server.state</c> gauge pilot-agent reads).</summary>
public enum ServerState
{
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

/// <summary>
/// Where the process stands: initializing until the first CDS and LDS were applied (with ADS), then live,
/// then draining once asked to stop (SIGTERM, /quitquitquit, /drain_listeners); and the server-wide stats
/// Envoy keeps about it.
/// </summary>
public sealed class ServerLifecycle : IDisposable
{
    private readonly Func<bool> _initialized;
    private readonly ManualResetEventSlim _stop = new();
    private volatile bool _draining;
    private volatile bool _healthCheckFailed;

    public ServerLifecycle(ProxyServer server, Func<bool>? initialized, int concurrency)
    {
        _initialized = initialized ?? (static () => true);
        StartedAt = DateTime.UtcNow;
        StatsStore stats = StatsStore.Default;
        stats.Gauge("server", null, "state", read: () => (long)State);
        stats.Gauge("server", null, "live", read: () => State == ServerState.Live ? 1 : 0);
        stats.Gauge("server", null, "uptime", read: () => (long)(DateTime.UtcNow - StartedAt).TotalSeconds);
        stats.Gauge("server", null, "concurrency", read: () => concurrency);
        stats.Gauge("server", null, "hot_restart_epoch", read: static () => 0);
        stats.Gauge("server", null, "memory_allocated", read: static () => GC.GetTotalMemory(false));
        stats.Gauge("server", null, "memory_heap_size", read: static () => GC.GetGCMemoryInfo().HeapSizeBytes);
        // Entries of an event loop's lock by a thread other than that loop (each a process-wide barrier):
        // stays near zero while every request runs on one loop (issue: no lock on the request path).
        stats.Gauge("server", null, "loop_lock_foreign_entries", read: static () => Proxy.Http2.OwnedLock.ForeignEntries);
        stats.Gauge("server", null, "total_connections", read: static () => Proxy.Core.Transport.DownstreamLimits.ActiveConnections);
        stats.Gauge("listener_manager", null, "workers_started", read: () => State is ServerState.Live or ServerState.Draining ? 1 : 0);
        stats.Gauge("listener_manager", null, "total_listeners_active", read: () => server.Listeners.Count);
        stats.Gauge("cluster_manager", null, "active_clusters", read: () => server.Snapshots.Current.Clusters.Count);
    }

    public DateTime StartedAt { get; }

    public ServerState State => _draining ? ServerState.Draining : _initialized() ? ServerState.Live : ServerState.Initializing;

    /// <summary>POST /healthcheck/fail and /healthcheck/ok.</summary>
    public bool HealthCheckFailed
    {
        get => _healthCheckFailed;
        set => _healthCheckFailed = value;
    }

    public bool Draining => _draining;

    /// <summary>Listeners are draining (the state reads DRAINING from here on).</summary>
    public void StartDraining() => _draining = true;

    /// <summary>Asks the process to stop (it drains first); idempotent.</summary>
    public void RequestStop() => _stop.Set();

    public void WaitForStop() => _stop.Wait();

    public void Dispose() => _stop.Dispose();

    public static string Name(ServerState state) => state switch
    {
        ServerState.Live => "LIVE",
        ServerState.Draining => "DRAINING",
        ServerState.PreInitializing => "PRE_INITIALIZING",
        _ => "INITIALIZING",
    };
}
