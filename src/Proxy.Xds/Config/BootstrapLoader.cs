using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
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
    /// answers 503 until it does, as in Envoy), and listeners or filter chains we cannot serve yet (TCP
    /// proxying, original-destination dispatch) are named and skipped rather than failing the whole push.
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
        ConfigNode cluster = statics["clusters"].Items.FirstOrDefault(c => c["name"].String() == clusterName);
        if (!cluster.Exists)
        {
            throw new ConfigException($"{service["envoy_grpc"]["cluster_name"].Path}: no static cluster '{clusterName}'");
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
            throw new ConfigException($"{cluster.Path}: the xDS cluster '{clusterName}' has no endpoint address");
        }
        if (cluster["transport_socket"].Exists || cluster["tls_context"].Exists)
        {
            Warn(cluster["transport_socket"].Exists ? cluster["transport_socket"] : cluster["tls_context"], "TLS to the control plane is not supported yet; plaintext is used");
        }
        foreach (string kind in new[] { "cds_config", "lds_config" })
        {
            if (dynamic[kind].Exists && !dynamic[kind]["ads"].Exists && !dynamic[kind]["path_config_source"].Exists && !dynamic[kind]["path"].Exists)
            {
                Warn(dynamic[kind], "only ads and path_config_source are supported");
            }
        }
        return new AdsBootstrap(target, delta, v2, ads["set_node_on_first_message_only"].Boolean() ?? false,
            dynamic["cds_config"]["ads"].Exists, dynamic["lds_config"]["ads"].Exists, ReadNode(node));
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

    /// <summary>admin.address: where the admin endpoint listens (none when the bootstrap has no admin).</summary>
    public IPEndPoint? AdminAddress { get; private set; }

    public ProxySnapshot Load(string text, string origin)
    {
        ConfigNode root = ConfigNode.Parse(text, origin);
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
        ConfigNode dynamic = root["dynamic_resources"];
        if (dynamic["ads_config"].Exists)
        {
            Ads = ReadAds(dynamic, statics, root["node"]);
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

    /// <summary>
    /// One Cluster resource. An EDS cluster takes its endpoints from <paramref name="edsAssignment"/> (the
    /// ClusterLoadAssignment EDS delivered; absent: no endpoints yet).
    /// </summary>
    public Cluster LoadCluster(ConfigNode c, ConfigNode edsAssignment = default) => BuildCluster(ReadCluster(c), edsAssignment);

    /// <summary>Everything of a Cluster resource but its endpoints (EDS brings those, perhaps many times).</summary>
    public ClusterSettings ReadCluster(ConfigNode c)
    {
        string name = c["name"].RequiredString();
        string type = c["type"].String() ?? "STATIC";
        if (type == "EDS" && !Dynamic)
        {
            throw new ConfigException($"{c["type"].Path}: EDS clusters need xDS (dynamic_resources.ads_config or cds_config over gRPC)");
        }
        if (type == "ORIGINAL_DST")
        {
            Warn(c["type"], "ORIGINAL_DST clusters serve tcp_proxy connections (to their original destination); HTTP requests routed to one get 503 for now");
        }
        if (type is not ("STATIC" or "STRICT_DNS" or "LOGICAL_DNS" or "EDS" or "ORIGINAL_DST"))
        {
            throw new ConfigException($"{c["type"].Path}: unknown cluster type '{type}'");
        }
        if (c["cluster_type"].Exists)
        {
            throw new ConfigException($"{c["cluster_type"].Path}: custom cluster types are not supported");
        }
        TimeSpan connectTimeout = c["connect_timeout"].Duration() ?? TimeSpan.FromSeconds(5);
        string lb = c["lb_policy"].String() ?? "ROUND_ROBIN";
        LbPolicy policy = lb switch
        {
            "ROUND_ROBIN" => LbPolicy.RoundRobin,
            "LEAST_REQUEST" => LbPolicy.LeastRequest,
            "RANDOM" => LbPolicy.Random,
            "RING_HASH" => LbPolicy.RingHash,
            "MAGLEV" => LbPolicy.Maglev,
            _ => LbPolicy.RoundRobin,
        };
        if (lb is not ("ROUND_ROBIN" or "LEAST_REQUEST" or "RANDOM" or "RING_HASH" or "MAGLEV"))
        {
            Warn(c["lb_policy"], $"{lb} is not honoured yet; ROUND_ROBIN is used");
        }
        double panic = 50;
        if (c["common_lb_config"]["healthy_panic_threshold"].Exists)
        {
            string? value = c["common_lb_config"]["healthy_panic_threshold"]["value"].String();
            if (!double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out panic) || panic is < 0 or > 100)
            {
                throw new ConfigException($"{c["common_lb_config"]["healthy_panic_threshold"].Path}: a percentage from 0 to 100");
            }
        }
        foreach (string field in new[] { "health_checks", "transport_socket", "transport_socket_matches", "tls_context", "ring_hash_lb_config", "maglev_lb_config", "least_request_lb_config", "lb_subset_config", "filters" })
        {
            if (c[field].Exists)
            {
                Warn(c[field], "not honoured yet");
            }
        }

        UpstreamProtocol protocol = c["http2_protocol_options"].Exists || UsesHttp2(c["typed_extension_protocol_options"])
            ? UpstreamProtocol.Http2 : UpstreamProtocol.Http1;
        CircuitBreakers? breakers = c["circuit_breakers"].Exists ? LoadCircuitBreakers(c["circuit_breakers"]) : null;
        bool localityWeighted = c["common_lb_config"]["locality_weighted_lb_config"].Exists;
        OutlierDetection? outlier = c["outlier_detection"].Exists ? LoadOutlierDetection(c["outlier_detection"]) : null;
        var settings = new ClusterSettings(name, type, protocol, connectTimeout, policy, panic, localityWeighted, breakers, outlier, c)
        {
            BufferLimit = (int)Math.Clamp(Wrapped(c["per_connection_buffer_limit_bytes"]) ?? Proxy.Core.Transport.SocketConnection.DefaultBufferLimit, 16 * 1024, int.MaxValue / 2),
        };
        if (type != "EDS")
        {
            // Check the endpoints now: a static assignment is part of the resource.
            settings.Static = BuildCluster(settings, default);
        }
        return settings;
    }

    /// <summary>
    /// The cluster of <paramref name="settings"/> with its endpoints: from <paramref name="edsAssignment"/>
    /// for an EDS cluster (absent: none yet), else from the resource's load_assignment (or v2's hosts).
    /// </summary>
    public Cluster BuildCluster(ClusterSettings settings, ConfigNode edsAssignment)
    {
        if (settings.Static != null)
        {
            return settings.Static;
        }
        ConfigNode c = settings.Node;
        string type = settings.Type;
        UpstreamProtocol protocol = settings.Protocol;
        var endpoints = new List<UpstreamEndpoint>();
        ClusterState state = pools.ClusterState(settings.Name);
        int localityIndex = -1;
        ConfigNode assignment = type == "EDS" ? edsAssignment : c["load_assignment"];
        foreach (ConfigNode locality in assignment["endpoints"].Items)
        {
            long priority = locality["priority"].Integer() ?? 0;
            if (priority is < 0 or > 127)
            {
                throw new ConfigException($"{locality["priority"].Path}: {priority} is out of range (0 to 127)");
            }
            long localityWeight = Wrapped(locality["load_balancing_weight"]) ?? 1;
            localityIndex++;
            foreach (ConfigNode lbEndpoint in locality["lb_endpoints"].Items)
            {
                ConfigNode socket = lbEndpoint["endpoint"]["address"]["socket_address"];
                if (!socket.Exists && lbEndpoint["endpoint"]["address"]["pipe"].Exists)
                {
                    Warn(lbEndpoint["endpoint"]["address"]["pipe"], "unix-socket endpoints are not used for proxied traffic yet (ads_config reads its own pipe); skipped");
                    continue;
                }
                EndPoint address = ParseSocketAddress(socket, allowNames: type != "STATIC");
                long weight = lbEndpoint["load_balancing_weight"].Integer() ?? 1;
                if (weight is < 1 or > 1_000_000)
                {
                    throw new ConfigException($"{lbEndpoint["load_balancing_weight"].Path}: {weight} is out of range (1 to 1000000)");
                }
                string health = lbEndpoint["health_status"].String() ?? "UNKNOWN";
                EndpointHealth status = health.ToUpperInvariant() switch
                {
                    "UNKNOWN" => EndpointHealth.Unknown,
                    "HEALTHY" => EndpointHealth.Healthy,
                    "UNHEALTHY" => EndpointHealth.Unhealthy,
                    "DRAINING" => EndpointHealth.Draining,
                    "TIMEOUT" => EndpointHealth.Timeout,
                    "DEGRADED" => EndpointHealth.Degraded,
                    _ => throw new ConfigException($"{lbEndpoint["health_status"].Path}: unknown health status '{health}'"),
                };
                endpoints.Add(pools.Endpoint(address, protocol, (int)weight, status, (int)priority, state, localityIndex, (int)Math.Clamp(localityWeight, 1, 1_000_000)));
            }
        }
        // v2's inline hosts (Istio 1.5 bootstraps and clusters): endpoints of weight 1 in one locality.
        foreach (ConfigNode host in c["hosts"].Items)
        {
            EndPoint address = ParseSocketAddress(host["socket_address"], allowNames: type != "STATIC");
            endpoints.Add(pools.Endpoint(address, protocol, 1, EndpointHealth.Unknown, 0, state, localityIndex + 1, 1));
        }
        return new Cluster(settings.Name, protocol, endpoints, settings.ConnectTimeout, settings.Policy, settings.PanicThresholdPercent, settings.LocalityWeighted)
        {
            CircuitBreakers = settings.CircuitBreakers,
            OutlierDetection = settings.OutlierDetection,
            BufferLimit = settings.BufferLimit,
            State = state,
            UsesOriginalDestination = type == "ORIGINAL_DST",
        };
    }

    /// <summary>A UInt32Value/UInt64Value: a number, or {"value": n} in the object form.</summary>
    private static long? Wrapped(ConfigNode n) => n.IsMap ? n["value"].Integer() : n.Integer();

    private CircuitBreakers LoadCircuitBreakers(ConfigNode cb)
    {
        var result = new CircuitBreakers();
        foreach (ConfigNode t in cb["thresholds"].Items)
        {
            string priority = t["priority"].String() ?? "DEFAULT";
            if (priority != "DEFAULT")
            {
                Warn(t["priority"], "only DEFAULT priority thresholds are honoured");
                continue;
            }

            result = new CircuitBreakers
            {
                MaxConnections = Wrapped(t["max_connections"]) ?? 1024,
                MaxRequests = Wrapped(t["max_requests"]) ?? 1024,
                MaxRetries = Wrapped(t["max_retries"]) ?? 3,
                MaxPendingRequests = Wrapped(t["max_pending_requests"]) ?? 1024,
            };
        }
        return result;
    }

    private OutlierDetection LoadOutlierDetection(ConfigNode od)
    {
        foreach (string field in new[] { "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor", "enforcing_success_rate",
                     "failure_percentage_threshold", "enforcing_failure_percentage", "split_external_local_origin_errors", "consecutive_local_origin_failure" })
        {
            if (od[field].Exists)
            {
                Warn(od[field], "not honoured yet");
            }
        }
        static double Percent(long? value, double fallback) => value is long v ? Math.Clamp(v, 0, 100) / 100.0 : fallback;
        return new OutlierDetection
        {
            Consecutive5xx = (int)Math.Clamp(Wrapped(od["consecutive_5xx"]) ?? 5, 1, int.MaxValue),
            ConsecutiveGatewayFailure = (int)Math.Clamp(Wrapped(od["consecutive_gateway_failure"]) ?? 5, 1, int.MaxValue),
            Enforcing5xx = Percent(Wrapped(od["enforcing_consecutive_5xx"]), 1),
            EnforcingGatewayFailure = Percent(Wrapped(od["enforcing_consecutive_gateway_failure"]), 0),
            BaseEjectionTime = od["base_ejection_time"].Duration() ?? TimeSpan.FromSeconds(30),
            MaxEjectionTime = od["max_ejection_time"].Duration() ?? TimeSpan.FromSeconds(300),
            MaxEjectionPercent = Math.Clamp(Wrapped(od["max_ejection_percent"]) ?? 10, 0, 100),
        };
    }

    /// <summary>typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] naming HTTP/2.</summary>
    private static bool UsesHttp2(ConfigNode options)
    {
        foreach (string key in options.Keys)
        {
            ConfigNode o = options[key];
            if (o["explicit_http_config"]["http2_protocol_options"].Exists
                || o["use_downstream_protocol_config"]["http2_protocol_options"].Exists)
            {
                return true;
            }
        }
        return false;
    }

    private static EndPoint ParseSocketAddress(ConfigNode socket, bool allowNames)
    {
        string host = socket["address"].RequiredString();
        long port = socket["port_value"].Integer() ?? throw new ConfigException($"{socket["port_value"].Path}: required");
        if (port is < 0 or > 65535)
        {
            throw new ConfigException($"{socket["port_value"].Path}: {port} is not a port");
        }
        if (IPAddress.TryParse(host, out IPAddress? ip))
        {
            return new IPEndPoint(ip, (int)port);
        }
        if (!allowNames)
        {
            throw new ConfigException($"{socket["address"].Path}: '{host}' is not an IP address (a STATIC cluster needs addresses; use STRICT_DNS for names)");
        }
        return new DnsEndPoint(host, (int)port);
    }

    private (ListenerConfig Listener, bool Bind) LoadListener(ConfigNode l, IReadOnlyDictionary<string, Cluster> clusters)
    {
        ListenerShape shape = ReadListener(l) ?? throw new ConfigException($"{l["filter_chains"].Path}: no {HttpConnectionManager} filter");
        RouteConfiguration routes = !shape.ServesHttp ? new RouteConfiguration("", [], false)
            : shape.RouteConfigName != null ? LoadRdsFile(shape.Hcm["rds"], clusters) : LoadRoutes(shape.Hcm["route_config"], clusters);
        return (BuildListener(shape, routes), shape.BindToPort);
    }

    /// <summary>
    /// What a Listener resource asks for: its address and the HTTP connection manager that serves it,
    /// whose routes are inline (route_config) or named for RDS. Null when a dynamic listener has nothing we
    /// can serve (no HTTP filter chain, or an address that is not an IP socket); the reason is warned.
    /// </summary>
    public ListenerShape? ReadListener(ConfigNode l)
    {
        string name = l["name"].String() ?? $"listener_{l.Path}";
        ConfigNode socket = l["address"]["socket_address"];
        if (Dynamic && !socket.Exists)
        {
            Warn(l["address"], "only socket addresses are served (not pipes or internal listeners); listener skipped");
            return null;
        }
        var address = (IPEndPoint)ParseSocketAddress(socket, allowNames: false);
        bool bind = l["bind_to_port"].Boolean() ?? l["deprecated_v1"]["bind_to_port"].Boolean() ?? true;
        bool useOriginalDst = l["use_original_dst"].Boolean() == true;
        if (l["listener_filters"].Exists)
        {
            Warn(l["listener_filters"], "listener filters are not honoured yet");
        }
        ConfigNode? hcm = null;
        RbacPolicySet? networkRbac = null;
        ConfigNode? tcpProxy = null;
        RbacPolicySet? tcpRbac = null;
        bool tcpCatchAll = false;
        foreach (ConfigNode chain in l["filter_chains"].Items)
        {
            RbacPolicySet? chainRbac = null;
            if (chain["filter_chain_match"].Exists)
            {
                Warn(chain["filter_chain_match"], "not honoured yet; the first HTTP filter chain serves every connection");
            }
            if (chain["transport_socket"].Exists || chain["tls_context"].Exists)
            {
                if (!Dynamic)
                {
                    throw new ConfigException($"{chain["transport_socket"].Path}: TLS is not supported yet");
                }
                Warn(chain, "TLS filter chains are not served yet; skipped");
                continue;
            }
            foreach (ConfigNode filter in chain["filters"].Items)
            {
                string filterName = filter["name"].String() ?? "";
                ConfigNode config = filter["typed_config"].Exists ? filter["typed_config"] : filter["config"];
                string type = config["@type"].String() ?? "";
                bool isHcm = type.EndsWith(".HttpConnectionManager", StringComparison.Ordinal)
                    || (type.Length == 0 && filterName is HttpConnectionManager or "envoy.http_connection_manager");
                if (!isHcm)
                {
                    bool isTcpProxy = type.EndsWith(".TcpProxy", StringComparison.Ordinal) || (type.Length == 0 && filterName is "envoy.filters.network.tcp_proxy" or "envoy.tcp_proxy");
                    if (isTcpProxy)
                    {
                        // filter_chain_match is not honoured yet: the catch-all chain (no match) is the one
                        // taken, as it is what serves every destination without a chain of its own
                        // (virtualOutbound's first chain, destination_port 15001, is a loop guard to BlackHoleCluster).
                        bool catchAll = !chain["filter_chain_match"].Exists;
                        if (tcpProxy == null || (catchAll && !tcpCatchAll))
                        {
                            tcpProxy = config;
                            tcpRbac = chainRbac;
                            tcpCatchAll = catchAll;
                        }
                        continue;
                    }
                    bool isRbac = type.Contains(".rbac.", StringComparison.Ordinal) || filterName == "envoy.filters.network.rbac";
                    if (!Dynamic && !isRbac)
                    {
                        throw new ConfigException($"{filter.Path}: network filter '{filterName}' is not supported (only {HttpConnectionManager}, envoy.filters.network.tcp_proxy and envoy.filters.network.rbac)");
                    }
                    // Istio puts metadata exchange, stats and RBAC filters before the HTTP connection
                    // manager; a chain that ends in tcp_proxy has none and is not served.
                    chainRbac = ReadNetworkFilter(filter, filterName, type, config, chainRbac);
                    continue;
                }
                if (hcm == null)
                {
                    hcm = config;
                    networkRbac = chainRbac;
                }
            }
        }
        if (hcm is not ConfigNode http)
        {
            if (tcpProxy is ConfigNode tcp)
            {
                // A TCP listener (Istio's virtualOutbound with PassthroughCluster, or a TCP service's port).
                return new ListenerShape(name, address, bind, l, null)
                {
                    UseOriginalDst = useOriginalDst,
                    ServesHttp = false,
                    TcpProxy = ReadTcpProxy(tcp),
                    Options = new ListenerOptions { NetworkRbac = tcpRbac },
                };
            }
            if (useOriginalDst)
            {
                // No chain of its own: it only hands connections to the listener of their original destination.
                return new ListenerShape(name, address, bind, l, null) { UseOriginalDst = true, ServesHttp = false };
            }
            if (!Dynamic)
            {
                return null;
            }
            Warn(l, "no HTTP connection manager filter chain we can serve; listener skipped");
            return null;
        }
        string? rdsName = null;
        if (http["rds"].Exists)
        {
            rdsName = http["rds"]["route_config_name"].RequiredString();
        }
        else if (!http["route_config"].Exists)
        {
            throw new ConfigException($"{http.Path}: needs rds or route_config");
        }
        return new ListenerShape(name, address, bind, http, rdsName) { Options = ReadListenerOptions(l, http, networkRbac), UseOriginalDst = useOriginalDst };
    }

    /// <summary>envoy.filters.network.tcp_proxy: cluster or weighted_clusters, stat_prefix, idle_timeout (Envoy: 1 h).</summary>
    private TcpProxyConfig ReadTcpProxy(ConfigNode tcp)
    {
        var clusters = new List<(string, int)>();
        if (tcp["cluster"].String() is { Length: > 0 } cluster)
        {
            clusters.Add((cluster, 1));
        }
        foreach (ConfigNode weighted in tcp["weighted_clusters"]["clusters"].Items)
        {
            long weight = weighted["weight"].Integer() ?? 1;
            if (weight is < 0 or > 1_000_000)
            {
                throw new ConfigException($"{weighted["weight"].Path}: {weight} is out of range (0 to 1000000)");
            }
            clusters.Add((weighted["name"].RequiredString(), (int)weight));
        }
        if (clusters.Count == 0)
        {
            throw new ConfigException($"{tcp.Path}: tcp_proxy needs cluster or weighted_clusters");
        }
        foreach (string field in new[] { "access_log", "metadata_match", "hash_policy", "tunneling_config", "max_connect_attempts" })
        {
            if (tcp[field].Exists)
            {
                Warn(tcp[field], "not honoured yet");
            }
        }
        TimeSpan idle = tcp["idle_timeout"].Duration() ?? TimeSpan.FromHours(1);
        return new TcpProxyConfig(tcp["stat_prefix"].String() ?? "tcp", [.. clusters], idle);
    }

    /// <summary>A listener that serves inline routes (route_config), against a set of clusters.</summary>
    public ListenerConfig BuildListener(ListenerShape shape, RouteConfiguration routes) =>
        new(shape.Name, shape.Address, routes) { Options = shape.Options, BindToPort = shape.BindToPort, UseOriginalDst = shape.UseOriginalDst, ServesHttp = shape.ServesHttp, TcpProxy = shape.TcpProxy };

    /// <summary>RDS from a file: the RouteConfiguration named route_config_name in the file's DiscoveryResponse.</summary>
    private RouteConfiguration LoadRdsFile(ConfigNode rds, IReadOnlyDictionary<string, Cluster> clusters)
    {
        string name = rds["route_config_name"].RequiredString();
        ConfigNode source = rds["config_source"];
        if (source["path_config_source"]["path"].String() == null && source["path"].String() == null)
        {
            throw new ConfigException($"{rds.Path}: RDS over gRPC needs xDS, which this build does not have yet; use path_config_source or an inline route_config");
        }
        foreach (ConfigNode resource in FileResources(source, "RouteConfiguration"))
        {
            if (resource["name"].String() == name)
            {
                return LoadRoutes(resource, clusters);
            }
        }
        throw new ConfigException($"{rds.Path}: route configuration '{name}' is not in the file");
    }

    /// <summary>A RouteConfiguration (inline in a listener, or a resource), against a set of clusters.</summary>
    public RouteConfiguration LoadRoutes(ConfigNode config, IReadOnlyDictionary<string, Cluster> clusters)
    {
        if (!config.Exists)
        {
            throw new ConfigException($"{config.Path}: required");
        }
        var hosts = new List<VirtualHost>();
        foreach (ConfigNode vh in config["virtual_hosts"].Items)
        {
            hosts.Add(LoadVirtualHost(vh, clusters));
        }
        return AssembleRoutes(config, hosts);
    }

    /// <summary>A RouteConfiguration's own fields around virtual hosts built separately (xDS reuses unchanged ones).</summary>
    public RouteConfiguration AssembleRoutes(ConfigNode config, IReadOnlyList<VirtualHost> hosts) =>
        new(config["name"].String() ?? "", hosts, config["ignore_port_in_host_matching"].Boolean() ?? false)
        {
            RequestHeaders = Mutations(config, "request"),
            ResponseHeaders = Mutations(config, "response"),
        };

    public VirtualHost LoadVirtualHost(ConfigNode vh, IReadOnlyDictionary<string, Cluster> clusters)
    {
        {
            string name = vh["name"].String() ?? vh.Path;
            var domains = vh["domains"].Items.Select(static d => d.RequiredString()).ToList();
            if (domains.Count == 0)
            {
                throw new ConfigException($"{vh["domains"].Path}: at least one domain is needed");
            }
            var routes = new List<Route>();
            foreach (ConfigNode r in vh["routes"].Items)
            {
                routes.Add(LoadRoute(r, clusters));
            }
            (FaultPolicy? hostFault, CorsPolicy? hostCors) = LoadFilterConfigs(vh);
            return new VirtualHost(name, domains, routes)
            {
                RequestHeaders = Mutations(vh, "request"),
                Fault = hostFault,
                Cors = hostCors,
                ResponseHeaders = Mutations(vh, "response"),
            };
        }
    }

    private Route LoadRoute(ConfigNode r, IReadOnlyDictionary<string, Cluster> clusters)
    {
        ConfigNode match = r["match"];
        PathMatchKind kind;
        string value;
        if (match["prefix"].Exists || match.Keys.Contains("prefix"))
        {
            kind = PathMatchKind.Prefix;
            value = match["prefix"].String() ?? "";
        }
        else if (match["path"].Exists)
        {
            kind = PathMatchKind.Path;
            value = match["path"].RequiredString();
        }
        else if (match["safe_regex"].Exists)
        {
            kind = PathMatchKind.Regex;
            value = match["safe_regex"]["regex"].RequiredString();
        }
        else if (match["path_separated_prefix"].Exists)
        {
            kind = PathMatchKind.PathSeparatedPrefix;
            value = match["path_separated_prefix"].RequiredString();
            if (value.EndsWith('/') || value.IndexOfAny(['?', '#']) >= 0)
            {
                throw new ConfigException($"{match["path_separated_prefix"].Path}: may not end in '/' or contain '?' or '#'");
            }
        }
        else if (match["regex"].Exists)
        {
            throw new ConfigException($"{match["regex"].Path}: the v2 'regex' (std::regex) matcher is unsafe and gone in v3; use safe_regex");
        }
        else
        {
            string which = match.Keys.FirstOrDefault() ?? "(none)";
            throw new ConfigException($"{match.Path}: path matcher '{which}' is not supported");
        }
        if (match["runtime_fraction"].Exists)
        {
            Warn(match["runtime_fraction"], "not honoured yet; the route matches every request its other matchers accept");
        }
        if (match["dynamic_metadata"].Exists || match["tls_context"].Exists)
        {
            throw new ConfigException($"{match.Path}: dynamic_metadata and tls_context matchers are not supported yet");
        }
        HeaderMatcher[] headers = [.. match["headers"].Items.Select(LoadHeaderMatcher)];
        QueryParameterMatcher[] query = [.. match["query_parameters"].Items.Select(LoadQueryMatcher)];
        bool grpc = match["grpc"].Exists;
        bool caseSensitive = match["case_sensitive"].Boolean() ?? true;

        RouteAction action;
        if (r["direct_response"].Exists)
        {
            ConfigNode direct = r["direct_response"];
            long status = direct["status"].Integer() ?? throw new ConfigException($"{direct["status"].Path}: required");
            if (status is < 200 or > 599)
            {
                throw new ConfigException($"{direct["status"].Path}: {status} is not an HTTP status from 200 to 599");
            }
            ConfigNode body = direct["body"];
            if (body["filename"].Exists || body["inline_bytes"].Exists)
            {
                throw new ConfigException($"{body.Path}: only inline_string bodies are supported");
            }
            action = RouteAction.Direct((int)status, body["inline_string"].String() ?? "");
        }
        else if (r["route"].Exists)
        {
            action = LoadRouteAction(r["route"], clusters);
        }
        else if (r["redirect"].Exists)
        {
            action = LoadRedirect(r["redirect"]);
        }
        else
        {
            string which = r.Keys.FirstOrDefault(static k => k is "redirect" or "filter_action" or "non_forwarding_action") ?? "route";
            throw new ConfigException($"{r.Path}.{which}: not supported yet (route and direct_response are)");
        }
        if (r["decorator"].Exists)
        {
            Warn(r["decorator"], "not honoured yet");
        }
        (FaultPolicy? fault, CorsPolicy? routeCors) = LoadFilterConfigs(r);
        if (r["route"]["cors"].Exists)
        {
            routeCors = LoadCors(r["route"]["cors"]);
        }
        try
        {
            return new Route(r["name"].String() ?? "", kind, value, action, caseSensitive)
            {
                Headers = headers,
                QueryParameters = query,
                GrpcOnly = grpc,
                RequestHeaderMutations = Mutations(r, "request"),
                Fault = fault,
                Cors = routeCors,
                ResponseHeaderMutations = Mutations(r, "response"),
            };
        }
        catch (ConfigException e) when (kind == PathMatchKind.Regex)
        {
            throw new ConfigException($"{match["safe_regex"].Path}: {e.Message}");
        }
    }

    private RouteAction LoadRouteAction(ConfigNode action, IReadOnlyDictionary<string, Cluster> clusters)
    {
        // Envoy's default route timeout is 15 s; "0s" disables it.
        TimeSpan timeout = action["timeout"].Duration() ?? TimeSpan.FromSeconds(15);
        RouteAction result;
        if (action["cluster"].Exists)
        {
            result = RouteAction.ToCluster(FindCluster(action["cluster"], clusters), timeout);
        }
        else if (action["weighted_clusters"].Exists)
        {
            ConfigNode weighted = action["weighted_clusters"];
            var list = new List<(Cluster, int)>();
            var mutations = new List<(HeaderMutations?, HeaderMutations?)>();
            foreach (ConfigNode c in weighted["clusters"].Items)
            {
                mutations.Add((Mutations(c, "request"), Mutations(c, "response")));
                if (c["cluster_header"].Exists)
                {
                    throw new ConfigException($"{c["cluster_header"].Path}: not supported yet");
                }
                foreach (string field in new[] { "typed_per_filter_config", "host_rewrite_literal" })
                {
                    if (c[field].Exists)
                    {
                        Warn(c[field], "not honoured yet");
                    }
                }
                long weight = c["weight"].Integer() ?? 0;
                if (weight is < 0 or > int.MaxValue)
                {
                    throw new ConfigException($"{c["weight"].Path}: {weight} is out of range");
                }
                list.Add((FindCluster(c["name"], clusters), (int)weight));
            }
            if (list.Count == 0)
            {
                throw new ConfigException($"{weighted["clusters"].Path}: at least one cluster is needed");
            }
            long? total = weighted["total_weight"].Integer();
            result = RouteAction.ToWeightedClusters(list, total is long t ? (int)t : null, timeout, weighted.Path,
                mutations.Any(static m => m.Item1 != null || m.Item2 != null) ? mutations : null);
        }
        else if (action["cluster_header"].Exists)
        {
            ReferencedClusters?.Add(AllClusters);
            result = RouteAction.ToClusterHeader(action["cluster_header"].RequiredString(), clusters.ToFrozenDictionary(StringComparer.Ordinal), timeout);
        }
        else
        {
            string which = action.Keys.FirstOrDefault(static k => k.Contains("cluster", StringComparison.Ordinal)) ?? "(none)";
            throw new ConfigException($"{action.Path}: no cluster, weighted_clusters or cluster_header (found '{which}')");
        }

        byte[]? prefixRewrite = action["prefix_rewrite"].String() is string p ? System.Text.Encoding.UTF8.GetBytes(p) : null;
        // v3 host_rewrite_literal; Istio 1.5 (v2) sends host_rewrite.
        string? host = action["host_rewrite_literal"].String() ?? action["host_rewrite"].String();
        System.Text.RegularExpressions.Regex? regexRewrite = null;
        string? substitution = null;
        if (action["regex_rewrite"].Exists)
        {
            ConfigNode rr = action["regex_rewrite"];
            string pattern = rr["pattern"]["regex"].RequiredString();
            try
            {
                // RE2's guarantee, kept: linear time whatever the pattern and path.
                regexRewrite = new System.Text.RegularExpressions.Regex(pattern, System.Text.RegularExpressions.RegexOptions.CultureInvariant | System.Text.RegularExpressions.RegexOptions.NonBacktracking);
            }
            catch (ArgumentException e)
            {
                throw new ConfigException($"{rr["pattern"]["regex"].Path}: invalid regex: {e.Message}");
            }
            // RE2 substitutions write capture groups as \1; .NET as $1 (and a literal $ as $$).
            substitution = System.Text.RegularExpressions.Regex.Replace((rr["substitution"].String() ?? "").Replace("$", "$$", StringComparison.Ordinal), @"\\(\d)", "$${$1}");
        }
        TimeSpan maxGrpcTimeout = action["max_stream_duration"]["grpc_timeout_header_max"].Duration() ?? action["max_grpc_timeout"].Duration() ?? TimeSpan.Zero;
        bool autoHostRewrite = action["auto_host_rewrite"].Boolean() ?? false;
        RetryPolicy? retry = action["retry_policy"].Exists ? LoadRetryPolicy(action["retry_policy"]) : null;
        if (action["max_stream_duration"]["max_stream_duration"].Exists)
        {
            Warn(action["max_stream_duration"]["max_stream_duration"], "not honoured yet");
        }
        HashPolicy[] hashPolicies = [.. action["hash_policy"].Items.Select(LoadHashPolicy).OfType<HashPolicy>()];
        if (hashPolicies.Length > 0)
        {
            result = result.WithHashPolicies(hashPolicies);
        }
        // v3 request_mirror_policies; Istio 1.5 (v2) sends the singular request_mirror_policy.
        var mirrors = action["request_mirror_policies"].Items.ToList();
        if (action["request_mirror_policy"].Exists)
        {
            mirrors.Add(action["request_mirror_policy"]);
        }
        if (mirrors.Count > 0)
        {
            ConfigNode m = mirrors[0];
            if (mirrors.Count > 1)
            {
                Warn(mirrors[1], "only the first mirror policy is honoured");
            }
            ConfigNode fraction = m["runtime_fraction"]["default_value"];
            double share = fraction.Exists ? Percentage(fraction) : 1;
            result = result.WithMirror(new MirrorPolicy(FindCluster(m["cluster"], clusters), share));
        }
        if (action["idle_timeout"].Duration() is TimeSpan idle && idle > TimeSpan.Zero)
        {
            result = result.WithIdleTimeout(idle);
        }
        foreach (string field in new[] { "grpc_timeout_offset" })
        {
            if (action[field].Exists)
            {
                Warn(action[field], "not honoured yet");
            }
        }
        if (prefixRewrite == null && host == null && retry == null && maxGrpcTimeout == TimeSpan.Zero && !autoHostRewrite && regexRewrite == null)
        {
            return result;
        }
        return result.With(prefixRewrite, host == null ? null : System.Text.Encoding.ASCII.GetBytes(host), retry, maxGrpcTimeout, autoHostRewrite, regexRewrite, substitution);
    }

    private static RouteAction LoadRedirect(ConfigNode d)
    {
        int status = (d["response_code"].String() ?? "MOVED_PERMANENTLY") switch
        {
            "MOVED_PERMANENTLY" => 301,
            "FOUND" => 302,
            "SEE_OTHER" => 303,
            "TEMPORARY_REDIRECT" => 307,
            "PERMANENT_REDIRECT" => 308,
            string other => throw new ConfigException($"{d["response_code"].Path}: unknown response code '{other}'"),
        };
        if (d["regex_rewrite"].Exists)
        {
            throw new ConfigException($"{d["regex_rewrite"].Path}: not supported yet");
        }
        string? scheme = d["scheme_redirect"].String() ?? ((d["https_redirect"].Boolean() ?? false) ? "https" : null);
        long port = d["port_redirect"].Integer() ?? 0;
        if (port is < 0 or > 65535)
        {
            throw new ConfigException($"{d["port_redirect"].Path}: {port} is not a port");
        }
        return RouteAction.ToRedirect(status, scheme, d["host_redirect"].String(), (int)port, d["path_redirect"].String(), d["prefix_rewrite"].String(), d["strip_query"].Boolean() ?? false);
    }

    private const string FaultV3 = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
    private const string FaultV2 = "type.googleapis.com/envoy.config.filter.http.fault.v2.HTTPFault";

    /// <summary>
    /// typed_per_filter_config, dispatched by each Any's @type, never by its map key (Istio 1.5 uses legacy
    /// keys such as envoy.fault): HTTP fault injection is honoured; other types are named once and skipped.
    /// v2's per_filter_config holds untyped Structs, so there the key is all there is to go by.
    /// </summary>
    private (FaultPolicy? Fault, CorsPolicy? Cors) LoadFilterConfigs(ConfigNode level)
    {
        FaultPolicy? fault = null;
        CorsPolicy? cors = level["cors"].Exists ? LoadCors(level["cors"]) : null;
        ConfigNode typed = level["typed_per_filter_config"];
        foreach (string key in typed.Keys)
        {
            ConfigNode any = typed[key];
            string type = any["@type"].String() ?? "";
            if (type == "type.googleapis.com/envoy.config.route.v3.FilterConfig")
            {
                if (any["disabled"].Boolean() == true)
                {
                    continue;
                }
                any = any["config"];
                type = any["@type"].String() ?? "";
            }
            if (type is FaultV3 or FaultV2)
            {
                fault = LoadFault(any);
            }
            else if (type is "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy" or "type.googleapis.com/envoy.config.route.v3.CorsPolicy")
            {
                cors = LoadCors(any);
            }
            else if (type.Contains(".rbac.", StringComparison.Ordinal) || IsAccessControl(key, type))
            {
                // A route's own access policy (RBACPerRoute...) that we would not apply could be stricter
                // than the listener's: refused rather than silently served with the looser one.
                throw new ConfigException($"{any.Path}: per-route access control ('{(type.Length == 0 ? key : type)}') is not supported");
            }
            else
            {
                Warn(any, $"filter config of type '{(type.Length == 0 ? "(none)" : type)}' is not honoured; skipped");
            }
        }
        ConfigNode legacy = level["per_filter_config"];
        foreach (string key in legacy.Keys)
        {
            if (key is "envoy.fault" or "envoy.filters.http.fault")
            {
                fault = LoadFault(legacy[key]);
            }
            else
            {
                Warn(legacy[key], "v2 per_filter_config is not honoured; skipped");
            }
        }
        return (fault, cors);
    }

    /// <summary>CorsPolicy: allow_origin_string_match (and v2's allow_origin / allow_origin_regex), methods, headers, max_age, credentials.</summary>
    private CorsPolicy LoadCors(ConfigNode c)
    {
        var origins = new List<StringMatcher>();
        foreach (ConfigNode m in c["allow_origin_string_match"].Items)
        {
            origins.Add(LoadStringMatcher(m));
        }
        foreach (ConfigNode o in c["allow_origin"].Items)
        {
            string origin = o.RequiredString();
            origins.Add(origin == "*" ? new StringMatcher(StringMatchKind.Prefix, "") : new StringMatcher(StringMatchKind.Exact, origin));
        }
        foreach (ConfigNode r in c["allow_origin_regex"].Items)
        {
            origins.Add(Regex(r, r.RequiredString()));
        }
        if (c["filter_enabled"].Exists || c["shadow_enabled"].Exists)
        {
            Warn(c, "filter_enabled/shadow_enabled runtime fractions are not honoured; the policy always applies");
        }
        return new CorsPolicy(origins, c["allow_methods"].String(), c["allow_headers"].String(), c["expose_headers"].String(), c["max_age"].String(),
            c["allow_credentials"].Boolean() ?? false);
    }

    private FaultPolicy LoadFault(ConfigNode f)
    {
        ConfigNode delay = f["delay"];
        ConfigNode abort = f["abort"];
        foreach (ConfigNode header in new[] { delay["header_delay"], abort["header_abort"] })
        {
            if (header.Exists)
            {
                Warn(header, "header-controlled faults are not honoured yet");
            }
        }
        if (f["max_active_faults"].Exists || f["headers"].Exists || f["downstream_nodes"].Exists || f["upstream_cluster"].Exists)
        {
            Warn(f, "fault filter conditions (headers, nodes, cluster, max_active_faults) are not honoured yet; the fault applies to every request of the route");
        }
        long grpcStatus = abort["grpc_status"].Integer() ?? -1;
        long httpStatus = abort["http_status"].Integer() ?? 0;
        if (abort.Exists && !abort["header_abort"].Exists && httpStatus == 0 && grpcStatus < 0)
        {
            throw new ConfigException($"{abort.Path}: needs http_status or grpc_status");
        }
        if (httpStatus != 0 && httpStatus is < 200 or >= 600)
        {
            throw new ConfigException($"{abort["http_status"].Path}: {httpStatus} is not an HTTP status from 200 to 599");
        }
        return new FaultPolicy
        {
            Delay = delay["fixed_delay"].Duration() ?? TimeSpan.Zero,
            DelayFraction = Percentage(delay["percentage"]),
            AbortHttpStatus = (int)httpStatus,
            AbortGrpcStatus = (int)grpcStatus,
            AbortFraction = Percentage(abort["percentage"]),
        };
    }

    /// <summary>FractionalPercent; absent means 100 % (Envoy's fault filter default).</summary>
    private static double Percentage(ConfigNode p)
    {
        if (!p.Exists)
        {
            return 1;
        }
        try
        {
            return FaultPolicy.Fraction(p["numerator"].Integer() ?? 0, p["denominator"].String());
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{p.Path}: {e.Message}");
        }
    }

    /// <summary>{request,response}_headers_to_add (HeaderValueOption: append, append_action) and _to_remove of one level.</summary>
    private HeaderMutations? Mutations(ConfigNode level, string direction)
    {
        var add = new List<(string, string, HeaderAppendAction)>();
        foreach (ConfigNode option in level[$"{direction}_headers_to_add"].Items)
        {
            ConfigNode header = option["header"];
            string key = header["key"].RequiredString();
            string value = header["value"].String() ?? "";
            if (value.Contains('%', StringComparison.Ordinal))
            {
                Warn(header["value"], "command operators (%...%) are not expanded yet; the value is sent as written");
            }
            HeaderAppendAction action = option["append_action"].String() switch
            {
                null => (option["append"].Boolean() ?? true) ? HeaderAppendAction.Append : HeaderAppendAction.OverwriteOrAdd,
                "APPEND_IF_EXISTS_OR_ADD" => HeaderAppendAction.Append,
                "ADD_IF_ABSENT" => HeaderAppendAction.AddIfAbsent,
                "OVERWRITE_IF_EXISTS_OR_ADD" => HeaderAppendAction.OverwriteOrAdd,
                "OVERWRITE_IF_EXISTS" => HeaderAppendAction.OverwriteIfExists,
                string other => throw new ConfigException($"{option["append_action"].Path}: unknown append_action '{other}'"),
            };
            add.Add((key, value, action));
        }
        var remove = level[$"{direction}_headers_to_remove"].Items.Select(static n => n.RequiredString()).ToList();
        try
        {
            return HeaderMutations.Create(add, remove);
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{level.Path}.{direction}_headers_to_add/remove: {e.Message}");
        }
    }

    private HashPolicy? LoadHashPolicy(ConfigNode h)
    {
        bool terminal = h["terminal"].Boolean() ?? false;
        if (h["header"].Exists)
        {
            return new HashPolicy(HashPolicyKind.Header, h["header"]["header_name"].RequiredString(), terminal);
        }
        if (h["cookie"].Exists)
        {
            if (h["cookie"]["ttl"].Exists)
            {
                Warn(h["cookie"]["ttl"], "generating the cookie is not honoured yet; only a cookie the client sends is hashed");
            }
            return new HashPolicy(HashPolicyKind.Cookie, h["cookie"]["name"].RequiredString(), terminal);
        }
        if (h["connection_properties"]["source_ip"].Boolean() == true)
        {
            return new HashPolicy(HashPolicyKind.SourceIp, "", terminal);
        }
        if (h["query_parameter"].Exists)
        {
            return new HashPolicy(HashPolicyKind.QueryParameter, h["query_parameter"]["name"].RequiredString(), terminal);
        }
        Warn(h, "hash policy not honoured yet");
        return null;
    }

    /// <summary>Envoy's RetryPolicy: retry_on, num_retries, retriable_status_codes, retry_back_off, previous_hosts.</summary>
    private RetryPolicy LoadRetryPolicy(ConfigNode p)
    {
        var unknown = new List<string>();
        RetryOn on = RetryPolicy.Parse(p["retry_on"].String() ?? "", unknown);
        foreach (string condition in unknown)
        {
            Warn(p["retry_on"], $"retry condition '{condition}' is not honoured");
        }
        long retries = p["num_retries"].IsMap ? p["num_retries"]["value"].Integer() ?? 1 : p["num_retries"].Integer() ?? 1;
        if (retries is < 0 or > 255)
        {
            throw new ConfigException($"{p["num_retries"].Path}: {retries} is out of range (0 to 255)");
        }
        int[] codes = [.. p["retriable_status_codes"].Items.Select(static c => (int)(c.Integer() ?? 0))];
        TimeSpan baseInterval = p["retry_back_off"]["base_interval"].Duration() ?? TimeSpan.FromMilliseconds(25);
        if (baseInterval <= TimeSpan.Zero)
        {
            throw new ConfigException($"{p["retry_back_off"]["base_interval"].Path}: must be greater than zero");
        }
        TimeSpan maxInterval = p["retry_back_off"]["max_interval"].Duration() ?? baseInterval * 10;
        bool previousHosts = false;
        foreach (ConfigNode predicate in p["retry_host_predicate"].Items)
        {
            string name = predicate["name"].String() ?? "";
            if (name is "envoy.retry_host_predicates.previous_hosts" || (predicate["typed_config"]["@type"].String() ?? "").EndsWith(".PreviousHostsPredicate", StringComparison.Ordinal))
            {
                previousHosts = true;
            }
            else
            {
                Warn(predicate, $"retry host predicate '{name}' is not honoured");
            }
        }
        foreach (string field in new[] { "per_try_idle_timeout", "retry_priority", "rate_limited_retry_back_off", "retriable_headers", "retriable_request_headers" })
        {
            if (p[field].Exists)
            {
                Warn(p[field], "not honoured yet");
            }
        }
        return new RetryPolicy
        {
            RetryOn = on,
            NumRetries = (int)retries,
            RetriableStatusCodes = codes,
            BaseInterval = baseInterval,
            MaxInterval = maxInterval < baseInterval ? baseInterval : maxInterval,
            AvoidPreviousHosts = previousHosts,
            HostSelectionRetryMaxAttempts = (int)Math.Clamp(p["host_selection_retry_max_attempts"].Integer() ?? 1, 1, 100),
            PerTryTimeout = p["per_try_timeout"].Duration() ?? TimeSpan.Zero,
        };
    }

    private Cluster FindCluster(ConfigNode name, IReadOnlyDictionary<string, Cluster> clusters)
    {
        string clusterName = name.RequiredString();
        ReferencedClusters?.Add(clusterName);
        if (clusters.TryGetValue(clusterName, out Cluster? cluster))
        {
            return cluster;
        }
        if (!Dynamic)
        {
            throw new ConfigException($"{name.Path}: unknown cluster '{clusterName}'");
        }
        return Placeholder(clusterName);
    }

    private readonly Dictionary<string, Cluster> _placeholders = new(StringComparer.Ordinal);

    /// <summary>
    /// A cluster that is not (yet) there: no endpoints, so a route to it answers 503 until it comes
    /// (Envoy's RDS default, validate_clusters false). One object per name, the cache bounded.
    /// </summary>
    public Cluster Placeholder(string name)
    {
        if (!_placeholders.TryGetValue(name, out Cluster? placeholder))
        {
            if (_placeholders.Count >= 4096)
            {
                _placeholders.Clear();
            }
            _placeholders[name] = placeholder = new Cluster(name, UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(5)) { State = pools.ClusterState(name) };
        }
        return placeholder;
    }

    /// <summary>v3 string_match and the legacy fields Istio 1.5 sends (exact_match, prefix_match, suffix_match, safe_regex_match).</summary>
    private static HeaderMatcher LoadHeaderMatcher(ConfigNode h)
    {
        string name = h["name"].RequiredString();
        bool invert = h["invert_match"].Boolean() ?? false;
        bool missingAsEmpty = h["treat_missing_header_as_empty"].Boolean() ?? false;
        if (h["string_match"].Exists)
        {
            return HeaderMatcher.ForString(name, LoadStringMatcher(h["string_match"]), invert, missingAsEmpty);
        }
        if (h["exact_match"].Exists || h.Keys.Contains("exact_match") || h.Keys.Contains("exactMatch"))
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Exact, h["exact_match"].String() ?? ""), invert, missingAsEmpty);
        }
        if (h["prefix_match"].Exists)
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Prefix, h["prefix_match"].String()!), invert, missingAsEmpty);
        }
        if (h["suffix_match"].Exists)
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Suffix, h["suffix_match"].String()!), invert, missingAsEmpty);
        }
        if (h["contains_match"].Exists)
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Contains, h["contains_match"].String()!), invert, missingAsEmpty);
        }
        if (h["safe_regex_match"].Exists)
        {
            return HeaderMatcher.ForString(name, Regex(h["safe_regex_match"]), invert, missingAsEmpty);
        }
        if (h["regex_match"].Exists)
        {
            // v2's std::regex matcher: the same whole-value semantics, run by our linear-time engine.
            return HeaderMatcher.ForString(name, Regex(h["regex_match"], h["regex_match"].RequiredString()), invert, missingAsEmpty);
        }
        if (h["range_match"].Exists)
        {
            ConfigNode range = h["range_match"];
            long start = range["start"].Integer() ?? throw new ConfigException($"{range["start"].Path}: required");
            long end = range["end"].Integer() ?? throw new ConfigException($"{range["end"].Path}: required");
            return HeaderMatcher.ForRange(name, start, end, invert, missingAsEmpty);
        }
        if (h["present_match"].Exists)
        {
            return HeaderMatcher.ForPresence(name, h["present_match"].Boolean() ?? true, invert);
        }
        // No match specifier: Envoy treats the header as required to be present.
        return HeaderMatcher.ForPresence(name, true, invert);
    }

    private static QueryParameterMatcher LoadQueryMatcher(ConfigNode q)
    {
        string name = q["name"].RequiredString();
        if (q["string_match"].Exists)
        {
            return new QueryParameterMatcher(name, LoadStringMatcher(q["string_match"]), false);
        }
        return new QueryParameterMatcher(name, null, q["present_match"].Boolean() ?? true);
    }

    private static StringMatcher LoadStringMatcher(ConfigNode m)
    {
        bool ignoreCase = m["ignore_case"].Boolean() ?? false;
        if (m["exact"].Exists || m.Keys.Contains("exact"))
        {
            return new StringMatcher(StringMatchKind.Exact, m["exact"].String() ?? "", ignoreCase);
        }
        if (m["prefix"].Exists)
        {
            return new StringMatcher(StringMatchKind.Prefix, m["prefix"].String()!, ignoreCase);
        }
        if (m["suffix"].Exists)
        {
            return new StringMatcher(StringMatchKind.Suffix, m["suffix"].String()!, ignoreCase);
        }
        if (m["contains"].Exists)
        {
            return new StringMatcher(StringMatchKind.Contains, m["contains"].String()!, ignoreCase);
        }
        if (m["safe_regex"].Exists)
        {
            return Regex(m["safe_regex"], null, ignoreCase);
        }
        throw new ConfigException($"{m.Path}: no exact, prefix, suffix, contains or safe_regex");
    }

    private static StringMatcher Regex(ConfigNode node, string? pattern = null, bool ignoreCase = false)
    {
        try
        {
            return new StringMatcher(StringMatchKind.Regex, pattern ?? node["regex"].RequiredString(), ignoreCase);
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{node.Path}: {e.Message}");
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

    /// <summary>Whether it has an HTTP connection manager (a use_original_dst listener may have none).</summary>
    public bool ServesHttp { get; init; } = true;

    /// <summary>Its tcp_proxy, when it serves TCP instead of HTTP.</summary>
    public TcpProxyConfig? TcpProxy { get; init; }
}

/// <summary>
/// Where and how to reach the control plane: <see cref="Target"/> is http://host:port (plaintext gRPC) or
/// unix:PATH (a relative path is relative to the working directory, as Istio's ./etc/istio/proxy/XDS).
/// <see cref="V2"/> null means "v3, falling back to v2 if the server does not know v3's service".
/// </summary>
public sealed record AdsBootstrap(string Target, bool Delta, bool? V2, bool SetNodeOnFirstMessageOnly, bool Clusters, bool Listeners, Api.Core.Node Node);

/// <summary>A Cluster resource read, all but its endpoints (see <see cref="BootstrapLoader.BuildCluster"/>).</summary>
public sealed record ClusterSettings(string Name, string Type, UpstreamProtocol Protocol, TimeSpan ConnectTimeout, LbPolicy Policy, double PanicThresholdPercent,
    bool LocalityWeighted, CircuitBreakers? CircuitBreakers, OutlierDetection? OutlierDetection, ConfigNode Node)
{
    /// <summary>The built cluster, for a type whose endpoints are in the resource itself (not EDS).</summary>
    public Cluster? Static { get; set; }

    /// <summary>per_connection_buffer_limit_bytes (Envoy's default 1 MiB).</summary>
    public int BufferLimit { get; init; } = Proxy.Core.Transport.SocketConnection.DefaultBufferLimit;
}
