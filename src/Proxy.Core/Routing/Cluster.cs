using System.Net;

namespace Proxy.Core.Routing;

public enum UpstreamProtocol : byte
{
    Http1,
    Http2,
}

/// <summary>Envoy's lb_policy values that are honoured.</summary>
public enum LbPolicy : byte
{
    RoundRobin,
    /// <summary>Power of two random choices, the one with fewer active requests wins (Envoy's default choice_count 2; Istio's default policy).</summary>
    LeastRequest,
    Random,
    /// <summary>Consistent hashing on a ring (Envoy's RING_HASH), keyed by the route's hash_policy.</summary>
    RingHash,
    /// <summary>Consistent hashing with Maglev's lookup table (Envoy's MAGLEV).</summary>
    Maglev,
}

/// <summary>Envoy's HealthStatus of an LbEndpoint (from EDS or a load_assignment).</summary>
public enum EndpointHealth : byte
{
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

/// <summary>
/// Envoy's Cluster: a named set of endpoints, the protocol to speak to them, and how to pick one. Endpoints
/// that are UNHEALTHY, DRAINING or TIMEOUT are skipped, unless fewer than the panic threshold (Envoy's
/// default 50 %) are healthy, in which case all are used, as Envoy does. Endpoint weights are honoured.
/// </summary>
public sealed class Cluster
{
    private readonly UpstreamEndpoint[] _candidates;
    private readonly int[] _cumulative;      // cumulative weights of _candidates
    private readonly int _totalWeight;
    private readonly bool _weighted;
    private int _next = -1;

    public Cluster(string name, UpstreamProtocol protocol, IReadOnlyList<UpstreamEndpoint> endpoints, TimeSpan connectTimeout,
        LbPolicy lbPolicy = LbPolicy.RoundRobin, double panicThresholdPercent = 50, bool localityWeighted = false)
    {
        Name = name;
        Protocol = protocol;
        Endpoints = [.. endpoints];
        ConnectTimeout = connectTimeout;
        LbPolicy = lbPolicy;
        UpstreamEndpoint[] healthy = [.. Endpoints.Where(static e => e.Health is not (EndpointHealth.Unhealthy or EndpointHealth.Draining or EndpointHealth.Timeout))];
        // Panic mode: too few healthy hosts, so load goes to all of them rather than overwhelm the few.
        _candidates = Endpoints.Length > 0 && healthy.Length * 100.0 < Endpoints.Length * panicThresholdPercent ? Endpoints : healthy;
        _cumulative = new int[_candidates.Length];
        int sum = 0;
        for (int i = 0; i < _candidates.Length; i++)
        {
            sum += Math.Max(1, _candidates[i].Weight);
            _cumulative[i] = sum;
        }
        _totalWeight = sum;
        _weighted = sum != _candidates.Length;
        int[] levels = [.. Endpoints.Select(static e => e.Priority).Distinct().Order()];
        if (levels.Length > 1)
        {
            _levels = [.. levels.Select(p => new Cluster(name, protocol, [.. Endpoints.Where(e => e.Priority == p)], connectTimeout, lbPolicy, panicThresholdPercent, localityWeighted))];
        }
        else if (localityWeighted && Endpoints.Select(static e => e.Locality).Distinct().Count() > 1)
        {
            // locality_weighted_lb_config: a locality by weight × its health, then an endpoint in it.
            _localities = [.. Endpoints.GroupBy(static e => e.Locality).Select(g =>
                (new Cluster(name, protocol, [.. g], connectTimeout, lbPolicy, panicThresholdPercent), Math.Max(1, g.First().LocalityWeight)))];
        }
        if (lbPolicy is LbPolicy.RingHash or LbPolicy.Maglev && _candidates.Length > 0)
        {
            _hash = lbPolicy == LbPolicy.RingHash ? ConsistentHash.Ring(_candidates, 1024) : ConsistentHash.Maglev(_candidates);
        }
    }

    private readonly ConsistentHash? _hash;
    private readonly Cluster[]? _levels;
    private readonly (Cluster Cluster, int Weight)[]? _localities;

