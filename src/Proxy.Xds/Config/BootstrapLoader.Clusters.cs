using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Core.Transport.Tls;
using Proxy.Core.Upstream;

namespace Proxy.Xds.Config;

/// <summary>Clusters: discovery types, endpoints and localities, circuit breakers, outlier detection, upstream protocol.</summary>
public sealed partial class BootstrapLoader
{
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
        foreach (string field in new[] { "health_checks", "ring_hash_lb_config", "maglev_lb_config", "least_request_lb_config", "lb_subset_config", "filters" })
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
            Tls = ReadUpstreamTls(c["transport_socket"], c["tls_context"]),
            TlsMatches = [.. c["transport_socket_matches"].Items.Select(m => new TransportSocketMatch(
                m["name"].String() ?? "",
                [.. m["match"].Keys.Select(k => (k, m["match"][k].String() ?? (m["match"][k].ToJson()?.ToJsonString() ?? "")))],
                ReadUpstreamTls(m["transport_socket"])))],
            BufferLimit = (int)Math.Clamp(Wrapped(c["per_connection_buffer_limit_bytes"]) ?? Proxy.Core.Transport.SocketConnection.DefaultBufferLimit, 16 * 1024, int.MaxValue / 2),
            MaxHeadersCount = ReadMaxHeadersCount(c),
            IdleTimeout = CommonHttpOptions(c)["idle_timeout"].Duration() ?? Cluster.DefaultIdleTimeout,
            MaxRequestsPerConnection = ReadMaxRequestsPerConnection(c),
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
                TlsClientContext? tls = settings.TlsFor(lbEndpoint["metadata"]["filter_metadata"]["envoy.transport_socket_match"]);
                endpoints.Add(pools.Endpoint(address, protocol, (int)weight, status, (int)priority, state, localityIndex, (int)Math.Clamp(localityWeight, 1, 1_000_000), tls));
            }
        }
        // v2's inline hosts (Istio 1.5 bootstraps and clusters): endpoints of weight 1 in one locality.
        foreach (ConfigNode host in c["hosts"].Items)
        {
            EndPoint address = ParseSocketAddress(host["socket_address"], allowNames: type != "STATIC");
            endpoints.Add(pools.Endpoint(address, protocol, 1, EndpointHealth.Unknown, 0, state, localityIndex + 1, 1, settings.TlsFor(default)));
        }
        return new Cluster(settings.Name, protocol, endpoints, settings.ConnectTimeout, settings.Policy, settings.PanicThresholdPercent, settings.LocalityWeighted)
        {
            CircuitBreakers = settings.CircuitBreakers,
            OutlierDetection = settings.OutlierDetection,
            BufferLimit = settings.BufferLimit,
            MaxHeadersCount = settings.MaxHeadersCount,
            IdleTimeout = settings.IdleTimeout,
            MaxRequestsPerConnection = settings.MaxRequestsPerConnection,
            State = state,
            UsesOriginalDestination = type == "ORIGINAL_DST",
            OriginalDestinationHeader = type == "ORIGINAL_DST" && c["original_dst_lb_config"]["use_http_header"].Boolean() == true
                ? System.Text.Encoding.ASCII.GetBytes((c["original_dst_lb_config"]["http_header_name"].String() is { Length: > 0 } header ? header : "x-envoy-original-dst-host").ToLowerInvariant())
                : null,
            OriginalDestinationPort = (int)Math.Clamp(Wrapped(c["original_dst_lb_config"]["upstream_port_override"]) ?? 0, 0, 65535),
            Bind = c["upstream_bind_config"].Exists ? ReadBind(c["upstream_bind_config"]) : null,
            Tls = settings.TlsFor(default),
        };
    }

    /// <summary>upstream_bind_config: source_address, freebind, socket_options (integer values).</summary>
    private UpstreamBind ReadBind(ConfigNode b)
    {
        System.Net.IPAddress? source = null;
        if (b["source_address"].Exists)
        {
            source = ((IPEndPoint)ParseSocketAddress(b["source_address"], allowNames: false)).Address;
        }
        bool freebind = b["freebind"].Boolean() ?? b["freebind"]["value"].Boolean() ?? false;
        var options = new List<(int, int, byte[])>();
        foreach (ConfigNode o in b["socket_options"].Items)
        {
            long level = o["level"].Integer() ?? 0;
            long name = o["name"].Integer() ?? throw new ConfigException($"{o["name"].Path}: required");
            if (o["buf_value"].Exists)
            {
                Warn(o["buf_value"], "byte-valued socket options are not honoured yet; skipped");
                continue;
            }
            long value = o["int_value"].Integer() ?? 0;
            if (level is < 0 or > int.MaxValue || name is < 0 or > int.MaxValue || value is < int.MinValue or > int.MaxValue)
            {
                throw new ConfigException($"{o.Path}: level, name and int_value must fit a C int");
            }
            options.Add(((int)level, (int)name, BitConverter.GetBytes((int)value)));
        }
        return new UpstreamBind(source, freebind, [.. options]);
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

    /// <summary>
    /// max_headers_count for responses of a cluster: from the HttpProtocolOptions extension's
    /// common_http_protocol_options (v3), else the cluster's own (deprecated) common_http_protocol_options.
    /// </summary>
    private static int ReadMaxHeadersCount(ConfigNode c)
    {
        ConfigNode common = CommonHttpOptions(c);
        long maxHeaders = Wrapped(common["max_headers_count"]) ?? Proxy.Core.Http1.Http1Parser.DefaultMaxHeadersCount;
        if (maxHeaders < 1 || maxHeaders > int.MaxValue)
        {
            throw new ConfigException($"{common.Path}.max_headers_count: must be at least 1 (Envoy's bound), not {maxHeaders}");
        }
        return (int)maxHeaders;
    }

    /// <summary>
    /// A cluster's common HTTP protocol options: the HttpProtocolOptions extension's (v3), else the cluster's
    /// own (deprecated) common_http_protocol_options.
    /// </summary>
    private static ConfigNode CommonHttpOptions(ConfigNode c)
    {
        ConfigNode common = c["common_http_protocol_options"];
        foreach (string key in c["typed_extension_protocol_options"].Keys)
        {
            if (c["typed_extension_protocol_options"][key]["common_http_protocol_options"] is { Exists: true } typed)
            {
                common = typed;
            }
        }
        return common;
    }

    /// <summary>max_requests_per_connection: the common options', else the cluster's own (deprecated) field; 0 or absent: no limit.</summary>
    private static int ReadMaxRequestsPerConnection(ConfigNode c)
    {
        long max = Wrapped(CommonHttpOptions(c)["max_requests_per_connection"]) ?? Wrapped(c["max_requests_per_connection"]) ?? 0;
        return (int)Math.Clamp(max, 0, int.MaxValue);
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
}
