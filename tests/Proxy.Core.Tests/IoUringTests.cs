using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Proxy.Core.Transport;

namespace Proxy.Core.Tests;

/// <summary>
/// The event loop's io_uring (batched non-blocking sends and receives) over real loopback sockets, and the
/// loop's batched receives and end-of-iteration flush that use it: every octet arrives in order, a full
/// socket answers -EAGAIN and waits for its writable edge, an empty one -EAGAIN, a closed one 0, and the
/// results match one send or receive per socket.
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
    public async Task ABatchOfReceives_EachSocketGetsItsOwnOctets_AnEmptyOneEagain_AClosedOneTheEnd()
    {
        if (Ring() is not { } ring)
        {
            return;
        }
        var pairs = new List<(Socket Client, Socket Server)>();
        for (int i = 0; i < 6; i++)
        {
            pairs.Add(await PairAsync());
        }
        try
        {
            var sent = new byte[4][];
            for (int i = 0; i < 4; i++)
            {
                sent[i] = new byte[200 + i * 911];
                Random.Shared.NextBytes(sent[i]);
                await pairs[i].Client.SendAsync(sent[i]);
            }
            pairs[5].Client.Shutdown(SocketShutdown.Send); // pair 4 sends nothing; pair 5 only its FIN
            await Task.Delay(50); // loopback delivers at once; this is margin
            var buffers = new byte[6][];
            var pins = new GCHandle[6];
            for (int i = 0; i < 6; i++)
            {
                buffers[i] = new byte[8192];
                pins[i] = GCHandle.Alloc(buffers[i], GCHandleType.Pinned);
                unsafe
                {
                    ring.PrepareReceive((int)pairs[i].Server.Handle, (byte*)pins[i].AddrOfPinnedObject(), buffers[i].Length, (ulong)(500 + i));
                }
            }
            Assert.Equal(6, ring.Prepared);
            Assert.Equal(6, ring.Submit());
            var results = new Dictionary<ulong, int>();
            while (ring.TryReap(out ulong user, out int result))
            {
                results[user] = result;
            }
            foreach (GCHandle pin in pins)
            {
                pin.Free();
            }
            Assert.Equal(6, results.Count);
            for (int i = 0; i < 4; i++)
            {
                Assert.Equal(sent[i].Length, results[(ulong)(500 + i)]);
                Assert.Equal(sent[i], buffers[i].AsSpan(0, sent[i].Length).ToArray());
            }
            Assert.Equal(-EventLoop.EAGAIN, results[504]); // returns at once: the receive does not wait
            Assert.Equal(0, results[505]);
        }
        finally
        {
            pairs.ForEach(p => { p.Client.Dispose(); p.Server.Dispose(); });
        }
    }

    [Fact]
    public async Task DiscardedPreparations_NeverReachTheKernel()
    {
        if (Ring() is not { } ring)
        {
            return;
        }
        var (client, server) = await PairAsync();
        using (client)
        using (server)
        {
            byte[] data = "discarded"u8.ToArray();
            GCHandle pin = GCHandle.Alloc(data, GCHandleType.Pinned);
            Prepare(ring, server, pin, data.Length, 1);
            ring.Discard();
            Assert.Equal(0, ring.Prepared);
            Assert.Equal(0, ring.Submit());
            pin.Free();
            byte[] kept = "kept"u8.ToArray();
            pin = GCHandle.Alloc(kept, GCHandleType.Pinned);
            Prepare(ring, server, pin, kept.Length, 2);
            Assert.Equal(1, ring.Submit());
            Assert.True(ring.TryReap(out ulong user, out _));
            pin.Free();
            Assert.Equal(2UL, user);
            Assert.Equal(kept, await ReadExactlyAsync(client, kept.Length));
            server.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, await client.ReceiveAsync(new byte[16])); // nothing else came before the end
        }
    }

    [Fact]
    public async Task PreparingMoreThanTheRingHolds_IsRefused_NotWrappedOverEarlierEntries()
    {
        if (Ring() is not { } ring)
        {
            return;
        }
        var (client, server) = await PairAsync();
        using (client)
        using (server)
        {
            byte[] data = new byte[1];
            GCHandle pin = GCHandle.Alloc(data, GCHandleType.Pinned);
            try
            {
                for (int i = 0; i < ring.Capacity; i++)
                {
                    Prepare(ring, server, pin, 1, (ulong)i);
                }
                Assert.Throws<InvalidOperationException>(() => Prepare(ring, server, pin, 1, 999));
                Assert.Equal(ring.Capacity, ring.Prepared);
            }
            finally
            {
                ring.Discard();
                pin.Free();
            }
        }
    }

    [Fact]
    public async Task ReceivesOfOneWait_GoTogether_AndEachConnectionGetsAllItsInputInOrder()
    {
        // The loop is held busy while every client writes, so its next wait reports them all readable at
        // once: small inputs, one larger than a receive buffer (read on after a full receive), and one that
        // ends with the client's FIN on the same edge (delivered, then the connection closes).
        const int Clients = 10;
        EventLoop loop = EventLoop.Next() ?? throw new InvalidOperationException("event loops are off");
        using Socket listener = Listen();
        var (clients, runs) = await StartEchoesAsync(listener, loop, Clients);
        try
        {
            for (int round = 0; round < 5; round++)
            {
                long batchedBefore = loop.ReceivesBatched;
                var payloads = new byte[Clients][];
                var held = new ManualResetEventSlim();
                var busy = new TaskCompletionSource();
                loop.Post(() =>
                {
                    busy.SetResult();
                    held.Wait(TimeSpan.FromSeconds(10));
                });
                await busy.Task.WaitAsync(TimeSpan.FromSeconds(10));
                for (int i = 0; i < Clients; i++)
                {
                    payloads[i] = new byte[i == 3 ? 40_000 + round : 10 + i * 97 + round];
                    Random.Shared.NextBytes(payloads[i]);
                    await clients[i].SendAsync(payloads[i]);
                }
                if (round == 4)
                {
                    clients[7].Shutdown(SocketShutdown.Send);
                }
                await Task.Delay(20);
                held.Set();
                for (int i = 0; i < Clients; i++)
                {
                    Assert.Equal(payloads[i], await ReadExactlyAsync(clients[i], payloads[i].Length));
                }
                if (loop.Ring != null)
                {
                    Assert.True(loop.ReceivesBatched >= batchedBefore + 2, $"receives batched: {loop.ReceivesBatched - batchedBefore}");
                }
            }
            Assert.Equal(0, await clients[7].ReceiveAsync(new byte[16], SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10)));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
            await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(10));
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
        var (clients, runs) = await StartEchoesAsync(listener, loop, Clients);
        try
        {
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

    [Fact]
    public async Task ABatchOpenedAndEndedByASendsCompletion_KeepsItsOwnOutputs_AndTheOuterBatchCompletesEverySend()
    {
        // A drain callback that runs while the loop's batch completes its sends opens and ends a batch of its
        // own (as an HTTP/2 connection does to wake streams blocked on its queue): that inner batch must not
        // flush, or clear, the outer one's outputs or take its batch of sends from under it.
        EventLoop loop = EventLoop.Next() ?? throw new InvalidOperationException("event loops are off");
        using Socket listener = Listen();
        var pairs = new List<(Socket Client, SocketConnection Server)>();
        for (int i = 0; i < 4; i++)
        {
            var (client, accepted) = await ConnectAsync(listener);
            pairs.Add((client, new SocketConnection(accepted, loop: loop)));
        }
        var runs = pairs.Select(p => p.Server.RunAsync(new Silent())).ToList();
        try
        {
            SocketConnection a = pairs[0].Server, b = pairs[1].Server, c = pairs[2].Server, d = pairs[3].Server;
            int nested = 0;
            a.Drained = () =>
            {
                if (Interlocked.Exchange(ref nested, 1) != 0)
                {
                    return;
                }
                FlushBatch.Begin();
                Write(c, "inner to c");
                FlushBatch.Add(c.Output);
                Write(d, "inner to d");
                FlushBatch.Add(d.Output);
                Write(b, " and more to b");
                FlushBatch.Add(b.Output);
                FlushBatch.End();
            };
            var done = new TaskCompletionSource();
            loop.Post(() =>
            {
                FlushBatch.Begin();
                Write(a, "outer to a");
                FlushBatch.Add(a.Output);
                Write(b, "outer to b");
                FlushBatch.Add(b.Output);
                FlushBatch.End();
                done.SetResult();
            });
            await done.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal("outer to a"u8.ToArray(), await ReadExactlyAsync(pairs[0].Client, 10));
            Assert.Equal("outer to b and more to b"u8.ToArray(), await ReadExactlyAsync(pairs[1].Client, 24));
            Assert.Equal("inner to c"u8.ToArray(), await ReadExactlyAsync(pairs[2].Client, 10));
            Assert.Equal("inner to d"u8.ToArray(), await ReadExactlyAsync(pairs[3].Client, 10));
            // Every sending turn ended: a later batch sends again on each.
            var again = new TaskCompletionSource();
            loop.Post(() =>
            {
                FlushBatch.Begin();
                foreach (SocketConnection connection in new[] { a, b, c, d })
                {
                    Write(connection, "again");
                    FlushBatch.Add(connection.Output);
                }
                FlushBatch.End();
                again.SetResult();
            });
            await again.Task.WaitAsync(TimeSpan.FromSeconds(10));
            foreach (var (client, _) in pairs)
            {
                Assert.Equal("again"u8.ToArray(), await ReadExactlyAsync(client, 5));
            }
        }
        finally
        {
            pairs.ForEach(p => { p.Server.Close(); p.Client.Dispose(); });
            await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(10));
        }

        static void Write(SocketConnection connection, string text)
        {
            byte[] data = System.Text.Encoding.ASCII.GetBytes(text);
            using (connection.Output.SyncRoot.Enter())
            {
                data.CopyTo(connection.Output.GetSpan(data.Length));
                connection.Output.Advance(data.Length);
            }
        }
    }

    /// <summary><paramref name="count"/> clients, each echoed by a <see cref="BatchedEcho"/> connection on <paramref name="loop"/>.</summary>
    private static async Task<(List<Socket> Clients, List<Task> Runs)> StartEchoesAsync(Socket listener, EventLoop loop, int count)
    {
        var clients = new List<Socket>();
        var runs = new List<Task>();
        for (int i = 0; i < count; i++)
        {
            var (client, accepted) = await ConnectAsync(listener);
            var server = new SocketConnection(accepted, loop: loop);
            runs.Add(server.RunAsync(new BatchedEcho(server)));
            clients.Add(client);
        }
        return (clients, runs);
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

    /// <summary>Echoes what it reads through the loop's batch (FlushBatch.Add), pausing while its output holds 256 KiB or more; closes after its echo at the client's FIN.</summary>
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

        /// <summary>The client's FIN: what was echoed goes out, then the connection closes.</summary>
        public bool OnInputEnded()
        {
            connection.CloseAfterFlush();
            return true;
        }

        public void OnClosed()
        {
        }
    }
}
