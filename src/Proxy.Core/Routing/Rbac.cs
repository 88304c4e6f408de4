using System.Net;
using System.Net.Sockets;
using Proxy.Core.Config;
using Proxy.Http2;

namespace Proxy.Core.Routing;

/// <summary>envoy.config.rbac.v3.RBAC.Action.</summary>
public enum RbacAction : byte
{
    Allow,
    Deny,
    /// <summary>LOG: every request is allowed (the policies only mark it for logging).</summary>
    Log,
}

/// <summary>
/// Envoy's RBAC (Istio's AuthorizationPolicy, translated by istiod): named policies, each a set of
/// permissions (what is asked: headers, path, destination) and principals (who asks: addresses, headers,
/// authenticated identities), any of each. ALLOW lets a request through only when a policy matches; DENY
/// stops it when one matches. Built once per configuration; evaluation allocates nothing.
/// </summary>
public sealed class RbacPolicySet(RbacAction action, IReadOnlyList<RbacPolicy> policies)
{
    public RbacAction Action { get; } = action;
    public IReadOnlyList<RbacPolicy> Policies { get; } = policies;

    /// <summary>Whether the request (or, with no headers, the connection) may go on.</summary>
    public bool Allows(in RbacRequest request)
    {
        if (Action == RbacAction.Log)
        {
            return true;
        }
        bool matched = false;
        for (int i = 0; i < Policies.Count; i++)
        {
            if (Policies[i].Matches(request))
            {
                matched = true;
                break;
            }
        }
        return Action == RbacAction.Allow ? matched : !matched;
    }

