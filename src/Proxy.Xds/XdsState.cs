using Google.Protobuf;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;
using CoreRoutes = Proxy.Core.Routing.RouteConfiguration;
using CoreVirtualHost = Proxy.Core.Routing.VirtualHost;
using PbCluster = Proxy.Xds.Api.Cluster.Cluster;
using PbListener = Proxy.Xds.Api.Listener.Listener;
using PbLoadAssignment = Proxy.Xds.Api.Endpoint.ClusterLoadAssignment;
using PbRoutes = Proxy.Xds.Api.Route.RouteConfiguration;
using PbVirtualHost = Proxy.Xds.Api.Route.VirtualHost;

namespace Proxy.Xds;

/// <summary>
/// One resource of an update: its name, version and decoded message. A RouteConfiguration may come split
/// (<see cref="RouteConfigurationParts"/>): <see cref="Message"/> is then the shell without virtual hosts
/// and <see cref="VirtualHosts"/> holds their encoded bytes.
/// </summary>
public readonly record struct XdsResource(string Name, string Version, IMessage Message, ReadOnlyMemory<byte>[]? VirtualHosts = null);

/// <summary>One resource as /config_dump shows it.</summary>
public sealed record DumpedResource(string Name, string Version, IMessage Resource, DateTime Updated, bool Warming);

/// <summary>The dynamic resources held, by type (<see cref="XdsState.Dump"/>).</summary>
public sealed record XdsDump(IReadOnlyList<DumpedResource> Clusters, IReadOnlyList<DumpedResource> Listeners, IReadOnlyList<DumpedResource> Routes, IReadOnlyList<DumpedResource> Endpoints);

/// <summary>
/// The resources a control plane has given us, and the snapshot they make. Updates are validated whole
/// before anything changes (a bad resource rejects its update and the last good state keeps serving, as a
/// NACK says). <see cref="Build"/> makes a new immutable snapshot in which unchanged parts are the previous
/// snapshot's objects: a cluster is rebuilt only when its resource or its endpoints changed; a virtual host
/// is decoded and built only when its bytes changed, and rebound (its routes pointed at the new objects)
/// when only a cluster it routes to changed. Warming is Envoy's: a new EDS cluster is used once its
/// endpoints have arrived, a listener once its route configuration has (or when the config source's
/// initial_fetch_timeout has passed; 0 waits for ever); meanwhile the previous version, if any, keeps
/// serving. A route configuration that routes to a still-warming cluster is held back the same way, so a
/// new cluster and the route to it go live together. Not thread-safe: the xDS client calls it under a lock.
/// </summary>
public sealed class XdsState
{
    private static readonly TimeSpan DefaultInitialFetchTimeout = TimeSpan.FromSeconds(15);

    private readonly BootstrapLoader _loader;
    private readonly IReadOnlyList<Cluster> _staticClusters;
    private readonly IReadOnlyList<ListenerConfig> _staticListeners;
    private readonly HashSet<string> _staticClusterNames;
    private readonly Func<DateTime> _clock;

    private readonly Dictionary<string, ClusterEntry> _clusters = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (string Version, PbLoadAssignment Assignment, DateTime Updated)> _assignments = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ListenerEntry> _listeners = new(StringComparer.Ordinal);
    private readonly Dictionary<string, RouteEntry> _routes = new(StringComparer.Ordinal);

    // What the last snapshot was built from: the clusters in use by name, and the built listeners.
    private Dictionary<string, Cluster> _active = new(StringComparer.Ordinal);
    private long _version;

    public XdsState(UpstreamPools pools, IReadOnlyList<Cluster> staticClusters, IReadOnlyList<ListenerConfig> staticListeners, Func<DateTime>? clock = null,
        Secrets.SecretStore? secrets = null)
    {
        _loader = new BootstrapLoader(pools) { Dynamic = true, Secrets = secrets ?? new() };
        _staticClusters = staticClusters;
        _staticListeners = staticListeners;
        _staticClusterNames = new HashSet<string>(staticClusters.Select(static c => c.Name), StringComparer.Ordinal);
        _clock = clock ?? (() => DateTime.UtcNow);
    }

    /// <summary>The secrets the resources' TLS contexts name (SDS clients fill them).</summary>
    public Secrets.SecretStore Secrets => _loader.Secrets;

    /// <summary>Fields present in resources that are not honoured, one line per field (grows; callers log what is new).</summary>
    public IReadOnlyList<string> Warnings => _loader.Warnings;

