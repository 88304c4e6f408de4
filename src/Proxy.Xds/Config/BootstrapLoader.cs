using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Core.Upstream;

namespace Proxy.Xds.Config;

/// <summary>
/// Reads an Envoy v3 bootstrap (YAML or JSON) into a snapshot: static listeners with an HTTP connection
/// manager and an inline route configuration, and static clusters (STATIC, STRICT_DNS, LOGICAL_DNS) with
/// load assignments. Unknown fields are ignored, as Envoy's JSON parser does with
/// --allow-unknown-static-fields; fields we know but do not honour yet are reported once each, by path;
/// features that cannot work without support we lack (RDS, EDS without xDS, other network filters) are
/// errors naming the field.
/// </summary>
public sealed partial class BootstrapLoader(UpstreamPools pools)
{
    /// <summary>
    /// Resources come from a control plane (xDS): a route may name a cluster that has not arrived (it
    /// answers 503 until it does, as in Envoy), and listeners or filter chains we cannot serve yet (TLS
    /// chains, listeners with neither an HTTP connection manager nor tcp_proxy) are named and skipped
    /// rather than failing the whole push.
    /// </summary>
    public bool Dynamic { get; init; }

    /// <summary>Stands in <see cref="ReferencedClusters"/> for a route that may pick any cluster (cluster_header).</summary>
    public const string AllClusters = "\0*";

    /// <summary>When set, every cluster name a route refers to is added (the xDS state's dependency tracking).</summary>
    public HashSet<string>? ReferencedClusters { get; set; }

    private const string HttpConnectionManager = "envoy.filters.network.http_connection_manager";

    private readonly List<string> _warnings = [];

    /// <summary>Fields present in the file that are not honoured, one line each.</summary>
    public IReadOnlyList<string> Warnings => _warnings;

    private readonly List<string> _watched = [];

    /// <summary>The bootstrap's aggregated xDS source (dynamic_resources.ads_config), when it has one.</summary>
    public AdsBootstrap? Ads { get; private set; }

    private AdsBootstrap ReadAds(ConfigNode dynamic, ConfigNode statics, ConfigNode node)
    {
        ConfigNode ads = dynamic["ads_config"];
        string apiType = ads["api_type"].String() ?? "GRPC";
        bool delta = apiType switch
        {
            "GRPC" or "AGGREGATED_GRPC" => false,
            "DELTA_GRPC" or "AGGREGATED_DELTA_GRPC" => true,
            _ => throw new ConfigException($"{ads["api_type"].Path}: '{apiType}' is not supported (GRPC or DELTA_GRPC)"),
        };
        string? version = ads["transport_api_version"].String();
        bool? v2 = version switch
        {
            null or "AUTO" => null,
            "V2" => true,
            "V3" => false,
            _ => throw new ConfigException($"{ads["transport_api_version"].Path}: unknown API version '{version}'"),
        };
        ConfigNode service = ads["grpc_services"].Items.FirstOrDefault();
        string? clusterName = service["envoy_grpc"]["cluster_name"].String();
        if (clusterName == null)
        {
            throw new ConfigException($"{ads["grpc_services"].Path}: needs one entry with envoy_grpc.cluster_name (google_grpc is not supported)");
        }
        (string target, TlsClientContext? tls) = GrpcTarget(statics, clusterName, service["envoy_grpc"]["cluster_name"]);
        foreach (string kind in new[] { "cds_config", "lds_config" })
        {
            if (dynamic[kind].Exists && !dynamic[kind]["ads"].Exists && !dynamic[kind]["path_config_source"].Exists && !dynamic[kind]["path"].Exists)
            {
                Warn(dynamic[kind], "only ads and path_config_source are supported");
            }
        }
        return new AdsBootstrap(target, delta, v2, ads["set_node_on_first_message_only"].Boolean() ?? false,
            dynamic["cds_config"]["ads"].Exists, dynamic["lds_config"]["ads"].Exists, ReadNode(node)) { Tls = tls };
    }

