using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Proxy.Xds.Api.Cluster;
using Proxy.Xds.Api.Core;
using Proxy.Xds.Api.Endpoint;
using Proxy.Xds.Api.Hcm;
using Proxy.Xds.Api.Listener;
using Proxy.Xds.Api.Matcher;
using Proxy.Xds.Api.Route;
using HttpProtocolOptions = Proxy.Xds.Api.UpstreamHttp.HttpProtocolOptions;
using Cluster = Proxy.Xds.Api.Cluster.Cluster;
using Filter = Proxy.Xds.Api.Listener.Filter;
using Listener = Proxy.Xds.Api.Listener.Listener;
using RouteConfiguration = Proxy.Xds.Api.Route.RouteConfiguration;
using VirtualHost = Proxy.Xds.Api.Route.VirtualHost;

namespace Xds.ControlPlane;

/// <summary>
/// Resources in the shape istiod sends for a client sidecar of service `server` (port 9090, subsets v1
/// and v2): EDS subset clusters over ADS, a listener whose HTTP connection manager takes RDS "9090"
/// after an Istio network filter of a type we do not know, and the route configuration of the seed
/// scenario (see ../shared/testdata/xds/README.md).
/// </summary>
public static class MeshResources
{
    public const string Host = "server.default.svc.cluster.local";

    public static string ClusterName(string subset) => $"outbound|9090|{subset}|{Host}";

    public static ConfigSource Ads(Duration? initialFetchTimeout = null) => new()
    {
        Ads = new AggregatedConfigSource(),
        ResourceApiVersion = ApiVersion.V3,
        InitialFetchTimeout = initialFetchTimeout,
    };

    public static Cluster EdsCluster(string name)
    {
        var options = new HttpProtocolOptions
        {
            ExplicitHttpConfig = new HttpProtocolOptions.Types.ExplicitHttpConfig { Http2ProtocolOptions = new Http2ProtocolOptions() },
        };
        return new Cluster
        {
            Name = name,
            Type = Cluster.Types.DiscoveryType.Eds,
            EdsClusterConfig = new Cluster.Types.EdsClusterConfig { EdsConfig = Ads(), ServiceName = name },
            ConnectTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
            LbPolicy = Cluster.Types.LbPolicy.LeastRequest,
            CircuitBreakers = new CircuitBreakers
            {
                Thresholds = { new CircuitBreakers.Types.Thresholds { MaxConnections = 4294967295, MaxPendingRequests = 4294967295, MaxRequests = 4294967295, MaxRetries = 4294967295 } },
            },
            TypedExtensionProtocolOptions = { ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = Any.Pack(options) },
        };
    }

    public static ClusterLoadAssignment Endpoints(string cluster, params int[] ports)
    {
        var locality = new LocalityLbEndpoints { Locality = new Locality { Region = "local" } };
        foreach (int port in ports)
        {
            locality.LbEndpoints.Add(new LbEndpoint
            {
                Endpoint = new Endpoint { Address = new Address { SocketAddress = new SocketAddress { Address = "127.0.0.1", PortValue = (uint)port } } },
                HealthStatus = HealthStatus.Healthy,
                LoadBalancingWeight = 1,
            });
        }
        return new ClusterLoadAssignment { ClusterName = cluster, Endpoints = { locality } };
    }