    public ProxySnapshot? Snapshot { get; private set; }

    /// <summary>Names EDS should be subscribed to: the service names of the EDS clusters CDS gave us.</summary>
    public IReadOnlySet<string> EndpointNames => _endpointNames ??= _clusters.Values.Where(static c => c.EdsName != null).Select(static c => c.EdsName!).ToHashSet(StringComparer.Ordinal);

    private HashSet<string>? _endpointNames;

    /// <summary>Names RDS should be subscribed to: the route configurations LDS's listeners name.</summary>
    public IReadOnlySet<string> RouteNames => _listeners.Values.Where(static l => l.Shape?.RouteConfigName != null).Select(static l => l.Shape!.RouteConfigName!).ToHashSet(StringComparer.Ordinal);

    /// <summary>The version of every resource of a type we hold (Delta's initial_resource_versions on reconnect).</summary>
    public Dictionary<string, string> Versions(XdsResourceType type) => type switch
    {
        XdsResourceType.Cluster => _clusters.ToDictionary(static p => p.Key, static p => p.Value.Version, StringComparer.Ordinal),
        XdsResourceType.Endpoint => _assignments.ToDictionary(static p => p.Key, static p => p.Value.Version, StringComparer.Ordinal),
        XdsResourceType.Listener => _listeners.ToDictionary(static p => p.Key, static p => p.Value.Version, StringComparer.Ordinal),
        _ => _routes.ToDictionary(static p => p.Key, static p => p.Value.Version, StringComparer.Ordinal),
    };

    /// <summary>Names we hold of a type (State of the World: what a complete response leaves out is removed).</summary>
    public IReadOnlyCollection<string> Names(XdsResourceType type) => type switch
    {
        XdsResourceType.Cluster => _clusters.Keys,
        XdsResourceType.Endpoint => _assignments.Keys,
        XdsResourceType.Listener => _listeners.Keys,
        _ => _routes.Keys,
    };

    /// <summary>
    /// Validates and takes one update of a type: resources added or changed, and names removed. Throws
    /// <see cref="ConfigException"/> naming the resource and field, with nothing changed, when any is bad.
    /// </summary>
    public void Apply(XdsResourceType type, IReadOnlyList<XdsResource> updated, IReadOnlyCollection<string> removed)
    {
        switch (type)
        {
            case XdsResourceType.Cluster:
                ApplyClusters(updated, removed);
                break;
            case XdsResourceType.Endpoint:
                ApplyAssignments(updated, removed);
                break;
            case XdsResourceType.Listener:
                ApplyListeners(updated, removed);
                break;
            default:
                ApplyRoutes(updated, removed);
                break;
        }
    }

    /// <summary>
    /// What we hold of each type, for /config_dump: every resource as received (route configurations put
    /// back together from their virtual hosts' bytes), its version, when it was taken, and whether it is
    /// still warming (a cluster waiting for its endpoints, a listener for its routes).
    /// </summary>
    public XdsDump Dump()
    {
        var clusters = _clusters.Values.Select(static e => new DumpedResource(e.Proto.Name, e.Version, e.Proto, e.Updated, e.Built == null)).ToList();
        var listeners = _listeners.Values.Select(static e => new DumpedResource(e.Proto.Name, e.Version, e.Proto, e.Updated, e.Serving == null)).ToList();
        var routes = new List<DumpedResource>(_routes.Count);
        foreach (RouteEntry entry in _routes.Values)
        {
            routes.Add(new DumpedResource(entry.Shell!.Name, entry.Version, Whole(entry), entry.Updated, false));
            if (entry.Pending is { } pending)
            {
                routes.Add(new DumpedResource(pending.Shell!.Name, pending.Version, Whole(pending), pending.Updated, true));
            }
        }
        var endpoints = _assignments.Select(static p => new DumpedResource(p.Key, p.Value.Version, p.Value.Assignment, p.Value.Updated, false)).ToList();
        return new XdsDump(clusters, listeners, routes, endpoints);

        static PbRoutes Whole(RouteEntry entry)
        {
            PbRoutes whole = entry.Shell!.Clone();
            foreach (HostEntry host in entry.Hosts ?? [])
            {
                whole.VirtualHosts.Add(PbVirtualHost.Parser.ParseFrom(host.Raw.Span));
            }
            return whole;
        }
    }