    /// <summary>
    /// Where a static cluster that serves gRPC to us (xds-grpc, sds-grpc) is: http://host:port or
    /// unix:PATH, and its transport socket (TLS to the control plane) if it has one.
    /// </summary>
    public (string Target, TlsClientContext? Tls) GrpcTarget(ConfigNode statics, string clusterName, ConfigNode referencedAt)
    {
        ConfigNode cluster = statics["clusters"].Items.FirstOrDefault(c => c["name"].String() == clusterName);
        if (!cluster.Exists)
        {
            throw new ConfigException($"{referencedAt.Path}: no static cluster '{clusterName}'");
        }
        ConfigNode address = cluster["load_assignment"]["endpoints"].Items.SelectMany(static l => l["lb_endpoints"].Items).Select(static e => e["endpoint"]["address"]).FirstOrDefault();
        if (!address.Exists)
        {
            address = cluster["hosts"].Items.FirstOrDefault();
        }
        string target;
        if (address["pipe"].Exists)
        {
            target = "unix:" + address["pipe"]["path"].RequiredString();
        }
        else if (address["socket_address"].Exists)
        {
            ConfigNode socket = address["socket_address"];
            string host = socket["address"].RequiredString();
            long port = socket["port_value"].Integer() ?? throw new ConfigException($"{socket["port_value"].Path}: required");
            if (port is < 1 or > 65535)
            {
                throw new ConfigException($"{socket["port_value"].Path}: {port} is not a port");
            }
            target = $"http://{(host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host)}:{port}";
            if (!Uri.TryCreate(target, UriKind.Absolute, out _))
            {
                throw new ConfigException($"{socket["address"].Path}: '{host}' is not a host name or address");
            }
        }
        else
        {
            throw new ConfigException($"{cluster.Path}: the gRPC cluster '{clusterName}' has no endpoint address");
        }
        return (target, ReadUpstreamTls(cluster["transport_socket"], cluster["tls_context"]));
    }

    private static Api.Core.Node ReadNode(ConfigNode node)
    {
        var result = new Api.Core.Node
        {
            Id = node["id"].String() ?? "",
            Cluster = node["cluster"].String() ?? "",
            UserAgentName = "layotto-fast",
        };
        if (node["metadata"].Exists)
        {
            result.Metadata = node["metadata"].ToStruct();
        }
        if (node["locality"].Exists)
        {
            result.Locality = new Api.Core.Locality
            {
                Region = node["locality"]["region"].String() ?? "",
                Zone = node["locality"]["zone"].String() ?? "",
                SubZone = node["locality"]["sub_zone"].String() ?? "",
            };
        }
        return result;
    }

    /// <summary>The files this configuration was read from besides the bootstrap (filesystem subscriptions), to watch for changes.</summary>
    public IReadOnlyList<string> WatchedFiles => _watched;

    /// <summary>
    /// The cap on downstream connections: the overload manager's global_downstream_max_connections
    /// resource monitor, or the runtime key overload.global_downstream_max_connections; null when neither.
    /// </summary>
    public long? MaxDownstreamConnections { get; private set; }

    private long? ReadMaxDownstreamConnections(ConfigNode root)
    {
        long? max = null;
        foreach (ConfigNode monitor in root["overload_manager"]["resource_monitors"].Items)
        {
            if ((monitor["name"].String() ?? "").Contains("global_downstream_max_connections", StringComparison.Ordinal))
            {
                max = monitor["typed_config"]["max_active_downstream_connections"].Integer();
            }
            else
            {
                Warn(monitor, "resource monitor not honoured");
            }
        }
        foreach (ConfigNode layer in root["layered_runtime"]["layers"].Items)
        {
            if (layer["static_layer"]["overload.global_downstream_max_connections"].Integer() is long fromRuntime)
            {
                max ??= fromRuntime;
            }
        }
        if (max is <= 0)
        {
            throw new ConfigException("overload_manager: max_active_downstream_connections must be positive");
        }
        return max;
    }

    /// <summary>The bootstrap's node (id, cluster, locality, metadata), as it goes to a control plane.</summary>
    public Api.Core.Node? Node { get; private set; }

    /// <summary>admin.address: where the admin endpoint listens (none when the bootstrap has no admin).</summary>
    public IPEndPoint? AdminAddress { get; private set; }

    /// <summary>The bootstrap document last loaded (for /config_dump).</summary>
    public ConfigNode Root { get; private set; }