    public static Listener HttpListener(string name, int port, string routeName, Duration? rdsInitialFetchTimeout = null)
    {
        var hcm = new HttpConnectionManager
        {
            StatPrefix = "outbound_0.0.0.0_9090",
            Rds = new Rds { ConfigSource = Ads(rdsInitialFetchTimeout), RouteConfigName = routeName },
            HttpFilters =
            {
                new HttpFilter { Name = "istio.stats", TypedConfig = new Any { TypeUrl = "type.googleapis.com/udpa.type.v1.TypedStruct", Value = ByteString.CopyFromUtf8("\n\u0004test") } },
                new HttpFilter { Name = "envoy.filters.http.router", TypedConfig = new Any { TypeUrl = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
            },
        };
        return new Listener
        {
            Name = name,
            Address = new Address { SocketAddress = new SocketAddress { Address = "127.0.0.1", PortValue = (uint)port } },
            TrafficDirection = Listener.Types.TrafficDirection.Outbound,
            FilterChains =
            {
                new FilterChain
                {
                    Filters =
                    {
                        // Istio's metadata exchange comes first: a type we do not know, to be skipped.
                        new Filter { Name = "istio.metadata_exchange", TypedConfig = new Any { TypeUrl = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange", Value = ByteString.CopyFromUtf8("\n\u0005istio") } },
                        new Filter { Name = "envoy.filters.network.http_connection_manager", TypedConfig = Any.Pack(hcm) },
                    },
                },
            },
        };
    }

    /// <summary>`name: layotto` → v1, everything else → v2. <paramref name="legacy"/>: Istio 1.5's exact_match instead of string_match.</summary>
    public static RouteConfiguration HeaderRoutes(string name, bool legacy = false)
    {
        var header = new HeaderMatcher { Name = "name" };
        if (legacy)
        {
            header.ExactMatch = "layotto";
        }
        else
        {
            header.StringMatch = new StringMatcher { Exact = "layotto" };
        }
        return Routes(name,
            new Route { Match = new RouteMatch { Prefix = "/", CaseSensitive = true, Headers = { header } }, Route_ = ToCluster(ClusterName("v1")) },
            new Route { Match = new RouteMatch { Prefix = "/" }, Route_ = ToCluster(ClusterName("v2")) });
    }

    /// <summary>Everything to one subset.</summary>
    public static RouteConfiguration AllTo(string name, string subset) =>
        Routes(name, new Route { Match = new RouteMatch { Prefix = "/" }, Route_ = ToCluster(ClusterName(subset)) });

    public static RouteAction ToCluster(string cluster) => new()
    {
        Cluster = cluster,
        Timeout = Duration.FromTimeSpan(TimeSpan.Zero),
        MaxGrpcTimeout = Duration.FromTimeSpan(TimeSpan.Zero),
        RetryPolicy = new RetryPolicy
        {
            RetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            NumRetries = 2,
            RetryHostPredicate = { new RetryPolicy.Types.RetryHostPredicate { Name = "envoy.retry_host_predicates.previous_hosts" } },
            HostSelectionRetryMaxAttempts = 5,
            RetriableStatusCodes = { 503 },
        },
    };

    public static RouteConfiguration Routes(string name, params Route[] routes)
    {
        var host = new VirtualHost
        {
            Name = $"{Host}:9090",
            Domains = { Host, "server", "server.default.svc", "server.default", "10.96.0.10" },
        };
        host.Routes.AddRange(routes);
        return new RouteConfiguration
        {
            Name = name,
            IgnorePortInHostMatching = true,
            VirtualHosts =
            {
                host,
                new VirtualHost { Name = "allow_any", Domains = { "*" }, Routes = { new Route { Match = new RouteMatch { Prefix = "/" }, Route_ = ToCluster("PassthroughCluster") } } },
            },
        };
    }

    /// <summary>
    /// A big mesh for the push bars: <paramref name="services"/> services, each an EDS cluster with
    /// the endpoints at <paramref name="ports"/> and a virtual host with one route (Istio's: prefix "/",
    /// retry policy, timeouts), all in one route configuration.
    /// </summary>
    public static (Cluster[] Clusters, ClusterLoadAssignment[] Endpoints, RouteConfiguration Routes) BigMesh(int services, int[] ports, string routeName)
    {
        var clusters = new Cluster[services];
        var assignments = new ClusterLoadAssignment[services];
        var routes = new RouteConfiguration { Name = routeName, IgnorePortInHostMatching = true };
        for (int i = 0; i < services; i++)
        {
            string service = $"svc{i}.ns{i % 20}.svc.cluster.local";
            string cluster = $"outbound|9090||{service}";
            clusters[i] = EdsCluster(cluster);
            assignments[i] = Endpoints(cluster, ports);
            routes.VirtualHosts.Add(new VirtualHost
            {
                Name = $"{service}:9090",
                Domains = { service, $"svc{i}", $"svc{i}.ns{i % 20}.svc", $"svc{i}.ns{i % 20}" },
                Routes =
                {
                    new Route
                    {
                        Name = "default",
                        Match = new RouteMatch { Prefix = "/" },
                        Route_ = ToCluster(cluster),
                    },
                },
            });
        }
        return (clusters, assignments, routes);
    }
}
