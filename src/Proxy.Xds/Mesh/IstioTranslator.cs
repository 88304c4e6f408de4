using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using ConfigException = Proxy.Core.Config.ConfigException;
using Proxy.Xds.Api.Cluster;
using Proxy.Xds.Api.Core;
using Proxy.Xds.Api.Endpoint;
using Proxy.Xds.Api.Hcm;
using Proxy.Xds.Api.Listener;
using Proxy.Xds.Api.Matcher;
using Proxy.Xds.Api.Route;
using Proxy.Xds.Config;
using YamlDotNet.RepresentationModel;
using Cluster = Proxy.Xds.Api.Cluster.Cluster;
using Filter = Proxy.Xds.Api.Listener.Filter;
using HttpProtocolOptions = Proxy.Xds.Api.UpstreamHttp.HttpProtocolOptions;
using Listener = Proxy.Xds.Api.Listener.Listener;
using RouteConfiguration = Proxy.Xds.Api.Route.RouteConfiguration;
using RetryPolicy = Proxy.Xds.Api.Route.RetryPolicy;
using StringMatcher = Proxy.Xds.Api.Matcher.StringMatcher;
using VirtualHost = Proxy.Xds.Api.Route.VirtualHost;

namespace Proxy.Xds.Mesh;

/// <summary>
/// Istio's networking resources, as users `kubectl apply` them (VirtualService, DestinationRule,
/// ServiceEntry, WorkloadEntry of networking.istio.io v1alpha3, v1beta1 and v1; Kubernetes Services),
/// translated the way istiod translates them for a sidecar: clusters `outbound|PORT|SUBSET|HOST` over EDS
/// (a subset's endpoints are the service's whose labels match), a route configuration per port named after
/// it with a virtual host per service, and an outbound HTTP listener per port. Errors name the file, the
/// resource and the field; a field we do not translate is an error, never silently dropped.
/// </summary>
public sealed class IstioTranslator
{
    /// <summary>Where the outbound listeners bind: a sidecar with INTERCEPTION_MODE NONE listens on 127.0.0.1:PORT.</summary>
    public string ListenAddress { get; init; } = "127.0.0.1";

    /// <summary>
    /// False for sidecars whose traffic iptables redirects (INTERCEPTION_MODE REDIRECT): the per-port
    /// listeners are istiod's 0.0.0.0_PORT with bind_to_port false (their routes still serve the runtime API).
    /// </summary>
    public bool BindOutboundListeners { get; init; } = true;

    /// <summary>
    /// Istio's REDIRECT mode: also a virtualOutbound listener on 0.0.0.0:15001 (use_original_dst, its own
    /// chain a tcp_proxy to PassthroughCluster) and the PassthroughCluster (ORIGINAL_DST).
    /// </summary>
    public bool VirtualOutbound { get; init; }

    private sealed record Port(uint Number, string Name, bool Http2);
    private sealed record Workload(string Address, Dictionary<string, string> Labels, Dictionary<string, uint> Ports, string Origin);
    private sealed record Service(string Host, string Namespace, List<Port> Ports, Dictionary<string, string>? Selector, List<Workload> Endpoints, string Origin);
    private sealed record Doc(string Kind, string Name, string Namespace, ConfigNode Spec, string Origin);

    private Dictionary<string, (string Text, List<Doc> Docs)> _parsed = new(StringComparer.Ordinal);

