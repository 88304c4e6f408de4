using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Xds.Config;

/// <summary>Listeners: addresses, binding and original-destination dispatch, HTTP connection manager or tcp_proxy chains.</summary>
public sealed partial class BootstrapLoader
{
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
}
