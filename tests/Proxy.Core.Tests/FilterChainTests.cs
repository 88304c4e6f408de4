using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using Proxy.Core.Listeners;
using Proxy.Core.Routing;
using Proxy.Core.Transport;

namespace Proxy.Core.Tests;

public sealed class FilterChainTests
{
    private static readonly RouteConfiguration s_routes = new("", [], false);

    private static FilterChain Chain(string name, FilterChainMatch match) =>
        new(name, match, new ListenerConfig(name, new IPEndPoint(IPAddress.Any, 15006), s_routes));

    private static CidrRange Cidr(string address, int bits) => new(IPAddress.Parse(address), bits);

    private static string? Pick(FilterChain[] chains, string destination, string transport = "raw_buffer", string[]? alpn = null, string? sni = null, string source = "10.1.1.1:40000", FilterChain? fallback = null) =>
        FilterChainSelector.Select(chains, fallback, new ConnectionFacts(IPEndPoint.Parse(destination), IPEndPoint.Parse(source), transport, sni, alpn ?? [])) is { } c ? c.Name : null;

    // Istio's virtualInbound (without its TLS chains): a port's own chain, the HTTP and TCP catch-alls, and the loop guard.
    private static readonly FilterChain[] s_virtualInbound =
    [
        Chain("virtualInbound-blackhole", new FilterChainMatch { DestinationPort = 15006 }),
        Chain("virtualInbound-catchall-http", new FilterChainMatch { PrefixRanges = [Cidr("0.0.0.0", 0)], TransportProtocol = "raw_buffer", ApplicationProtocols = ["http/1.1", "h2c"] }),
        Chain("virtualInbound", new FilterChainMatch { PrefixRanges = [Cidr("0.0.0.0", 0)], TransportProtocol = "raw_buffer" }),
        Chain("0.0.0.0_80", new FilterChainMatch { DestinationPort = 80, TransportProtocol = "raw_buffer" }),
    ];

    [Fact]
    public void IstioVirtualInbound_PortChainFirst_ThenHttpByAlpn_ThenTcp_AndTheLoopGuard()
    {
        Assert.Equal("0.0.0.0_80", Pick(s_virtualInbound, "10.0.0.5:80", alpn: ["http/1.1"]));
        Assert.Equal("0.0.0.0_80", Pick(s_virtualInbound, "10.0.0.5:80"));
        Assert.Equal("virtualInbound-catchall-http", Pick(s_virtualInbound, "10.0.0.5:8080", alpn: ["h2c"]));
        Assert.Equal("virtualInbound", Pick(s_virtualInbound, "10.0.0.5:8080"));
        Assert.Equal("virtualInbound-blackhole", Pick(s_virtualInbound, "10.0.0.5:15006"));
        // TLS (no TLS chain here): nothing matches; the default chain, when there is one, takes it.
        Assert.Null(Pick(s_virtualInbound, "10.0.0.5:8080", transport: "tls"));
        FilterChain fallback = Chain("default", FilterChainMatch.All);
        Assert.Equal("default", Pick(s_virtualInbound, "10.0.0.5:8080", transport: "tls", fallback: fallback));
        // IPv6 destinations do not fall in 0.0.0.0/0.
        Assert.Null(Pick(s_virtualInbound, "[fd00::5]:8080"));
    }

