using System.Collections.Frozen;
using System.Text;
using Proxy.Core.Config;
using Proxy.Http2;

namespace Proxy.Core.Routing;

public enum RouteActionKind : byte
{
    Cluster,
    WeightedClusters,
    /// <summary>The cluster named by a request header (Envoy's cluster_header).</summary>
    ClusterHeader,
    /// <summary>The proxy answers itself (Envoy's direct_response).</summary>
    DirectResponse,
    /// <summary>A 3xx with a Location built from the request (Envoy's redirect).</summary>
    Redirect,
}

/// <summary>Envoy's RouteAction (and direct_response): where a matched request goes, and how it is rewritten.</summary>
public sealed class RouteAction
{
    private (Cluster Cluster, int Cumulative)[] _weighted = [];
    private byte[] _clusterHeader = [];
    private FrozenDictionary<string, Cluster>.AlternateLookup<ReadOnlySpan<char>> _clusterLookup;

    private RouteAction(RouteActionKind kind)
    {
        Kind = kind;
    }

    public RouteActionKind Kind { get; }
    /// <summary>The single cluster, for <see cref="RouteActionKind.Cluster"/>.</summary>
    public Cluster? Cluster { get; private init; }
    public IReadOnlyList<(Cluster Cluster, int Weight)> WeightedClusters { get; private init; } = [];
    public int TotalWeight { get; private init; }
    public int DirectStatus { get; private init; }
    public byte[] DirectBody { get; private init; } = [];

    /// <summary>The whole request's time limit; zero means none (Envoy's "0s").</summary>
    public TimeSpan Timeout { get; init; }
    /// <summary>prefix_rewrite: replaces the matched prefix of :path.</summary>
    public byte[]? PrefixRewrite { get; init; }
    /// <summary>host_rewrite_literal (v2 host_rewrite): replaces :authority.</summary>
    public byte[]? HostRewrite { get; init; }
    public RetryPolicy? RetryPolicy { get; init; }
    public HashPolicy[] HashPolicies { get; private set; } = [];
    /// <summary>Per weighted cluster: its own request/response header mutations (applied before the route's).</summary>
    public (HeaderMutations? Request, HeaderMutations? Response)[] WeightedMutations { get; private init; } = [];
    public MirrorPolicy? Mirror { get; private set; }

    /// <summary>A copy with request_mirror_policies set.</summary>
    public RouteAction WithMirror(MirrorPolicy mirror)
    {
        RouteAction copy = WithRewrites(PrefixRewrite, HostRewrite);
        copy.HashPolicies = HashPolicies;
        copy.Mirror = mirror;
        copy.IdleTimeout = IdleTimeout;
        return copy;
    }

    /// <summary>A copy with <paramref name="policies"/> as hash_policy.</summary>
    public RouteAction WithHashPolicies(HashPolicy[] policies)
    {
        RouteAction copy = WithRewrites(PrefixRewrite, HostRewrite);
        copy.HashPolicies = policies;
        copy.Mirror = Mirror;
        copy.IdleTimeout = IdleTimeout;
        return copy;
    }
    /// <summary>max_grpc_timeout / max_stream_duration.grpc_timeout_header_max: a grpc-timeout above it is cut to it; zero means no bound.</summary>
    public TimeSpan MaxGrpcTimeout { get; init; }
    /// <summary>idle_timeout: the stream ends when neither side sends anything for this long; zero means none.</summary>
    public TimeSpan IdleTimeout { get; private set; }

    /// <summary>A copy with idle_timeout set.</summary>
    public RouteAction WithIdleTimeout(TimeSpan idle)
    {
        RouteAction copy = WithRewrites(PrefixRewrite, HostRewrite);
        copy.HashPolicies = HashPolicies;
        copy.Mirror = Mirror;
        copy.IdleTimeout = idle;
        return copy;
    }
    /// <summary>auto_host_rewrite: :authority becomes the chosen endpoint's DNS name (STRICT_DNS/LOGICAL_DNS clusters).</summary>
    public bool AutoHostRewrite { get; init; }
    /// <summary>regex_rewrite: the path (without its query) rewritten by a regex substitution.</summary>
    public System.Text.RegularExpressions.Regex? RegexRewrite { get; init; }
    public string? RegexSubstitution { get; init; }