    /// <summary>Drops resources we no longer subscribe to (EDS and RDS names nothing references any more).</summary>
    public void Forget(XdsResourceType type, IEnumerable<string> names)
    {
        foreach (string name in names)
        {
            if (type == XdsResourceType.Endpoint)
            {
                _assignments.Remove(name);
            }
            else if (type == XdsResourceType.Route)
            {
                _routes.Remove(name);
            }
        }
    }

    private static T As<T>(XdsResource r) where T : class, IMessage =>
        r.Message as T ?? throw new ConfigException($"resource '{r.Name}': expected {typeof(T).Name}, got {r.Message.Descriptor.FullName}");

    /// <summary>
    /// The resource when it is new or changed (and named as its entry says), or null when we hold it
    /// unchanged, in which case only its version is noted.
    /// </summary>
    private static T? Changed<T, TEntry>(Dictionary<string, TEntry> held, XdsResource r, string kind, Func<T, string> nameOf)
        where T : class, IMessage where TEntry : Entry<T>
    {
        T proto = As<T>(r);
        if (held.TryGetValue(r.Name, out TEntry? known) && known.Proto.Equals(proto))
        {
            known.Version = r.Version;
            return null;
        }
        return nameOf(proto) == r.Name ? proto : throw new ConfigException($"{Origin(kind, r.Name)}: the resource is named '{nameOf(proto)}'");
    }

    private static string Origin(string kind, string name) => $"{kind} '{name}'";

    private void ApplyClusters(IReadOnlyList<XdsResource> updated, IReadOnlyCollection<string> removed)
    {
        var fresh = new List<ClusterEntry>(updated.Count);
        foreach (XdsResource r in updated)
        {
            if (Changed<PbCluster, ClusterEntry>(_clusters, r, "Cluster", static c => c.Name) is not PbCluster proto)
            {
                continue;
            }
            if (_staticClusterNames.Contains(r.Name))
            {
                throw new ConfigException($"{Origin("Cluster", r.Name)}: a static cluster of the bootstrap has this name");
            }
            var entry = new ClusterEntry(proto, r.Version, _clock());
            // Read now (and with the endpoints we hold, built), so a bad cluster is refused with its update.
            entry.Settings = _loader.ReadCluster(ConfigNode.FromMessage(proto, Origin("Cluster", r.Name)));
            entry.Built = BuildCluster(entry);
            fresh.Add(entry);
        }
        foreach (ClusterEntry entry in fresh)
        {
            _clusters[entry.Proto.Name] = entry;
        }
        foreach (string name in removed)
        {
            _clusters.Remove(name);
        }
        if (fresh.Count > 0 || removed.Count > 0)
        {
            _endpointNames = null;
            _clustersDirty = true;
        }
    }

    /// <summary>The cluster with the endpoints we hold; null while an EDS cluster warms (no assignment, timeout not passed).</summary>
    private Cluster? BuildCluster(ClusterEntry entry)
    {
        if (!TlsReady(entry.Settings!.TlsContexts))
        {
            return null; // Envoy's cluster warming: its secrets first (Istio waits for them without a timeout)
        }
        ConfigNode assignment = default;
        if (entry.EdsName != null)
        {
            if (!_assignments.TryGetValue(entry.EdsName, out var known))
            {
                // Used without endpoints only once warming has given up.
                return entry.WarmingExpired(_clock()) ? _loader.BuildCluster(entry.Settings!, default) : null;
            }
            assignment = ConfigNode.FromMessage(known.Assignment, Origin("ClusterLoadAssignment", entry.EdsName));
        }
        return _loader.BuildCluster(entry.Settings!, assignment);
    }