    private Cluster PickLocality()
    {
        var localities = _localities!;
        Span<double> weights = stackalloc double[Math.Min(localities.Length, 256)];
        double total = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            Cluster locality = localities[i].Cluster;
            int healthy = 0;
            foreach (UpstreamEndpoint e in locality._candidates)
            {
                if (!e.State.IsEjected)
                {
                    healthy++;
                }
            }
            double availability = locality.Endpoints.Length == 0 ? 0 : Math.Min(1, 1.4 * healthy / locality.Endpoints.Length);
            weights[i] = localities[i].Weight * availability;
            total += weights[i];
        }
        if (total <= 0)
        {
            return localities[0].Cluster;
        }
        double point = Random.Shared.NextDouble() * total;
        for (int i = 0; i < weights.Length; i++)
        {
            if (point < weights[i])
            {
                return localities[i].Cluster;
            }
            point -= weights[i];
        }
        return localities[weights.Length - 1].Cluster;
    }

    /// <summary>
    /// Envoy's priority load: level 0 takes min(100 %, 1.4 × its healthy share) of the traffic, the next level
    /// the same of what is left, and so on (overprovisioning factor 1.4); health counts outlier ejections.
    /// </summary>
    private Cluster? PickLevel()
    {
        Cluster[] levels = _levels!;
        Span<double> loads = stackalloc double[Math.Min(levels.Length, 64)];
        double left = 1;
        double total = 0;
        for (int i = 0; i < loads.Length; i++)
        {
            Cluster level = levels[i];
            int healthy = 0;
            foreach (UpstreamEndpoint e in level._candidates)
            {
                if (!e.State.IsEjected && e.Health is not (EndpointHealth.Unhealthy or EndpointHealth.Draining or EndpointHealth.Timeout))
                {
                    healthy++;
                }
            }
            double share = level.Endpoints.Length == 0 ? 0 : Math.Min(1, 1.4 * healthy / level.Endpoints.Length);
            loads[i] = Math.Min(left, share);
            left -= loads[i];
            total += loads[i];
        }
        if (total <= 0)
        {
            return levels[0];
        }
        double point = Random.Shared.NextDouble() * total;
        for (int i = 0; i < loads.Length; i++)
        {
            if (point < loads[i])
            {
                return levels[i];
            }
            point -= loads[i];
        }
        return levels[loads.Length - 1];
    }

    /// <summary>For RING_HASH and MAGLEV: the endpoint for <paramref name="hash"/> (ejected ones skipped as in <see cref="PickEndpoint()"/>); others ignore the hash.</summary>
    public UpstreamEndpoint? PickEndpoint(ulong? hash)
    {
        if (_levels != null)
        {
            return PickLevel()!.PickEndpoint(hash);
        }
        if (_localities != null)
        {
            return PickLocality().PickEndpoint(hash);
        }
        if (_hash == null || hash is not ulong h || _candidates.Length == 0)
        {
            return PickEndpoint();
        }
        UpstreamEndpoint chosen = _candidates[_hash.Pick(h)];
        if (OutlierDetection == null || !chosen.State.IsEjected)
        {
            return chosen;
        }
        // The key's host is out: walk on, as Envoy moves to the next ring entry.
        for (int i = 1; i < 8; i++)
        {
            UpstreamEndpoint next = _candidates[_hash.Pick(h + (ulong)i * 0x9E3779B97F4A7C15UL)];
            if (!next.State.IsEjected)
            {
                return next;
            }
        }
        return PickEndpoint();
    }