    public static RouteAction ToCluster(Cluster cluster, TimeSpan timeout) => new(RouteActionKind.Cluster) { Cluster = cluster, Timeout = timeout };

    /// <summary>
    /// weighted_clusters: a request goes to each cluster with probability weight / total. When
    /// <paramref name="totalWeight"/> is given (v2, and v3 before 1.24) the weights must add up to it.
    /// </summary>
    public static RouteAction ToWeightedClusters(IReadOnlyList<(Cluster Cluster, int Weight)> clusters, int? totalWeight, TimeSpan timeout, string path,
        IReadOnlyList<(HeaderMutations? Request, HeaderMutations? Response)>? mutations = null)
    {
        int sum = 0;
        var cumulative = new (Cluster, int)[clusters.Count];
        for (int i = 0; i < clusters.Count; i++)
        {
            if (clusters[i].Weight < 0)
            {
                throw new ConfigException($"{path}: negative weight");
            }
            sum = checked(sum + clusters[i].Weight);
            cumulative[i] = (clusters[i].Cluster, sum);
        }
        if (sum == 0)
        {
            throw new ConfigException($"{path}: the weights add up to 0");
        }
        if (totalWeight is int total && total != sum)
        {
            throw new ConfigException($"{path}: the weights add up to {sum}, not total_weight {total}");
        }
        return new RouteAction(RouteActionKind.WeightedClusters)
        {
            WeightedClusters = clusters,
            TotalWeight = sum,
            Timeout = timeout,
            _weighted = cumulative,
            WeightedMutations = mutations is { Count: > 0 } ? [.. mutations] : [],
        };
    }

    public static RouteAction ToClusterHeader(string header, FrozenDictionary<string, Cluster> clusters, TimeSpan timeout) =>
        new(RouteActionKind.ClusterHeader)
        {
            _clusterHeader = Encoding.ASCII.GetBytes(header.ToLowerInvariant()),
            _clusterLookup = clusters.GetAlternateLookup<ReadOnlySpan<char>>(),
            Timeout = timeout,
        };

    /// <summary>A copy of this action with prefix_rewrite and host_rewrite_literal set.</summary>
    public RouteAction WithRewrites(byte[]? prefixRewrite, byte[]? hostRewrite, RetryPolicy? retryPolicy = null) => With(prefixRewrite, hostRewrite, retryPolicy, MaxGrpcTimeout, AutoHostRewrite, RegexRewrite, RegexSubstitution);

    /// <summary>A copy with every rewrite and per-route option set.</summary>
    public RouteAction With(byte[]? prefixRewrite, byte[]? hostRewrite, RetryPolicy? retryPolicy, TimeSpan maxGrpcTimeout, bool autoHostRewrite,
        System.Text.RegularExpressions.Regex? regexRewrite, string? regexSubstitution) => new(Kind)
    {
        RetryPolicy = retryPolicy ?? RetryPolicy,
        HashPolicies = HashPolicies,
        Mirror = Mirror,
        WeightedMutations = WeightedMutations,
        IdleTimeout = IdleTimeout,
        MaxGrpcTimeout = maxGrpcTimeout,
        AutoHostRewrite = autoHostRewrite,
        RegexRewrite = regexRewrite,
        RegexSubstitution = regexSubstitution,
        Cluster = Cluster,
        WeightedClusters = WeightedClusters,
        TotalWeight = TotalWeight,
        DirectStatus = DirectStatus,
        DirectBody = DirectBody,
        Timeout = Timeout,
        PrefixRewrite = prefixRewrite,
        HostRewrite = hostRewrite,
        _weighted = _weighted,
        _clusterHeader = _clusterHeader,
        _clusterLookup = _clusterLookup,
    };