    private void ApplyAssignments(IReadOnlyList<XdsResource> updated, IReadOnlyCollection<string> removed)
    {
        var users = _clusters.Values.Where(static c => c.EdsName != null).ToLookup(static c => c.EdsName!, StringComparer.Ordinal);
        var changed = new List<(XdsResource Resource, PbLoadAssignment Assignment, DateTime Updated)>();
        var built = new List<(ClusterEntry User, Cluster Cluster)>();
        foreach (XdsResource r in updated)
        {
            PbLoadAssignment proto = As<PbLoadAssignment>(r);
            if (_assignments.TryGetValue(r.Name, out var known) && known.Assignment.Equals(proto))
            {
                changed.Add((r, known.Assignment, known.Updated));
                continue;
            }
            changed.Add((r, proto, _clock()));
            ConfigNode assignment = ConfigNode.FromMessage(proto, Origin("ClusterLoadAssignment", r.Name));
            if (!users[r.Name].Any())
            {
                ValidateAlone(proto, r.Name);
            }
            foreach (ClusterEntry user in users[r.Name])
            {
                built.Add((user, _loader.BuildCluster(user.Settings!, assignment)));
            }
        }
        foreach (var (r, assignment, taken) in changed)
        {
            _assignments[r.Name] = (r.Version, assignment, taken);
        }
        foreach (var (user, cluster) in built)
        {
            user.Built = cluster;
            _clustersDirty = true;
        }
        foreach (string name in removed)
        {
            if (_assignments.Remove(name))
            {
                // Envoy clears the hosts of a cluster whose assignment is removed.
                foreach (ClusterEntry user in users[name])
                {
                    user.Built = _loader.BuildCluster(user.Settings!, default);
                    _clustersDirty = true;
                }
            }
        }
    }

    /// <summary>An assignment no cluster uses yet is still checked, so that it is refused now rather than later.</summary>
    private static void ValidateAlone(PbLoadAssignment proto, string name)
    {
        var probe = new PbCluster { Name = name, Type = PbCluster.Types.DiscoveryType.Eds };
        // A loader of its own: checking must not register connection pools for endpoints nothing uses.
        new BootstrapLoader(new UpstreamPools()) { Dynamic = true }.LoadCluster(ConfigNode.FromMessage(probe, Origin("Cluster", name)), ConfigNode.FromMessage(proto, Origin("ClusterLoadAssignment", name)));
    }

    private void ApplyListeners(IReadOnlyList<XdsResource> updated, IReadOnlyCollection<string> removed)
    {
        var fresh = new List<ListenerEntry>(updated.Count);
        foreach (XdsResource r in updated)
        {
            if (Changed<PbListener, ListenerEntry>(_listeners, r, "Listener", static l => l.Name) is not PbListener proto)
            {
                continue;
            }
            if (_staticListeners.Any(l => l.Name == r.Name))
            {
                throw new ConfigException($"{Origin("Listener", r.Name)}: a static listener of the bootstrap has this name");
            }
            ListenerShape? shape = _loader.ReadListener(ConfigNode.FromMessage(proto, Origin("Listener", r.Name)));
            var entry = new ListenerEntry(proto, r.Version, shape, _clock());
            if (shape is { RouteConfigName: null, ServesHttp: true })
            {
                // Inline routes: checked now against the clusters in use.
                BuildInline(entry, _active);
            }
            foreach (ChainShape chain in shape?.InlineChains ?? [])
            {
                BuildInlineRoutes(new RouteEntry(chain.Hcm!.Value, "", null), _active);
            }
            fresh.Add(entry);
        }
        foreach (ListenerEntry entry in fresh)
        {
            if (_listeners.TryGetValue(entry.Proto.Name, out ListenerEntry? previous))
            {
                entry.Serving = previous.Serving;
            }
            _listeners[entry.Proto.Name] = entry;
        }
        foreach (string name in removed)
        {
            _listeners.Remove(name);
        }
    }

    private void ApplyRoutes(IReadOnlyList<XdsResource> updated, IReadOnlyCollection<string> removed)
    {
        var fresh = new List<RouteEntry>(updated.Count);
        foreach (XdsResource r in updated)
        {
            PbRoutes proto = As<PbRoutes>(r);
            (PbRoutes shell, ReadOnlyMemory<byte>[] hosts) = r.VirtualHosts is { } split ? (proto, split) : RouteConfigurationParts.Split(proto);
            _routes.TryGetValue(r.Name, out RouteEntry? known);
            if (known?.Shell != null && known.Shell.Equals(shell) && known.SameHosts(hosts))
            {
                known.Version = r.Version;
                known.Pending = null;
                continue;
            }
            if (shell.Name != r.Name)
            {
                throw new ConfigException($"{Origin("RouteConfiguration", r.Name)}: the resource is named '{shell.Name}'");
            }
            var entry = new RouteEntry(ConfigNode.FromMessage(shell, Origin("RouteConfiguration", r.Name)), r.Version, shell) { Updated = _clock() };
            BuildRoutes(entry, hosts, _active, known);
            fresh.Add(entry);
        }
        foreach (RouteEntry entry in fresh)
        {
            // A new cluster and the route that uses it are not seen half-applied: while a cluster this
            // version routes to still warms, the version it replaces keeps serving.
            if (_routes.TryGetValue(entry.Shell!.Name, out RouteEntry? serving) && serving.Built != null && RoutesToWarmingCluster(entry, _active))
            {
                serving.Pending = entry;
                continue;
            }
            _routes[entry.Shell!.Name] = entry;
        }
        foreach (string name in removed)
        {
            _routes.Remove(name);
        }
    }