    public ProxySnapshot Load(string text, string origin)
    {
        ConfigNode root = ConfigNode.Parse(text, origin);
        Root = root;
        ConfigNode statics = root["static_resources"];
        foreach (string ignored in new[] { "stats_sinks", "tracing" })
        {
            if (root[ignored].Exists)
            {
                Warn(root[ignored], "not honoured yet");
            }
        }
        if (root["admin"]["address"]["socket_address"].Exists)
        {
            AdminAddress = (IPEndPoint)ParseSocketAddress(root["admin"]["address"]["socket_address"], allowNames: false);
        }
        else if (root["admin"]["address"].Exists)
        {
            Warn(root["admin"]["address"], "only a socket_address is served for the admin endpoint; no admin endpoint");
        }
        MaxDownstreamConnections = ReadMaxDownstreamConnections(root);
        Node = ReadNode(root["node"]);
        ConfigNode dynamic = root["dynamic_resources"];
        if (dynamic["ads_config"].Exists)
        {
            Ads = ReadAds(dynamic, statics, root["node"]);
        }

        if (statics["secrets"].Items.Any())
        {
            // Static secrets: what an SdsSecretConfig with a name and no sds_config refers to.
            Secrets.Apply(Proxy.Xds.Secrets.SecretSource.Static, [.. statics["secrets"].Items], "static");
        }

        var clusters = new Dictionary<string, Cluster>(StringComparer.Ordinal);
        void AddCluster(ConfigNode c)
        {
            Cluster cluster = LoadCluster(c);
            if (!clusters.TryAdd(cluster.Name, cluster))
            {
                throw new ConfigException($"{c["name"].Path}: duplicate cluster name '{cluster.Name}'");
            }
        }
        foreach (ConfigNode c in statics["clusters"].Items)
        {
            AddCluster(c);
        }
        foreach (ConfigNode c in FileResources(dynamic["cds_config"], "Cluster"))
        {
            AddCluster(c);
        }

        var listeners = new List<ListenerConfig>();
        var unbound = new List<(RouteConfiguration, int)>();
        var unboundListeners = new List<ListenerConfig>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        void AddListener(ConfigNode l)
        {
            (ListenerConfig listener, bool bind) = LoadListener(l, clusters);
            if (!names.Add(listener.Name))
            {
                throw new ConfigException($"{l["name"].Path}: duplicate listener name '{listener.Name}'");
            }
            if (bind)
            {
                listeners.Add(listener);
            }
            else
            {
                unbound.Add((listener.Routes, listener.Address.Port)); // its routes serve the runtime API
                unboundListeners.Add(listener);
            }
        }
        foreach (ConfigNode l in statics["listeners"].Items)
        {
            AddListener(l);
        }
        foreach (ConfigNode l in FileResources(dynamic["lds_config"], "Listener"))
        {
            AddListener(l);
        }
        if (listeners.Count == 0 && unbound.Count == 0 && Ads == null)
        {
            throw new ConfigException("static_resources.listeners: at least one listener is needed (or dynamic_resources.lds_config with a path)");
        }
        return new ProxySnapshot(listeners, clusters.Values, 1) { UnboundRoutes = unbound, UnboundListeners = unboundListeners };
    }

    /// <summary>
    /// Envoy's filesystem subscription: a ConfigSource with path_config_source (or v2's path) names a file
    /// holding a DiscoveryResponse, whose resources are read like static ones. A relative path is relative
    /// to the working directory, as in Envoy.
    /// </summary>
    private IEnumerable<ConfigNode> FileResources(ConfigNode source, string kind)
    {
        if (!source.Exists)
        {
            return [];
        }
        string? path = source["path_config_source"]["path"].String() ?? source["path"].String();
        if (path == null)
        {
            if (source["ads"].Exists)
            {
                return [];
            }
            if (source["api_config_source"].Exists)
            {
                Warn(source["api_config_source"], "a separate (non-aggregated) gRPC subscription is not supported; use ads (dynamic_resources.ads_config)");
                return [];
            }
            throw new ConfigException($"{source.Path}: only path_config_source is supported");
        }
        _watched.Add(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"{source.Path}: cannot read {path}: {e.Message}");
        }
        ConfigNode response = ConfigNode.Parse(text, path);
        var result = new List<ConfigNode>();
        foreach (ConfigNode resource in response["resources"].Items)
        {
            string type = resource["@type"].String() ?? "";
            if (!type.EndsWith("." + kind, StringComparison.Ordinal))
            {
                throw new ConfigException($"{path}: {resource.Path}: expected a {kind} resource, found '{type}'");
            }
            result.Add(resource);
        }
        return result;
    }

    /// <summary>
    /// One RouteConfiguration resource (as RDS would deliver it, or as a config dump shows it), against a
    /// known set of clusters.
    /// </summary>
    public RouteConfiguration LoadRouteConfiguration(string text, string origin, IReadOnlyDictionary<string, Cluster> clusters)
    {
        ConfigNode node = ConfigNode.Parse(text, origin);
        return LoadRoutes(node, clusters as Dictionary<string, Cluster> ?? new Dictionary<string, Cluster>(clusters, StringComparer.Ordinal));
    }

    private readonly HashSet<string> _warned = new(StringComparer.Ordinal);

    /// <summary>
    /// Names a field that is present but not honoured, once per field whatever the list index (a thousand
    /// routes with a decorator make one line, with the first one's path).
    /// </summary>
    private void Warn(ConfigNode node, string what)
    {
        if (_warned.Add(node.GenericPath + ": " + what))
        {
            _warnings.Add($"{node.Path}: {what}");
        }
    }

}