    /// <summary>Translates the YAML documents of <paramref name="files"/> (path, text) into Envoy resources.</summary>
    public List<(XdsResourceType Type, string Name, IMessage Resource)> Translate(IEnumerable<(string Path, string Text)> files)
    {
        var docs = new List<Doc>();
        var parsed = new Dictionary<string, (string Text, List<Doc> Docs)>(StringComparer.Ordinal);
        foreach (var (path, text) in files)
        {
            // A file that did not change is not parsed again (a push re-reads the whole directory).
            List<Doc> fileDocs = _parsed.TryGetValue(path, out var cached) && (ReferenceEquals(cached.Text, text) || cached.Text == text) ? cached.Docs : [.. Parse(path, text)];
            parsed[path] = (text, fileDocs);
            docs.AddRange(fileDocs);
        }
        _parsed = parsed;
        // Services, DestinationRules and their clusters depend on no VirtualService: while none of their
        // documents changed, they (and their resource objects) are reused, and so is each unchanged
        // VirtualService's translation — a route change costs one file, not the whole mesh.
        List<Doc> inputs = [.. docs.Where(d => d.Kind != "VirtualService")];
        if (_world == null || inputs.Count != _world.Inputs.Count || inputs.Where((d, i) => !ReferenceEquals(d, _world.Inputs[i])).Any())
        {
            _world = BuildWorld(inputs);
            _virtualServices.Clear();
        }
        World world = _world;
        var services = world.Services;
        var rules = world.Rules;
        var result = new List<(XdsResourceType, string, IMessage)>(world.Clusters);
        var routesByPort = new SortedDictionary<uint, RouteConfiguration>();
        var hosts = new Dictionary<string, VirtualHost>(StringComparer.Ordinal);
        foreach (var (number, name, domains) in world.Hosts)
        {
            if (!routesByPort.TryGetValue(number, out RouteConfiguration? routes))
            {
                routes = routesByPort[number] = new RouteConfiguration { Name = number.ToString(CultureInfo.InvariantCulture), IgnorePortInHostMatching = true };
            }
            var vhost = new VirtualHost { Name = name, Domains = { domains } };
            routes.VirtualHosts.Add(vhost);
            hosts[name] = vhost;
        }

        // VirtualServices replace the default route of the hosts they name.
        var claimed = new Dictionary<string, string>(StringComparer.Ordinal);
        var translated = new Dictionary<Doc, List<(string Host, string VirtualHost, List<Route> Routes)>>(ReferenceEqualityComparer.Instance);
        foreach (Doc d in docs.Where(d => d.Kind == "VirtualService"))
        {
            if (_virtualServices.TryGetValue(d, out var done))
            {
                foreach (var (host, name, routes) in done)
                {
                    if (!claimed.TryAdd(host, d.Origin))
                    {
                        throw new ConfigException($"{d.Origin}: spec.hosts: host '{host}' is already routed by {claimed[host]}");
                    }
                    hosts[name].Routes.AddRange(routes);
                }
                translated[d] = done;
                continue;
            }
            var mine = translated[d] = [];
            if (d.Spec["tcp"].Exists || d.Spec["tls"].Exists)
            {
                throw new ConfigException($"{d.Origin}: spec.tcp/spec.tls: only http routes are translated");
            }
            Refuse(d.Spec, ["hosts", "http", "gateways", "exportTo"], d.Origin);
            foreach (ConfigNode h in d.Spec["hosts"].Items)
            {
                string host = Resolve(h.RequiredString(), d.Namespace, services, $"{d.Origin}: {h.Path}");
                if (claimed.TryGetValue(host, out string? other))
                {
                    throw new ConfigException($"{d.Origin}: {h.Path}: host '{host}' is already routed by {other}");
                }
                claimed[host] = d.Origin;
                Service service = services[host];
                foreach (Port port in service.Ports)
                {
                    VirtualHost vhost = hosts[$"{host}:{port.Number}"];
                    int index = 0;
                    var routes = new List<Route>();
                    foreach (ConfigNode http in d.Spec["http"].Items)
                    {
                        routes.AddRange(HttpRoutes(http, index++, d, service, port, services, rules));
                    }
                    vhost.Routes.AddRange(routes);
                    mine.Add((host, vhost.Name, routes));
                }
            }
        }
        _virtualServices = translated;
        var reused = new Dictionary<string, (World World, VirtualHost Host)>(StringComparer.Ordinal);
        foreach (RouteConfiguration routes in routesByPort.Values)
        {
            for (int i = 0; i < routes.VirtualHosts.Count; i++)
            {
                VirtualHost vhost = routes.VirtualHosts[i];
                if (vhost.Routes.Count == 0)
                {
                    // No VirtualService: everything to the service's cluster, with Istio's default retries.
                    if (!world.DefaultRoutes.TryGetValue(vhost.Name, out Route? fallback))
                    {
                        string cluster = "outbound|" + vhost.Name[(vhost.Name.LastIndexOf(':') + 1)..] + "||" + vhost.Name[..vhost.Name.LastIndexOf(':')];
                        fallback = world.DefaultRoutes[vhost.Name] = new Route { Name = "default", Match = new RouteMatch { Prefix = "/" }, Route_ = new RouteAction { Cluster = cluster, Timeout = Duration.FromTimeSpan(TimeSpan.Zero), RetryPolicy = DefaultRetries() } };
                    }
                    vhost.Routes.Add(fallback);
                }
                // The same routes (by reference) as last time, in the same world: the same virtual host
                // object, so that the ADS server can reuse its encoded bytes.
                if (_hosts.TryGetValue(vhost.Name, out var previous) && ReferenceEquals(previous.World, world)
                    && previous.Host.Routes.Count == vhost.Routes.Count && previous.Host.Routes.Zip(vhost.Routes).All(static p => ReferenceEquals(p.First, p.Second)))
                {
                    routes.VirtualHosts[i] = vhost = previous.Host;
                }
                reused[vhost.Name] = (world, vhost);
            }
            result.Add((XdsResourceType.Route, routes.Name, routes));
            Listener outbound = OutboundListener(routes.Name);
            result.Add((XdsResourceType.Listener, outbound.Name, outbound));
        }
        _hosts = reused;
        if (VirtualOutbound)
        {
            // REDIRECT mode: iptables sends every outbound connection to 15001, where virtualOutbound hands
            // it to the listener of its original destination, or passes it through to where it was going.
            result.Add((XdsResourceType.Cluster, s_passthroughCluster.Name, s_passthroughCluster));
            result.Add((XdsResourceType.Cluster, s_blackHoleCluster.Name, s_blackHoleCluster));
            result.Add((XdsResourceType.Listener, s_virtualOutbound.Name, s_virtualOutbound));
        }
        return result;
    }

    private static readonly Cluster s_passthroughCluster = new()
    {
        Name = "PassthroughCluster",
        Type = Cluster.Types.DiscoveryType.OriginalDst,
        LbPolicy = Cluster.Types.LbPolicy.ClusterProvided,
        ConnectTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
    };

    // Istio's: a static cluster with no endpoints, for connections that must go nowhere.
    private static readonly Cluster s_blackHoleCluster = new()
    {
        Name = "BlackHoleCluster",
        Type = Cluster.Types.DiscoveryType.Static,
        ConnectTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
    };

    private static FilterChain TcpChain(string name, string cluster, FilterChainMatch? match = null) => new()
    {
        Name = name,
        FilterChainMatch = match,
        Filters =
        {
            new Filter
            {
                Name = "envoy.filters.network.tcp_proxy",
                TypedConfig = Any.Pack(new Proxy.Xds.Api.TcpProxy.TcpProxy { StatPrefix = cluster, Cluster = cluster }),
            },
        },
    };