    /// <summary>Whether a host routes to a cluster CDS gave us that is not usable yet (its endpoints have not come).</summary>
    private bool RoutesToWarmingCluster(RouteEntry entry, IReadOnlyDictionary<string, Cluster> active) =>
        entry.Hosts!.Any(h => h.Names.Any(n => _clusters.TryGetValue(n, out ClusterEntry? c) && c.Built == null && !active.ContainsKey(n)));

    /// <summary>
    /// Builds a route configuration from its virtual hosts' bytes, reusing the built hosts of
    /// <paramref name="previous"/> whose bytes are the same and whose clusters are the same objects as in
    /// <paramref name="clusters"/>; only the others are decoded and built.
    /// </summary>
    private CoreRoutes BuildRoutes(RouteEntry entry, IReadOnlyList<ReadOnlyMemory<byte>> encoded, IReadOnlyDictionary<string, Cluster> clusters, RouteEntry? previous)
    {
        Dictionary<int, List<HostEntry>>? byHash = previous?.Index();
        var built = new List<HostEntry>(encoded.Count);
        var hosts = new List<CoreVirtualHost>(encoded.Count);
        for (int i = 0; i < encoded.Count; i++)
        {
            ReadOnlyMemory<byte> bytes = encoded[i];
            int hash = HostEntry.HashOf(bytes.Span);
            HostEntry? same = null;
            if (byHash != null && byHash.TryGetValue(hash, out List<HostEntry>? candidates))
            {
                same = candidates.Find(c => c.Raw.Span.SequenceEqual(bytes.Span));
            }
            if (same != null && same.DependsOnSame(clusters))
            {
                built.Add(same);
                hosts.Add(same.Built);
                continue;
            }
            // The same host whose clusters changed (new endpoints, or one came or went): its routes are
            // rebound to the clusters in use now, not built again.
            if (same?.Rebind(clusters, name => clusters.TryGetValue(name, out Cluster? c) ? c : _loader.Placeholder(name)) is HostEntry rebound)
            {
                built.Add(rebound);
                hosts.Add(rebound.Built);
                continue;
            }
            PbVirtualHost proto;
            try
            {
                proto = PbVirtualHost.Parser.ParseFrom(bytes.Span);
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new ConfigException($"{entry.Node.Path}.virtual_hosts[{i}]: does not decode: {e.Message}");
            }
            var referenced = new HashSet<string>(StringComparer.Ordinal);
            _loader.ReferencedClusters = referenced;
            try
            {
                CoreVirtualHost host = _loader.LoadVirtualHost(ConfigNode.FromMessage(proto, $"{entry.Node.Path}.virtual_hosts[{i}]"), clusters);
                built.Add(new HostEntry(bytes, hash, host, Dependencies(referenced, clusters)));
                hosts.Add(host);
            }
            finally
            {
                _loader.ReferencedClusters = null;
            }
        }
        entry.Hosts = built;
        entry.Built = _loader.AssembleRoutes(entry.Node, hosts);
        return entry.Built;
    }

    /// <summary>An inline route_config of a listener: built whole, depending on every cluster it names.</summary>
    private CoreRoutes BuildInlineRoutes(RouteEntry entry, IReadOnlyDictionary<string, Cluster> clusters)
    {
        var all = new HashSet<string>(StringComparer.Ordinal);
        _loader.ReferencedClusters = all;
        try
        {
            entry.Built = _loader.LoadRoutes(entry.Node["route_config"], clusters);
            entry.Hosts = [new HostEntry(default, 0, null!, Dependencies(all, clusters))];
            return entry.Built;
        }
        finally
        {
            _loader.ReferencedClusters = null;
        }
    }

    private static (string Name, Cluster? Cluster)[] Dependencies(HashSet<string> names, IReadOnlyDictionary<string, Cluster> clusters) =>
        [.. names.Select(n => (n, clusters.TryGetValue(n, out Cluster? c) ? c : null))];

