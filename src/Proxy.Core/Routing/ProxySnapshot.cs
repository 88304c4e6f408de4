using System.Collections.Frozen;

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
}

/// <summary>Where snapshots are published; the data path reads <see cref="Current"/> once per request.</summary>
public sealed class SnapshotHolder(ProxySnapshot initial)
{
    private ProxySnapshot _current = initial;

    public ProxySnapshot Current => Volatile.Read(ref _current);

    public void Publish(ProxySnapshot snapshot) => Volatile.Write(ref _current, snapshot);
}