    // As Istio writes it: its own port is a loop guard (a connection made to 15001 itself), all else passes through.
    private static readonly Listener s_virtualOutbound = new()
    {
        Name = "virtualOutbound",
        Address = new Address { SocketAddress = new SocketAddress { Address = "0.0.0.0", PortValue = 15001 } },
        UseOriginalDst = true,
        TrafficDirection = Listener.Types.TrafficDirection.Outbound,
        FilterChains =
        {
            TcpChain("virtualOutbound-blackhole", "BlackHoleCluster", new FilterChainMatch { DestinationPort = 15001 }),
            TcpChain("virtualOutbound-catchall-tcp", "PassthroughCluster"),
        },
    };

    private sealed record World(List<Doc> Inputs, Dictionary<string, Service> Services,
        Dictionary<string, (Doc Doc, ConfigNode Policy, Dictionary<string, (Dictionary<string, string> Labels, ConfigNode Policy)> Subsets)> Rules,
        List<(XdsResourceType, string, IMessage)> Clusters, List<(uint Port, string Name, string[] Domains)> Hosts)
    {
        /// <summary>Each service's default route (no VirtualService), made once per world.</summary>
        public Dictionary<string, Route> DefaultRoutes { get; } = new(StringComparer.Ordinal);
    }

    private World? _world;
    private Dictionary<string, (World World, VirtualHost Host)> _hosts = new(StringComparer.Ordinal);
    private Dictionary<Doc, List<(string Host, string VirtualHost, List<Route> Routes)>> _virtualServices = new(ReferenceEqualityComparer.Instance);

    /// <summary>Services (ServiceEntry, Service, WorkloadEntry), DestinationRules, and the clusters and endpoints they make.</summary>
    private World BuildWorld(List<Doc> inputs)
    {
        var services = new Dictionary<string, Service>(StringComparer.Ordinal);
        var workloads = new List<(string Namespace, Workload Workload)>();
        foreach (Doc d in inputs.Where(d => d.Kind == "WorkloadEntry"))
        {
            workloads.Add((d.Namespace, ReadWorkload(d.Spec, d.Origin)));
        }
        foreach (Doc d in inputs.Where(d => d.Kind is "ServiceEntry" or "Service"))
        {
            foreach (Service s in d.Kind == "Service" ? [ReadKubernetesService(d)] : ReadServiceEntry(d))
            {
                if (!services.TryAdd(s.Host, s))
                {
                    throw new ConfigException($"{d.Origin}: host '{s.Host}' is already defined by {services[s.Host].Origin}");
                }
                if (s.Selector != null)
                {
                    s.Endpoints.AddRange(workloads.Where(w => w.Namespace == s.Namespace && Matches(w.Workload.Labels, s.Selector)).Select(w => w.Workload));
                }
            }
        }
        var rules = new Dictionary<string, (Doc Doc, ConfigNode Policy, Dictionary<string, (Dictionary<string, string> Labels, ConfigNode Policy)> Subsets)>(StringComparer.Ordinal);
        foreach (Doc d in inputs.Where(d => d.Kind == "DestinationRule"))
        {
            string host = Resolve(d.Spec["host"].RequiredString(), d.Namespace, services, $"{d.Origin}: spec.host");
            var subsets = new Dictionary<string, (Dictionary<string, string>, ConfigNode)>(StringComparer.Ordinal);
            foreach (ConfigNode subset in d.Spec["subsets"].Items)
            {
                string name = subset["name"].RequiredString();
                if (!subsets.TryAdd(name, (Labels(subset["labels"]), subset["trafficPolicy"])))
                {
                    throw new ConfigException($"{d.Origin}: {subset.Path}: subset '{name}' appears twice");
                }
                Refuse(subset, ["name", "labels", "trafficPolicy"], d.Origin);
            }
            Refuse(d.Spec, ["host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"], d.Origin);
            if (!rules.TryAdd(host, (d, d.Spec["trafficPolicy"], subsets)))
            {
                throw new ConfigException($"{d.Origin}: a DestinationRule for '{host}' already comes from {rules[host].Doc.Origin}");
            }
        }

        var clusters = new List<(XdsResourceType, string, IMessage)>();
        var virtualHosts = new List<(uint, string, string[])>();
        foreach (Service service in services.Values.OrderBy(s => s.Host, StringComparer.Ordinal))
        {
            rules.TryGetValue(service.Host, out var rule);
            foreach (Port port in service.Ports)
            {
                AddCluster(clusters, service, port, null, rule.Policy, null);
                foreach (var (subset, (labels, policy)) in rule.Subsets ?? [])
                {
                    AddCluster(clusters, service, port, subset, policy.Exists ? policy : rule.Policy, labels);
                }
                virtualHosts.Add((port.Number, $"{service.Host}:{port.Number}", [.. Domains(service)]));
            }
        }
        return new World(inputs, services, rules, clusters, virtualHosts);
    }

    // ---- parsing ---------------------------------------------------------------------------------