    [Fact]
    public void MostSpecificWinsAtEachCriterion_WithoutBacktracking()
    {
        FilterChain[] prefixes =
        [
            Chain("wide", new FilterChainMatch { PrefixRanges = [Cidr("10.0.0.0", 8)] }),
            Chain("narrow", new FilterChainMatch { PrefixRanges = [Cidr("10.1.2.0", 24)] }),
            Chain("any", FilterChainMatch.All),
        ];
        Assert.Equal("narrow", Pick(prefixes, "10.1.2.3:80"));
        Assert.Equal("wide", Pick(prefixes, "10.9.9.9:80"));
        Assert.Equal("any", Pick(prefixes, "192.168.0.1:80"));

        // Port 443 has a chain of its own for one server name: another name on 443 does not fall back
        // to the port-less chain (Envoy does not backtrack).
        FilterChain[] names =
        [
            Chain("exact", new FilterChainMatch { DestinationPort = 443, ServerNames = ["api.example.com"] }),
            Chain("wildcard", new FilterChainMatch { DestinationPort = 443, ServerNames = ["*.example.com"] }),
            Chain("portless", FilterChainMatch.All),
        ];
        Assert.Equal("exact", Pick(names, "10.0.0.1:443", "tls", sni: "api.example.com"));
        Assert.Equal("wildcard", Pick(names, "10.0.0.1:443", "tls", sni: "www.example.com"));
        Assert.Null(Pick(names, "10.0.0.1:443", "tls", sni: "other.org"));
        Assert.Equal("portless", Pick(names, "10.0.0.1:444", "tls", sni: "other.org"));

        FilterChain[] sources =
        [
            Chain("local", new FilterChainMatch { SourceType = ConnectionSourceType.SameIpOrLoopback }),
            Chain("external", new FilterChainMatch { SourceType = ConnectionSourceType.External, SourcePorts = [1234] }),
            Chain("rest", new FilterChainMatch { SourceType = ConnectionSourceType.External }),
        ];
        Assert.Equal("local", Pick(sources, "10.0.0.1:80", source: "127.0.0.1:5555"));
        Assert.Equal("local", Pick(sources, "10.0.0.1:80", source: "10.0.0.1:5555"));
        Assert.Equal("external", Pick(sources, "10.0.0.1:80", source: "10.0.0.2:1234"));
        // The source-port criterion comes after the source type: among the EXTERNAL chains, the one
        // listing no ports takes other ports.
        Assert.Equal("rest", Pick(sources, "10.0.0.1:80", source: "10.0.0.2:1235"));
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, "http/1.1")]
    [InlineData("POST /x?y HTTP/1.0\r\n", true, "http/1.0")]
    [InlineData("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true, "h2c")]
    [InlineData("PRI * HTTP/2", false, null)]
    [InlineData("GET /very/long/path", false, null)]
    [InlineData("SSH-2.0-OpenSSH_9.6\r\n", true, null)]
    [InlineData("GET / HTTP/2.0\r\n", true, null)]
    [InlineData("\u0001\u0002\u0003", true, null)]
    public void HttpInspector_NamesTheProtocol_OrAsksForMore(string text, bool decided, string? protocol)
    {
        ConnectionInspector.Verdict verdict = ConnectionInspector.Inspect(Encoding.Latin1.GetBytes(text), tls: true, http: true);
        Assert.Equal(decided, verdict.Decided);
        if (decided)
        {
            Assert.Equal("raw_buffer", verdict.TransportProtocol);
            Assert.Equal(protocol == null ? [] : [protocol], verdict.ApplicationProtocols);
        }
    }

    [Fact]
    public void Inspectors_NeverThrow_OnHostileOctets()
    {
        Assert.Equal("tls", ConnectionInspector.Inspect([0x16, 0x03, 0x01, 0x00, 0x00], tls: true, http: true).TransportProtocol);
        Assert.False(ConnectionInspector.Inspect([0x16, 0x03, 0x01, 0x00, 0x40, 0x01], tls: true, http: true).Decided);
        var random = new Random(1234);
        for (int i = 0; i < 20_000; i++)
        {
            var data = new byte[random.Next(1, 600)];
            random.NextBytes(data);
            if (i % 2 == 0)
            {
                // A TLS record header with a handshake, then noise: every length field is hostile.
                data[0] = 0x16;
                if (data.Length > 1)
                {
                    data[1] = 0x03;
                }
                if (data.Length > 5)
                {
                    data[5] = 0x01;
                }
            }
            ConnectionInspector.Verdict verdict = ConnectionInspector.Inspect(data, tls: true, http: true);
            Assert.NotNull(verdict.ApplicationProtocols);
        }
    }

    [Fact]
    public async Task TlsInspector_ReadsSniAndAlpn_FromARealClientHello_WithoutConsumingIt()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new TcpClient();
        await client.ConnectAsync((IPEndPoint)listener.LocalEndPoint!);
        using Socket server = await listener.AcceptAsync();
        using var tls = new SslStream(client.GetStream(), false);
        Task handshake = tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "Reviews.Default.Svc",
            ApplicationProtocols = [new SslApplicationProtocol("istio-http/1.1"), SslApplicationProtocol.Http11],
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
        });
        ConnectionInspector.Verdict? verdict = await ConnectionInspector.InspectAsync(server, tls: true, http: true, TimeSpan.FromSeconds(10), false, CancellationToken.None);
        Assert.NotNull(verdict);
        Assert.Equal("tls", verdict.Value.TransportProtocol);
        Assert.Equal("reviews.default.svc", verdict.Value.ServerName);
        Assert.Equal(["istio-http/1.1", "http/1.1"], verdict.Value.ApplicationProtocols);
        // Peeked, not read: the ClientHello is still there for whoever serves the connection.
        var first = new byte[5];
        Assert.Equal(5, await server.ReceiveAsync(first, SocketFlags.None));
        Assert.Equal(0x16, first[0]);
        client.Close();
        await Assert.ThrowsAnyAsync<Exception>(() => handshake);
    }

    [Fact]
    public async Task Inspection_WaitsForTheRestOfARequestLine_AndGivesUpOnTimeout()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(2);
        using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await client.ConnectAsync(listener.LocalEndPoint!);
            using Socket server = await listener.AcceptAsync();
            await client.SendAsync("GET /a"u8.ToArray(), SocketFlags.None);
            Task<ConnectionInspector.Verdict?> inspecting = ConnectionInspector.InspectAsync(server, tls: true, http: true, TimeSpan.FromSeconds(10), false, CancellationToken.None);
            await Task.Delay(100);
            Assert.False(inspecting.IsCompleted);
            await client.SendAsync(" HTTP/1.1\r\n\r\n"u8.ToArray(), SocketFlags.None);
            Assert.Equal(["http/1.1"], (await inspecting)!.Value.ApplicationProtocols);
        }
        using (var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await silent.ConnectAsync(listener.LocalEndPoint!);
            using Socket server = await listener.AcceptAsync();
            Assert.Null(await ConnectionInspector.InspectAsync(server, tls: true, http: true, TimeSpan.FromMilliseconds(200), false, CancellationToken.None));
            ConnectionInspector.Verdict? carryOn = await ConnectionInspector.InspectAsync(server, tls: true, http: true, TimeSpan.FromMilliseconds(200), true, CancellationToken.None);
            Assert.Equal("raw_buffer", carryOn!.Value.TransportProtocol);
            Assert.Empty(carryOn.Value.ApplicationProtocols);
        }
    }
}
