using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
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
        return (BuildListener(shape, routes, hcm => LoadRoutes(hcm["route_config"], clusters)), shape.BindToPort);
    }

    /// <summary>
    /// What a Listener resource asks for: its address, its listener filters, and its filter chains (HTTP
    /// connection manager with inline or RDS routes, or tcp_proxy), each with its filter_chain_match, plus
    /// default_filter_chain. A listener with one chain and no match is served by that chain directly.
    /// Null when a dynamic listener has nothing we can serve (no chain we serve, or an address that is not
    /// an IP socket); the reason is warned.
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
        bool tlsInspector = false, httpInspector = false, originalDst = false;
        foreach (ConfigNode filter in l["listener_filters"].Items)
        {
            string filterName = filter["name"].String() ?? "";
            string type = filter["typed_config"]["@type"].String() ?? "";
            if (filterName is "envoy.filters.listener.tls_inspector" or "envoy.listener.tls_inspector" || type.EndsWith(".TlsInspector", StringComparison.Ordinal))
            {
                tlsInspector = true;
            }
            else if (filterName is "envoy.filters.listener.http_inspector" or "envoy.listener.http_inspector" || type.EndsWith(".HttpInspector", StringComparison.Ordinal))
            {
                httpInspector = true;
            }
            else if (filterName is "envoy.filters.listener.original_dst" or "envoy.listener.original_dst" || type.EndsWith(".OriginalDst", StringComparison.Ordinal))
            {
                originalDst = true;
            }
            else
            {
                Warn(filter, $"listener filter '{(filterName.Length > 0 ? filterName : type)}' is not honoured yet");
            }
        }

        var chains = new List<ChainShape>();
        int index = 0;
        foreach (ConfigNode chain in l["filter_chains"].Items)
        {
            if (ReadChain(l, chain, index++) is ChainShape read)
            {
                chains.Add(read);
            }
        }
        ChainShape? fallback = l["default_filter_chain"].Exists ? ReadChain(l, l["default_filter_chain"], -1) : null;

        // The primary HTTP chain: the one whose routes come by RDS (one name per listener), else the
        // first HTTP chain. Its routes and options are the listener's own (the runtime API routes by them).
        IEnumerable<ChainShape> all = fallback != null ? chains.Append(fallback) : chains;
        ChainShape? primary = all.FirstOrDefault(static c => c.RdsName != null) ?? all.FirstOrDefault(static c => c.Hcm != null);
        if (primary?.RdsName is string rds)
        {
            foreach (ChainShape other in all.Where(c => c.RdsName != null && c.RdsName != rds).ToList())
            {
                Warn(other.Node, $"a second RDS route configuration ('{other.RdsName}') on one listener is not supported; chain skipped");
                chains.Remove(other);
                if (ReferenceEquals(other, fallback))
                {
                    fallback = null;
                }
            }
        }
        bool direct = chains.Count == 1 && fallback == null && chains[0].Match == FilterChainMatch.All;
        if (chains.Count == 0 && fallback == null)
        {
            if (useOriginalDst)
            {
                // No chain of its own: it only hands connections to the listener of their original destination.
                return new ListenerShape(name, address, bind, l, null) { UseOriginalDst = true, ServesHttp = false, RestoresOriginalDestination = originalDst };
            }
            if (Dynamic)
            {
                Warn(l, "no filter chain we can serve; listener skipped");
            }
            return null;
        }
        ListenerShape shape;
        if (primary != null)
        {
            shape = new ListenerShape(name, address, bind, primary.Hcm!.Value, primary.RdsName) { Options = primary.Options };
        }
        else
        {
            // TCP only (Istio's virtualOutbound with PassthroughCluster, or a TCP service's port).
            ChainShape tcp = chains.FirstOrDefault(static c => c.Match == FilterChainMatch.All) ?? fallback ?? chains[0];
            shape = new ListenerShape(name, address, bind, l, null) { ServesHttp = false, TcpProxy = tcp.Tcp, Options = tcp.Options };
        }
        return shape with
        {
            Tls = direct ? chains[0].Tls : null,
            UseOriginalDst = useOriginalDst,
            RestoresOriginalDestination = originalDst,
            Chains = direct ? [] : [.. chains],
            DefaultChain = direct ? null : fallback,
            Primary = primary,
            TlsInspector = tlsInspector,
            HttpInspector = httpInspector,
            ListenerFiltersTimeout = l["listener_filters_timeout"].Duration() ?? TimeSpan.FromSeconds(15),
            ContinueOnListenerFiltersTimeout = l["continue_on_listener_filters_timeout"].Boolean() == true,
        };
    }

    /// <summary>One filter chain: its match, its network filters (RBAC honoured), and the HTTP connection manager or tcp_proxy that ends it; null when we cannot serve it (warned).</summary>
    private ChainShape? ReadChain(ConfigNode l, ConfigNode chain, int index)
    {
        TlsServerContext? tls = ReadDownstreamTls(chain);
        FilterChainMatch match = ReadFilterChainMatch(chain["filter_chain_match"]);
        string name = chain["name"].String() ?? "";
        RbacPolicySet? rbac = null;
        foreach (ConfigNode filter in chain["filters"].Items)
        {
            string filterName = filter["name"].String() ?? "";
            ConfigNode config = filter["typed_config"].Exists ? filter["typed_config"] : filter["config"];
            string type = config["@type"].String() ?? "";
            bool isHcm = type.EndsWith(".HttpConnectionManager", StringComparison.Ordinal)
                || (type.Length == 0 && filterName is HttpConnectionManager or "envoy.http_connection_manager");
            if (isHcm)
            {
                string? rdsName = null;
                if (config["rds"].Exists)
                {
                    rdsName = config["rds"]["route_config_name"].RequiredString();
                }
                else if (!config["route_config"].Exists)
                {
                    throw new ConfigException($"{config.Path}: needs rds or route_config");
                }
                return new ChainShape(name, index, match, chain, config, rdsName, ReadListenerOptions(l, config, rbac), null) { Tls = tls };
            }
            bool isTcpProxy = type.EndsWith(".TcpProxy", StringComparison.Ordinal) || (type.Length == 0 && filterName is "envoy.filters.network.tcp_proxy" or "envoy.tcp_proxy");
            if (isTcpProxy)
            {
                return new ChainShape(name, index, match, chain, null, null, new ListenerOptions { NetworkRbac = rbac }, ReadTcpProxy(config)) { Tls = tls };
            }
            bool isRbac = type.Contains(".rbac.", StringComparison.Ordinal) || filterName == "envoy.filters.network.rbac";
            if (!Dynamic && !isRbac)
            {
                throw new ConfigException($"{filter.Path}: network filter '{filterName}' is not supported (only {HttpConnectionManager}, envoy.filters.network.tcp_proxy and envoy.filters.network.rbac)");
            }
            // Istio puts metadata exchange, stats, authn and RBAC filters before the terminal filter.
            rbac = ReadNetworkFilter(filter, filterName, type, config, rbac);
        }
        if (Dynamic)
        {
            Warn(chain, "no HTTP connection manager or tcp_proxy filter; chain skipped");
        }
        return null;
    }

    /// <summary>filter_chain_match: every criterion Envoy has, except address suffixes (warned).</summary>
    private FilterChainMatch ReadFilterChainMatch(ConfigNode m)
    {
        if (!m.Exists || !m.Keys.Any())
        {
            return FilterChainMatch.All;
        }
        foreach (string field in new[] { "address_suffix", "suffix_len" })
        {
            if (m[field].Exists)
            {
                Warn(m[field], "not honoured");
            }
        }
        long port = Wrapped(m["destination_port"]) ?? 0;
        if (port is < 0 or > 65535)
        {
            throw new ConfigException($"{m["destination_port"].Path}: {port} is not a port");
        }
        string sourceType = (m["source_type"].String() ?? "ANY").ToUpperInvariant();
        var match = new FilterChainMatch
        {
            DestinationPort = (int)port,
            PrefixRanges = [.. m["prefix_ranges"].Items.Select(Cidr)],
            ServerNames = [.. m["server_names"].Items.Select(static n => (n.String() ?? "").ToLowerInvariant())],
            TransportProtocol = m["transport_protocol"].String() ?? "",
            ApplicationProtocols = [.. m["application_protocols"].Items.Select(static n => n.String() ?? "")],
            DirectSourcePrefixRanges = [.. m["direct_source_prefix_ranges"].Items.Select(Cidr)],
            SourceType = sourceType switch
            {
                "ANY" or "0" => ConnectionSourceType.Any,
                "SAME_IP_OR_LOOPBACK" or "LOCAL" or "1" => ConnectionSourceType.SameIpOrLoopback,
                "EXTERNAL" or "2" => ConnectionSourceType.External,
                _ => throw new ConfigException($"{m["source_type"].Path}: '{sourceType}' is not ANY, SAME_IP_OR_LOOPBACK or EXTERNAL"),
            },
            SourcePrefixRanges = [.. m["source_prefix_ranges"].Items.Select(Cidr)],
            SourcePorts = [.. m["source_ports"].Items.Select(static p => (int)Math.Clamp(p.Integer() ?? 0, 0, 65535))],
        };
        return match;
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

    /// <summary>
    /// The listener with <paramref name="routes"/> for its primary HTTP chain (inline or RDS); its other
    /// chains' inline route configurations are built by <paramref name="inline"/> (given the HTTP
    /// connection manager), against the clusters in use.
    /// </summary>
    public ListenerConfig BuildListener(ListenerShape shape, RouteConfiguration routes, Func<ConfigNode, RouteConfiguration>? inline = null)
    {
        FilterChain Chain(ChainShape c)
        {
            ListenerConfig serving = c.Hcm is ConfigNode hcm
                ? new ListenerConfig(shape.Name, shape.Address, ReferenceEquals(c, shape.Primary) || c.RdsName != null ? routes
                    : (inline ?? throw new InvalidOperationException("inline routes need clusters"))(hcm)) { Options = c.Options, Tls = c.Tls }
                : new ListenerConfig(shape.Name, shape.Address, s_noRoutes) { Options = c.Options, ServesHttp = false, TcpProxy = c.Tcp, Tls = c.Tls };
            return new FilterChain(c.Name, c.Match, serving);
        }
        return new(shape.Name, shape.Address, routes)
        {
            Options = shape.Options,
            BindToPort = shape.BindToPort,
            UseOriginalDst = shape.UseOriginalDst,
            RestoresOriginalDestination = shape.RestoresOriginalDestination,
            ServesHttp = shape.ServesHttp,
            TcpProxy = shape.TcpProxy,
            Tls = shape.Tls,
            FilterChains = [.. shape.Chains.Select(Chain)],
            DefaultFilterChain = shape.DefaultChain is { } fallback ? Chain(fallback) : null,
            TlsInspector = shape.TlsInspector,
            HttpInspector = shape.HttpInspector,
            ListenerFiltersTimeout = shape.ListenerFiltersTimeout,
            ContinueOnListenerFiltersTimeout = shape.ContinueOnListenerFiltersTimeout,
        };
    }

    private static readonly RouteConfiguration s_noRoutes = new("", [], false);
}