    private static IEnumerable<Doc> Parse(string path, string text)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new ConfigException($"{path}: not valid YAML at line {e.Start.Line}, column {e.Start.Column}: {e.Message}");
        }
        for (int i = 0; i < stream.Documents.Count; i++)
        {
            var root = new ConfigNode(stream.Documents[i].RootNode, "");
            if (!root.IsMap)
            {
                continue; // an empty document between separators
            }
            string kind = root["kind"].String() ?? throw new ConfigException($"{path}: document {i + 1}: no kind");
            string apiVersion = root["apiVersion"].String() ?? "";
            string name = root["metadata"]["name"].String() ?? throw new ConfigException($"{path}: document {i + 1} ({kind}): metadata.name is required");
            string ns = root["metadata"]["namespace"].String() ?? "default";
            string origin = $"{path}: {kind} {ns}/{name}";
            bool istio = apiVersion is "networking.istio.io/v1alpha3" or "networking.istio.io/v1beta1" or "networking.istio.io/v1";
            if (kind is "VirtualService" or "DestinationRule" or "ServiceEntry" or "WorkloadEntry" && !istio)
            {
                throw new ConfigException($"{origin}: apiVersion '{apiVersion}' is not networking.istio.io v1alpha3, v1beta1 or v1");
            }
            if (kind == "Service" && apiVersion != "v1")
            {
                throw new ConfigException($"{origin}: apiVersion '{apiVersion}' is not v1");
            }
            if (kind is not ("VirtualService" or "DestinationRule" or "ServiceEntry" or "WorkloadEntry" or "Service"))
            {
                if (apiVersion.Contains("istio.io/", StringComparison.Ordinal))
                {
                    // Istio policy we would not apply (Gateway, Sidecar, EnvoyFilter, AuthorizationPolicy...): refused, not ignored.
                    throw new ConfigException($"{origin}: kind '{kind}' is not translated (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Service)");
                }
                continue; // Kubernetes workloads (Deployment...) carry no routing: skipped
            }
            yield return new Doc(kind, name, ns, root["spec"], origin);
        }
    }

    /// <summary>A field we do not translate is an error that names it.</summary>
    private static void Refuse(ConfigNode node, string[] known, string origin)
    {
        foreach (string key in node.Keys)
        {
            if (!known.Contains(key))
            {
                throw new ConfigException($"{origin}: {node[key].Path}: field '{key}' is not translated");
            }
        }
    }

    private static Dictionary<string, string> Labels(ConfigNode node)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string key in node.Keys)
        {
            labels[key] = node[key].String() ?? "";
        }
        return labels;
    }

    private static bool Matches(Dictionary<string, string> labels, Dictionary<string, string> selector) =>
        selector.All(kv => labels.TryGetValue(kv.Key, out string? v) && v == kv.Value);

    private static Workload ReadWorkload(ConfigNode spec, string origin)
    {
        Refuse(spec, ["address", "labels", "ports", "weight", "locality", "network", "serviceAccount"], origin);
        var ports = new Dictionary<string, uint>(StringComparer.Ordinal);
        foreach (string key in spec["ports"].Keys)
        {
            ports[key] = (uint)(spec["ports"][key].Integer() ?? 0);
        }
        string address = spec["address"].RequiredString();
        if (!System.Net.IPAddress.TryParse(address, out _))
        {
            throw new ConfigException($"{origin}: {spec["address"].Path}: '{address}' is not an IP address");
        }
        return new Workload(address, Labels(spec["labels"]), ports, origin);
    }

    private static List<Port> ReadPorts(ConfigNode ports, string origin, bool kubernetes)
    {
        var list = new List<Port>();
        foreach (ConfigNode p in ports.Items)
        {
            uint number = (uint)(p[kubernetes ? "port" : "number"].Integer() ?? throw new ConfigException($"{origin}: {p.Path}: port number required"));
            string name = p["name"].String() ?? "";
            string protocol = (kubernetes ? p["appProtocol"].String() : p["protocol"].String())?.ToUpperInvariant()
                ?? (name.Contains('-', StringComparison.Ordinal) ? name[..name.IndexOf('-', StringComparison.Ordinal)] : name).ToUpperInvariant();
            if (protocol is not ("HTTP" or "HTTP2" or "GRPC" or "GRPC-WEB" or "" or "TCP" or "K8S.IO/H2C" or "KUBERNETES.IO/H2C"))
            {
                throw new ConfigException($"{origin}: {p.Path}: protocol '{protocol}' is not translated (HTTP, HTTP2, GRPC)");
            }
            if (protocol == "TCP" || (kubernetes && protocol == "" && name.Length == 0 && p["protocol"].String() is "UDP" or "SCTP"))
            {
                continue; // not HTTP: no HTTP routes for it
            }
            list.Add(new Port(number, name, protocol is "HTTP2" or "GRPC" or "K8S.IO/H2C" or "KUBERNETES.IO/H2C"));
        }
        return list;
    }

    private static IEnumerable<Service> ReadServiceEntry(Doc d)
    {
        Refuse(d.Spec, ["hosts", "ports", "resolution", "endpoints", "workloadSelector", "location", "addresses", "exportTo"], d.Origin);
        string resolution = d.Spec["resolution"].String() ?? "NONE";
        if (resolution is not ("STATIC" or "NONE"))
        {
            throw new ConfigException($"{d.Origin}: spec.resolution: '{resolution}' is not translated (STATIC, or NONE with endpoints)");
        }
        List<Port> ports = ReadPorts(d.Spec["ports"], d.Origin, kubernetes: false);
        Dictionary<string, string>? selector = d.Spec["workloadSelector"].Exists ? Labels(d.Spec["workloadSelector"]["labels"]) : null;
        foreach (ConfigNode h in d.Spec["hosts"].Items)
        {
            var endpoints = new List<Workload>();
            foreach (ConfigNode e in d.Spec["endpoints"].Items)
            {
                endpoints.Add(ReadWorkload(e, d.Origin));
            }
            yield return new Service(h.RequiredString(), d.Namespace, ports, selector, endpoints, d.Origin);
        }
    }

    private static Service ReadKubernetesService(Doc d)
    {
        Dictionary<string, string>? selector = d.Spec["selector"].Exists ? Labels(d.Spec["selector"]) : null;
        return new Service($"{d.Name}.{d.Namespace}.svc.cluster.local", d.Namespace, ReadPorts(d.Spec["ports"], d.Origin, kubernetes: true), selector, [], d.Origin);
    }

    /// <summary>A host as written (short name, name.namespace, FQDN) to the service it means.</summary>
    private static string Resolve(string host, string ns, Dictionary<string, Service> services, string where)
    {
        foreach (string candidate in new[] { host, $"{host}.{ns}.svc.cluster.local", $"{host}.svc.cluster.local" })
        {
            if (services.ContainsKey(candidate))
            {
                return candidate;
            }
        }
        throw new ConfigException($"{where}: host '{host}' is not a known service (give it a ServiceEntry or Service)");
    }

    private static IEnumerable<string> Domains(Service service)
    {
        string host = service.Host;
        var names = new List<string> { host };
        string suffix = $".{service.Namespace}.svc.cluster.local";
        if (host.EndsWith(suffix, StringComparison.Ordinal))
        {
            string shortName = host[..^suffix.Length];
            names.Add(shortName);
            names.Add($"{shortName}.{service.Namespace}.svc");
            names.Add($"{shortName}.{service.Namespace}");
        }
        return names; // recent Istio: no ":port" variants, the route configuration ignores the port
    }

    // ---- clusters and endpoints ---------------------------------------------------------------------

    private static ConfigSource Ads() => new() { Ads = new AggregatedConfigSource(), ResourceApiVersion = ApiVersion.V3 };

    private static void AddCluster(List<(XdsResourceType, string, IMessage)> result, Service service, Port port, string? subset,
        ConfigNode policy, Dictionary<string, string>? labels)
    {
        string name = $"outbound|{port.Number}|{subset}|{service.Host}";
        var cluster = new Cluster
        {
            Name = name,
            Type = Cluster.Types.DiscoveryType.Eds,
            EdsClusterConfig = new Cluster.Types.EdsClusterConfig { EdsConfig = Ads(), ServiceName = name },
            ConnectTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
            LbPolicy = Cluster.Types.LbPolicy.LeastRequest,
        };
        if (port.Http2)
        {
            var options = new HttpProtocolOptions { ExplicitHttpConfig = new HttpProtocolOptions.Types.ExplicitHttpConfig { Http2ProtocolOptions = new Http2ProtocolOptions() } };
            cluster.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = Any.Pack(options);
        }
        if (policy.Exists)
        {
            ApplyTrafficPolicy(cluster, policy);
        }
        result.Add((XdsResourceType.Cluster, name, cluster));
        var locality = new LocalityLbEndpoints();
        foreach (Workload w in service.Endpoints)
        {
            if (labels != null && !Matches(w.Labels, labels))
            {
                continue;
            }
            uint target = w.Ports.TryGetValue(port.Name, out uint mapped) && mapped > 0 ? mapped : port.Number;
            locality.LbEndpoints.Add(new LbEndpoint
            {
                Endpoint = new Endpoint { Address = new Address { SocketAddress = new SocketAddress { Address = w.Address, PortValue = target } } },
                HealthStatus = HealthStatus.Healthy,
                LoadBalancingWeight = 1,
            });
        }
        var assignment = new ClusterLoadAssignment { ClusterName = name };
        if (locality.LbEndpoints.Count > 0)
        {
            assignment.Endpoints.Add(locality);
        }
        result.Add((XdsResourceType.Endpoint, name, assignment));
    }

    /// <summary>DestinationRule trafficPolicy: loadBalancer, connectionPool, outlierDetection.</summary>
    private static void ApplyTrafficPolicy(Cluster cluster, ConfigNode policy)
    {
        Refuse(policy, ["loadBalancer", "connectionPool", "outlierDetection"], cluster.Name);
        ConfigNode lb = policy["loadBalancer"];
        if (lb.Exists)
        {
            Refuse(lb, ["simple"], cluster.Name);
            cluster.LbPolicy = (lb["simple"].String() ?? "LEAST_REQUEST") switch
            {
                "ROUND_ROBIN" => Cluster.Types.LbPolicy.RoundRobin,
                "LEAST_REQUEST" or "LEAST_CONN" or "UNSPECIFIED" => Cluster.Types.LbPolicy.LeastRequest,
                "RANDOM" => Cluster.Types.LbPolicy.Random,
                string other => throw new ConfigException($"{cluster.Name}: {lb["simple"].Path}: '{other}' is not translated"),
            };
        }
        ConfigNode pool = policy["connectionPool"];
        if (pool.Exists)
        {
            Refuse(pool, ["tcp", "http"], cluster.Name);
            Refuse(pool["tcp"], ["maxConnections", "connectTimeout"], cluster.Name);
            Refuse(pool["http"], ["http1MaxPendingRequests", "http2MaxRequests", "maxRetries", "maxRequestsPerConnection", "idleTimeout"], cluster.Name);
            var thresholds = new CircuitBreakers.Types.Thresholds();
            if (pool["tcp"]["maxConnections"].Integer() is long c) { thresholds.MaxConnections = (uint)c; }
            if (pool["http"]["http1MaxPendingRequests"].Integer() is long p) { thresholds.MaxPendingRequests = (uint)p; }
            if (pool["http"]["http2MaxRequests"].Integer() is long r) { thresholds.MaxRequests = (uint)r; }
            if (pool["http"]["maxRetries"].Integer() is long m) { thresholds.MaxRetries = (uint)m; }
            cluster.CircuitBreakers = new CircuitBreakers { Thresholds = { thresholds } };
            if (Dur(pool["tcp"]["connectTimeout"]) is TimeSpan t)
            {
                cluster.ConnectTimeout = Duration.FromTimeSpan(t);
            }
            long? maxRequests = pool["http"]["maxRequestsPerConnection"].Integer();
            TimeSpan? idle = Dur(pool["http"]["idleTimeout"]);
            if (maxRequests != null || idle != null)
            {
                // As istiod does: the HttpProtocolOptions extension's common options (kept with its HTTP/2 choice).
                const string Key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
                HttpProtocolOptions options = cluster.TypedExtensionProtocolOptions.TryGetValue(Key, out Any? packed)
                    ? packed.Unpack<HttpProtocolOptions>()
                    : new HttpProtocolOptions { ExplicitHttpConfig = new HttpProtocolOptions.Types.ExplicitHttpConfig { HttpProtocolOptions = new Http1ProtocolOptions() } };
                options.CommonHttpProtocolOptions ??= new Proxy.Xds.Api.Core.HttpProtocolOptions();
                if (maxRequests is long max and > 0)
                {
                    options.CommonHttpProtocolOptions.MaxRequestsPerConnection = (uint)Math.Min(max, uint.MaxValue);
                }
                if (idle is TimeSpan timeout)
                {
                    options.CommonHttpProtocolOptions.IdleTimeout = Duration.FromTimeSpan(timeout);
                }
                cluster.TypedExtensionProtocolOptions[Key] = Any.Pack(options);
            }
        }
        ConfigNode outlier = policy["outlierDetection"];
        if (outlier.Exists)
        {
            Refuse(outlier, ["consecutive5xxErrors", "consecutiveErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime", "maxEjectionPercent"], cluster.Name);
            var od = new OutlierDetection();
            if ((outlier["consecutive5xxErrors"].Integer() ?? outlier["consecutiveErrors"].Integer()) is long x) { od.Consecutive5Xx = (uint)x; }
            if (outlier["consecutiveGatewayErrors"].Integer() is long g) { od.ConsecutiveGatewayFailure = (uint)g; }
            if (Dur(outlier["interval"]) is TimeSpan i) { od.Interval = Duration.FromTimeSpan(i); }
            if (Dur(outlier["baseEjectionTime"]) is TimeSpan b) { od.BaseEjectionTime = Duration.FromTimeSpan(b); }
            if (outlier["maxEjectionPercent"].Integer() is long mp) { od.MaxEjectionPercent = (uint)mp; }
            cluster.OutlierDetection = od;
        }
    }

    // ---- routes --------------------------------------------------------------------------------------

    private static RetryPolicy DefaultRetries() => new()
    {
        RetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        NumRetries = 2,
        RetryHostPredicate = { new RetryPolicy.Types.RetryHostPredicate { Name = "envoy.retry_host_predicates.previous_hosts" } },
        HostSelectionRetryMaxAttempts = 5,
        RetriableStatusCodes = { 503 },
    };

    private static IEnumerable<Route> HttpRoutes(ConfigNode http, int index, Doc d, Service service, Port port, Dictionary<string, Service> services,
        Dictionary<string, (Doc Doc, ConfigNode Policy, Dictionary<string, (Dictionary<string, string> Labels, ConfigNode Policy)> Subsets)> rules)
    {
        string where = $"{d.Origin}: {http.Path}";
        Refuse(http, ["name", "match", "route", "timeout", "retries", "fault", "mirror", "mirrorPercentage", "mirror_percent", "mirrorPercent", "rewrite", "headers", "corsPolicy"], d.Origin);
        if (!http["route"].Exists)
        {
            throw new ConfigException($"{where}: route is required (redirect and directResponse are not translated)");
        }
        var action = new RouteAction
        {
            Timeout = Duration.FromTimeSpan(Dur(http["timeout"]) ?? TimeSpan.Zero),
            MaxGrpcTimeout = Duration.FromTimeSpan(Dur(http["timeout"]) ?? TimeSpan.Zero),
        };
        string Cluster(ConfigNode destination)
        {
            Refuse(destination, ["host", "subset", "port"], d.Origin);
            string host = Resolve(destination["host"].RequiredString(), d.Namespace, services, $"{d.Origin}: {destination["host"].Path}");
            uint number = (uint)(destination["port"]["number"].Integer() ?? (services[host].Ports.Count == 1 ? services[host].Ports[0].Number : port.Number));
            if (!services[host].Ports.Any(p => p.Number == number))
            {
                throw new ConfigException($"{d.Origin}: {destination.Path}: port {number} is not a port of '{host}'");
            }
            string? subset = destination["subset"].String();
            if (subset != null && !(rules.TryGetValue(host, out var rule) && rule.Subsets.ContainsKey(subset)))
            {
                throw new ConfigException($"{d.Origin}: {destination["subset"].Path}: subset '{subset}' of '{host}' is not defined by a DestinationRule");
            }
            return $"outbound|{number}|{subset}|{host}";
        }
        var destinations = http["route"].Items.ToList();
        if (destinations.Count == 1)
        {
            Refuse(destinations[0], ["destination", "weight", "headers"], d.Origin);
            action.Cluster = Cluster(destinations[0]["destination"]);
        }
        else
        {
            var weighted = new WeightedCluster();
            foreach (ConfigNode r in destinations)
            {
                Refuse(r, ["destination", "weight", "headers"], d.Origin);
                weighted.Clusters.Add(new WeightedCluster.Types.ClusterWeight { Name = Cluster(r["destination"]), Weight = (uint)(r["weight"].Integer() ?? 0) });
            }
            action.WeightedClusters = weighted;
        }
        ConfigNode retries = http["retries"];
        if (retries.Exists)
        {
            Refuse(retries, ["attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"], d.Origin);
            long attempts = retries["attempts"].Integer() ?? 0;
            if (attempts > 0)
            {
                var policy = new RetryPolicy { NumRetries = (uint)attempts, RetryOn = retries["retryOn"].String() ?? "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes" };
                if (Dur(retries["perTryTimeout"]) is TimeSpan perTry)
                {
                    policy.PerTryTimeout = Duration.FromTimeSpan(perTry);
                }
                policy.RetriableStatusCodes.Add(503);
                action.RetryPolicy = policy;
            }
        }
        else
        {
            action.RetryPolicy = DefaultRetries();
        }
        ConfigNode rewrite = http["rewrite"];
        if (rewrite.Exists)
        {
            Refuse(rewrite, ["uri", "authority"], d.Origin);
            if (rewrite["uri"].String() is string uri)
            {
                action.PrefixRewrite = uri;
            }
            if (rewrite["authority"].String() is string authority)
            {
                action.HostRewriteLiteral = authority;
            }
        }
        ConfigNode mirror = http["mirror"];
        if (mirror.Exists)
        {
            var policy = new RouteAction.Types.RequestMirrorPolicy { Cluster = Cluster(mirror) };
            double percent = http["mirrorPercentage"]["value"].String() is string v ? double.Parse(v, CultureInfo.InvariantCulture) : http["mirrorPercent"].Integer() ?? http["mirror_percent"].Integer() ?? 100;
            policy.RuntimeFraction = new RuntimeFractionalPercent { DefaultValue = Fraction(percent) };
            action.RequestMirrorPolicies.Add(policy);
        }
        ConfigNode cors = http["corsPolicy"];
        if (cors.Exists)
        {
            Refuse(cors, ["allowOrigins", "allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders", "maxAge", "allowCredentials"], d.Origin);
            var policy = new CorsPolicy
            {
                AllowMethods = string.Join(",", cors["allowMethods"].Items.Select(i => i.String())),
                AllowHeaders = string.Join(",", cors["allowHeaders"].Items.Select(i => i.String())),
                ExposeHeaders = string.Join(",", cors["exposeHeaders"].Items.Select(i => i.String())),
            };
            if (Dur(cors["maxAge"]) is TimeSpan maxAge)
            {
                policy.MaxAge = ((long)maxAge.TotalSeconds).ToString(CultureInfo.InvariantCulture);
            }
            if (cors["allowCredentials"].Boolean() is bool credentials)
            {
                policy.AllowCredentials = credentials;
            }
            foreach (ConfigNode o in cors["allowOrigins"].Items)
            {
                policy.AllowOriginStringMatch.Add(Match(o, d.Origin));
            }
            foreach (ConfigNode o in cors["allowOrigin"].Items)
            {
                policy.AllowOriginStringMatch.Add(new StringMatcher { Exact = o.RequiredString() });
            }
            action.Cors = policy;
        }
        var matches = http["match"].Items.ToList();
        if (matches.Count == 0)
        {
            matches.Add(default);
        }
        foreach (ConfigNode match in matches)
        {
            var route = new Route
            {
                Name = http["name"].String() ?? $"{d.Name}.{index}",
                Match = RouteMatchOf(match, d.Origin),
                Route_ = action,
            };
            AddHeaders(route, http["headers"], d.Origin);
            AddFault(route, http["fault"], d.Origin);
            yield return route;
        }
    }

    private static Api.Type.FractionalPercent Fraction(double percent) =>
        new() { Numerator = (uint)Math.Round(percent * 10_000), Denominator = Api.Type.FractionalPercent.Types.DenominatorType.Million };

    private static StringMatcher Match(ConfigNode m, string origin)
    {
        Refuse(m, ["exact", "prefix", "regex"], origin);
        if (m["exact"].String() is string exact) { return new StringMatcher { Exact = exact }; }
        if (m["prefix"].String() is string prefix) { return new StringMatcher { Prefix = prefix }; }
        if (m["regex"].String() is string regex) { return new StringMatcher { SafeRegex = new RegexMatcher { Regex = regex } }; }
        throw new ConfigException($"{origin}: {m.Path}: needs exact, prefix or regex");
    }

    private static RouteMatch RouteMatchOf(ConfigNode match, string origin)
    {
        var result = new RouteMatch();
        if (!match.Exists)
        {
            result.Prefix = "/";
            return result;
        }
        Refuse(match, ["name", "uri", "headers", "method", "ignoreUriCase", "authority"], origin);
        ConfigNode uri = match["uri"];
        if (uri.Exists)
        {
            Refuse(uri, ["exact", "prefix", "regex"], origin);
            if (uri["exact"].String() is string exact) { result.Path = exact; }
            else if (uri["prefix"].String() is string prefix) { result.Prefix = prefix; }
            else if (uri["regex"].String() is string regex) { result.SafeRegex = new RegexMatcher { Regex = regex }; }
        }
        else
        {
            result.Prefix = "/";
        }
        result.CaseSensitive = match["ignoreUriCase"].Boolean() is not true;
        foreach (string name in match["headers"].Keys)
        {
            result.Headers.Add(new HeaderMatcher { Name = name.ToLowerInvariant(), StringMatch = Match(match["headers"][name], origin) });
        }
        if (match["method"].Exists)
        {
            result.Headers.Add(new HeaderMatcher { Name = ":method", StringMatch = Match(match["method"], origin) });
        }
        if (match["authority"].Exists)
        {
            result.Headers.Add(new HeaderMatcher { Name = ":authority", StringMatch = Match(match["authority"], origin) });
        }
        return result;
    }

    private static void AddHeaders(Route route, ConfigNode headers, string origin)
    {
        if (!headers.Exists)
        {
            return;
        }
        Refuse(headers, ["request", "response"], origin);
        foreach (var (side, add, remove) in new[] { ("request", route.RequestHeadersToAdd, route.RequestHeadersToRemove), ("response", route.ResponseHeadersToAdd, route.ResponseHeadersToRemove) })
        {
            ConfigNode h = headers[side];
            Refuse(h, ["set", "add", "remove"], origin);
            foreach (string name in h["set"].Keys)
            {
                add.Add(new HeaderValueOption { Header = new HeaderValue { Key = name, Value = h["set"][name].String() ?? "" }, AppendAction = HeaderValueOption.Types.HeaderAppendAction.OverwriteIfExistsOrAdd });
            }
            foreach (string name in h["add"].Keys)
            {
                add.Add(new HeaderValueOption { Header = new HeaderValue { Key = name, Value = h["add"][name].String() ?? "" }, AppendAction = HeaderValueOption.Types.HeaderAppendAction.AppendIfExistsOrAdd });
            }
            remove.AddRange(h["remove"].Items.Select(i => i.RequiredString()));
        }
    }

    private static void AddFault(Route route, ConfigNode fault, string origin)
    {
        if (!fault.Exists)
        {
            return;
        }
        Refuse(fault, ["delay", "abort"], origin);
        var http = new Api.Fault.HTTPFault();
        ConfigNode delay = fault["delay"];
        if (delay.Exists)
        {
            Refuse(delay, ["fixedDelay", "percentage", "percent"], origin);
            http.Delay = new Api.Fault.FaultDelay
            {
                FixedDelay = Duration.FromTimeSpan(Dur(delay["fixedDelay"]) ?? throw new ConfigException($"{origin}: {delay.Path}: fixedDelay is required")),
                Percentage = Fraction(Percent(delay)),
            };
        }
        ConfigNode abort = fault["abort"];
        if (abort.Exists)
        {
            Refuse(abort, ["httpStatus", "percentage", "percent"], origin);
            http.Abort = new Api.Fault.FaultAbort
            {
                HttpStatus = (uint)(abort["httpStatus"].Integer() ?? throw new ConfigException($"{origin}: {abort.Path}: httpStatus is required (grpcStatus is not translated)")),
                Percentage = Fraction(Percent(abort)),
            };
        }
        route.TypedPerFilterConfig["envoy.filters.http.fault"] = Any.Pack(http);
    }

    /// <summary>An Istio duration: Go's form ("50ms", "1h30m", "2.5s"), as the CRDs take it.</summary>
    private static TimeSpan? Dur(ConfigNode node)
    {
        string? text = node.String();
        if (text == null)
        {
            return null;
        }
        var match = System.Text.RegularExpressions.Regex.Match(text, @"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns))+$");
        if (!match.Success)
        {
            throw new ConfigException($"{node.Path}: '{text}' is not a duration such as \"50ms\", \"2s\" or \"1h30m\"");
        }
        double ticks = 0;
        for (int i = 0; i < match.Groups[1].Captures.Count; i++)
        {
            double value = double.Parse(match.Groups[1].Captures[i].Value, CultureInfo.InvariantCulture);
            ticks += match.Groups[2].Captures[i].Value switch
            {
                "h" => value * TimeSpan.TicksPerHour,
                "m" => value * TimeSpan.TicksPerMinute,
                "s" => value * TimeSpan.TicksPerSecond,
                "ms" => value * TimeSpan.TicksPerMillisecond,
                "us" or "µs" => value * 10,
                _ => value / 100,
            };
        }
        return TimeSpan.FromTicks((long)ticks);
    }

    private static double Percent(ConfigNode node) =>
        node["percentage"]["value"].String() is string v ? double.Parse(v, CultureInfo.InvariantCulture) : node["percent"].Integer() ?? 100;

    private Listener OutboundListener(string port)
    {
        var hcm = new HttpConnectionManager
        {
            StatPrefix = $"outbound_{ListenAddress}_{port}",
            Rds = new Rds { ConfigSource = Ads(), RouteConfigName = port },
            HttpFilters = { new HttpFilter { Name = "envoy.filters.http.router", TypedConfig = new Any { TypeUrl = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } } },
        };
        string address = BindOutboundListeners ? ListenAddress : "0.0.0.0";
        var listener = new Listener
        {
            Name = $"{address}_{port}",
            BindToPort = BindOutboundListeners ? null : false,
            Address = new Address { SocketAddress = new SocketAddress { Address = address, PortValue = uint.Parse(port, CultureInfo.InvariantCulture) } },
            TrafficDirection = Listener.Types.TrafficDirection.Outbound,
            FilterChains = { new FilterChain { Filters = { new Filter { Name = "envoy.filters.network.http_connection_manager", TypedConfig = Any.Pack(hcm) } } } },
        };
        if (VirtualOutbound)
        {
            // Intercepted traffic, as Istio shapes a port's listener: HTTP (as http_inspector finds it)
            // by the routes, anything else to the original destination (PassthroughCluster).
            listener.FilterChains[0].FilterChainMatch = new FilterChainMatch { TransportProtocol = "raw_buffer", ApplicationProtocols = { "http/1.1", "h2c" } };
            listener.ListenerFilters.Add(new ListenerFilter { Name = "envoy.filters.listener.tls_inspector", TypedConfig = new Any { TypeUrl = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" } });
            listener.ListenerFilters.Add(new ListenerFilter { Name = "envoy.filters.listener.http_inspector", TypedConfig = new Any { TypeUrl = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" } });
            listener.ListenerFiltersTimeout = Duration.FromTimeSpan(TimeSpan.Zero);
            listener.ContinueOnListenerFiltersTimeout = true;
            listener.DefaultFilterChain = TcpChain("PassthroughFilterChain", "PassthroughCluster");
        }
        return listener;
    }
}
