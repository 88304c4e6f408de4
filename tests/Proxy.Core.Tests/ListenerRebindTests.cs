using System.Net;
using System.Net.Sockets;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Core.Tests;

/// <summary>
/// A snapshot that hands one listener's address to another (renamed, or swapped with a move) binds it:
/// listeners bind without SO_REUSEPORT, so the one leaving must let go of the address first.
/// </summary>
public sealed class ListenerRebindTests
{
    private static readonly RouteConfiguration s_routes = new("", [], false);

    private static int FreePort()
    {
        using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private static ListenerConfig Listener(string name, int port) => new(name, new IPEndPoint(IPAddress.Loopback, port), s_routes);

    private static async Task<bool> AcceptsAsync(int port)
    {
        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    [Fact]
    public async Task RenamedOrTakenOver_TheNewListenerBindsTheAddressTheOldOneLeft()
    {
        int p = FreePort(), q = FreePort();
        Assert.NotEqual(p, q);
        await using var server = new ProxyServer(new ProxySnapshot([Listener("a", p)], [], 1), new UpstreamPools());
        server.Start();
        Assert.True(await AcceptsAsync(p));

        // Renamed: "b" takes "a"'s address.
        await server.ApplyAsync(new ProxySnapshot([Listener("b", p)], [], 2));
        Assert.Equal(p, Assert.Single(server.Listeners).LocalEndPoint.Port);
        Assert.True(await AcceptsAsync(p));

        // Swapped: "c" (listed first) takes p while "b" moves to q.
        await server.ApplyAsync(new ProxySnapshot([Listener("c", p), Listener("b", q)], [], 3));
        Assert.Equal(new[] { p, q }.Order(), server.Listeners.Select(l => l.LocalEndPoint.Port).Order());
        Assert.True(await AcceptsAsync(p));
        Assert.True(await AcceptsAsync(q));
    }
}
