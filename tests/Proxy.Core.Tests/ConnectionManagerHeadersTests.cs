using System.Net;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Tests;

public sealed class ConnectionManagerHeadersTests
{
    private static readonly IPEndPoint s_peer = IPEndPoint.Parse("10.0.0.9:40000");

    private static string? Client(ConnectionManagerHeaders policy, params string[] xff)
    {
        var headers = new HeaderList();
        headers.Add(":method"u8, "GET"u8);
        foreach (string value in xff)
        {
            headers.Add("x-forwarded-for"u8, System.Text.Encoding.ASCII.GetBytes(value));
        }
        IPEndPoint? client = policy.ClientAddress(headers, s_peer);
        return ReferenceEquals(client, s_peer) ? "peer" : client?.Address.ToString();
    }

    [Fact]
    public void TrustedClientAddress_FollowsEnvoysXffRules()
    {
        var sidecar = new ConnectionManagerHeaders();
        // use_remote_address false: the rightmost address, or with N trusted hops the (N+1)th from the right.
        Assert.Equal("peer", Client(sidecar));
        Assert.Equal("192.0.2.1", Client(sidecar, "203.0.113.7, 192.0.2.1"));
        Assert.Equal("203.0.113.7", Client(new ConnectionManagerHeaders { XffNumTrustedHops = 1 }, "203.0.113.7, 192.0.2.1"));
        Assert.Equal("peer", Client(new ConnectionManagerHeaders { XffNumTrustedHops = 2 }, "203.0.113.7, 192.0.2.1"));
        // Several fields read as one list, in order.
        Assert.Equal("198.51.100.4", Client(new ConnectionManagerHeaders { XffNumTrustedHops = 1 }, "198.51.100.4", "192.0.2.1"));
        // use_remote_address true: the peer, or with N trusted hops the Nth from the right.
        Assert.Equal("peer", Client(new ConnectionManagerHeaders { UseRemoteAddress = true }, "203.0.113.7, 192.0.2.1"));
        Assert.Equal("192.0.2.1", Client(new ConnectionManagerHeaders { UseRemoteAddress = true, XffNumTrustedHops = 1 }, "203.0.113.7, 192.0.2.1"));
        Assert.Equal("203.0.113.7", Client(new ConnectionManagerHeaders { UseRemoteAddress = true, XffNumTrustedHops = 2 }, "203.0.113.7,192.0.2.1"));
        // Not an address where one is wanted: the peer.
        Assert.Equal("peer", Client(sidecar, "203.0.113.7, unknown"));
        Assert.Equal("2001:db8::1", Client(sidecar, "2001:db8::1"));
    }
}
