using System.Net;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Host.Bootstrap;

/// <summary>
/// Reads an Envoy v3 bootstrap (YAML or JSON) into a snapshot: static listeners with an HTTP connection
/// manager and an inline route configuration, and static clusters (STATIC, STRICT_DNS, LOGICAL_DNS) with
/// load assignments. Unknown fields are ignored, as Envoy's JSON parser does with
/// --allow-unknown-static-fields; fields we know but do not honour yet are reported once each, by path;
/// features that cannot work without support we lack (RDS, EDS without xDS, other network filters) are
/// errors naming the field.
/// </summary>
public sealed class BootstrapLoader(UpstreamPools pools)
{
    private const string HttpConnectionManager = "envoy.filters.network.http_connection_manager";

    private readonly List<string> _warnings = [];

    /// <summary>Fields present in the file that are not honoured, one line each.</summary>
    public IReadOnlyList<string> Warnings => _warnings;

    public ProxySnapshot Load(string text, string origin)
    {
        ConfigNode root = ConfigNode.Parse(text, origin);
        ConfigNode statics = root["static_resources"];
        foreach (string ignored in new[] { "dynamic_resources", "admin", "stats_sinks", "tracing", "overload_manager", "layered_runtime" })
        {
            if (root[ignored].Exists)
            {
                Warn(root[ignored].Path, "not honoured yet");
            }
        }

        var clusters = new Dictionary<string, Cluster>(StringComparer.Ordinal);
        foreach (ConfigNode c in statics["clusters"].Items)
        {
            Cluster cluster = LoadCluster(c);
            if (!clusters.TryAdd(cluster.Name, cluster))
            {
                throw new ConfigException($"{c["name"].Path}: duplicate cluster name '{cluster.Name}'");
            }
        }

        var listeners = new List<ListenerConfig>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (ConfigNode l in statics["listeners"].Items)
        {
            ListenerConfig listener = LoadListener(l, clusters);
            if (!names.Add(listener.Name))
            {
                throw new ConfigException($"{l["name"].Path}: duplicate listener name '{listener.Name}'");
            }
            listeners.Add(listener);
        }
        if (listeners.Count == 0)
        {
            throw new ConfigException("static_resources.listeners: at least one listener is needed");
        }
        return new ProxySnapshot(listeners, clusters.Values, 1);
    }

    private void Warn(string path, string what)
    {
        string line = $"{path}: {what}";
        if (!_warnings.Contains(line))
        {
            _warnings.Add(line);
        }
    }

