using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using EndToEnd.Tests.Abuse;

namespace EndToEnd.Tests;

/// <summary>
/// The lifetime of upstream connections, as a cluster's common_http_protocol_options set it:
/// max_requests_per_connection (a connection carries so many requests, then the next one opens) and
/// idle_timeout (a connection with no request for so long is closed by the proxy), for HTTP/1.1 and
/// HTTP/2 clusters alike. The upstream answers with the id of the connection each request came on.
/// </summary>
public sealed class UpstreamConnectionLifetimeTests : IAsyncLifetime
{
    private WebApplication? _upstream;
    private int _h2Port, _h1Port;
    private readonly Dictionary<string, Cluster> _clusters = [];

    public async Task InitializeAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2);
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1);
        });
        WebApplication app = builder.Build();
        app.MapGet("/{**any}", static (HttpContext context) => context.Connection.Id);
        await app.StartAsync();
        _upstream = app;
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToList();
        _h2Port = new Uri(addresses[0]).Port;
        _h1Port = new Uri(addresses[1]).Port;
    }

    public async Task DisposeAsync()
    {
        if (_upstream != null)
        {
            await _upstream.DisposeAsync();
        }
    }

    private ProxyServer StartProxy(TimeSpan idleTimeout, int maxRequests)
    {
        var pools = new UpstreamPools();
        ClusterState h1State = pools.ClusterState("h1"), h2State = pools.ClusterState("h2");
        var h1 = new Cluster("h1", UpstreamProtocol.Http1, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, _h1Port), UpstreamProtocol.Http1, cluster: h1State)], TimeSpan.FromSeconds(5))
        {
            State = h1State,
            IdleTimeout = idleTimeout,
            MaxRequestsPerConnection = maxRequests,
        };
        var h2 = new Cluster("h2", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, _h2Port), UpstreamProtocol.Http2, cluster: h2State)], TimeSpan.FromSeconds(5))
        {
            State = h2State,
            IdleTimeout = idleTimeout,
            MaxRequestsPerConnection = maxRequests,
        };
        var host = new VirtualHost("all", ["*"],
        [
            new Route("h1", PathMatchKind.Prefix, "/h1", h1, TimeSpan.Zero),
            new Route("h2", PathMatchKind.Prefix, "/h2", h2, TimeSpan.Zero),
        ]);
        _clusters["h1"] = h1;
        _clusters["h2"] = h2;
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0), new RouteConfiguration("r", [host]));
        var proxy = new ProxyServer(new ProxySnapshot([listener], [h1, h2], 1), pools);
        proxy.Start();
        return proxy;
    }

    private static async Task<string[]> ConnectionIdsAsync(ProxyServer proxy, string path, int requests, TimeSpan pause = default)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var ids = new string[requests];
        for (int i = 0; i < requests; i++)
        {
            if (i > 0 && pause > TimeSpan.Zero)
            {
                await Task.Delay(pause);
            }
            ids[i] = await http.GetStringAsync($"http://127.0.0.1:{proxy.Listeners[0].LocalEndPoint.Port}{path}");
        }
        return ids;
    }

    [Theory]
    [InlineData("/h1")]
    [InlineData("/h2")]
    public async Task MaxRequestsPerConnection_OpensTheNextConnection(string path)
    {
        await using ProxyServer proxy = StartProxy(Cluster.DefaultIdleTimeout, maxRequests: 2);
        string[] ids = await ConnectionIdsAsync(proxy, path, 6);
        // One after another: two requests on each connection, in order.
        Assert.Equal(3, ids.Distinct().Count());
        for (int i = 0; i < ids.Length; i += 2)
        {
            Assert.Equal(ids[i], ids[i + 1]);
        }
        Assert.NotEqual(ids[1], ids[2]);
    }

    [Theory]
    [InlineData("/h1")]
    [InlineData("/h2")]
    public async Task WithoutALimit_OneConnectionCarriesEveryRequest(string path)
    {
        await using ProxyServer proxy = StartProxy(Cluster.DefaultIdleTimeout, maxRequests: 0);
        string[] ids = await ConnectionIdsAsync(proxy, path, 6, TimeSpan.FromMilliseconds(300));
        Assert.Single(ids.Distinct());
    }

    [Theory]
    [InlineData("/h1")]
    [InlineData("/h2")]
    public async Task IdleTimeout_ClosesTheIdleConnection_AndTheNextRequestOpensAnother(string path)
    {
        await using ProxyServer proxy = StartProxy(TimeSpan.FromMilliseconds(200), maxRequests: 0);
        string first = (await ConnectionIdsAsync(proxy, path, 1))[0];
        Cluster cluster = _clusters[path.TrimStart('/')];
        UpstreamPool pool = cluster.Endpoints[0].Pool;
        Assert.Equal(1, pool.OpenConnections);
        // Closed by the sweep, with no request to notice it.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (pool.OpenConnections != 0)
        {
            await Task.Delay(20, cts.Token);
        }
        string second = (await ConnectionIdsAsync(proxy, path, 1))[0];
        Assert.NotEqual(first, second);
        // Requests closer together than the timeout share the connection.
        string[] close = await ConnectionIdsAsync(proxy, path, 4, TimeSpan.FromMilliseconds(50));
        Assert.Single(close.Distinct());
    }

    [Theory]
    [InlineData("h1")]
    [InlineData("h2")]
    public async Task AnIdleProxy_WithAPooledConnection_SleepsInsteadOfTicking(string protocol)
    {
        // The published binary holds a pooled upstream connection with Envoy's hour-long idle_timeout:
        // its sweep must not keep the event loop waking every wheel tick (10 ms) while nothing happens.
        await using AotProxy proxy = await AotProxy.StartAsync(protocol == "h1" ? _h1Port : _h2Port, protocol);
        using (var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) })
        {
            Assert.NotEmpty(await http.GetStringAsync($"http://127.0.0.1:{proxy.Port}/any"));
        }
        await Task.Delay(500);
        long before = ContextSwitches(proxy.ProcessId);
        await Task.Delay(2000);
        long switches = ContextSwitches(proxy.ProcessId) - before;
        Assert.True(switches < 60, $"{switches} context switches in 2 s of idleness (a 10 ms tick makes 200 or more)");
    }

    /// <summary>Context switches of every thread of process <paramref name="pid"/> so far.</summary>
    private static long ContextSwitches(int pid)
    {
        long total = 0;
        foreach (string task in Directory.GetDirectories($"/proc/{pid}/task"))
        {
            try
            {
                foreach (string line in File.ReadLines(Path.Combine(task, "status")))
                {
                    if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                    {
                        total += long.Parse(line[(line.IndexOf(':') + 1)..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
                    }
                }
            }
            catch (IOException)
            {
                // a thread that ended meanwhile
            }
        }
        return total;
    }
}