/// <summary>
/// A listener as read from its resource: where it listens, whether it binds, and its HTTP connection
/// manager (<see cref="Hcm"/>), whose routes are inline or named by <see cref="RouteConfigName"/> for RDS.
/// </summary>
public sealed record ListenerShape(string Name, IPEndPoint Address, bool BindToPort, ConfigNode Hcm, string? RouteConfigName)
{
    /// <summary>The connection manager's limits, timeouts and security filters.</summary>
    public ListenerOptions Options { get; init; } = ListenerOptions.Envoy;

    /// <summary>use_original_dst: connections go to the listener of their original destination.</summary>
    public bool UseOriginalDst { get; init; }

    /// <summary>TLS of a listener served by its one chain directly (else each chain has its own).</summary>
    public Proxy.Core.Transport.Tls.TlsServerContext? Tls { get; init; }

    /// <summary>Every TLS context of the listener (its secrets must be ready before it serves).</summary>
    public IEnumerable<Proxy.Core.Transport.Tls.TlsContext> TlsContexts =>
        Chains.Append(DefaultChain).Append(Primary).Select(static c => c?.Tls).Append(Tls).OfType<Proxy.Core.Transport.Tls.TlsContext>().Distinct();

    /// <summary>Whether it has an HTTP connection manager (a use_original_dst listener may have none).</summary>
    public bool ServesHttp { get; init; } = true;

    /// <summary>Its tcp_proxy, when it serves TCP instead of HTTP.</summary>
    public TcpProxyConfig? TcpProxy { get; init; }

    /// <summary>The original_dst listener filter: connections carry their original destination (for chain matching and ORIGINAL_DST clusters).</summary>
    public bool RestoresOriginalDestination { get; init; }

    /// <summary>Filter chains chosen per connection; empty when the one chain serves every connection.</summary>
    public IReadOnlyList<ChainShape> Chains { get; init; } = [];

    public ChainShape? DefaultChain { get; init; }

    /// <summary>The chain whose routes and options are the listener's own (<see cref="Hcm"/>, <see cref="RouteConfigName"/>).</summary>
    public ChainShape? Primary { get; init; }

    public bool TlsInspector { get; init; }
    public bool HttpInspector { get; init; }
    public TimeSpan ListenerFiltersTimeout { get; init; } = TimeSpan.FromSeconds(15);
    public bool ContinueOnListenerFiltersTimeout { get; init; }

    /// <summary>The HTTP chains other than the primary whose routes are inline (built against the clusters in use).</summary>
    public IEnumerable<ChainShape> InlineChains => (DefaultChain != null ? Chains.Append(DefaultChain) : Chains)
        .Where(c => c.Hcm != null && c.RdsName == null && !ReferenceEquals(c, Primary));
}

/// <summary>One filter chain as read: its match, and its HTTP connection manager (inline or RDS routes) or tcp_proxy.</summary>
public sealed record ChainShape(string Name, int Index, FilterChainMatch Match, ConfigNode Node, ConfigNode? Hcm, string? RdsName, ListenerOptions Options, TcpProxyConfig? Tcp)
{
    /// <summary>The chain's transport_socket: TLS terminated with this context; null for plaintext.</summary>
    public Proxy.Core.Transport.Tls.TlsServerContext? Tls { get; init; }
}

