using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Xds.Config;

/// <summary>Route configurations, virtual hosts, routes and route actions (clusters, weights, timeouts, rewrites).</summary>
public sealed partial class BootstrapLoader
{
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
                if (r["match"]["connect_matcher"].Exists && Dynamic)
                {
                    // Istio's HBONE listener (15008): CONNECT tunnels are not served; the route never matches here.
                    Warn(r["match"]["connect_matcher"], "CONNECT routes are not served; route skipped");
                    continue;
                }
                routes.Add(LoadRoute(r, clusters));
            }
            (FaultPolicy? hostFault, CorsPolicy? hostCors) = LoadFilterConfigs(vh);
            return new VirtualHost(name, domains, routes)
            {
                RequestHeaders = Mutations(vh, "request"),
                Fault = hostFault,
                Cors = hostCors,
                ResponseHeaders = Mutations(vh, "response"),
                IncludeRequestAttemptCount = vh["include_request_attempt_count"].Boolean() ?? false,
                IncludeAttemptCountInResponse = vh["include_attempt_count_in_response"].Boolean() ?? false,
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
        if (action["upgrade_configs"].Exists)
        {
            Warn(action["upgrade_configs"], "route-level upgrade_configs are not honoured; the connection manager's decide");
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
}
