using System.Collections.Frozen;
using System.Net;

namespace Proxy.Core.Routing;

/// <summary>
/// The whole routing world at one instant: listeners → route configurations → virtual hosts → routes →
/// clusters → endpoints. Immutable; built off the data path, validated, then published by one reference
/// swap. A request reads the current snapshot once and keeps it to its end.
/// </summary>
public sealed class ProxySnapshot
{
    public ProxySnapshot(IReadOnlyList<ListenerConfig> listeners, IEnumerable<Cluster> clusters, long version)
    {
        Listeners = listeners;
        Clusters = clusters.ToFrozenDictionary(static c => c.Name, StringComparer.Ordinal);
        Version = version;
    }

    /// <summary>A snapshot with new listeners over the same clusters (their index is shared, not rebuilt).</summary>
    public ProxySnapshot(IReadOnlyList<ListenerConfig> listeners, FrozenDictionary<string, Cluster> clusters, long version)
    {
        Listeners = listeners;
        Clusters = clusters;
        Version = version;
    }

    public IReadOnlyList<ListenerConfig> Listeners { get; }
    public FrozenDictionary<string, Cluster> Clusters { get; }
    public long Version { get; }

    /// <summary>
    /// Route configurations that no bound listener serves but that the runtime API routes by: RDS
    /// configurations of listeners not bound to a port (Istio's outbound 0.0.0.0_9090, named "9090"), each
    /// with the port of the listener that names it (0 when none does).
    /// </summary>
    public IReadOnlyList<(RouteConfiguration Routes, int Port)> UnboundRoutes { get; init; } = [];

    /// <summary>Listeners not bound to a port, reached through original-destination dispatch (Istio's 0.0.0.0_PORT).</summary>
    public IReadOnlyList<ListenerConfig> UnboundListeners { get; init; } = [];

    private FrozenDictionary<IPEndPoint, ListenerConfig>? _byDestination;

    /// <summary>
    /// The unbound listener for a connection's original destination: the one on exactly that address and
    /// port, else the one on the wildcard address (0.0.0.0 or ::) and that port; null when none.
    /// </summary>
    public ListenerConfig? FindOriginalDestination(IPEndPoint destination)
    {
        if (UnboundListeners.Count == 0)
        {
            return null;
        }
        FrozenDictionary<IPEndPoint, ListenerConfig> index = _byDestination ??= BuildDestinationIndex();
        IPAddress address = destination.Address.IsIPv4MappedToIPv6 ? destination.Address.MapToIPv4() : destination.Address;
        if (index.TryGetValue(new IPEndPoint(address, destination.Port), out ListenerConfig? exact))
        {
            return exact;
        }
        IPAddress any = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any;
        return index.GetValueOrDefault(new IPEndPoint(any, destination.Port));
    }

    private FrozenDictionary<string, ListenerConfig>? _unboundByName;

    /// <summary>
    /// An unbound listener by name (what a dispatched connection follows across snapshots; asked once per
    /// request on such a connection, so indexed: Istio has one per service port).
    /// </summary>
    public ListenerConfig? FindUnbound(string name)
    {
        if (UnboundListeners.Count == 0)
        {
            return null;
        }
        FrozenDictionary<string, ListenerConfig> index = _unboundByName ??= UnboundListeners
            .DistinctBy(static l => l.Name, StringComparer.Ordinal)
            .ToFrozenDictionary(static l => l.Name, StringComparer.Ordinal);
        return index.GetValueOrDefault(name);
    }

    private FrozenDictionary<IPEndPoint, ListenerConfig> BuildDestinationIndex()
    {
        var index = new Dictionary<IPEndPoint, ListenerConfig>();
        foreach (ListenerConfig listener in UnboundListeners)
        {
            index.TryAdd(listener.Address, listener); // the first of two on one address wins, as Envoy refuses the second
        }
        return index.ToFrozenDictionary();
    }

    private RuntimeRouteIndex? _runtimeRoutes;

    /// <summary>
    /// The routes an internal request for <paramref name="authority"/> (host[:port]) takes — the runtime
    /// API's InvokeService: the route configuration named after the port (Istio's outbound naming), else the
    /// one of a listener on that port, else the first HTTP listener whose virtual hosts know the host.
    /// </summary>
    public RouteConfiguration? FindRoutesFor(ReadOnlySpan<byte> authority)
    {
        RuntimeRouteIndex index = _runtimeRoutes ??= new RuntimeRouteIndex(this);
        return index.Find(authority);
    }
}

/// <summary>Route configurations by port, and all of them in order: built once per snapshot, on first use.</summary>
internal sealed class RuntimeRouteIndex
{
    private readonly FrozenDictionary<int, RouteConfiguration> _byPort;
    private readonly RouteConfiguration[] _all;

    public RuntimeRouteIndex(ProxySnapshot snapshot)
    {
        var byName = new Dictionary<int, RouteConfiguration>();
        var byListener = new Dictionary<int, RouteConfiguration>();
        var all = new List<RouteConfiguration>();
        void Add(RouteConfiguration routes, int port)
        {
            if (int.TryParse(routes.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int named) && named is > 0 and <= 65535)
            {
                byName.TryAdd(named, routes);
            }
            if (port > 0)
            {
                byListener.TryAdd(port, routes);
            }
            if (!all.Contains(routes))
            {
                all.Add(routes);
            }
        }
        foreach (ListenerConfig listener in snapshot.Listeners)
        {
            Add(listener.Routes, listener.Address.Port);
        }
        foreach (var (routes, port) in snapshot.UnboundRoutes)
        {
            Add(routes, port);
        }
        foreach (var (port, routes) in byListener)
        {
            byName.TryAdd(port, routes);
        }
        _byPort = byName.ToFrozenDictionary();
        _all = [.. all];
    }

    public RouteConfiguration? Find(ReadOnlySpan<byte> authority)
    {
        int colon = authority.LastIndexOf((byte)':');
        if (colon > 0 && authority.LastIndexOf((byte)']') < colon
            && System.Buffers.Text.Utf8Parser.TryParse(authority.Slice(colon + 1), out int port, out int consumed)
            && consumed == authority.Length - colon - 1
            && _byPort.TryGetValue(port, out RouteConfiguration? routes))
        {
            return routes;
        }
        foreach (RouteConfiguration candidate in _all)
        {
            if (candidate.FindVirtualHost(authority) != null)
            {
                return candidate;
            }
        }
        return null;
    }
}

/// <summary>Where snapshots are published; the data path reads <see cref="Current"/> once per request.</summary>
public sealed class SnapshotHolder(ProxySnapshot initial)
{
    private ProxySnapshot _current = initial;

    public ProxySnapshot Current => Volatile.Read(ref _current);

    public void Publish(ProxySnapshot snapshot) => Volatile.Write(ref _current, snapshot);
}
