using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Host.Bootstrap;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>Envoy's filesystem subscription: LDS/CDS/RDS from files, applied live when the files change.</summary>
public sealed class FileSubscriptionTests
{
    private static string Lds() => $$"""
        resources:
        - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
          name: files
          address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
          filter_chains:
          - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                rds:
                  route_config_name: local
                  config_source: { path_config_source: { path: "{{"{{RDS}}"}}" } }
        """;

    private static string Rds(string answer) => $$"""
        version_info: "{{answer}}"
        resources:
        - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
          name: local
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: { prefix: "/" }
              direct_response: { status: 200, body: { inline_string: "{{answer}}" } }
        """;

    /// <summary>Replaces a file the way Envoy's docs ask for: write elsewhere, then rename over it.</summary>
    private static void Replace(string path, string text)
    {
        string temp = path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }

    [Fact]
    public async Task ChangedFiles_AreAppliedLive_AndABrokenOneIsRejected()
    {
        string dir = Directory.CreateTempSubdirectory("layotto-files").FullName;
        string lds = Path.Combine(dir, "lds.yaml");
        string rds = Path.Combine(dir, "rds.yaml");
        File.WriteAllText(rds, Rds("one"));
        File.WriteAllText(lds, Lds().Replace("{{RDS}}", rds, StringComparison.Ordinal));
        string bootstrap = $$"""
            dynamic_resources:
              lds_config: { path_config_source: { path: "{{lds}}" } }
            """;
        var pools = new UpstreamPools();
        (ProxySnapshot, IReadOnlyList<string>) Load()
        {
            var loader = new BootstrapLoader(pools);
            ProxySnapshot snapshot = loader.Load(bootstrap, "test");
            return (snapshot, loader.WatchedFiles);
        }
        var (initial, files) = Load();
        await using var server = new ProxyServer(initial, pools);
        server.Start();
        await using var watcher = new FileConfigWatcher(server, files, Load, TimeSpan.FromMilliseconds(100));
        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{server.Listeners[0].LocalEndPoint.Port}") };
        try
        {
            Assert.Equal("one", await client.GetStringAsync("/"));

            Replace(rds, Rds("two"));
            string answer = "";
            for (int i = 0; i < 100 && answer != "two"; i++)
            {
                await Task.Delay(50);
                answer = await client.GetStringAsync("/");
            }
            Assert.Equal("two", answer);
            Assert.True(watcher.Applied >= 1);

            Replace(rds, "resources: [ { \"@type\": broken");
            for (int i = 0; i < 40 && watcher.Rejected == 0; i++)
            {
                await Task.Delay(50);
            }
            Assert.True(watcher.Rejected >= 1);
            Assert.Equal("two", await client.GetStringAsync("/")); // the last good configuration keeps serving
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