    /// <summary>The network-level check of an accepted connection (its addresses and TLS identity); false when the socket is gone.</summary>
    public bool AllowsConnection(Socket socket, Transport.Tls.TlsSession? tls)
    {
        try
        {
            var remote = socket.RemoteEndPoint as IPEndPoint;
            return Allows(new RbacRequest { DirectRemote = remote, Remote = remote, Local = socket.LocalEndPoint as IPEndPoint, Principal = tls?.PeerPrincipalUtf8 });
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

/// <summary>One named policy: it matches when any permission and any principal match.</summary>
public sealed class RbacPolicy(string name, RbacRule[] permissions, RbacRule[] principals)
{
    public string Name { get; } = name;

    public bool Matches(in RbacRequest request) => RbacRule.Any(permissions, request) && RbacRule.Any(principals, request);
}

/// <summary>What a request offers to RBAC: its headers (null at the network level), path and both ends' addresses.</summary>
public readonly ref struct RbacRequest
{
    public HeaderList? Headers { get; init; }
    /// <summary>The request's :path without its query (url_path matches this).</summary>
    public ReadOnlySpan<byte> Path { get; init; }
    /// <summary>The peer of the downstream connection (direct_remote_ip, and source_ip).</summary>
    public IPEndPoint? DirectRemote { get; init; }
    /// <summary>The trusted client address (remote_ip): from x-forwarded-for as the connection manager's use_remote_address and xff_num_trusted_hops say (Envoy's rules), else the peer.</summary>
    public IPEndPoint? Remote { get; init; }
    /// <summary>The address the connection was accepted on.</summary>
    public IPEndPoint? Local { get; init; }
    /// <summary>The peer's authenticated identity (the SPIFFE URI of its certificate, UTF-8, made once per connection); null without TLS.</summary>
    public byte[]? Principal { get; init; }
}

/// <summary>The kinds of Permission and Principal rules we evaluate.</summary>
public enum RbacRuleKind : byte
{
    Any,
    And,
    Or,
    Not,
    Header,
    UrlPath,
    DestinationIp,
    DestinationPort,
    DestinationPortRange,
    DirectRemoteIp,
    RemoteIp,
    Authenticated,
    /// <summary>A rule that can never match (a field we recognise whose condition cannot hold here).</summary>
    Never,
}

/// <summary>One Permission or Principal rule of Envoy's RBAC, as a small tree.</summary>
public sealed class RbacRule
{
    public RbacRuleKind Kind { get; private init; }
    public RbacRule[] Children { get; private init; } = [];
    public HeaderMatcher? Header { get; private init; }
    public StringMatcher? Matcher { get; private init; }
    public CidrRange Cidr { get; private init; }
    public int PortStart { get; private init; }
    public int PortEnd { get; private init; }

    public static RbacRule AnyRule { get; } = new() { Kind = RbacRuleKind.Any };
    public static RbacRule NeverRule { get; } = new() { Kind = RbacRuleKind.Never };
    public static RbacRule And(RbacRule[] rules) => new() { Kind = RbacRuleKind.And, Children = rules };
    public static RbacRule Or(RbacRule[] rules) => new() { Kind = RbacRuleKind.Or, Children = rules };
    public static RbacRule Not(RbacRule rule) => new() { Kind = RbacRuleKind.Not, Children = [rule] };
    public static RbacRule ForHeader(HeaderMatcher header) => new() { Kind = RbacRuleKind.Header, Header = header };
    public static RbacRule ForUrlPath(StringMatcher path) => new() { Kind = RbacRuleKind.UrlPath, Matcher = path };
    public static RbacRule ForDestinationIp(CidrRange cidr) => new() { Kind = RbacRuleKind.DestinationIp, Cidr = cidr };
    public static RbacRule ForDestinationPort(int port) => new() { Kind = RbacRuleKind.DestinationPort, PortStart = port, PortEnd = port + 1 };
    /// <summary>destination_port_range: [start, end).</summary>
    public static RbacRule ForDestinationPortRange(int start, int end) => new() { Kind = RbacRuleKind.DestinationPortRange, PortStart = start, PortEnd = end };
    public static RbacRule ForDirectRemoteIp(CidrRange cidr) => new() { Kind = RbacRuleKind.DirectRemoteIp, Cidr = cidr };
    public static RbacRule ForRemoteIp(CidrRange cidr) => new() { Kind = RbacRuleKind.RemoteIp, Cidr = cidr };
    /// <summary>authenticated: the peer's identity matches (an absent principal_name matches any authenticated peer).</summary>
    public static RbacRule ForAuthenticated(StringMatcher? principal) => new() { Kind = RbacRuleKind.Authenticated, Matcher = principal };

    internal static bool Any(RbacRule[] rules, in RbacRequest request)
    {
        foreach (RbacRule rule in rules)
        {
            if (rule.Matches(request))
            {
                return true;
            }
        }
        return false;
    }

    public bool Matches(in RbacRequest request)
    {
        switch (Kind)
        {
            case RbacRuleKind.Any:
                return true;
            case RbacRuleKind.And:
                foreach (RbacRule rule in Children)
                {
                    if (!rule.Matches(request))
                    {
                        return false;
                    }
                }
                return true;
            case RbacRuleKind.Or:
                return Any(Children, request);
            case RbacRuleKind.Not:
                return !Children[0].Matches(request);
            case RbacRuleKind.Header:
                // At the network level there are no headers: a header rule does not match.
                return request.Headers != null && Header!.Matches(request.Headers);
            case RbacRuleKind.UrlPath:
                return request.Headers != null && Matcher!.Matches(request.Path);
            case RbacRuleKind.DestinationIp:
                return Cidr.Contains(request.Local);
            case RbacRuleKind.DestinationPort:
            case RbacRuleKind.DestinationPortRange:
                return request.Local is { } local && local.Port >= PortStart && local.Port < PortEnd;
            case RbacRuleKind.DirectRemoteIp:
                return Cidr.Contains(request.DirectRemote);
            case RbacRuleKind.RemoteIp:
                return Cidr.Contains(request.Remote ?? request.DirectRemote);
            case RbacRuleKind.Authenticated:
                // Without TLS no peer is authenticated, so no authenticated rule matches.
                return request.Principal is { } principal && (Matcher == null || Matcher.Matches(principal));
            default:
                return false;
        }
    }
}

/// <summary>Envoy's CidrRange: an address prefix and a length.</summary>
public readonly struct CidrRange
{
    private readonly byte[] _prefix;
    private readonly int _bits;

    public CidrRange(IPAddress address, int prefixLength)
    {
        _prefix = address.GetAddressBytes();
        int max = _prefix.Length * 8;
        if (prefixLength < 0 || prefixLength > max)
        {
            throw new ConfigException($"prefix_len {prefixLength} is out of range for {address} (0..{max})");
        }
        _bits = prefixLength;
    }

    /// <summary>How many leading bits must match (the more, the more specific).</summary>
    public int PrefixLength => _bits;

    public bool Contains(IPEndPoint? endPoint)
    {
        if (endPoint == null || _prefix == null)
        {
            return false;
        }
        IPAddress address = endPoint.Address;
        if (address.IsIPv4MappedToIPv6 && _prefix.Length == 4)
        {
            address = address.MapToIPv4();
        }
        else if (address.AddressFamily == AddressFamily.InterNetwork && _prefix.Length == 16)
        {
            address = address.MapToIPv6();
        }
        Span<byte> bytes = stackalloc byte[16];
        if (!address.TryWriteBytes(bytes, out int written) || written != _prefix.Length)
        {
            return false;
        }
        int full = _bits / 8;
        if (!bytes.Slice(0, full).SequenceEqual(_prefix.AsSpan(0, full)))
        {
            return false;
        }
        int rest = _bits % 8;
        if (rest == 0)
        {
            return true;
        }
        int mask = 0xFF << (8 - rest) & 0xFF;
        return (bytes[full] & mask) == (_prefix[full] & mask);
    }
}
