using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Proxy.Xds.Config;
using PbListener = Proxy.Xds.Api.Listener.Listener;

namespace Proxy.Xds.Admin;

/// <summary>What /config_dump shows: the bootstrap as loaded, and (under ADS) the resources the client holds.</summary>
public sealed class ConfigDumpSource
{
    /// <summary>The bootstrap document's root (absent for a proxy started without one).</summary>
    public ConfigNode Bootstrap { get; init; }

    /// <summary>The node as sent to the control plane (command-line overrides applied).</summary>
    public IMessage? Node { get; init; }

    public DateTime Loaded { get; init; } = DateTime.UtcNow;

    /// <summary>The named secrets (SDS, static); their private keys are never shown.</summary>
    public Secrets.SecretStore? Secrets { get; init; }

    /// <summary>The dynamic resources and the last accepted version of each type; null when unavailable right now.</summary>
    public Func<(XdsDump Resources, IReadOnlyDictionary<XdsResourceType, string> Versions)?>? Dynamic { get; init; }
}

/// <summary>
/// Envoy's /config_dump in the envoy.admin.v3 dump types, in Envoy's order: BootstrapConfigDump,
/// ClustersConfigDump, EndpointsConfigDump (with include_eds), ListenersConfigDump,
/// ScopedRoutesConfigDump, RoutesConfigDump, SecretsConfigDump. Static resources are the bootstrap's, as
/// written; dynamic ones are what the control plane sent, with their versions and when they were taken.
/// Inline route configurations of HTTP connection managers are the static route configs, as in Envoy.
/// <c>resource=</c> lists the elements of one repeated field of the dumps (each with its element type),
/// <c>mask=</c> keeps only the named field paths (comma-separated, applied to each config or element),
/// <c>name_regex=</c> keeps only the resources whose name it matches.
/// </summary>
public static class ConfigDump
{
    private const string Admin = "type.googleapis.com/envoy.admin.v3.";
    private const string ClusterType = XdsTypes.ClusterV3;
    private const string ListenerType = XdsTypes.ListenerV3;
    private const string RouteType = XdsTypes.RouteV3;
    private const string EndpointType = XdsTypes.EndpointV3;

    // The repeated fields resource= may name, and the type of their elements.
    private static readonly Dictionary<string, string> s_elementTypes = new(StringComparer.Ordinal)
    {
        ["static_clusters"] = "ClustersConfigDump.StaticCluster",
        ["dynamic_active_clusters"] = "ClustersConfigDump.DynamicCluster",
        ["dynamic_warming_clusters"] = "ClustersConfigDump.DynamicCluster",
        ["static_endpoint_configs"] = "EndpointsConfigDump.StaticEndpointConfig",
        ["dynamic_endpoint_configs"] = "EndpointsConfigDump.DynamicEndpointConfig",
        ["static_listeners"] = "ListenersConfigDump.StaticListener",
        ["dynamic_listeners"] = "ListenersConfigDump.DynamicListener",
        ["inline_scoped_route_configs"] = "ScopedRoutesConfigDump.InlineScopedRouteConfigs",
        ["dynamic_scoped_route_configs"] = "ScopedRoutesConfigDump.DynamicScopedRouteConfigs",
        ["static_route_configs"] = "RoutesConfigDump.StaticRouteConfig",
        ["dynamic_route_configs"] = "RoutesConfigDump.DynamicRouteConfig",
        ["static_secrets"] = "SecretsConfigDump.StaticSecret",
        ["dynamic_active_secrets"] = "SecretsConfigDump.DynamicSecret",
        ["dynamic_warming_secrets"] = "SecretsConfigDump.DynamicSecret",
    };

