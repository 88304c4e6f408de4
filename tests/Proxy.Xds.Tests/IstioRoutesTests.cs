using System.Text.Json;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;
using Proxy.Http2;

namespace Proxy.Xds.Tests;

/// <summary>Real Istio route configurations (../shared/testdata/xds) load, and route as Envoy would.</summary>
public sealed class IstioRoutesTests
{
    private static string TestData(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(dir.FullName, "shared", "testdata"), Path.Combine(dir.FullName, "..", "shared", "testdata") })
            {
                if (Directory.Exists(Path.Combine(candidate, "xds")))
                {
                    return Path.Combine([candidate, .. parts]);
                }
            }
        }
        throw new DirectoryNotFoundException("shared/testdata beside the checkout");
    }

    /// <summary>Every route_config inside a config dump, with a placeholder cluster for each name it refers to.</summary>
    private static List<(string Name, RouteConfiguration Routes, BootstrapLoader Loader)> LoadDump(string file)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(TestData("xds", file)));
        var result = new List<(string, RouteConfiguration, BootstrapLoader)>();
        foreach (JsonElement config in doc.RootElement.GetProperty("configs").EnumerateArray())
        {
            foreach (string section in new[] { "dynamic_route_configs", "static_route_configs" })
            {
                if (!config.TryGetProperty(section, out JsonElement list))
                {
                    continue;
                }
                foreach (JsonElement entry in list.EnumerateArray())
                {
                    JsonElement routeConfig = entry.GetProperty("route_config");
                    var clusters = new Dictionary<string, Cluster>(StringComparer.Ordinal);
                    CollectClusters(routeConfig, clusters);
                    var loader = new BootstrapLoader(new UpstreamPools());
                    RouteConfiguration routes = loader.LoadRouteConfiguration(routeConfig.GetRawText(), file, clusters);
                    result.Add((routeConfig.TryGetProperty("name", out JsonElement n) ? n.GetString()! : "", routes, loader));
                }
            }
        }
        return result;
    }

    private static void CollectClusters(JsonElement element, Dictionary<string, Cluster> clusters)
    {
        if (element.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonProperty p in element.EnumerateObject())
            {
                if ((p.Name == "cluster" || (p.Name == "name" && element.TryGetProperty("weight", out _))) && p.Value.ValueKind == JsonValueKind.String)
                {
                    string name = p.Value.GetString()!;
                    clusters.TryAdd(name, new Cluster(name, UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(10)));
                }
                CollectClusters(p.Value, clusters);
            }
        }
        else if (element.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement item in element.EnumerateArray())
            {
                CollectClusters(item, clusters);
            }
        }
    }

    private static HeaderList Request(string path)
    {
        var headers = new HeaderList();
        headers.Add(":method"u8, "GET"u8);
        headers.Add(":path"u8, System.Text.Encoding.ASCII.GetBytes(path));
        return headers;
    }

    [Fact]
    public void CurrentIstio_GatewayRoutes_LoadAndMatch()
    {
        var all = LoadDump("istio-master/config_dump-route-and-subset-cluster.json");
        var (_, routes, loader) = Assert.Single(all, r => r.Name == "http.8080");
        VirtualHost host = routes.FindVirtualHost("bookinfo.example:80"u8)!;
        Route product = host.FindRoute("/productpage"u8, Request("/productpage"), false)!;
        Assert.Equal("outbound|9080||productpage.default.svc.cluster.local", product.Cluster!.Name);
        Assert.Equal(TimeSpan.Zero, product.Timeout);
        Assert.Null(host.FindRoute("/nowhere"u8, Request("/nowhere"), false));
        // Istio's default retry policy and max_grpc_timeout (0s: grpc-timeout unbounded) are honoured.
        Assert.DoesNotContain(loader.Warnings, w => w.Contains(".retry_policy", StringComparison.Ordinal) || w.Contains("max_grpc_timeout", StringComparison.Ordinal));
        RetryPolicy retry = product.Action.RetryPolicy!;
        Assert.Equal(2, retry.NumRetries);
        Assert.True(retry.AvoidPreviousHosts);
        Assert.Equal(5, retry.HostSelectionRetryMaxAttempts);
        Assert.Equal([503], retry.RetriableStatusCodes);
        Assert.True(retry.OnConnectFailure);
        Assert.True(retry.OnResponse(503, -1));
        Assert.True(retry.OnResponse(200, 14)); // gRPC UNAVAILABLE in a trailers-only response
        Assert.False(retry.OnResponse(500, -1));
        Assert.Equal(TimeSpan.Zero, product.Action.MaxGrpcTimeout);
        Assert.Equal(loader.Warnings.Count, loader.Warnings.Distinct().Count());
        Assert.Equal(loader.Warnings.Count, loader.Warnings.Distinct().Count());
    }

    [Fact]
    public void Istio15_ProductpageSidecarRoutes_LoadAndMatch()
    {
        var all = LoadDump("istio-1.5/config_dump-productpage-v2api.json");
        Assert.NotEmpty(all);
        var (_, routes, _) = Assert.Single(all, r => r.Name == "9080");
        VirtualHost reviews = routes.FindVirtualHost("reviews:9080"u8)!;
        Route route = reviews.FindRoute("/reviews/0"u8, Request("/reviews/0"), false)!;
        Assert.StartsWith("outbound|9080|", route.Cluster!.Name, StringComparison.Ordinal);
    }
}