    public string Name { get; }
    public UpstreamProtocol Protocol { get; }
    public UpstreamEndpoint[] Endpoints { get; }
    /// <summary>Envoy's connect_timeout (default 5 s; Istio sets 10 s).</summary>
    public TimeSpan ConnectTimeout { get; }
    public LbPolicy LbPolicy { get; }
    public OutlierDetection? OutlierDetection { get; init; }
    public CircuitBreakers? CircuitBreakers { get; init; }
    /// <summary>per_connection_buffer_limit_bytes (Envoy's default, 1 MiB).</summary>
    public int BufferLimit { get; init; } = Transport.SocketConnection.DefaultBufferLimit;
    /// <summary>
    /// common_http_protocol_options.max_headers_count (Envoy's default 100): a response head with more field
    /// lines, or an HTTP/2 response header block with more fields, is an upstream protocol error (502).
    /// </summary>
    public int MaxHeadersCount { get; init; } = Http1.Http1Parser.DefaultMaxHeadersCount;

    /// <summary>Envoy's default idle_timeout of upstream connections.</summary>
    public static readonly TimeSpan DefaultIdleTimeout = TimeSpan.FromHours(1);

    /// <summary>
    /// common_http_protocol_options.idle_timeout (Envoy's default 1 h): an upstream connection with no
    /// request in flight for this long is closed (HTTP/2: GOAWAY first); zero: never.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = DefaultIdleTimeout;

    /// <summary>
    /// max_requests_per_connection: an upstream connection carries at most this many requests, then closes
    /// (HTTP/1.1) or takes no new stream and goes away when its last ends (HTTP/2); 0: no limit. 1 turns keep-alive off.
    /// </summary>
    public int MaxRequestsPerConnection { get; init; }

    /// <summary>Request and retry counts of this cluster name, shared by every snapshot.</summary>
    public ClusterState State { get; init; } = new();

    /// <summary>upstream_bind_config: source address and socket options of its connections.</summary>
    public Transport.UpstreamBind? Bind { get; init; }

    /// <summary>The cluster's default transport socket (TLS for ORIGINAL_DST destinations); endpoints carry their own.</summary>
    public Transport.Tls.TlsClientContext? Tls { get; init; }

    /// <summary>type ORIGINAL_DST (Istio's PassthroughCluster): no endpoints of its own; a connection goes where it was meant to.</summary>
    public bool UsesOriginalDestination { get; init; }

    /// <summary>original_dst_lb_config.use_http_header: the request header naming the destination (IP:port; lower case); null: off.</summary>
    public byte[]? OriginalDestinationHeader { get; init; }

    /// <summary>original_dst_lb_config.upstream_port_override: the port used instead of the original one (0: none).</summary>
    public int OriginalDestinationPort { get; init; }

    /// <summary>
    /// Where an ORIGINAL_DST cluster sends a request or connection: the address in its header when asked
    /// for and valid (an IP and a port), else the connection's original destination; the port overridden
    /// when configured. Null when there is nowhere to go.
    /// </summary>
    public EndPoint? OriginalDestinationOf(EndPoint? connection, Proxy.Http2.HeaderList? request)
    {
        EndPoint? destination = connection;
        if (OriginalDestinationHeader != null && request != null && request.IndexOf(OriginalDestinationHeader) is var index and >= 0)
        {
            ReadOnlySpan<byte> value = request.Value(index);
            Span<char> text = stackalloc char[64];
            if (value.Length <= text.Length && System.Text.Encoding.ASCII.GetChars(value, text) is var n
                && IPEndPoint.TryParse(text.Slice(0, n), out IPEndPoint? named) && named.Port != 0)
            {
                destination = named;
            }
        }
        if (OriginalDestinationPort > 0 && destination is IPEndPoint ip && ip.Port != OriginalDestinationPort)
        {
            destination = new IPEndPoint(ip.Address, OriginalDestinationPort);
        }
        return destination;
    }

    /// <summary>Outlier detection: counts a response (or connect failure/reset) of <paramref name="endpoint"/>, and ejects it when due.</summary>
    public void RecordOutcome(UpstreamEndpoint endpoint, bool failure, bool gatewayFailure)
    {
        OutlierDetection? policy = OutlierDetection;
        if (policy == null || !endpoint.State.RecordOutcome(failure, gatewayFailure, policy))
        {
            return;
        }
        int ejected = 0;
        foreach (UpstreamEndpoint e in Endpoints)
        {
            if (e.State.IsEjected)
            {
                ejected++;
            }
        }
        // max_ejection_percent, but at least one endpoint may always be ejected (Envoy's rule).
        if (ejected == 0 || (ejected + 1) * 100.0 <= Endpoints.Length * policy.MaxEjectionPercent)
        {
            endpoint.State.Eject(policy);
            State.Stats.OutlierEjectionsTotal.Inc();
        }
    }

