using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Core.Upstream;

namespace Proxy.Core;

/// <summary>The running data plane: one listener per configured listener, all reading one snapshot holder.</summary>
public sealed class ProxyServer : IAsyncDisposable
{
    private readonly List<ProxyListener> _listeners = [];

    public ProxyServer(ProxySnapshot snapshot, UpstreamPools pools)
    {
        Snapshots = new SnapshotHolder(snapshot);
        Pools = pools;
    }

    public SnapshotHolder Snapshots { get; }
    public UpstreamPools Pools { get; }
    public IReadOnlyList<ProxyListener> Listeners => _listeners;

    /// <summary>Binds and starts every listener of the current snapshot.</summary>
    public void Start()
    {
        foreach (ListenerConfig config in Snapshots.Current.Listeners)
        {
            string name = config.Name;
            var listener = new ProxyListener(config.Address, () => FindRoutes(name));
            listener.Start();
            _listeners.Add(listener);
        }
    }

    /// <summary>The route configuration a new request on listener <paramref name="name"/> uses: the current snapshot's.</summary>
    private RouteConfiguration? FindRoutes(string name)
    {
        // Indexed loop: foreach over the interface would allocate an enumerator per request.
        IReadOnlyList<ListenerConfig> listeners = Snapshots.Current.Listeners;
        for (int i = 0; i < listeners.Count; i++)
        {
            if (string.Equals(listeners[i].Name, name, StringComparison.Ordinal))
            {
                return listeners[i].Routes;
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

    public async ValueTask DisposeAsync()
    {
        foreach (ProxyListener listener in _listeners)
        {
            await listener.DisposeAsync();
        }
        _listeners.Clear();
    }
}