    /// <summary>
    /// The snapshot of everything held now, or null when nothing changed since the last one (warming may
    /// still end by time: call again later while <see cref="Warming"/> says so).
    /// </summary>
    public ProxySnapshot? Build()
    {
        DateTime now = _clock();
        Dictionary<string, Cluster> active = _clustersDirty || _clustersWarming || Snapshot == null ? ActiveClusters() : _active;
        _clustersDirty = false;
        Warming = _clustersWarming;
        bool setChanged = !ReferenceEquals(active, _active)
            && (active.Count != _active.Count || active.Any(p => !_active.TryGetValue(p.Key, out Cluster? c) || !ReferenceEquals(c, p.Value)));

        // Route configurations held back for warming clusters go live once those are ready.
        HashSet<RouteEntry>? promoted = null;
        foreach (RouteEntry serving in _routes.Values.Where(static r => r.Pending != null).ToList())
        {
            RouteEntry pending = serving.Pending!;
            if (RoutesToWarmingCluster(pending, active))
            {
                Warming = true;
                continue;
            }
            serving.Pending = null;
            _routes[pending.Shell!.Name] = pending;
            (promoted ??= []).Add(pending);
        }

        // Route configurations: rebind or rebuild the hosts whose clusters changed.
        foreach (RouteEntry routes in _routes.Values)
        {
            if (routes.Built == null || ((setChanged || promoted?.Contains(routes) == true) && routes.Hosts!.Any(h => !h.DependsOnSame(active))))
            {
                BuildRoutes(routes, [.. routes.Hosts!.Select(static h => h.Raw)], active, routes);
            }
        }

        var listeners = new List<ListenerConfig>(_staticListeners.Count + _listeners.Count);
        var unbound = new List<(CoreRoutes Routes, int Port)>();
        var unboundListeners = new List<ListenerConfig>();
        listeners.AddRange(_staticListeners);
        foreach (ListenerEntry entry in _listeners.Values)
        {
            ListenerConfig? config = ListenerFor(entry, active, now);
            if (config == null)
            {
                continue;
            }
            if (entry.Shape!.BindToPort)
            {
                listeners.Add(config);
            }
            else
            {
                // Not bound (Istio's per-port outbound listeners): reached by original-destination
                // dispatch, and its routes serve the runtime API.
                unbound.Add((config.Routes, config.Address.Port));
                unboundListeners.Add(config);
            }
        }
        _active = active;
        bool changed = setChanged || Snapshot == null || listeners.Count != Snapshot.Listeners.Count
            || listeners.Where((l, i) => !ReferenceEquals(l, Snapshot.Listeners[i])).Any()
            || unbound.Count != Snapshot.UnboundRoutes.Count
            || unbound.Where((u, i) => !ReferenceEquals(u.Routes, Snapshot.UnboundRoutes[i].Routes) || u.Port != Snapshot.UnboundRoutes[i].Port).Any()
            || unboundListeners.Count != Snapshot.UnboundListeners.Count
            || unboundListeners.Where((l, i) => !ReferenceEquals(l, Snapshot.UnboundListeners[i])).Any();
        if (!changed)
        {
            return null;
        }
        Snapshot = setChanged || Snapshot == null
            ? new ProxySnapshot(listeners, active.Values, ++_version) { UnboundRoutes = unbound, UnboundListeners = unboundListeners }
            : new ProxySnapshot(listeners, Snapshot.Clusters, ++_version) { UnboundRoutes = unbound, UnboundListeners = unboundListeners };
        return Snapshot;
    }

    // Whether clusters or assignments changed since the last build (if not, and none warms, the set is reused).
    private bool _clustersDirty = true;
    private bool _clustersWarming;

    /// <summary>The clusters to use now: each one's built version, or while a new one warms, the one it replaces.</summary>
    private Dictionary<string, Cluster> ActiveClusters()
    {
        var active = new Dictionary<string, Cluster>(_clusters.Count + _staticClusters.Count, StringComparer.Ordinal);
        foreach (Cluster c in _staticClusters)
        {
            active[c.Name] = c;
        }
        bool warming = false;
        foreach (ClusterEntry entry in _clusters.Values)
        {
            entry.Built ??= BuildCluster(entry);
            Cluster? use = entry.Built ?? (_active.TryGetValue(entry.Proto.Name, out Cluster? old) ? old : null);
            warming |= entry.Built == null;
            if (use != null)
            {
                active[entry.Proto.Name] = use;
            }
        }
        _clustersWarming = warming;
        return active;
    }

