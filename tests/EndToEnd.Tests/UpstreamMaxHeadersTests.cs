using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace EndToEnd.Tests;

/// <summary>
/// A cluster's max_headers_count bounds the fields of an HTTP/2 upstream's response header block, as
/// Envoy's codec client does: a block with more is malformed, its stream reset, the client answered 5xx.
/// </summary>
public sealed class UpstreamMaxHeadersTests
{
    [Theory]
    [InlineData(100, HttpStatusCode.OK)]
    [InlineData(10, HttpStatusCode.ServiceUnavailable)]
    public async Task Http2ResponseBlock_IsHeldToTheClustersMaxHeadersCount(int maxHeadersCount, HttpStatusCode expected)
    {
        var (app, port) = await VersionUpstream.StartAsync("v", a => a.MapGet("/many", (HttpContext c) =>
        {
            for (int i = 0; i < 20; i++)
            {
                c.Response.Headers[$"x-h{i}"] = "1";
            }
            return "many";
        }));
        await using (app)
        {
            var pools = new UpstreamPools();
            ClusterState state = pools.ClusterState("c");
            var cluster = new Cluster("c", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, port), UpstreamProtocol.Http2, cluster: state)], TimeSpan.FromSeconds(5))
            {
                MaxHeadersCount = maxHeadersCount,
                State = state,
            };
            var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0),
                new RouteConfiguration("r", [new VirtualHost("v", ["*"], [new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero)])]));
            await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
            proxy.Start();

            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
            using HttpResponseMessage response = await client.GetAsync($"http://127.0.0.1:{proxy.Listeners[0].LocalEndPoint.Port}/many");
            Assert.Equal(expected, response.StatusCode);
            if (expected == HttpStatusCode.OK)
            {
                Assert.Equal("1", response.Headers.GetValues("x-h19").Single());
                Assert.Equal("many", await response.Content.ReadAsStringAsync());
            }
        }
    }
}
