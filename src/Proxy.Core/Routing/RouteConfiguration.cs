using System.Collections.Frozen;
using Proxy.Core.Config;

namespace Proxy.Core.Routing;

/// <summary>
/// Envoy's RouteConfiguration: virtual hosts selected by the request's authority. Domains are searched
/// as Envoy does: exact names, then "*.suffix" wildcards (longest first), then "prefix.*" wildcards
/// (longest first), then "*". Lookups take the authority as octets and allocate nothing.
/// </summary>
public sealed class RouteConfiguration
{
    private const int MaxAuthorityLength = 255 + 6;

    // Exact domains: a Dictionary at once, then a FrozenDictionary (faster lookups) built off the update
    // path. A control plane resends a configuration of thousands of domains for a one-route change, and
    // freezing costs ~1 ms per thousand; the swap should not wait for it.
    private readonly Dictionary<string, VirtualHost>.AlternateLookup<ReadOnlySpan<char>> _exactLookup;
    private FrozenLookup? _frozen;
    private readonly (string Suffix, VirtualHost Host)[] _suffixes;
    private readonly (string Prefix, VirtualHost Host)[] _prefixes;
    private readonly VirtualHost? _any;

    public RouteConfiguration(string name, IReadOnlyList<VirtualHost> virtualHosts, bool ignorePortInHostMatching = false)
    {
        Name = name;
        VirtualHosts = virtualHosts;
        IgnorePortInHostMatching = ignorePortInHostMatching;
        var exact = new Dictionary<string, VirtualHost>(StringComparer.OrdinalIgnoreCase);
        var suffixes = new List<(string, VirtualHost)>();
        var prefixes = new List<(string, VirtualHost)>();
        foreach (VirtualHost host in virtualHosts)
        {
            foreach (string domain in host.Domains)
            {
                if (domain == "*")
                {
                    if (_any != null)
                    {
                        throw new ConfigException($"route configuration '{name}': domain '*' appears in more than one virtual host");
                    }
                    _any = host;
                }
                else if (domain.StartsWith('*'))
                {
                    suffixes.Add((domain[1..].ToLowerInvariant(), host));
                }
                else if (domain.EndsWith('*'))
                {
                    prefixes.Add((domain[..^1].ToLowerInvariant(), host));
                }
                else if (!exact.TryAdd(domain, host))
                {
                    // Envoy rejects a route configuration whose virtual hosts share a domain.
                    throw new ConfigException($"route configuration '{name}': domain '{domain}' appears in more than one virtual host");
                }
            }
        }
        _exactLookup = exact.GetAlternateLookup<ReadOnlySpan<char>>();
        if (exact.Count > 64)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static state => state.Freeze(), this, preferLocal: false);
        }
        else
        {
            Freeze();
        }
        _suffixes = [.. suffixes.OrderByDescending(static s => s.Item1.Length)];
        _prefixes = [.. prefixes.OrderByDescending(static p => p.Item1.Length)];
    }

    private void Freeze()
    {
        FrozenDictionary<string, VirtualHost> frozen = _exactLookup.Dictionary.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        Volatile.Write(ref _frozen, new FrozenLookup(frozen.GetAlternateLookup<ReadOnlySpan<char>>()));
    }

    private sealed class FrozenLookup(FrozenDictionary<string, VirtualHost>.AlternateLookup<ReadOnlySpan<char>> lookup)
    {
        public readonly FrozenDictionary<string, VirtualHost>.AlternateLookup<ReadOnlySpan<char>> Lookup = lookup;
    }

    /// <summary>No virtual hosts: every request gets "no route".</summary>
    public static RouteConfiguration Empty { get; } = new("", []);

    public string Name { get; }
    public IReadOnlyList<VirtualHost> VirtualHosts { get; }
    public bool IgnorePortInHostMatching { get; }
    public HeaderMutations? RequestHeaders { get; init; }
    public HeaderMutations? ResponseHeaders { get; init; }

    public VirtualHost? FindVirtualHost(ReadOnlySpan<byte> authority)
    {
        if (authority.Length > MaxAuthorityLength)
        {
            return _any;
        }
        if (IgnorePortInHostMatching)
        {
            authority = StripPort(authority);
        }
        Span<char> chars = stackalloc char[authority.Length];
        for (int i = 0; i < authority.Length; i++)
        {
            chars[i] = (char)authority[i];
        }
        FrozenLookup? frozen = Volatile.Read(ref _frozen);
        if (frozen != null ? frozen.Lookup.TryGetValue(chars, out VirtualHost? host) : _exactLookup.TryGetValue(chars, out host))
        {
            return host;
        }
        foreach (var (suffix, candidate) in _suffixes)
        {
            // "*.example.com" needs at least one character before the suffix (Envoy's rule).
            if (chars.Length > suffix.Length && chars.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                return candidate;
            }
        }
        foreach (var (prefix, candidate) in _prefixes)
        {
            if (chars.Length > prefix.Length && chars.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            {
                return candidate;
            }
        }
        return _any;
    }

    /// <summary>"host:port" → "host"; an IPv6 literal keeps its brackets.</summary>
    private static ReadOnlySpan<byte> StripPort(ReadOnlySpan<byte> authority)
    {
        int colon = authority.LastIndexOf((byte)':');
        if (colon < 0 || authority.LastIndexOf((byte)']') > colon)
        {
            return authority;
        }
        return authority.Slice(0, colon);
    }
}