    /// <summary>
    /// A copy whose clusters (target, weighted, mirror) are replaced through <paramref name="map"/> by name;
    /// this action itself when it names none; null for cluster_header, which would need the whole set.
    /// </summary>
    public RouteAction? Rebind(Func<string, Cluster> map)
    {
        if (Kind == RouteActionKind.ClusterHeader)
        {
            return null;
        }
        if (Kind is RouteActionKind.DirectResponse or RouteActionKind.Redirect)
        {
            return this;
        }
        return new RouteAction(Kind)
        {
            RetryPolicy = RetryPolicy,
            HashPolicies = HashPolicies,
            Mirror = Mirror == null ? null : new MirrorPolicy(map(Mirror.Cluster.Name), Mirror.Fraction),
            WeightedMutations = WeightedMutations,
            IdleTimeout = IdleTimeout,
            MaxGrpcTimeout = MaxGrpcTimeout,
            AutoHostRewrite = AutoHostRewrite,
            RegexRewrite = RegexRewrite,
            RegexSubstitution = RegexSubstitution,
            Cluster = Cluster == null ? null : map(Cluster.Name),
            WeightedClusters = [.. WeightedClusters.Select(w => (map(w.Cluster.Name), w.Weight))],
            TotalWeight = TotalWeight,
            DirectStatus = DirectStatus,
            DirectBody = DirectBody,
            Timeout = Timeout,
            PrefixRewrite = PrefixRewrite,
            HostRewrite = HostRewrite,
            _weighted = [.. _weighted.Select(w => (map(w.Cluster.Name), w.Cumulative))],
            _clusterHeader = _clusterHeader,
            _clusterLookup = _clusterLookup,
        };
    }

    /// <summary>Envoy's RedirectAction: parts of the request URL replaced; unset parts keep the request's.</summary>
    public static RouteAction ToRedirect(int status, string? scheme, string? host, int port, string? path, string? prefixRewrite, bool stripQuery) =>
        new(RouteActionKind.Redirect)
        {
            DirectStatus = status,
            RedirectScheme = scheme,
            RedirectHost = host,
            RedirectPort = port,
            RedirectPath = path,
            RedirectPrefixRewrite = prefixRewrite,
            StripQuery = stripQuery,
        };

    public string? RedirectScheme { get; private init; }
    public string? RedirectHost { get; private init; }
    public int RedirectPort { get; private init; }
    public string? RedirectPath { get; private init; }
    public string? RedirectPrefixRewrite { get; private init; }
    public bool StripQuery { get; private init; }

    public static RouteAction Direct(int status, string body) =>
        new(RouteActionKind.DirectResponse) { DirectStatus = status, DirectBody = Encoding.UTF8.GetBytes(body) };

    /// <summary>The cluster for this request; null when none applies (an unknown cluster_header value).</summary>
    public Cluster? PickCluster(HeaderList headers) => PickCluster(headers, out _);

    /// <summary>The cluster for this request, and for weighted clusters the index of the one chosen (else -1).</summary>
    public Cluster? PickCluster(HeaderList headers, out int weightedIndex)
    {
        weightedIndex = -1;
        switch (Kind)
        {
            case RouteActionKind.Cluster:
                return Cluster;
            case RouteActionKind.WeightedClusters:
            {
                int pick = Random.Shared.Next(TotalWeight);
                (Cluster Cluster, int Cumulative)[] table = _weighted;
                for (int i = 0; i < table.Length; i++)
                {
                    if (pick < table[i].Cumulative)
                    {
                        weightedIndex = i;
                        return table[i].Cluster;
                    }
                }
                weightedIndex = table.Length - 1;
                return table[^1].Cluster;
            }
            case RouteActionKind.ClusterHeader:
            {
                int index = headers.IndexOf(_clusterHeader);
                if (index < 0)
                {
                    return null;
                }
                ReadOnlySpan<byte> value = headers.Value(index);
                if (value.Length > 256)
                {
                    return null;
                }
                Span<char> name = stackalloc char[value.Length];
                Encoding.Latin1.GetChars(value, name);
                return _clusterLookup.TryGetValue(name, out Cluster? cluster) ? cluster : null;
            }
            default:
                return null;
        }
    }
}
