using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Proxy.Core.Transport;
using Proxy.Core.Upstream;

namespace Proxy.Core.Tests;

/// <summary>Our own event loop under connections over real sockets: echo through blocked sends, pause and resume, closes from either side, connects.</summary>
public sealed class EventLoopTests
{
    /// <summary>Echoes what it reads; pauses after <see cref="PauseAfter"/> octets until resumed from elsewhere.</summary>
    private sealed class Echo(SocketConnection connection) : IConnectionProtocol
    {
        public long Seen;
        public int Closed;
        public long PauseAfter = long.MaxValue;
        public readonly TaskCompletionSource Paused = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
        {
            if (Seen >= PauseAfter)
            {
                PauseAfter = long.MaxValue;
                Paused.TrySetResult();
                return InputStatus.Pause; // nothing consumed: offered again on resume
            }
            using (connection.Output.SyncRoot.Enter())
            {
                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    segment.Span.CopyTo(connection.Output.GetSpan(segment.Length));
                    connection.Output.Advance(segment.Length);
                }
            }
            Interlocked.Add(ref Seen, buffer.Length);
            buffer = buffer.Slice(buffer.End);
            connection.Output.Flush();
            return InputStatus.Continue;
        }

        public void OnClosed() => Interlocked.Increment(ref Closed);
    }

    private static async Task<(Socket Client, SocketConnection Server, Echo Echo, Task Run)> Pair(Action<Echo>? setup = null)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        Socket accepted = await listener.AcceptAsync();
        EventLoop loop = EventLoop.Next() ?? throw new InvalidOperationException("event loops are off");
        var server = new SocketConnection(accepted, loop: loop);
        var echo = new Echo(server);
        setup?.Invoke(echo);
        Task run = server.RunAsync(echo);
        return (client, server, echo, run);
    }

    private static byte[] Pattern(int length)
    {
        var data = new byte[length];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i * 31 + (i >> 11));
        }
        return data;
    }

    private static async Task<byte[]> ReadExactly(Socket socket, int length, int delayEveryMs = 0)
    {
        var got = new byte[length];
        int n = 0;
        while (n < length)
        {
            int r = await socket.ReceiveAsync(got.AsMemory(n, Math.Min(16 * 1024, length - n)));
            Assert.True(r > 0, $"the stream ended after {n} of {length} octets");
            n += r;
            if (delayEveryMs > 0 && n % (256 * 1024) < 16 * 1024)
            {
                await Task.Delay(delayEveryMs); // a slow reader: the echo's sends would block
            }
        }
        return got;
    }

    [Fact]
    public async Task Echoes_eight_megabytes_through_sends_that_would_block()
    {
        Assert.True(EventLoop.Enabled);
        var (client, server, echo, run) = await Pair();
        using (client)
        {
            byte[] data = Pattern(8 * 1024 * 1024);
            Task<byte[]> reading = ReadExactly(client, data.Length, delayEveryMs: 20);
            for (int i = 0; i < data.Length; i += 64 * 1024)
            {
                await client.SendAsync(data.AsMemory(i, 64 * 1024));
            }
            byte[] back = await reading.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(data.AsSpan().SequenceEqual(back));
            client.Shutdown(SocketShutdown.Send);
            await run.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(1, echo.Closed);
            Assert.True(server.IsClosed);
        }
    }

    [Fact]
    public async Task A_paused_connection_is_offered_its_input_again_when_resumed_from_another_thread()
    {
        var (client, server, echo, run) = await Pair(e => e.PauseAfter = 1);
        using (client)
        {
            byte[] first = Pattern(1000);
            await client.SendAsync(first);
            Assert.Equal(first, await ReadExactly(client, first.Length));
            byte[] second = Pattern(300_000);
            await client.SendAsync(second); // the loop pauses on it: nothing is echoed
            await echo.Paused.Task.WaitAsync(TimeSpan.FromSeconds(10));
            await Task.Delay(100);
            Assert.Equal(0, client.Available);
            Task<byte[]> reading = ReadExactly(client, second.Length);
            _ = Task.Run(server.ResumeInput);
            Assert.Equal(second, await reading.WaitAsync(TimeSpan.FromSeconds(10)));
            server.Close();
            await run.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(1, echo.Closed);
        }
    }

    [Fact]
    public async Task A_close_from_another_thread_while_data_flows_ends_the_connection_once()
    {
        var (client, server, echo, run) = await Pair();
        using (client)
        {
            byte[] chunk = Pattern(32 * 1024);
            using var stop = new CancellationTokenSource();
            Task draining = Task.Run(async () =>
            {
                var sink = new byte[64 * 1024];
                try
                {
                    while (await client.ReceiveAsync(sink) > 0)
                    {
                    }
                }
                catch (SocketException)
                {
                }
            });
            Task sending = Task.Run(async () =>
            {
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        await client.SendAsync(chunk);
                    }
                }
                catch (SocketException)
                {
                }
            });
            // Data flows (wait for it: a busy test host may take a while to schedule the loop), then the close.
            var flowing = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (Interlocked.Read(ref echo.Seen) == 0 && DateTime.UtcNow < flowing)
            {
                await Task.Delay(20);
            }
            Assert.True(Interlocked.Read(ref echo.Seen) > 0);
            server.Close();
            await run.WaitAsync(TimeSpan.FromSeconds(10));
            stop.Cancel();
            await draining.WaitAsync(TimeSpan.FromSeconds(10)); // the peer sees the end of the stream or a reset
            Assert.Equal(1, echo.Closed);
        }
    }

    [Fact]
    public async Task Connects_on_the_loop_and_says_why_a_connect_failed()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        EventLoop loop = EventLoop.Next()!;
        (Socket? socket, string? error) = await UpstreamConnector.ConnectOnLoopAsync(listener.LocalEndPoint!, TimeSpan.FromSeconds(5), null, loop);
        Assert.Null(error);
        using (socket)
        {
            Assert.NotNull(socket);
            using Socket accepted = await listener.AcceptAsync();
            Assert.Equal(socket!.LocalEndPoint, accepted.RemoteEndPoint);
        }
        var closedPort = ((IPEndPoint)listener.LocalEndPoint!).Port;
        listener.Close();
        (socket, error) = await UpstreamConnector.ConnectOnLoopAsync(new IPEndPoint(IPAddress.Loopback, closedPort), TimeSpan.FromSeconds(5), null, loop);
        Assert.Null(socket);
        Assert.Contains("ConnectionRefused", error);
    }
}
