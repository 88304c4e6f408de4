namespace Proxy.Core.Routing;

/// <summary>
/// The consistent-hash tables of Envoy's RING_HASH and MAGLEV balancers, built once per cluster per
/// snapshot: a request hash always lands on the same endpoint while the endpoint set stays the same, and
/// most keys stay put when it changes.
/// </summary>
internal sealed class ConsistentHash
{
    private readonly ulong[] _ringHashes = [];
    private readonly int[] _ringHosts = [];
    private readonly int[] _maglev = [];

    private ConsistentHash(ulong[] ringHashes, int[] ringHosts, int[] maglev)
    {
        _ringHashes = ringHashes;
        _ringHosts = ringHosts;
        _maglev = maglev;
    }

    /// <summary>Envoy's ring: about minimum_ring_size entries (default 1024), shared by weight, each at the hash of "address_n".</summary>
    public static ConsistentHash Ring(UpstreamEndpoint[] hosts, int minimumRingSize)
    {
        long totalWeight = hosts.Sum(static h => (long)Math.Max(1, h.Weight));
        var entries = new List<(ulong Hash, int Host)>();
        for (int i = 0; i < hosts.Length; i++)
        {
            long count = Math.Max(1, (long)Math.Ceiling(minimumRingSize * (double)Math.Max(1, hosts[i].Weight) / totalWeight));
            string key = hosts[i].Address.ToString() ?? i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            for (long n = 0; n < count; n++)
            {
                entries.Add((StableHash.Of($"{key}_{n}"), i));
            }
        }
        entries.Sort(static (a, b) => a.Hash.CompareTo(b.Hash));
        return new ConsistentHash([.. entries.Select(static e => e.Hash)], [.. entries.Select(static e => e.Host)], []);
    }

    /// <summary>Maglev (Eisenbud et al., NSDI 2016) with Envoy's default table size 65537; weights repeat a host's turns.</summary>
    public static ConsistentHash Maglev(UpstreamEndpoint[] hosts, int tableSize = 65537)
    {
        var table = new int[tableSize];
        Array.Fill(table, -1);
        var offsets = new ulong[hosts.Length];
        var skips = new ulong[hosts.Length];
        var next = new ulong[hosts.Length];
        for (int i = 0; i < hosts.Length; i++)
        {
            string key = hosts[i].Address.ToString() ?? "";
            offsets[i] = StableHash.Of(key) % (ulong)tableSize;
            skips[i] = StableHash.Of(key + "#skip") % (ulong)(tableSize - 1) + 1;
        }
        int filled = 0;
        while (filled < tableSize)
        {
            for (int i = 0; i < hosts.Length && filled < tableSize; i++)
            {
                for (int turn = 0; turn < Math.Max(1, hosts[i].Weight) && filled < tableSize; turn++)
                {
                    ulong slot;
                    do
                    {
                        slot = (offsets[i] + next[i] * skips[i]) % (ulong)tableSize;
                        next[i]++;
                    }
                    while (table[slot] >= 0);
                    table[slot] = i;
                    filled++;
                }
            }
        }
        return new ConsistentHash([], [], table);
    }

    public int Pick(ulong hash)
    {
        if (_maglev.Length > 0)
        {
            return _maglev[hash % (ulong)_maglev.Length];
        }
        int index = Array.BinarySearch(_ringHashes, hash);
        if (index < 0)
        {
            index = ~index;
        }
        return _ringHosts[index == _ringHashes.Length ? 0 : index];
    }
}