    /// <summary>Whether a cluster or listener is still waiting for its EDS or RDS resource.</summary>
    public bool Warming { get; private set; }

    private ListenerConfig? ListenerFor(ListenerEntry entry, Dictionary<string, Cluster> active, DateTime now)
    {
        if (entry.Shape == null)
        {
            return null;
        }
        if (!TlsReady(entry.Shape.TlsContexts))
        {
            // A listener whose certificate has not come warms: the version it replaces keeps serving.
            Warming = true;
            return entry.Serving;
        }
        CoreRoutes? routes;
        if (!entry.Shape.ServesHttp)
        {
            routes = _emptyRoutes ??= new CoreRoutes("", [], false);
        }
        else if (entry.Shape.RouteConfigName is string rds)
        {
            routes = _routes.TryGetValue(rds, out RouteEntry? known) ? known.Built : null;
            if (routes == null)
            {
                if (!entry.WarmingExpired(now))
                {
                    Warming = true;
                    return entry.Serving;
                }
                // Envoy's behaviour when RDS does not answer in time: serve with no routes (404).
                routes = _emptyRoutes ??= new CoreRoutes("", [], false);
            }
        }
        else
        {
            if (entry.Inline == null || !entry.InlineHosts!.DependsOnSame(active))
            {
                BuildInline(entry, active);
            }
            routes = entry.Inline!;
        }
        bool inlineChains = entry.Shape.InlineChains.Any();
        if (entry.Serving == null || !ReferenceEquals(entry.Serving.Routes, routes) || entry.Serving.Name != entry.Shape.Name || !entry.Serving.Address.Equals(entry.Shape.Address)
            || (inlineChains && !ReferenceEquals(entry.BuiltWith, active)))
        {
            entry.Serving = _loader.BuildListener(entry.Shape, routes, hcm => BuildInlineRoutes(new RouteEntry(hcm, "", null), active));
            entry.BuiltWith = active;
        }
        return entry.Serving;
    }

    private CoreRoutes? _emptyRoutes;

    private static bool TlsReady(IEnumerable<Proxy.Core.Transport.Tls.TlsContext> contexts)
    {
        foreach (Proxy.Core.Transport.Tls.TlsContext context in contexts)
        {
            if (!context.IsReady)
            {
                return false;
            }
        }
        return true;
    }

    private void BuildInline(ListenerEntry entry, IReadOnlyDictionary<string, Cluster> clusters)
    {
        var holder = new RouteEntry(entry.Shape!.Hcm, "", null);
        entry.Inline = BuildInlineRoutes(holder, clusters);
        entry.InlineHosts = holder.Hosts![0];
    }

    private static TimeSpan InitialFetchTimeout(ConfigNode source) => source["initial_fetch_timeout"].Duration() ?? DefaultInitialFetchTimeout;

    /// <summary>A resource we hold, and its version.</summary>
    private abstract class Entry<T>(T proto, string version)
    {
        public T Proto { get; } = proto;
        public string Version { get; set; } = version;

        /// <summary>When this version was taken (config_dump's last_updated).</summary>
        public DateTime Updated { get; init; }
    }

    private sealed class ClusterEntry : Entry<PbCluster>
    {
        public ClusterEntry(PbCluster proto, string version, DateTime since) : base(proto, version)
        {
            Since = since;
            Updated = since;
            if (proto.Type == PbCluster.Types.DiscoveryType.Eds && proto.ClusterDiscoveryTypeCase == PbCluster.ClusterDiscoveryTypeOneofCase.Type)
            {
                EdsName = proto.EdsClusterConfig?.ServiceName is { Length: > 0 } service ? service : proto.Name;
                Timeout = InitialFetchTimeout(ConfigNode.FromMessage(proto, "")["eds_cluster_config"]["eds_config"]);
            }
        }

        public string? EdsName { get; }
        private DateTime Since { get; }
        private TimeSpan Timeout { get; }
        public Cluster? Built { get; set; }
        public ClusterSettings? Settings { get; set; }

        public bool WarmingExpired(DateTime now) => Timeout > TimeSpan.Zero && now - Since >= Timeout;
    }

    private sealed class ListenerEntry : Entry<PbListener>
    {
        public ListenerEntry(PbListener proto, string version, ListenerShape? shape, DateTime since) : base(proto, version)
        {
            Shape = shape;
            Since = since;
            Updated = since;
            if (shape?.RouteConfigName != null)
            {
                Timeout = InitialFetchTimeout(shape.Hcm["rds"]["config_source"]);
            }
        }