    /// <summary>The dump as JSON, or an error status (400 bad parameter, 404 unknown resource, 503 busy) with its text.</summary>
    public static (int Status, string Body) Render(ConfigDumpSource source, string? resource, string? mask, string? nameRegex, bool includeEds)
    {
        Regex? names = null;
        if (!string.IsNullOrEmpty(nameRegex))
        {
            try
            {
                names = new Regex(nameRegex, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
            }
            catch (ArgumentException e)
            {
                return (400, $"name_regex: not a valid regular expression: {e.Message}\n");
            }
        }
        List<string[]>? paths = null;
        if (!string.IsNullOrEmpty(mask))
        {
            paths = [.. mask.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(static p => p.Split('.'))];
            if (paths.Count == 0 || paths.Any(static p => p.Any(static s => s.Length == 0)))
            {
                return (400, $"mask: '{mask}' is not a list of field paths such as dynamic_active_clusters,static_clusters\n");
            }
        }
        (XdsDump Resources, IReadOnlyDictionary<XdsResourceType, string> Versions)? dynamic = null;
        if (source.Dynamic != null)
        {
            dynamic = source.Dynamic();
            if (dynamic == null)
            {
                return (503, "the configuration is being updated; try again\n");
            }
        }
        List<JsonObject> configs = Build(source, dynamic, includeEds);
        var output = new List<JsonObject>();
        if (!string.IsNullOrEmpty(resource))
        {
            if (!s_elementTypes.TryGetValue(resource, out string? elementType))
            {
                return (404, $"resource: '{resource}' is not a repeated field of the config dump (such as {string.Join(", ", s_elementTypes.Keys)})\n");
            }
            foreach (JsonObject config in configs)
            {
                if (config[resource] is JsonArray elements)
                {
                    foreach (JsonObject element in elements.OfType<JsonObject>().ToList())
                    {
                        elements.Remove(element);
                        if (names != null && !Matches(element, names))
                        {
                            continue;
                        }
                        var typed = new JsonObject { ["@type"] = Admin + elementType };
                        Move(element, typed);
                        output.Add(paths != null ? Trim(typed, paths) : typed);
                    }
                }
            }
        }
        else
        {
            foreach (JsonObject config in configs)
            {
                if (names != null)
                {
                    foreach (JsonArray elements in config.Select(static p => p.Value).OfType<JsonArray>())
                    {
                        foreach (JsonObject element in elements.OfType<JsonObject>().Where(e => !Matches(e, names)).ToList())
                        {
                            elements.Remove(element);
                        }
                    }
                }
                output.Add(paths != null ? Trim(config, paths) : config);
            }
        }
        var root = new JsonObject { ["configs"] = new JsonArray([.. output]) };
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            root.WriteTo(writer);
        }
        buffer.WriteByte((byte)'\n');
        return (200, Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
    }

    private static List<JsonObject> Build(ConfigDumpSource source, (XdsDump Resources, IReadOnlyDictionary<XdsResourceType, string> Versions)? dynamic, bool includeEds)
    {
        ConfigNode statics = source.Bootstrap["static_resources"];
        string loaded = Time(source.Loaded);
        XdsDump? held = dynamic?.Resources;
        string Version(XdsResourceType type) => dynamic?.Versions.GetValueOrDefault(type) ?? "";

        var bootstrap = source.Bootstrap.ToJson() as JsonObject ?? [];
        if (source.Node != null)
        {
            bootstrap["node"] = ProtoJson.ToJson(source.Node);
        }

        var clusters = new JsonObject { ["@type"] = Admin + "ClustersConfigDump" };
        Set(clusters, "version_info", Version(XdsResourceType.Cluster));
        Set(clusters, "static_clusters", statics["clusters"].Items.Select(c => new JsonObject
        {
            ["cluster"] = Typed(ClusterType, c.ToJson()),
            ["last_updated"] = loaded,
        }));
        Set(clusters, "dynamic_active_clusters", held?.Clusters.Where(static c => !c.Warming).Select(static c => Dynamic(c, "cluster", ClusterType)));
        Set(clusters, "dynamic_warming_clusters", held?.Clusters.Where(static c => c.Warming).Select(static c => Dynamic(c, "cluster", ClusterType)));

        var listeners = new JsonObject { ["@type"] = Admin + "ListenersConfigDump" };
        Set(listeners, "version_info", Version(XdsResourceType.Listener));
        Set(listeners, "static_listeners", statics["listeners"].Items.Select(l => new JsonObject
        {
            ["listener"] = Typed(ListenerType, l.ToJson()),
            ["last_updated"] = loaded,
        }));
        Set(listeners, "dynamic_listeners", held?.Listeners.Select(static l =>
        {
            JsonObject state = Dynamic(l, "listener", ListenerType);
            return new JsonObject { ["name"] = l.Name, [l.Warming ? "warming_state" : "active_state"] = state };
        }));

        var routes = new JsonObject { ["@type"] = Admin + "RoutesConfigDump" };
        var inline = new List<JsonObject>();
        foreach (ConfigNode listener in statics["listeners"].Items)
        {
            foreach (ConfigNode chain in listener["filter_chains"].Items.Append(listener["default_filter_chain"]))
            {
                foreach (ConfigNode filter in chain["filters"].Items)
                {
                    ConfigNode routeConfig = filter["typed_config"]["route_config"].Exists ? filter["typed_config"]["route_config"] : filter["config"]["route_config"];
                    if (routeConfig.Exists)
                    {
                        inline.Add(new JsonObject { ["route_config"] = Typed(RouteType, routeConfig.ToJson()), ["last_updated"] = loaded });
                    }
                }
            }
        }
        foreach (DumpedResource listener in held?.Listeners ?? [])
        {
            foreach (IMessage routeConfig in InlineRoutes((PbListener)listener.Resource))
            {
                inline.Add(new JsonObject { ["route_config"] = ProtoJson.Packed(routeConfig, RouteType), ["last_updated"] = Time(listener.Updated) });
            }
        }
        Set(routes, "static_route_configs", inline);
        Set(routes, "dynamic_route_configs", held?.Routes.Where(static r => !r.Warming).Select(static r => Dynamic(r, "route_config", RouteType)));

        var result = new List<JsonObject>
        {
            new() { ["@type"] = Admin + "BootstrapConfigDump", ["bootstrap"] = bootstrap, ["last_updated"] = loaded },
            clusters,
        };
        if (includeEds)
        {
            var endpoints = new JsonObject { ["@type"] = Admin + "EndpointsConfigDump" };
            Set(endpoints, "static_endpoint_configs", statics["clusters"].Items.Where(static c => c["load_assignment"].Exists).Select(c =>
            {
                var assignment = Typed(EndpointType, c["load_assignment"].ToJson());
                if (assignment["cluster_name"] == null && c["name"].String() is string name)
                {
                    assignment["cluster_name"] = name;
                }
                return new JsonObject { ["endpoint_config"] = assignment, ["last_updated"] = loaded };
            }));
            Set(endpoints, "dynamic_endpoint_configs", held?.Endpoints.Select(static e => Dynamic(e, "endpoint_config", EndpointType)));
            result.Add(endpoints);
        }
        result.Add(listeners);
        result.Add(new JsonObject { ["@type"] = Admin + "ScopedRoutesConfigDump" });
        result.Add(routes);
        result.Add(SecretsDump(source.Secrets, loaded));
        return result;
    }

    /// <summary>The route configurations written inline in a listener's HTTP connection managers.</summary>
    private static IEnumerable<IMessage> InlineRoutes(PbListener listener)
    {
        IEnumerable<Api.Listener.FilterChain> chains = listener.DefaultFilterChain is { } fallback ? listener.FilterChains.Append(fallback) : listener.FilterChains;
        foreach (Api.Listener.FilterChain chain in chains)
        {
            foreach (Api.Listener.Filter filter in chain.Filters)
            {
                if (filter.TypedConfig is { } config && XdsTypes.TryUnpack(config.TypeUrl, config.Value, out _) is Api.Hcm.HttpConnectionManager { RouteConfig: { } routes })
                {
                    yield return routes;
                }
            }
        }
    }

    /// <summary>Envoy's SecretsConfigDump: static secrets, SDS secrets held (active) and asked for but not come (warming); keys redacted.</summary>
    private static JsonObject SecretsDump(Secrets.SecretStore? store, string loaded)
    {
        var dump = new JsonObject { ["@type"] = Admin + "SecretsConfigDump" };
        if (store == null)
        {
            return dump;
        }
        var entries = store.Entries.OrderBy(static e => e.Name, StringComparer.Ordinal).ToList();
        JsonObject Shown(Secrets.SecretStore.SecretEntry e)
        {
            JsonObject secret = ProtoJson.Packed(e.Proto!, XdsTypes.SecretV3);
            if (secret["tls_certificate"] is JsonObject certificate && certificate.ContainsKey("private_key"))
            {
                certificate["private_key"] = new JsonObject { ["inline_string"] = "[redacted]" };
            }
            return secret;
        }
        Set(dump, "static_secrets", entries.Where(static e => e.Source.Kind == Proxy.Xds.Secrets.SecretSourceKind.Static && e.IsReady).Select(e => new JsonObject
        {
            ["name"] = e.Name,
            ["last_updated"] = loaded,
            ["secret"] = Shown(e),
        }));
        Set(dump, "dynamic_active_secrets", entries.Where(static e => e.Source.Kind != Proxy.Xds.Secrets.SecretSourceKind.Static && e.IsReady).Select(e =>
        {
            var shown = new JsonObject { ["name"] = e.Name };
            Set(shown, "version_info", e.Version);
            shown["last_updated"] = Time(e.Updated);
            shown["secret"] = Shown(e);
            return shown;
        }));
        Set(dump, "dynamic_warming_secrets", entries.Where(static e => e.Source.Kind != Proxy.Xds.Secrets.SecretSourceKind.Static && !e.IsReady)
            .Select(static e => new JsonObject { ["name"] = e.Name }));
        return dump;
    }

    private static JsonObject Dynamic(DumpedResource resource, string field, string typeUrl)
    {
        var result = new JsonObject();
        Set(result, "version_info", resource.Version);
        result[field] = ProtoJson.Packed(resource.Resource, typeUrl);
        result["last_updated"] = Time(resource.Updated);
        return result;
    }

    /// <summary>A bootstrap object shown as an Any of the given type (fields as written).</summary>
    private static JsonObject Typed(string typeUrl, JsonNode? fields)
    {
        var result = new JsonObject { ["@type"] = typeUrl };
        if (fields is JsonObject source)
        {
            source.Remove("@type");
            Move(source, result);
        }
        return result;
    }

    private static void Move(JsonObject from, JsonObject to)
    {
        foreach (var (name, value) in from.ToList())
        {
            from.Remove(name);
            to[name] = value;
        }
    }

    private static void Set(JsonObject target, string name, string value)
    {
        if (value.Length > 0)
        {
            target[name] = value;
        }
    }

    private static void Set(JsonObject target, string name, IEnumerable<JsonObject>? elements)
    {
        if (elements != null && elements.ToList() is { Count: > 0 } list)
        {
            target[name] = new JsonArray([.. list]);
        }
    }

    private static string Time(DateTime time) => time.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    /// <summary>Whether an element's resource name (its own name, or its cluster's, listener's, route configuration's) matches.</summary>
    private static bool Matches(JsonObject element, Regex names)
    {
        string? name = Name(element)
            ?? Name(element["cluster"]) ?? Name(element["listener"]) ?? Name(element["route_config"])
            ?? (element["endpoint_config"]?["cluster_name"] as JsonValue)?.ToString()
            ?? Name(element["secret"]);
        return name != null && names.IsMatch(name);

        static string? Name(JsonNode? node) => (node as JsonObject)?["name"] is JsonValue value ? value.ToString() : null;
    }

    /// <summary>Keeps only the fields the paths name (and every object's @type), descending into objects and the elements of lists.</summary>
    private static JsonObject Trim(JsonObject target, List<string[]> paths)
    {
        foreach (var (name, value) in target.ToList())
        {
            if (name == "@type")
            {
                continue;
            }
            List<string[]> below = [.. paths.Where(p => p[0] == name)];
            if (below.Count == 0)
            {
                target.Remove(name);
                continue;
            }
            if (below.Any(static p => p.Length == 1))
            {
                continue;
            }
            List<string[]> rest = [.. below.Select(static p => p[1..])];
            switch (value)
            {
                case JsonObject child:
                    Trim(child, rest);
                    break;
                case JsonArray list:
                    foreach (JsonObject element in list.OfType<JsonObject>())
                    {
                        Trim(element, rest);
                    }
                    break;
                default:
                    target.Remove(name);
                    break;
            }
        }
        return target;
    }
}
