using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Xds.Config;

/// <summary>Per-route policies: redirects, CORS, faults, header mutations, hash and retry policies, and cluster references.</summary>
public sealed partial class BootstrapLoader
{
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
}