        public ListenerShape? Shape { get; }
        private DateTime Since { get; }
        private TimeSpan Timeout { get; }

        /// <summary>The built listener in the last snapshot (or, while this version warms, the previous version's).</summary>
        public ListenerConfig? Serving { get; set; }
        public CoreRoutes? Inline { get; set; }
        public HostEntry? InlineHosts { get; set; }

        /// <summary>The clusters its other chains' inline routes were built against (rebuilt when they change).</summary>
        public IReadOnlyDictionary<string, Cluster>? BuiltWith { get; set; }

        public bool WarmingExpired(DateTime now) => Timeout > TimeSpan.Zero && now - Since >= Timeout;
    }

    private sealed class RouteEntry(ConfigNode node, string version, PbRoutes? shell)
    {
        public ConfigNode Node { get; } = node;
        public string Version { get; set; } = version;
        public DateTime Updated { get; init; }

        /// <summary>The resource without its virtual hosts (null for a listener's inline route_config).</summary>
        public PbRoutes? Shell { get; } = shell;
        public List<HostEntry>? Hosts
        {
            get => _hosts;
            set
            {
                _hosts = value;
                _index = null;
            }
        }

        private List<HostEntry>? _hosts;
        private Dictionary<int, List<HostEntry>>? _index;

        public CoreRoutes? Built { get; set; }

        /// <summary>A newer version, accepted but held back while a cluster it routes to warms.</summary>
        public RouteEntry? Pending { get; set; }

        /// <summary>The hosts by the hash of their bytes (kept: the next version of this configuration is compared with it).</summary>
        public Dictionary<int, List<HostEntry>>? Index()
        {
            if (_index != null || _hosts == null)
            {
                return _index;
            }
            var index = new Dictionary<int, List<HostEntry>>(_hosts.Count);
            foreach (HostEntry host in _hosts)
            {
                if (!index.TryGetValue(host.Hash, out List<HostEntry>? list))
                {
                    index[host.Hash] = list = [];
                }
                list.Add(host);
            }
            return _index = index;
        }

        public bool SameHosts(ReadOnlyMemory<byte>[] encoded)
        {
            if (Hosts == null || Hosts.Count != encoded.Length)
            {
                return false;
            }
            for (int i = 0; i < encoded.Length; i++)
            {
                if (!Hosts[i].Raw.Span.SequenceEqual(encoded[i].Span))
                {
                    return false;
                }
            }
            return true;
        }
    }

    private sealed class HostEntry(ReadOnlyMemory<byte> raw, int hash, CoreVirtualHost built, (string Name, Cluster? Cluster)[] dependencies)
    {
        /// <summary>The virtual host's encoded bytes, as the control plane sent them.</summary>
        public ReadOnlyMemory<byte> Raw { get; } = raw;
        public int Hash { get; } = hash;
        public CoreVirtualHost Built { get; } = built;

        /// <summary>The clusters this host routes to, by name.</summary>
        public IEnumerable<string> Names => dependencies.Select(static d => d.Name);

        public HostEntry? Rebind(IReadOnlyDictionary<string, Cluster> clusters, Func<string, Cluster> resolve)
        {
            if (Array.Exists(dependencies, static d => d.Name == BootstrapLoader.AllClusters) || Built.Rebind(resolve) is not CoreVirtualHost host)
            {
                return null;
            }
            return new HostEntry(Raw, Hash, host, [.. dependencies.Select(d => (d.Name, clusters.TryGetValue(d.Name, out Cluster? c) ? c : null))]);
        }

        public static int HashOf(ReadOnlySpan<byte> bytes)
        {
            var hash = new HashCode();
            hash.AddBytes(bytes);
            return hash.ToHashCode();
        }

        /// <summary>Whether every cluster this host routes to is still the same object (or still absent).</summary>
        public bool DependsOnSame(IReadOnlyDictionary<string, Cluster> clusters)
        {
            foreach (var (name, cluster) in dependencies)
            {
                if (name == BootstrapLoader.AllClusters)
                {
                    return false;
                }
                Cluster? now = clusters.TryGetValue(name, out Cluster? c) ? c : null;
                if (!ReferenceEquals(now, cluster))
                {
                    return false;
                }
            }
            return true;
        }
    }
}
