using System.Net;
using System.Net.Sockets;
using System.Text;
using EndToEnd.Tests.Abuse;

namespace EndToEnd.Tests;

/// <summary>
/// HTTP/1.1 upstreams that answer in the less common ways, through the published binary: a body that
/// ends when the upstream closes (the close often arriving on the same edge as the last octets), 1xx
/// before the final response, and fields the Connection header names, which are not passed on.
/// </summary>
public sealed class UpstreamFramingTests : IAsyncDisposable
{
    private readonly Socket _listener = new(SocketType.Stream, ProtocolType.Tcp);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;

    private static readonly Dictionary<string, string> s_answers = new()
    {
        ["/ten"] = "HTTP/1.0 200 OK\r\n\r\nten",
        ["/until-close"] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
        ["/hints"] = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ["/hints-then-close"] = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
        ["/no-content"] = "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: 3\r\n\r\n",
        ["/hop"] = "HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok",
    };

    public UpstreamFramingTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(64);
        _accepting = AcceptAsync();
    }

    private int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            _ = AnswerAsync(client);
        }
    }

    /// <summary>One request per connection; the answer goes out in one send, then the connection closes.</summary>
    private static async Task AnswerAsync(Socket client)
    {
        using (client)
        {
            var buffer = new byte[8192];
            int length = 0;
            while (Encoding.ASCII.GetString(buffer, 0, length).IndexOf("\r\n\r\n", StringComparison.Ordinal) < 0)
            {
                int n = await client.ReceiveAsync(buffer.AsMemory(length));
                if (n == 0)
                {
                    return;
                }
                length += n;
            }
            string request = Encoding.ASCII.GetString(buffer, 0, length);
            string path = request.Split(' ')[1];
            if (path == "/echo-head")
            {
                // The request head as it arrived, as the body.
                string head = request[..(request.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)];
                await client.SendAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {head.Length}\r\n\r\n{head}"));
                return;
            }
            await client.SendAsync(Encoding.ASCII.GetBytes(s_answers.GetValueOrDefault(path, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")));
        }
    }

    [Fact]
    public async Task BodiesUntilClose_1xx_AndConnectionNamedFields()
    {
        await using AotProxy proxy = await AotProxy.StartAsync(Port, "h1");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        for (int i = 0; i < 25; i++)
        {
            Assert.Equal("ten", await http.GetStringAsync($"http://127.0.0.1:{proxy.Port}/ten"));
            Assert.Equal("until close", await http.GetStringAsync($"http://127.0.0.1:{proxy.Port}/until-close"));
        }
        Assert.Equal("ok", await http.GetStringAsync($"http://127.0.0.1:{proxy.Port}/hints"));
        // An interim response does not start the response: the upstream going away after it is a 503.
        using (HttpResponseMessage lost = await http.GetAsync($"http://127.0.0.1:{proxy.Port}/hints-then-close"))
        {
            Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, lost.StatusCode);
        }
        using HttpResponseMessage hop = await http.GetAsync($"http://127.0.0.1:{proxy.Port}/hop");
        Assert.Equal("ok", await hop.Content.ReadAsStringAsync());
        Assert.False(hop.Headers.Contains("x-secret"), "a field the Connection header names went downstream");
        Assert.Equal("2", hop.Headers.GetValues("x-kept").Single());
        Assert.DoesNotContain("Exception", proxy.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A204WithContentLength_LosesIt_ForHttp11AndHttp2Clients()
    {
        // RFC 9110 §8.6: no Content-Length on a 204, whatever the upstream sent; curl over HTTP/2 refuses
        // a 204 that announces 5 octets and ends with none.
        await using AotProxy proxy = await AotProxy.StartAsync(Port, "h1");
        foreach (string protocol in new[] { "--http1.1", "--http2-prior-knowledge" })
        {
            var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", "-i", protocol, "--max-time", "10", $"http://127.0.0.1:{proxy.Port}/no-content"]);
            Assert.True(exit == 0, $"{protocol}: curl exit {exit}: {stderr}");
            Assert.Matches("^HTTP/[12.]+ 204", stdout);
            Assert.Contains("x-kept: 3", stdout, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("content-length", stdout, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public async Task CookieCrumbsFromHttp2_ReachAnHttp11Upstream_AsOneField()
    {
        // RFC 9113 §8.2.3: an HTTP/2 client may split Cookie into one field per pair; before the request
        // leaves HTTP/2 they are joined with "; ", in order (an HTTP/1.1 server reads one Cookie line).
        await using AotProxy proxy = await AotProxy.StartAsync(Port, "h1");
        var (exit, stdout, stderr) = await Processes.RunAsync("nghttp", ["-H", "cookie: a=1", "-H", "x-between: 1", "-H", "cookie: b=2", "-H", "cookie: c=3",
            $"http://127.0.0.1:{proxy.Port}/echo-head"]);
        Assert.True(exit == 0, $"nghttp exit {exit}: {stderr}");
        Assert.Contains("\r\ncookie: a=1; b=2; c=3\r\n", stdout, StringComparison.Ordinal);
        Assert.Single(stdout.Split("\r\n"), l => l.StartsWith("cookie:", StringComparison.OrdinalIgnoreCase));
        Assert.Contains("x-between: 1", stdout, StringComparison.Ordinal);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _accepting;
        _stop.Dispose();
    }
}
