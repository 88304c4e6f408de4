using System.Net;

namespace Proxy.Core.Routing;

/// <summary>Envoy's FilterChainMatch.source_type.</summary>
public enum ConnectionSourceType
{
    Any,
    SameIpOrLoopback,
    External,
}

/// <summary>
/// Envoy's FilterChainMatch: which connections a filter chain takes. An empty criterion matches every
/// connection. Transport protocol, application protocols and server names are what the listener's
/// inspectors found (tls_inspector: "tls", ALPN and SNI; http_inspector: "http/1.1", "http/1.0" or "h2c");
/// a connection nothing was detected on has transport protocol "raw_buffer".
/// </summary>
public sealed class FilterChainMatch
{
    public static FilterChainMatch All { get; } = new();

    public int DestinationPort { get; init; }
    public CidrRange[] PrefixRanges { get; init; } = [];
    public string[] ServerNames { get; init; } = [];
    public string TransportProtocol { get; init; } = "";
    public string[] ApplicationProtocols { get; init; } = [];
    public CidrRange[] DirectSourcePrefixRanges { get; init; } = [];
    public ConnectionSourceType SourceType { get; init; }
    public CidrRange[] SourcePrefixRanges { get; init; } = [];
    public int[] SourcePorts { get; init; } = [];

    /// <summary>Whether matching needs what an inspector reads from the first octets (not just addresses).</summary>
    public bool NeedsInspection => ServerNames.Length > 0 || TransportProtocol.Length > 0 || ApplicationProtocols.Length > 0;
}

/// <summary>One filter chain of a listener: its match, and what serves the connections it takes (routes or tcp_proxy).</summary>
public sealed class FilterChain(string name, FilterChainMatch match, ListenerConfig serving)
{
    public string Name { get; } = name;
    public FilterChainMatch Match { get; } = match;

    /// <summary>The listener as this chain serves it: its HTTP connection manager's routes and options, or its tcp_proxy.</summary>
    public ListenerConfig Serving { get; } = serving;
}

/// <summary>What a connection shows for filter chain selection.</summary>
public readonly record struct ConnectionFacts(IPEndPoint? Destination, IPEndPoint? Source, string TransportProtocol, string? ServerName, string[] ApplicationProtocols);

/// <summary>
/// Envoy's filter chain selection: criteria in Envoy's order (destination port, destination IP, server
/// name, transport protocol, application protocols, direct source IP, source type, source IP, source
/// port); at each, the chains with the most specific match stay, or, when none matches specifically,
/// those that leave the criterion empty. No backtracking: a connection whose most specific chains fail a
/// later criterion gets the default chain (or none), as in Envoy.
/// </summary>
public static class FilterChainSelector
{
    public static FilterChain? Select(FilterChain[] chains, FilterChain? fallback, in ConnectionFacts facts)
    {
        if (chains.Length == 0)
        {
            return fallback;
        }
        // Small lists (Istio's listeners have a handful of chains): filtered in place on a copy.
        Span<int> keep = chains.Length <= 64 ? stackalloc int[chains.Length] : new int[chains.Length];
        for (int i = 0; i < chains.Length; i++)
        {
            keep[i] = i;
        }
        int count = chains.Length;
        ConnectionFacts f = facts;
        count = Narrow(chains, keep, count, m => m.DestinationPort == 0 ? -1 : m.DestinationPort == (f.Destination?.Port ?? -1) ? 1 : 0);
        count = Narrow(chains, keep, count, m => Longest(m.PrefixRanges, f.Destination));
        count = Narrow(chains, keep, count, m => ServerNameScore(m.ServerNames, f.ServerName));
        count = Narrow(chains, keep, count, m => m.TransportProtocol.Length == 0 ? -1 : m.TransportProtocol == f.TransportProtocol ? 1 : 0);
        count = Narrow(chains, keep, count, m => m.ApplicationProtocols.Length == 0 ? -1 : m.ApplicationProtocols.Any(p => f.ApplicationProtocols.Contains(p)) ? 1 : 0);
        count = Narrow(chains, keep, count, m => Longest(m.DirectSourcePrefixRanges, f.Source));
        count = Narrow(chains, keep, count, m => m.SourceType == ConnectionSourceType.Any ? -1 : m.SourceType == SourceTypeOf(f) ? 1 : 0);
        count = Narrow(chains, keep, count, m => Longest(m.SourcePrefixRanges, f.Source));
        count = Narrow(chains, keep, count, m => m.SourcePorts.Length == 0 ? -1 : m.SourcePorts.Contains(f.Source?.Port ?? -1) ? 1 : 0);
        return count > 0 ? chains[keep[0]] : fallback;
    }

    /// <summary>
    /// Keeps the chains whose score is highest among positive scores (a specific match; higher is more
    /// specific), or when there are none, those scoring -1 (criterion empty). 0 means "does not match".
    /// </summary>
    private static int Narrow(FilterChain[] chains, Span<int> keep, int count, Func<FilterChainMatch, int> score)
    {
        int best = 0;
        bool anyWildcard = false;
        for (int i = 0; i < count; i++)
        {
            int s = score(chains[keep[i]].Match);
            best = Math.Max(best, s);
            anyWildcard |= s == -1;
        }
        int wanted = best > 0 ? best : anyWildcard ? -1 : int.MinValue;
        int kept = 0;
        for (int i = 0; i < count; i++)
        {
            if (score(chains[keep[i]].Match) == wanted)
            {
                keep[kept++] = keep[i];
            }
        }
        return kept;
    }

    // The longest prefix containing the address, plus one (so /0 is a positive, specific match); -1 when none are listed.
    private static int Longest(CidrRange[] ranges, IPEndPoint? address)
    {
        if (ranges.Length == 0)
        {
            return -1;
        }
        int best = 0;
        foreach (CidrRange range in ranges)
        {
            if (range.Contains(address))
            {
                best = Math.Max(best, range.PrefixLength + 1);
            }
        }
        return best;
    }

    // Exact names first, then the longest wildcard suffix ("*.example.com"); -1 when none are listed.
    private static int ServerNameScore(string[] names, string? serverName)
    {
        if (names.Length == 0)
        {
            return -1;
        }
        if (string.IsNullOrEmpty(serverName))
        {
            return 0;
        }
        int best = 0;
        foreach (string name in names)
        {
            if (string.Equals(name, serverName, StringComparison.OrdinalIgnoreCase))
            {
                return int.MaxValue;
            }
            if (name.StartsWith("*.", StringComparison.Ordinal) && serverName.Length > name.Length - 1
                && serverName.EndsWith(name.AsSpan(1), StringComparison.OrdinalIgnoreCase))
            {
                best = Math.Max(best, name.Length);
            }
        }
        return best;
    }

    private static ConnectionSourceType SourceTypeOf(in ConnectionFacts facts)
    {
        IPAddress? source = facts.Source?.Address;
        if (source == null)
        {
            return ConnectionSourceType.External;
        }
        if (IPAddress.IsLoopback(source) || (facts.Destination != null && source.Equals(facts.Destination.Address)))
        {
            return ConnectionSourceType.SameIpOrLoopback;
        }
        return ConnectionSourceType.External;
    }
}
