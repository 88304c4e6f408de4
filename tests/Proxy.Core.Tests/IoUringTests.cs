using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Proxy.Core.Transport;

namespace Proxy.Core.Tests;

/// <summary>
/// The event loop's io_uring (batched non-blocking sends) over real loopback sockets, and the loop's
/// end-of-iteration flush that uses it: every octet arrives in order, a full socket answers -EAGAIN and
/// waits for its writable edge, and the results match one send per socket.
/// </summary>
public sealed class IoUringTests
{
    private static Socket Listen()
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        return listener;
    }

    /// <summary>A client connected to <paramref name="listener"/>, and the server side of it.</summary>
    private static async Task<(Socket Client, Socket Server)> ConnectAsync(Socket listener)
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        return (client, await listener.AcceptAsync());
    }

    private static async Task<(Socket Client, Socket Server)> PairAsync()
    {
        using Socket listener = Listen();
        var (client, server) = await ConnectAsync(listener);
        server.Blocking = false;
        return (client, server);
    }

    private static unsafe void Prepare(IoUring ring, Socket socket, GCHandle pin, int length, ulong user) =>
        ring.PrepareSend((int)socket.Handle, (byte*)pin.AddrOfPinnedObject(), length, user);

    // Null where the kernel (or a seccomp profile, as containers' default ones) refuses io_uring: the proxy
    // then sends one by one, and the tests of the ring itself have nothing to test.
    private static IoUring? Ring() => IoUring.TryCreate(64);

    [Fact]
    public async Task ABatchOfSends_ToSeveralSockets_EachTakesItsOctets()
    {
        if (Ring() is not { } ring)
        {
            return;
        }
        var pairs = new List<(Socket Client, Socket Server)>();
        for (int i = 0; i < 8; i++)
        {
            pairs.Add(await PairAsync());
        }
        try
        {
            var payloads = new byte[8][];
            var pins = new GCHandle[8];
            for (int i = 0; i < 8; i++)
            {
                payloads[i] = new byte[100 + i * 37];
                Random.Shared.NextBytes(payloads[i]);
                pins[i] = GCHandle.Alloc(payloads[i], GCHandleType.Pinned);
                Prepare(ring, pairs[i].Server, pins[i], payloads[i].Length, (ulong)(1000 + i));
            }
            Assert.Equal(8, ring.Submit());
            var results = new Dictionary<ulong, int>();
            while (ring.TryReap(out ulong user, out int result))
            {
                results[user] = result;
            }
            foreach (GCHandle pin in pins)
            {
                pin.Free();
            }
            Assert.Equal(8, results.Count);
            for (int i = 0; i < 8; i++)
            {
                Assert.Equal(payloads[i].Length, results[(ulong)(1000 + i)]);
                byte[] got = new byte[payloads[i].Length];
                int n = 0;
                while (n < got.Length)
                {
                    n += await pairs[i].Client.ReceiveAsync(got.AsMemory(n));
                }
                Assert.Equal(payloads[i], got);
            }
        }
        finally
        {
            pairs.ForEach(p => { p.Client.Dispose(); p.Server.Dispose(); });
        }
    }

    [Fact]
    public async Task ASendToAFullSocket_CompletesWithEagain_NotLater()
    {
        if (Ring() is not { } ring)
        {
            return;
        }
        var (client, server) = await PairAsync();
        using (client)
        using (server)
        {
            // Fill the socket: the client reads nothing.
            byte[] chunk = new byte[64 * 1024];
            while (EventLoop.Send(server.SafeHandle, chunk) > 0)
            {
            }
            byte[] more = new byte[1000];
            GCHandle pin = GCHandle.Alloc(more, GCHandleType.Pinned);
            Prepare(ring, server, pin, more.Length, 7);
            Assert.Equal(1, ring.Submit()); // returns at once: the send does not wait for room
            Assert.True(ring.TryReap(out ulong user, out int result));
            pin.Free();
            Assert.Equal(7UL, user);
            Assert.Equal(-EventLoop.EAGAIN, result);
            Assert.False(ring.TryReap(out _, out _));
        }
    }

    [Fact]
    public async Task SendsWrittenInOneLoopIteration_LeaveTogether_AndAFullSocketWaitsForItsReader()
    {
        // Echo connections on one loop whose writes are flushed at the end of the iteration (FlushBatch):
        // several clients at once, one of which stops reading until its socket is full.
        const int Clients = 12;
        EventLoop loop = EventLoop.Next() ?? throw new InvalidOperationException("event loops are off");
        using Socket listener = Listen();
        var clients = new List<Socket>();
        var runs = new List<Task>();
        try
        {
            for (int i = 0; i < Clients; i++)
            {
                var (client, accepted) = await ConnectAsync(listener);
                var server = new SocketConnection(accepted, loop: loop);
                runs.Add(server.RunAsync(new BatchedEcho(server)));
                clients.Add(client);
            }
            // The slow one: 4 MiB echoed back while it reads nothing.
            byte[] big = new byte[4 << 20];
            Random.Shared.NextBytes(big);
            Task sendBig = clients[0].SendAsync(big);
            var payloads = new byte[Clients][];
            for (int round = 0; round < 20; round++)
            {
                for (int i = 1; i < Clients; i++)
                {
                    payloads[i] = new byte[50 + (round * 31 + i * 17) % 3000];
                    Random.Shared.NextBytes(payloads[i]);
                    await clients[i].SendAsync(payloads[i]);
                }
                for (int i = 1; i < Clients; i++)
                {
                    Assert.Equal(payloads[i], await ReadExactlyAsync(clients[i], payloads[i].Length));
                }
            }
            // Now it reads: everything comes back, in order.
            Task<byte[]> echoed = ReadExactlyAsync(clients[0], big.Length);
            await sendBig.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(big, await echoed.WaitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
            await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    [Fact]
    public async Task InABatch_ASocketWithNoRoom_KeepsItsOctetsForTheWritableEdge_WhileTheOtherSends()
    {
        EventLoop loop = EventLoop.Next() ?? throw new InvalidOperationException("event loops are off");
        using Socket listener = Listen();
        var (clientA, serverA) = await ConnectAsync(listener);
        var (clientB, serverB) = await ConnectAsync(listener);
        using (clientA)
        using (clientB)
        {
            await BatchKeepsFullSocketsOctets(loop, clientA, new SocketConnection(serverA, loop: loop), clientB, new SocketConnection(serverB, loop: loop));
        }
    }

    private static async Task BatchKeepsFullSocketsOctets(EventLoop loop, Socket clientA, SocketConnection a, Socket clientB, SocketConnection b)
    {
        Task runA = a.RunAsync(new Silent()), runB = b.RunAsync(new Silent());
        // A's socket is full before the batch: its batched send finds no room (-EAGAIN).
        byte[] filler = new byte[64 * 1024];
        long filled = 0;
        for (int n; (n = EventLoop.Send(a.Output.Handle, filler)) > 0;)
        {
            filled += n;
        }
        byte[] forA = new byte[1000], forB = new byte[1000];
        Random.Shared.NextBytes(forA);
        Random.Shared.NextBytes(forB);
        var wrote = new TaskCompletionSource();
        loop.Post(() =>
        {
            FlushBatch.Begin();
            foreach (var (connection, data) in new[] { (a, forA), (b, forB) })
            {
                using (connection.Output.SyncRoot.Enter())
                {
                    data.CopyTo(connection.Output.GetSpan(data.Length));
                    connection.Output.Advance(data.Length);
                }
                FlushBatch.Add(connection.Output);
            }
            FlushBatch.End();
            wrote.SetResult();
        });
        await wrote.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(forB, await ReadExactlyAsync(clientB, forB.Length));
        byte[] all = await ReadExactlyAsync(clientA, (int)filled + forA.Length);
        Assert.Equal(forA, all.AsSpan((int)filled).ToArray());
        a.Close();
        b.Close();
        await Task.WhenAll(runA, runB).WaitAsync(TimeSpan.FromSeconds(10));
    }

    private sealed class Silent : IConnectionProtocol
    {
        public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
        {
            buffer = buffer.Slice(buffer.End);
            return InputStatus.Continue;
        }

        public void OnClosed()
        {
        }
    }

    private static async Task<byte[]> ReadExactlyAsync(Socket socket, int length)
    {
        byte[] buffer = new byte[length];
        int n = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (n < length)
        {
            int got = await socket.ReceiveAsync(buffer.AsMemory(n), SocketFlags.None, cts.Token);
            if (got == 0)
            {
                throw new IOException($"closed after {n} of {length} octets");
            }
            n += got;
        }
        return buffer;
    }

    /// <summary>Echoes what it reads through the loop's batch (FlushBatch.Add), pausing while its output holds 256 KiB or more.</summary>
    private sealed class BatchedEcho(SocketConnection connection) : IConnectionProtocol
    {
        public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
        {
            if (connection.Output.PendingBytes >= 256 * 1024)
            {
                connection.Output.OnDrained(connection.ResumeInput);
                return InputStatus.Pause;
            }
            using (connection.Output.SyncRoot.Enter())
            {
                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    segment.Span.CopyTo(connection.Output.GetSpan(segment.Length));
                    connection.Output.Advance(segment.Length);
                }
            }
            buffer = buffer.Slice(buffer.End);
            FlushBatch.Add(connection.Output);
            return InputStatus.Continue;
        }

        public void OnClosed()
        {
        }
    }
}
