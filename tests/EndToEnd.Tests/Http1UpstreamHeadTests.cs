using System.Net;
using System.Net.Sockets;
using System.Text;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace EndToEnd.Tests;

/// <summary>
/// Response heads from an HTTP/1.1 upstream that do not come in one read: a whole head is found and parsed
/// in one pass, one that comes in parts is searched for its end from where the last search stopped. Both
/// must give the same answer, refuse a bare LF, and bound the head's size.
/// </summary>
public sealed class Http1UpstreamHeadTests
{
    private static byte[] Response(int longValue) => Encoding.ASCII.GetBytes(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Long: " + new string('v', longValue) + "\r\nX-Tail: t\r\nContent-Length: 5\r\n\r\nhello");

    [Theory]
    [InlineData(1)]      // an octet at a time
    [InlineData(7)]
    [InlineData(4096)]   // the head (and body) whole
    public async Task ResponseHead_InPartsOrWhole_IsForwarded(int piece)
    {
        byte[] response = Response(3000);
        (string answer, _) = await ExchangeAsync(response, piece, waitForClose: false);
        Assert.StartsWith("HTTP/1.1 200 ", answer, StringComparison.Ordinal);
        Assert.Contains("x-tail: t", answer, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("x-long: " + new string('v', 3000), answer, StringComparison.OrdinalIgnoreCase);
        Assert.EndsWith("\r\n\r\nhello", answer, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(4096, true)]
    [InlineData(1, false)]      // no end follows: refused at the bare LF, not left waiting for one
    [InlineData(4096, false)]
    public async Task ResponseHead_WithABareLf_IsRefused(int piece, bool ended)
    {
        byte[] response = Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5" + (ended ? "\r\n\r\nhello" : ""));
        await AssertRefusedAsync(response, piece);
    }

    [Theory]
    [InlineData(1000)]
    [InlineData(100_000)]
    public async Task ResponseHead_LargerThan64KiB_IsRefused(int piece)
    {
        await AssertRefusedAsync(Response(70_000), piece);
    }

    /// <summary>
    /// The cluster's max_headers_count bounds the field lines of a response head (Envoy's default 100), in
    /// one read or many: one more than it allows is an upstream protocol error, exactly as many pass.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    public async Task ResponseHead_OverTheClustersMaxHeadersCount_IsRefused(int piece)
    {
        byte[] response = Response(10); // four field lines
        (string answer, _) = await ExchangeAsync(response, piece, waitForClose: false, maxHeadersCount: 4);
        Assert.StartsWith("HTTP/1.1 200 ", answer, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\nhello", answer, StringComparison.Ordinal);
        await AssertRefusedAsync(response, piece, maxHeadersCount: 3);
    }

    /// <summary>
    /// The proxy gives up on the upstream at once (it closes the connection; the upstream would wait 10 s)
    /// and answers as Envoy does to an upstream that broke before its response: 503.
    /// </summary>
    private static async Task AssertRefusedAsync(byte[] response, int piece, int maxHeadersCount = 100)
    {
        (string answer, bool closedByProxy) = await ExchangeAsync(response, piece, waitForClose: true, maxHeadersCount);
        Assert.True(closedByProxy, "the proxy kept waiting on a head it should have refused");
        Assert.StartsWith("HTTP/1.1 503 ", answer, StringComparison.Ordinal);
        Assert.EndsWith("upstream reset before response\n", answer, StringComparison.Ordinal);
    }

    /// <summary>
    /// One GET through the proxy to an upstream that writes <paramref name="response"/> in pieces of
    /// <paramref name="piece"/> octets, then (if told to) waits up to 10 s for the proxy to close the connection.
    /// </summary>
    private static async Task<(string Answer, bool ClosedByProxy)> ExchangeAsync(byte[] response, int piece, bool waitForClose, int maxHeadersCount = 100)
    {
        using var upstreamListener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        upstreamListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        upstreamListener.Listen();
        Task<bool> upstream = Task.Run(async () =>
        {
            using Socket s = await upstreamListener.AcceptAsync();
            s.NoDelay = true;
            var buffer = new byte[8192];
            var request = new StringBuilder();
            while (!request.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                int n = await s.ReceiveAsync(buffer);
                if (n == 0)
                {
                    return false;
                }
                request.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            try
            {
                for (int i = 0; i < response.Length; i += piece)
                {
                    await s.SendAsync(response.AsMemory(i, Math.Min(piece, response.Length - i)));
                    if (piece < 100 && i % 64 == 0)
                    {
                        await Task.Delay(1); // let the proxy see the head in many reads
                    }
                }
            }
            catch (SocketException)
            {
                return true; // the proxy closed the connection before the whole response was sent
            }
            if (!waitForClose)
            {
                return false;
            }
            try
            {
                using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                return await s.ReceiveAsync(buffer, wait.Token) == 0;
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException)
            {
                return e is SocketException; // a reset is a close too
            }
        });

        var pools = new UpstreamPools();
        ClusterState state = pools.ClusterState("c");
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, ((IPEndPoint)upstreamListener.LocalEndPoint!).Port), UpstreamProtocol.Http1, cluster: state)], TimeSpan.FromSeconds(5))
        {
            MaxHeadersCount = maxHeadersCount,
            State = state,
        };
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0),
            new RouteConfiguration("r", [new VirtualHost("v", ["*"], [new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero)])]));
        await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
        proxy.Start();

        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await client.ConnectAsync(IPAddress.Loopback, proxy.Listeners[0].LocalEndPoint.Port);
        await client.SendAsync("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"u8.ToArray());
        var received = new MemoryStream();
        var chunk = new byte[65536];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int read;
        while ((read = await client.ReceiveAsync(chunk, cts.Token)) > 0)
        {
            received.Write(chunk, 0, read);
        }
        string answer = Encoding.ASCII.GetString(received.ToArray());
        return (answer, await upstream.WaitAsync(TimeSpan.FromSeconds(20)));
    }
}
