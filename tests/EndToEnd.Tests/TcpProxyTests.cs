using System.Net;
using System.Net.Sockets;
using System.Text;
using Proxy.Core;
using Proxy.Core.Diagnostics;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>The tcp_proxy network filter over real sockets: the cluster's max_connections bounds relayed connections, and idle_timeout ends silent ones.</summary>
public sealed class TcpProxyTests(ProxyFixture upstream) : IClassFixture<ProxyFixture>, IAsyncLifetime
{
    private readonly string _cluster = $"tcp-{Guid.NewGuid():N}";
    private ProxyServer? _proxy;

    private int Port => _proxy!.Listeners[0].LocalEndPoint.Port;

    public Task InitializeAsync()
    {
        string bootstrap = $$"""
            static_resources:
              listeners:
              - name: tcp
                address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
                filter_chains:
                - filters:
                  - name: envoy.filters.network.tcp_proxy
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: "{{_cluster}}", idle_timeout: 1s }
              clusters:
              - name: "{{_cluster}}"
                circuit_breakers: { thresholds: [ { max_connections: 1 } ] }
                load_assignment: { cluster_name: c, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream.HttpUpstreamPort}} } } } } ] } ] }
            """;
        var pools = new UpstreamPools();
        _proxy = new ProxyServer(new BootstrapLoader(pools).Load(bootstrap, "tcp"), pools);
        _proxy.Start();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_proxy != null)
        {
            await _proxy.DisposeAsync();
        }
    }

    private async Task<Socket> ConnectAsync()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, Port);
        return socket;
    }

    /// <summary>Sends a request and reads until the response head is in, or the connection ends ("" then).</summary>
    private static async Task<string> AskAsync(Socket socket)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes("GET /headers HTTP/1.1\r\nHost: x\r\n\r\n"), SocketFlags.None);
        var received = new StringBuilder();
        var buffer = new byte[4096];
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            while (!received.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, limit.Token);
                if (n == 0)
                {
                    break;
                }
                received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
        }
        catch (SocketException)
        {
        }
        return received.ToString();
    }

    private long Overflows() => ((Counter)StatsStore.Default.All().Single(s => s.Name == $"cluster.{_cluster}.upstream_cx_overflow")).Total;

    [Fact]
    public async Task MaxConnections_BoundsRelayedConnections_AndASlotFreesWhenOneCloses()
    {
        using (Socket first = await ConnectAsync())
        {
            Assert.StartsWith("HTTP/1.1 200", await AskAsync(first), StringComparison.Ordinal);
            using Socket second = await ConnectAsync();
            Assert.Equal("", await AskAsync(second)); // closed: the cluster is at max_connections
            Assert.Equal(1, Overflows());
        }
        // The first one's slot is free again once its session has ended.
        for (var until = DateTime.UtcNow.AddSeconds(5); ; await Task.Delay(50))
        {
            using Socket again = await ConnectAsync();
            if ((await AskAsync(again)).StartsWith("HTTP/1.1 200", StringComparison.Ordinal))
            {
                break;
            }
            Assert.True(DateTime.UtcNow < until, "the slot was never released");
        }
    }

    [Fact]
    public async Task IdleTimeout_EndsASilentConnection()
    {
        using Socket silent = await ConnectAsync();
        Assert.StartsWith("HTTP/1.1 200", await AskAsync(silent), StringComparison.Ordinal);
        var buffer = new byte[16];
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var started = DateTime.UtcNow;
        int n;
        try
        {
            n = await silent.ReceiveAsync(buffer, SocketFlags.None, limit.Token);
        }
        catch (SocketException)
        {
            n = 0;
        }
        Assert.Equal(0, n);
        Assert.InRange(DateTime.UtcNow - started, TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(9));
    }
}
