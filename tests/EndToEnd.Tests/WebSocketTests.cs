using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using EndToEnd.Tests.Abuse;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace EndToEnd.Tests;

/// <summary>
/// WebSocket through the published binary (Istio turns upgrade_configs websocket on for every connection
/// manager): .NET's ClientWebSocket → proxy → Kestrel's WebSocket echo, messages both ways, large ones
/// under backpressure, a clean close; plain requests keep working on their own connections.
/// </summary>
public sealed class WebSocketTests : IAsyncLifetime
{
    private WebApplication _app = null!;
    private int _port;

    public async Task InitializeAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1));
        _app = builder.Build();
        _app.UseWebSockets();
        _app.Run(async context =>
        {
            if (!context.WebSockets.IsWebSocketRequest)
            {
                await context.Response.WriteAsync("plain " + context.Request.Path);
                return;
            }
            using WebSocket socket = await context.WebSockets.AcceptWebSocketAsync();
            var buffer = new byte[1 << 20];
            while (true)
            {
                int length = 0;
                ValueWebSocketReceiveResult result;
                do
                {
                    result = await socket.ReceiveAsync(buffer.AsMemory(length), CancellationToken.None);
                    length += result.Count;
                }
                while (!result.EndOfMessage);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                    return;
                }
                await socket.SendAsync(buffer.AsMemory(0, length), result.MessageType, true, CancellationToken.None);
            }
        });
        await _app.StartAsync();
        _port = new Uri(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
    }

    public async Task DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    [Fact]
    public async Task WebSocket_ThroughTheBinary_EchoesBothWays_AndClosesCleanly()
    {
        await using AotProxy proxy = await AotProxy.StartAsync(_port, "h1");
        using var client = new ClientWebSocket();
        await client.ConnectAsync(new Uri($"ws://127.0.0.1:{proxy.Port}/chat"), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(WebSocketState.Open, client.State);

        var receive = new byte[4 << 20];
        for (int i = 0; i < 20; i++)
        {
            byte[] message = Encoding.UTF8.GetBytes($"hello {i}");
            await client.SendAsync(message, WebSocketMessageType.Text, true, CancellationToken.None);
            Assert.Equal($"hello {i}", Encoding.UTF8.GetString(receive, 0, await ReceiveMessageAsync(client, receive)));
        }
        // A message larger than the proxy's per-connection buffer limit (1 MiB): the tunnel holds back and goes on.
        byte[] large = new byte[3 << 20];
        Random.Shared.NextBytes(large);
        // Kestrel's echo takes up to 1 MiB per message; send 3 messages of 1 MiB back to back before reading.
        for (int part = 0; part < 3; part++)
        {
            await client.SendAsync(large.AsMemory(part << 20, 1 << 20), WebSocketMessageType.Binary, true, CancellationToken.None);
        }
        for (int part = 0; part < 3; part++)
        {
            int length = await ReceiveMessageAsync(client, receive);
            Assert.Equal(1 << 20, length);
            Assert.True(receive.AsSpan(0, length).SequenceEqual(large.AsSpan(part << 20, 1 << 20)), $"part {part} differs");
        }

        await client.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(WebSocketState.Closed, client.State);
        Assert.Equal("bye", client.CloseStatusDescription);

        // The proxy still serves plain requests.
        using var http = new HttpClient();
        Assert.Equal("plain /after", await http.GetStringAsync($"http://127.0.0.1:{proxy.Port}/after"));
    }

    [Fact]
    public async Task UpgradeOnTheWire_Is101WithTheHandshake_AndDataFlowsBeforeAndAfter()
    {
        await using AotProxy proxy = await AotProxy.StartAsync(_port, "h1");
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, proxy.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("GET /raw HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"));
        string head = await ReadHeadAsync(socket);
        Assert.StartsWith("HTTP/1.1 101 ", head);
        Assert.Contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("upgrade: websocket", head, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("connection: upgrade", head, StringComparison.OrdinalIgnoreCase);
        // A masked text frame "hi" (RFC 6455 §5.7) comes back unmasked.
        await socket.SendAsync(new byte[] { 0x81, 0x82, 1, 2, 3, 4, (byte)('h' ^ 1), (byte)('i' ^ 2) });
        var frame = new byte[4];
        int read = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (read < 4)
        {
            read += await socket.ReceiveAsync(frame.AsMemory(read), cts.Token);
        }
        Assert.Equal(new byte[] { 0x81, 0x02, (byte)'h', (byte)'i' }, frame);
    }

    private static async Task<string> ReadHeadAsync(Socket socket)
    {
        var received = new List<byte>();
        var one = new byte[1];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (received.Count < 4 || !(received[^4] == '\r' && received[^3] == '\n' && received[^2] == '\r' && received[^1] == '\n'))
        {
            Assert.Equal(1, await socket.ReceiveAsync(one, cts.Token));
            received.Add(one[0]);
        }
        return Encoding.ASCII.GetString(received.ToArray());
    }

    private static async Task<int> ReceiveMessageAsync(ClientWebSocket client, byte[] buffer)
    {
        int length = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (true)
        {
            ValueWebSocketReceiveResult result = await client.ReceiveAsync(buffer.AsMemory(length), cts.Token);
            length += result.Count;
            if (result.EndOfMessage)
            {
                return length;
            }
        }
    }
}
