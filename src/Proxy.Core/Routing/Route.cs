using System.Text;
using Proxy.Core.Config;
using Proxy.Http2;

namespace Proxy.Core.Routing;

public enum PathMatchKind : byte
{
    Prefix,
    /// <summary>The path without its query string equals the value.</summary>
    Path,
    /// <summary>safe_regex over the path without its query string, whole-value match.</summary>
    Regex,
    /// <summary>path_separated_prefix: the prefix, then the end of the path or '/'.</summary>
    PathSeparatedPrefix,
}

/// <summary>
/// Envoy's Route: a match (path, headers, query parameters, gRPC) and an action. Everything is compiled
/// when the snapshot is built; matching reads the request's octets and allocates nothing.
/// </summary>
public sealed class Route
{
    private readonly byte[] _value;
    private readonly StringMatcher? _pathRegex;

    public Route(string name, PathMatchKind kind, string value, RouteAction action, bool caseSensitive = true)
    {
        Name = name;
        Kind = kind;
        MatchValue = value;
        _value = Encoding.UTF8.GetBytes(value);
        CaseSensitive = caseSensitive;
        Action = action;
        if (kind == PathMatchKind.Regex)
        {
            _pathRegex = new StringMatcher(StringMatchKind.Regex, value);
        }
    }

    private Route(Route other, RouteAction action)
    {
        Name = other.Name;
        Kind = other.Kind;
        MatchValue = other.MatchValue;
        _value = other._value;
        _pathRegex = other._pathRegex;
        CaseSensitive = other.CaseSensitive;
        Headers = other.Headers;
        QueryParameters = other.QueryParameters;
        GrpcOnly = other.GrpcOnly;
        RequestHeaderMutations = other.RequestHeaderMutations;
        Fault = other.Fault;
        Cors = other.Cors;
        ResponseHeaderMutations = other.ResponseHeaderMutations;
        Action = action;
    }

    /// <summary>
    /// This route with its clusters replaced through <paramref name="map"/> (by name), everything else
    /// shared; null when its action cannot be rebound (cluster_header, which needs every cluster).
    /// </summary>
    public Route? Rebind(Func<string, Cluster> map)
    {
        RouteAction? action = Action.Rebind(map);
        return action == null ? null : ReferenceEquals(action, Action) ? this : new Route(this, action);
    }

    public Route(string name, PathMatchKind kind, string value, Cluster cluster, TimeSpan timeout, bool caseSensitive = true)
        : this(name, kind, value, RouteAction.ToCluster(cluster, timeout), caseSensitive)
    {
    }

    public string Name { get; }
    public PathMatchKind Kind { get; }
    public string MatchValue { get; }
    public bool CaseSensitive { get; }
    public HeaderMatcher[] Headers { get; init; } = [];
    public QueryParameterMatcher[] QueryParameters { get; init; } = [];
    /// <summary>match.grpc: only requests with content-type application/grpc*.</summary>
    public bool GrpcOnly { get; init; }
    public RouteAction Action { get; }
    public HeaderMutations? RequestHeaderMutations { get; init; }
    /// <summary>Fault injection from typed_per_filter_config (the route's, else its virtual host's).</summary>
    public FaultPolicy? Fault { get; init; }
    /// <summary>CORS from typed_per_filter_config or v2's route.cors (the route's, else its virtual host's).</summary>
    public CorsPolicy? Cors { get; init; }
    public HeaderMutations? ResponseHeaderMutations { get; init; }

    /// <summary>The single target cluster, when the action has one.</summary>
    public Cluster? Cluster => Action.Cluster;
    public TimeSpan Timeout => Action.Timeout;

    public bool Matches(ReadOnlySpan<byte> path) => MatchesPath(path);

