using Proxy.Core.Listeners;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Core.Upstream;

namespace Proxy.Core;

/// <summary>The running data plane: one listener per configured listener, all reading one snapshot holder.</summary>
public sealed class ProxyServer : IAsyncDisposable
{
    private readonly List<ProxyListener> _listeners = [];
    private readonly Dictionary<string, (System.Net.IPEndPoint Address, ProxyListener Listener)> _byName = new(StringComparer.Ordinal);

    public ProxyServer(ProxySnapshot snapshot, UpstreamPools pools)
    {
        Snapshots = new SnapshotHolder(snapshot);
        Pools = pools;
        ApplyClusterLimits(snapshot);
    }

    public SnapshotHolder Snapshots { get; }
    public UpstreamPools Pools { get; }
    public IReadOnlyList<ProxyListener> Listeners => _listeners;

    /// <summary>Binds and starts every listener of the current snapshot.</summary>
    public void Start()
    {
        foreach (ListenerConfig config in Snapshots.Current.Listeners)
        {
            StartListener(config);
        }
    }

    private void StartListener(ListenerConfig config)
    {
        string name = config.Name;
        var listener = new ProxyListener(config, () => FindListener(name))
        {
            Dispatch = destination => Snapshots.Current.FindOriginalDestination(destination),
            FindUnbound = unbound => Snapshots.Current.FindUnbound(unbound),
            Snapshot = () => Snapshots.Current,
        };
        listener.Start();
        _listeners.Add(listener);
        _byName[name] = (config.Address, listener);
    }

    /// <summary>
    /// Publishes a new snapshot and brings the listeners in line with it: new ones are bound, removed ones
    /// (or ones whose address changed) stop accepting and drain. Requests in flight keep their snapshot.
    /// A listener that cannot bind is reported and the others go on.
    /// </summary>
    public async Task ApplyAsync(ProxySnapshot snapshot)
    {
        ProxySnapshot previous = Snapshots.Current;
        Snapshots.Publish(snapshot);
        if (!ReferenceEquals(previous.Clusters, snapshot.Clusters))
        {
            ApplyClusterLimits(snapshot);
            Pools.Prune(snapshot);
        }
        var wanted = new Dictionary<string, ListenerConfig>(StringComparer.Ordinal);
        foreach (ListenerConfig config in snapshot.Listeners)
        {
            wanted[config.Name] = config;
        }
        // Listeners that go, or move, give up their address first: a renamed listener on the same
        // address binds it next (no SO_REUSEPORT: the old socket must be closed).
        var released = new List<System.Net.IPEndPoint>();
        foreach (var (name, running) in _byName.ToList())
        {
            if (!wanted.TryGetValue(name, out ListenerConfig? config) || !running.Address.Equals(config.Address))
            {
                released.Add(running.Address);
                await Retire(name, running.Listener);
            }
        }
        foreach (ListenerConfig config in snapshot.Listeners)
        {
            if (!_byName.ContainsKey(config.Name))
            {
                await StartReleasedAsync(config, released.Contains(config.Address));
            }
        }
    }

    /// <summary>
    /// Binds a new listener; on an address a retired listener has just released, waits up to a second
    /// for the kernel to let go of the old socket (closed while an accept was pending, it closes when
    /// that accept returns).
    /// </summary>
    private async Task StartReleasedAsync(ListenerConfig config, bool justReleased)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                StartListener(config);
                return;
            }
            catch (System.Net.Sockets.SocketException e) when (justReleased && e.SocketErrorCode == System.Net.Sockets.SocketError.AddressAlreadyInUse && attempt < 100)
            {
                await Task.Delay(10);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                Diagnostics.ProxyLog.Write(Diagnostics.LogLevel.Error, $"listener {config.Name}: cannot bind {config.Address}: {e.SocketErrorCode}");
                return;
            }
        }
    }

    /// <summary>
    /// The live per-cluster limits follow the published snapshot (not a configuration that was only
    /// checked, and perhaps refused): circuit_breakers.max_connections, the buffer limit, max_headers_count
    /// and the bind of each cluster.
    /// </summary>
    private static void ApplyClusterLimits(ProxySnapshot snapshot)
    {
        foreach (Cluster cluster in snapshot.Clusters.Values)
        {
            cluster.State.MaxConnections = cluster.CircuitBreakers?.MaxConnections ?? long.MaxValue;
            cluster.State.BufferLimit = cluster.BufferLimit;
            cluster.State.MaxHeadersCount = cluster.MaxHeadersCount;
            cluster.State.IdleTimeoutMs = (long)cluster.IdleTimeout.TotalMilliseconds;
            cluster.State.MaxRequestsPerConnection = cluster.MaxRequestsPerConnection;
            cluster.State.Bind = cluster.Bind;
        }
    }

    private async Task Retire(string name, ProxyListener listener)
    {
        _byName.Remove(name);
        _listeners.Remove(listener);
        await listener.StopAcceptingAndDrainAsync();
    }

    /// <summary>The configuration a new connection or request on listener <paramref name="name"/> uses: the current snapshot's.</summary>
    private ListenerConfig? FindListener(string name)
    {
        // Indexed loop: foreach over the interface would allocate an enumerator per request.
        IReadOnlyList<ListenerConfig> listeners = Snapshots.Current.Listeners;
        for (int i = 0; i < listeners.Count; i++)
        {
            if (string.Equals(listeners[i].Name, name, StringComparison.Ordinal))
            {
                return listeners[i];
            }
        }
        return null;
    }

    /// <summary>
    /// Graceful shutdown (SIGTERM): stop accepting, tell every client to finish (GOAWAY, connection:
    /// close), and wait until the requests in flight are done or <paramref name="drainTime"/> has passed.
    /// </summary>
    public async Task DrainAsync(TimeSpan drainTime)
    {
        foreach (ProxyListener listener in _listeners)
        {
            await listener.StopAcceptingAndDrainAsync();
        }
        var deadline = DateTime.UtcNow + drainTime;
        while (Forwarding.Exchange.ActiveCount > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
    }

    /// <summary>
    /// The admin endpoint's /drain_listeners: the listeners (those whose name <paramref name="which"/>
    /// accepts, or all) stop accepting and ask their connections to finish; the process goes on.
    /// </summary>
    public async Task DrainListenersAsync(Func<string, bool>? which)
    {
        foreach (ProxyListener listener in _listeners)
        {
            if (which == null || which(listener.Name))
            {
                await listener.StopAcceptingAndDrainAsync();
            }
        }
    }

    /// <summary>
    /// The admin endpoint's /drain_listeners?graceful: for <paramref name="drainTime"/> the listeners
    /// (those <paramref name="which"/> accepts, or all) keep accepting while telling every client to go;
    /// then they stop accepting, and what is in flight gets up to <paramref name="drainTime"/> more.
    /// </summary>
    public async Task DrainGracefullyAsync(Func<string, bool>? which, TimeSpan drainTime, bool gradual = false)
    {
        var chosen = _listeners.Where(l => which == null || which(l.Name)).ToList();
        foreach (ProxyListener listener in chosen)
        {
            listener.StartGracefulDrain(gradual ? drainTime : TimeSpan.Zero);
        }
        await Task.Delay(drainTime);
        foreach (ProxyListener listener in chosen)
        {
            await listener.StopAcceptingAndDrainAsync();
        }
        var deadline = DateTime.UtcNow + drainTime;
        while (Forwarding.Exchange.ActiveCount > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (ProxyListener listener in _listeners)
        {
            await listener.DisposeAsync();
        }
        _listeners.Clear();
    }
}