/// <summary>
/// Where and how to reach the control plane: <see cref="Target"/> is http://host:port (plaintext gRPC) or
/// unix:PATH (a relative path is relative to the working directory, as Istio's ./etc/istio/proxy/XDS).
/// <see cref="V2"/> null means "v3, falling back to v2 if the server does not know v3's service".
/// </summary>
public sealed record AdsBootstrap(string Target, bool Delta, bool? V2, bool SetNodeOnFirstMessageOnly, bool Clusters, bool Listeners, Api.Core.Node Node)
{
    /// <summary>The xDS cluster's transport socket: the stream goes over (mutual) TLS; null: plaintext.</summary>
    public Proxy.Core.Transport.Tls.TlsClientContext? Tls { get; init; }
}

/// <summary>A Cluster resource read, all but its endpoints (see <see cref="BootstrapLoader.BuildCluster"/>).</summary>
public sealed record ClusterSettings(string Name, string Type, UpstreamProtocol Protocol, TimeSpan ConnectTimeout, LbPolicy Policy, double PanicThresholdPercent,
    bool LocalityWeighted, CircuitBreakers? CircuitBreakers, OutlierDetection? OutlierDetection, ConfigNode Node)
{
    /// <summary>The built cluster, for a type whose endpoints are in the resource itself (not EDS).</summary>
    public Cluster? Static { get; set; }

    /// <summary>per_connection_buffer_limit_bytes (Envoy's default 1 MiB).</summary>
    public int BufferLimit { get; init; } = Proxy.Core.Transport.SocketConnection.DefaultBufferLimit;

    /// <summary>common_http_protocol_options.max_headers_count (Envoy's default 100).</summary>
    public int MaxHeadersCount { get; init; } = Proxy.Core.Http1.Http1Parser.DefaultMaxHeadersCount;

    /// <summary>common_http_protocol_options.idle_timeout of the upstream connections (Envoy's default 1 h; zero: none).</summary>
    public TimeSpan IdleTimeout { get; init; } = Cluster.DefaultIdleTimeout;

    /// <summary>max_requests_per_connection (common_http_protocol_options', else the cluster's own); 0: no limit.</summary>
    public int MaxRequestsPerConnection { get; init; }

    /// <summary>transport_socket (or v2's tls_context): the TLS of endpoints no transport_socket_match picks; null: plaintext.</summary>
    public Proxy.Core.Transport.Tls.TlsClientContext? Tls { get; init; }

    /// <summary>transport_socket_matches, in order (Istio's auto-mTLS: tlsMode istio gets mTLS, others plaintext).</summary>
    public IReadOnlyList<TransportSocketMatch> TlsMatches { get; init; } = [];

    /// <summary>Every TLS context of the cluster (its secrets must be ready before it is used).</summary>
    public IEnumerable<Proxy.Core.Transport.Tls.TlsContext> TlsContexts =>
        TlsMatches.Select(static m => m.Tls).Append(Tls).OfType<Proxy.Core.Transport.Tls.TlsContext>();

    /// <summary>The TLS for an endpoint with this envoy.transport_socket_match metadata: the first match all of whose fields it has, else <see cref="Tls"/>.</summary>
    public Proxy.Core.Transport.Tls.TlsClientContext? TlsFor(ConfigNode metadata)
    {
        foreach (TransportSocketMatch match in TlsMatches)
        {
            if (match.Matches(metadata))
            {
                return match.Tls;
            }
        }
        return Tls;
    }
}

/// <summary>One of a cluster's transport_socket_matches: endpoint metadata fields and values, and the transport socket they get.</summary>
public sealed record TransportSocketMatch(string Name, (string Key, string Value)[] Fields, Proxy.Core.Transport.Tls.TlsClientContext? Tls)
{
    public bool Matches(ConfigNode metadata)
    {
        foreach (var (key, value) in Fields)
        {
            ConfigNode field = metadata[key];
            if (!field.Exists || (field.String() ?? field.ToJson()?.ToJsonString()) != value)
            {
                return false;
            }
        }
        return true;
    }
}