    /// <summary>An endpoint by the cluster's policy, skipping ejected ones while others remain; null when the cluster has none.</summary>
    public UpstreamEndpoint? PickEndpoint()
    {
        if (_levels != null)
        {
            return PickLevel()!.PickEndpoint();
        }
        if (_localities != null)
        {
            return PickLocality().PickEndpoint();
        }
        UpstreamEndpoint? picked = PickByPolicy();
        if (picked == null || OutlierDetection == null || !picked.State.IsEjected)
        {
            return picked;
        }
        for (int i = 0; i < _candidates.Length; i++)
        {
            UpstreamEndpoint next = PickByPolicy()!;
            if (!next.State.IsEjected)
            {
                return next;
            }
        }
        foreach (UpstreamEndpoint e in _candidates)
        {
            if (!e.State.IsEjected)
            {
                return e;
            }
        }
        return picked; // every endpoint is ejected: better some service than none
    }

    private UpstreamEndpoint? PickByPolicy()
    {
        UpstreamEndpoint[] candidates = _candidates;
        if (candidates.Length == 0)
        {
            return null;
        }
        if (candidates.Length == 1)
        {
            return candidates[0];
        }
        switch (LbPolicy)
        {
            case LbPolicy.Random:
                return candidates[ByWeight(Random.Shared.Next(_totalWeight))];
            case LbPolicy.LeastRequest:
            {
                // Two choices, weighted by endpoint weight; the fewer active requests (per unit of weight) wins.
                UpstreamEndpoint a = candidates[ByWeight(Random.Shared.Next(_totalWeight))];
                UpstreamEndpoint b = candidates[ByWeight(Random.Shared.Next(_totalWeight))];
                long loadA = (long)a.State.ActiveRequests * Math.Max(1, b.Weight);
                long loadB = (long)b.State.ActiveRequests * Math.Max(1, a.Weight);
                return loadB < loadA ? b : a;
            }
            default:
            {
                uint next = (uint)Interlocked.Increment(ref _next);
                return _weighted ? candidates[ByWeight((int)(next % (uint)_totalWeight))] : candidates[next % (uint)candidates.Length];
            }
        }
    }

    private int ByWeight(int point)
    {
        if (!_weighted)
        {
            return point;
        }
        int index = Array.BinarySearch(_cumulative, point + 1);
        return index >= 0 ? index : ~index;
    }
}

/// <summary>One upstream address of a cluster, with the state (its connection pool, live request count and outlier ejection) that survives snapshot swaps.</summary>
public sealed class UpstreamEndpoint(EndPoint address, EndpointState state, int weight = 1, EndpointHealth health = EndpointHealth.Unknown, int priority = 0)
{
    /// <summary>The locality's priority: 0 is preferred; higher levels take the traffic lower ones cannot.</summary>
    public int Priority { get; } = priority;
    /// <summary>The index of the endpoint's locality within its cluster, and that locality's load_balancing_weight.</summary>
    public int Locality { get; init; }
    public int LocalityWeight { get; init; } = 1;
    public EndPoint Address { get; } = address;
    /// <summary>What outlives snapshots for this address: its requests in flight, outlier state and connection pool.</summary>
    public EndpointState State { get; } = state;
    /// <summary>TLS to this endpoint (its transport socket, chosen by transport_socket_matches); null: plaintext.</summary>
    public Transport.Tls.TlsClientContext? Tls => State.Tls;
    /// <summary>load_balancing_weight (default 1).</summary>
    public int Weight { get; } = weight;
    public EndpointHealth Health { get; } = health;
    public override string ToString() => Address.ToString() ?? "";
}