    private Cluster LoadCluster(ConfigNode c)
    {
        string name = c["name"].RequiredString();
        string type = c["type"].String() ?? "STATIC";
        if (type is "EDS" or "ORIGINAL_DST")
        {
            throw new ConfigException($"{c["type"].Path}: {type} clusters need xDS, which this build does not have yet");
        }
        if (type is not ("STATIC" or "STRICT_DNS" or "LOGICAL_DNS"))
        {
            throw new ConfigException($"{c["type"].Path}: unknown cluster type '{type}'");
        }
        if (c["cluster_type"].Exists)
        {
            throw new ConfigException($"{c["cluster_type"].Path}: custom cluster types are not supported");
        }
        TimeSpan connectTimeout = c["connect_timeout"].Duration() ?? TimeSpan.FromSeconds(5);
        string lb = c["lb_policy"].String() ?? "ROUND_ROBIN";
        if (lb != "ROUND_ROBIN")
        {
            Warn(c["lb_policy"].Path, $"{lb} is not honoured yet; ROUND_ROBIN is used");
        }
        foreach (string field in new[] { "circuit_breakers", "outlier_detection", "health_checks", "transport_socket", "common_lb_config" })
        {
            if (c[field].Exists)
            {
                Warn(c[field].Path, "not honoured yet");
            }
        }

        UpstreamProtocol protocol = c["http2_protocol_options"].Exists || UsesHttp2(c["typed_extension_protocol_options"])
            ? UpstreamProtocol.Http2 : UpstreamProtocol.Http1;
        var endpoints = new List<UpstreamEndpoint>();
        ConfigNode assignment = c["load_assignment"];
        foreach (ConfigNode locality in assignment["endpoints"].Items)
        {
            foreach (ConfigNode lbEndpoint in locality["lb_endpoints"].Items)
            {
                ConfigNode socket = lbEndpoint["endpoint"]["address"]["socket_address"];
                EndPoint address = ParseSocketAddress(socket, allowNames: type != "STATIC");
                endpoints.Add(pools.Endpoint(address, protocol));
            }
        }
        if (c["hosts"].Exists)
        {
            throw new ConfigException($"{c["hosts"].Path}: the v2 'hosts' field is gone in v3; use load_assignment");
        }
        return new Cluster(name, protocol, endpoints, connectTimeout);
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

    private ListenerConfig LoadListener(ConfigNode l, Dictionary<string, Cluster> clusters)
    {
        string name = l["name"].String() ?? $"listener_{l.Path}";
        EndPoint address = ParseSocketAddress(l["address"]["socket_address"], allowNames: false);
        RouteConfiguration? routes = null;
        foreach (ConfigNode chain in l["filter_chains"].Items)
        {
            if (chain["filter_chain_match"].Exists)
            {
                Warn(chain["filter_chain_match"].Path, "not honoured yet; the first HTTP filter chain serves every connection");
            }
            if (chain["transport_socket"].Exists)
            {
                throw new ConfigException($"{chain["transport_socket"].Path}: TLS is not supported yet");
            }
            foreach (ConfigNode filter in chain["filters"].Items)
            {
                string filterName = filter["name"].String() ?? "";
                string type = filter["typed_config"]["@type"].String() ?? "";
                if (filterName != HttpConnectionManager && !type.EndsWith(".HttpConnectionManager", StringComparison.Ordinal))
                {
                    throw new ConfigException($"{filter.Path}: network filter '{filterName}' is not supported (only {HttpConnectionManager})");
                }
                if (routes != null)
                {
                    continue;
                }
                ConfigNode hcm = filter["typed_config"];
                if (hcm["rds"].Exists)
                {
                    throw new ConfigException($"{hcm["rds"].Path}: RDS needs xDS, which this build does not have yet; use an inline route_config");
                }
                routes = LoadRoutes(hcm["route_config"], clusters);
            }
        }
        if (routes == null)
        {
            throw new ConfigException($"{l["filter_chains"].Path}: no {HttpConnectionManager} filter with a route_config");
        }
        return new ListenerConfig(name, (IPEndPoint)address, routes);
    }

    private RouteConfiguration LoadRoutes(ConfigNode config, Dictionary<string, Cluster> clusters)
    {
        if (!config.Exists)
        {
            throw new ConfigException($"{config.Path}: required");
        }
        var hosts = new List<VirtualHost>();
        foreach (ConfigNode vh in config["virtual_hosts"].Items)
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
            hosts.Add(new VirtualHost(name, domains, routes));
        }
        return new RouteConfiguration(config["name"].String() ?? "", hosts, config["ignore_port_in_host_matching"].Boolean() ?? false);
    }

    private Route LoadRoute(ConfigNode r, Dictionary<string, Cluster> clusters)
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
        else
        {
            string which = match.Keys.FirstOrDefault() ?? "(none)";
            throw new ConfigException($"{match.Path}: path matcher '{which}' is not supported yet (prefix and path are)");
        }
        foreach (string field in new[] { "headers", "query_parameters", "grpc", "runtime_fraction" })
        {
            if (match[field].Exists)
            {
                throw new ConfigException($"{match[field].Path}: not supported yet; a route that ignored it would match too much");
            }
        }
        ConfigNode action = r["route"];
        if (!action.Exists)
        {
            string which = r.Keys.FirstOrDefault(static k => k is "redirect" or "direct_response") ?? "route";
            throw new ConfigException($"{r.Path}.{which}: only 'route' actions are supported yet");
        }
        string clusterName = action["cluster"].String()
            ?? throw new ConfigException($"{action.Path}: only a single 'cluster' is supported yet (weighted_clusters and cluster_header are not)");
        if (!clusters.TryGetValue(clusterName, out Cluster? cluster))
        {
            throw new ConfigException($"{action["cluster"].Path}: unknown cluster '{clusterName}'");
        }
        foreach (string field in new[] { "retry_policy", "prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "hash_policy", "request_mirror_policies", "max_stream_duration" })
        {
            if (action[field].Exists)
            {
                Warn(action[field].Path, "not honoured yet");
            }
        }
        // Envoy's default route timeout is 15 s; "0s" disables it.
        TimeSpan timeout = action["timeout"].Duration() ?? TimeSpan.FromSeconds(15);
        bool caseSensitive = match["case_sensitive"].Boolean() ?? true;
        return new Route(r["name"].String() ?? "", kind, value, cluster, timeout, caseSensitive);
    }
}