    /// <summary>The whole match: path, then every header and query parameter matcher, then the gRPC flag.</summary>
    public bool Matches(ReadOnlySpan<byte> path, HeaderList headers, bool isGrpc)
    {
        if (!MatchesPath(path) || (GrpcOnly && !isGrpc))
        {
            return false;
        }
        foreach (HeaderMatcher header in Headers)
        {
            if (!header.Matches(headers))
            {
                return false;
            }
        }
        foreach (QueryParameterMatcher query in QueryParameters)
        {
            if (!query.Matches(path))
            {
                return false;
            }
        }
        return true;
    }

    private bool MatchesPath(ReadOnlySpan<byte> path)
    {
        switch (Kind)
        {
            case PathMatchKind.Prefix:
                return path.Length >= _value.Length && Equal(path.Slice(0, _value.Length));
            case PathMatchKind.PathSeparatedPrefix:
            {
                ReadOnlySpan<byte> p = WithoutQuery(path);
                return p.Length >= _value.Length && Equal(p.Slice(0, _value.Length))
                       && (p.Length == _value.Length || p[_value.Length] == (byte)'/');
            }
            case PathMatchKind.Regex:
                return _pathRegex!.Matches(WithoutQuery(path));
            default:
            {
                ReadOnlySpan<byte> p = WithoutQuery(path);
                return p.Length == _value.Length && Equal(p);
            }
        }
    }

    internal static ReadOnlySpan<byte> WithoutQuery(ReadOnlySpan<byte> path)
    {
        int query = path.IndexOfAny((byte)'?', (byte)'#');
        return query >= 0 ? path.Slice(0, query) : path;
    }

    private bool Equal(ReadOnlySpan<byte> candidate) =>
        CaseSensitive ? candidate.SequenceEqual(_value) : Ascii.EqualsIgnoreCase(candidate, _value);

    /// <summary>
    /// The :path to send upstream under prefix_rewrite: the matched prefix replaced (for a path match,
    /// the whole path before the query). Returns the number of octets written to <paramref name="destination"/>, or -1.
    /// </summary>
    public int RewritePath(ReadOnlySpan<byte> path, Span<byte> destination)
    {
        byte[]? rewrite = Action.PrefixRewrite;
        if (rewrite == null)
        {
            return -1;
        }
        int replaced = Kind switch
        {
            PathMatchKind.Prefix or PathMatchKind.PathSeparatedPrefix => _value.Length,
            _ => WithoutQuery(path).Length,
        };
        int length = rewrite.Length + path.Length - replaced;
        if (length > destination.Length)
        {
            return -1;
        }
        rewrite.CopyTo(destination);
        path.Slice(replaced).CopyTo(destination.Slice(rewrite.Length));
        return length;
    }
}

/// <summary>Envoy's QueryParameterMatcher: a string match on a query parameter's value, or its presence.</summary>
public sealed class QueryParameterMatcher(string name, StringMatcher? value, bool presentMatch)
{
    private readonly byte[] _name = Encoding.UTF8.GetBytes(name);

    public string Name { get; } = name;

    public bool Matches(ReadOnlySpan<byte> path)
    {
        int q = path.IndexOf((byte)'?');
        if (q < 0)
        {
            return false;
        }
        ReadOnlySpan<byte> query = path.Slice(q + 1);
        int hash = query.IndexOf((byte)'#');
        if (hash >= 0)
        {
            query = query.Slice(0, hash);
        }
        while (!query.IsEmpty)
        {
            int amp = query.IndexOf((byte)'&');
            ReadOnlySpan<byte> pair = amp < 0 ? query : query.Slice(0, amp);
            query = amp < 0 ? default : query.Slice(amp + 1);
            int eq = pair.IndexOf((byte)'=');
            ReadOnlySpan<byte> key = eq < 0 ? pair : pair.Slice(0, eq);
            if (!key.SequenceEqual(_name))
            {
                continue;
            }
            if (value == null)
            {
                return presentMatch;
            }
            return value.Matches(eq < 0 ? default : pair.Slice(eq + 1));
        }
        return false;
    }
}
