using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace EndToEnd.Tests;

/// <summary>
/// The steady-state h2→h2 path allocates nothing per forwarded request. Client and upstream here are
/// raw HTTP/2 on blocking sockets with precomputed frames, so they allocate nothing either; what
/// GC.GetTotalAllocatedBytes sees over 10,000 requests is the proxy's.
/// </summary>
[CollectionDefinition(nameof(AllocationTests), DisableParallelization = true)]
public sealed class AllocationCollection;

/// <summary>Runs alone (its own collection, not parallel): the allocation counter is process-wide.</summary>
[Collection(nameof(AllocationTests))]
public sealed class AllocationTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    // Field blocks in HPACK "literal without indexing" form, so the same bytes are valid on every request.
    private static readonly byte[] RequestBlock =
    [
        0x83,                                                   // :method POST
        0x86,                                                   // :scheme http
        0x04, 0x07, .. "/svc/Do"u8,                             // :path (name index 4)
        0x01, 0x04, .. "host"u8,                                // :authority (name index 1)
        0x0f, 0x10, 0x10, .. "application/grpc"u8,              // content-type (name index 31)
        0x00, 0x02, .. "te"u8, 0x08, .. "trailers"u8,
    ];
    private static readonly byte[] ResponseBlock = [0x88, 0x0f, 0x10, 0x10, .. "application/grpc"u8];
    private static readonly byte[] TrailerBlock = [0x00, 0x0b, .. "grpc-status"u8, 0x01, (byte)'0'];
    private static readonly byte[] Message = [0, 0, 0, 0, 0];

    private static void Frame(List<byte> output, byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
    {
        Span<byte> header = stackalloc byte[9];
        header[0] = (byte)(payload.Length >> 16);
        header[1] = (byte)(payload.Length >> 8);
        header[2] = (byte)payload.Length;
        header[3] = type;
        header[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(header.Slice(5), stream);
        output.AddRange(header);
        output.AddRange(payload);
    }

    /// <summary>Reads whole frames from a blocking socket into a fixed buffer.</summary>
    private sealed class FrameReader(Socket socket)
    {
        private readonly byte[] _buffer = new byte[1 << 20];
        private int _start;
        private int _end;

        public (byte Type, byte Flags, int Stream, int Offset, int Length) Next()
        {
            while (true)
            {
                if (_end - _start >= 9)
                {
                    int length = (_buffer[_start] << 16) | (_buffer[_start + 1] << 8) | _buffer[_start + 2];
                    if (_end - _start >= 9 + length)
                    {
                        var frame = (_buffer[_start + 3], _buffer[_start + 4], BinaryPrimitives.ReadInt32BigEndian(_buffer.AsSpan(_start + 5)) & 0x7fffffff, _start + 9, length);
                        _start += 9 + length;
                        return frame;
                    }
                }
                if (_start > 0)
                {
                    Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                    _end -= _start;
                    _start = 0;
                }
                int n = socket.Receive(_buffer, _end, _buffer.Length - _end, SocketFlags.None);
                if (n == 0)
                {
                    throw new IOException("connection closed");
                }
                _end += n;
            }
        }

        public byte this[int index] => _buffer[index];
    }

    private static void RunUpstream(Socket socket)
    {
        var reader = new FrameReader(socket);
        var handshake = new List<byte>();
        Frame(handshake, 4, 0, 0, []);
        socket.Send(handshake.ToArray());
        // One response, with its stream id patched in place each time.
        var response = new List<byte>();
        Frame(response, 1, 0x4, 1, ResponseBlock);
        Frame(response, 0, 0, 1, Message);
        Frame(response, 1, 0x5, 1, TrailerBlock);
        byte[] bytes = response.ToArray();
        int second = 9 + ResponseBlock.Length;
        int third = second + 9 + Message.Length;
        byte[] ack = new byte[9];
        ack[3] = 4;
        ack[4] = 1;
        byte[] windowUpdate = [0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        bool prefaceSkipped = false;
        var prefaceBuffer = new byte[Preface.Length];
        while (true)
        {
            if (!prefaceSkipped)
            {
                int got = 0;
                while (got < Preface.Length)
                {
                    got += socket.Receive(prefaceBuffer, got, Preface.Length - got, SocketFlags.None);
                }
                prefaceSkipped = true;
            }
            (byte type, byte flags, int stream, _, int length) = reader.Next();
            if (type == 0 && length > 0)
            {
                // Request body octets: the connection's window is given back (streams are used once).
                BinaryPrimitives.WriteInt32BigEndian(windowUpdate.AsSpan(9), length);
                socket.Send(windowUpdate);
            }
            if (type == 4 && (flags & 1) == 0)
            {
                socket.Send(ack);
            }
            else if (type is 0 or 1 && (flags & 1) != 0)
            {
                // The request is complete (END_STREAM on its HEADERS or its last DATA): answer it.
                BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(5), stream);
                BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(second + 5), stream);
                BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(third + 5), stream);
                socket.Send(bytes);
            }
        }
    }

    [Fact]
    public async Task SteadyStateH2ToH2_AllocatesNothingPerRequest()
    {
        var (upstreamListener, upstreamPort) = StartRawUpstream();

        var pools = new UpstreamPools();
        // With the cluster's live state, as every configured cluster has: its idle_timeout (Envoy's hour) is armed.
        ClusterState state = pools.ClusterState("c");
        var cluster = new Cluster("c", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, upstreamPort), UpstreamProtocol.Http2, cluster: state)], TimeSpan.FromSeconds(5)) { State = state };
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0),
            new RouteConfiguration("r", [new VirtualHost("v", ["*"], [new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero)])]));
        await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
        proxy.Start();

        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.Connect(IPAddress.Loopback, proxy.Listeners[0].LocalEndPoint.Port);
        var hello = new List<byte>(Preface);
        Frame(hello, 4, 0, 0, []);
        Frame(hello, 8, 0, 0, [0, 0x10, 0, 0]); // connection window +1 MiB for the responses
        client.Send(hello.ToArray());
        var request = new List<byte>();
        Frame(request, 1, 0x5, 1, RequestBlock);
        byte[] requestBytes = request.ToArray();
        byte[] ack = [0, 0, 0, 4, 1, 0, 0, 0, 0];
        var reader = new FrameReader(client);
        int streamId = 1;

        void OneRequest()
        {
            BinaryPrimitives.WriteInt32BigEndian(requestBytes.AsSpan(5), streamId);
            client.Send(requestBytes);
            while (true)
            {
                (byte type, byte flags, int stream, _, _) = reader.Next();
                if (type == 4 && (flags & 1) == 0)
                {
                    client.Send(ack);
                }
                else if (type == 3 || type == 7)
                {
                    throw new IOException($"frame type {type} on stream {stream}");
                }
                else if (type == 1 && stream == streamId && (flags & 1) != 0)
                {
                    break; // trailers: the response is complete
                }
            }
            streamId += 2;
        }

        AssertNoAllocationPerRequest(OneRequest);
        upstreamListener.Close();
    }

    [Fact]
    public async Task SteadyStateTlsH2ToH2_AllocatesNothingPerRequest()
    {
        // h2load (another process, so its allocations are not counted) over TLS 1.3 with ALPN h2, one
        // connection per window of 10,000 requests: what is counted is the proxy's decrypting, forwarding and
        // encrypting, plus one handshake per window.
        var (upstreamListener, upstreamPort) = StartRawUpstream();
        using var pki = new Xds.ControlPlane.TestPki();
        (string cert, string key) = pki.Issue(null, "localhost");
        var tls = new Proxy.Core.Transport.Tls.TlsServerContext
        {
            Identity = Proxy.Core.Transport.Tls.SecretSlot.Of("test", Proxy.Core.Transport.Tls.TlsIdentity.FromPem(cert, key, "test")),
            Alpn = ["h2", "http/1.1"],
        };
        var pools = new UpstreamPools();
        var cluster = new Cluster("c", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, upstreamPort), UpstreamProtocol.Http2)], TimeSpan.FromSeconds(5));
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0),
            new RouteConfiguration("r", [new VirtualHost("v", ["*"], [new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero)])])) { Tls = tls };
        await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
        proxy.Start();
        string body = Path.Combine(Path.GetTempPath(), $"alloc-{Guid.NewGuid():N}.grpc");
        File.WriteAllBytes(body, Message);
        string url = $"https://127.0.0.1:{proxy.Listeners[0].LocalEndPoint.Port}/svc/Do";
        async Task Load(int requests)
        {
            var (exit, stdout, stderr) = await Processes.RunAsync("h2load", ["-n", requests.ToString(System.Globalization.CultureInfo.InvariantCulture), "-c", "1", "-m", "1",
                "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers", url], TimeSpan.FromSeconds(120));
            Assert.True(exit == 0 && stdout.Contains($"{requests} succeeded, 0 failed", StringComparison.Ordinal), stdout + stderr);
        }
        await Load(3000);
        // Each window also pays for a handshake, a connection and starting h2load (fixed costs): the
        // slope between short and long windows is what a request costs.
        async Task<long> Best(int requests)
        {
            long best = long.MaxValue;
            for (int window = 0; window < 3; window++)
            {
                long before = GC.GetTotalAllocatedBytes(precise: true);
                await Load(requests);
                long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
                output.WriteLine($"{requests} requests over one TLS connection: {allocated} bytes");
                best = Math.Min(best, allocated);
            }
            return best;
        }
        long small = await Best(2_000);
        long large = await Best(62_000);
        double perRequest = (double)(large - small) / 60_000;
        output.WriteLine($"{perRequest:F2} B/request");
        File.Delete(body);
        upstreamListener.Close();
        // One allocation per request would be 24+ B/request; per sixth request, 4.
        Assert.True(perRequest < 4, $"{small} bytes for 2,000 requests, {large} for 62,000: {perRequest:F2} B/request");
    }

    /// <summary>Warms <paramref name="oneRequest"/> up, then fails if it allocates in each of three windows.</summary>
    private void AssertNoAllocationPerRequest(Action oneRequest)
    {
        for (int i = 0; i < 3000; i++)
        {
            oneRequest();
        }
        // Five windows of 10,000 requests; the smallest count is the proxy's own. Anything else in the
        // process (the test runner, timers) only ever adds to a window, and a per-request allocation in the
        // proxy would show in all five.
        const int Requests = 10_000;
        long best = long.MaxValue;
        for (int window = 0; window < 5; window++)
        {
            long before = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < Requests; i++)
            {
                oneRequest();
            }
            long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
            output.WriteLine($"window {window}: {allocated} bytes over {Requests} forwarded requests = {(double)allocated / Requests:F2} B/request");
            best = Math.Min(best, allocated);
        }
        double perRequest = (double)best / Requests;
        // The smallest object is 24 bytes: an allocation on every request, or on every sixth, would exceed this.
        if (perRequest >= 4)
        {
            // Say what was allocated, from the runtime's allocation sampling, in one more window.
            using var diag = new AllocListener();
            diag.On = true;
            for (int i = 0; i < Requests; i++)
            {
                oneRequest();
            }
            diag.On = false;
            Assert.Fail($"{best} bytes over {Requests} requests = {perRequest:F2} B/request; sampled: " +
                string.Join(", ", diag.Types.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}={kv.Value}")));
        }
    }

    [Fact]
    public async Task SteadyStateH1ToH1_AllocatesNothingPerRequest()
    {
        // A keep-alive HTTP/1.1 upstream answering each GET with a fixed response.
        var upstreamListener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        upstreamListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        upstreamListener.Listen();
        int upstreamPort = ((IPEndPoint)upstreamListener.LocalEndPoint!).Port;
        var upstreamThread = new Thread(() =>
        {
            try
            {
                using Socket s = upstreamListener.Accept();
                s.NoDelay = true;
                byte[] answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"u8.ToArray();
                var buffer = new byte[4096];
                int held = 0;
                while (true)
                {
                    int n = s.Receive(buffer, held, buffer.Length - held, SocketFlags.None);
                    if (n == 0)
                    {
                        return;
                    }
                    held += n;
                    int end;
                    while ((end = buffer.AsSpan(0, held).IndexOf("\r\n\r\n"u8)) >= 0)
                    {
                        s.Send(answer);
                        held -= end + 4;
                        buffer.AsSpan(end + 4, held).CopyTo(buffer);
                    }
                }
            }
            catch (SocketException)
            {
            }
        }) { IsBackground = true };
        upstreamThread.Start();

        var pools = new UpstreamPools();
        ClusterState state = pools.ClusterState("c");
        var cluster = new Cluster("c", UpstreamProtocol.Http1, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, upstreamPort), UpstreamProtocol.Http1, cluster: state)], TimeSpan.FromSeconds(5)) { State = state };
        var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0),
            new RouteConfiguration("r", [new VirtualHost("v", ["*"], [new Route("all", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero)])]));
        await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
        proxy.Start();

        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.Connect(IPAddress.Loopback, proxy.Listeners[0].LocalEndPoint.Port);
        byte[] request = "GET /x HTTP/1.1\r\nhost: a\r\ncookie: a=1\r\n\r\n"u8.ToArray();
        var response = new byte[4096];

        void OneRequest()
        {
            client.Send(request);
            int got = 0;
            while (true)
            {
                int n = client.Receive(response, got, response.Length - got, SocketFlags.None);
                if (n == 0)
                {
                    throw new IOException("the proxy closed the connection");
                }
                got += n;
                if (got >= 4 && response.AsSpan(0, got).EndsWith("\r\n\r\nok"u8))
                {
                    return;
                }
            }
        }

        AssertNoAllocationPerRequest(OneRequest);
        upstreamListener.Close();
    }

    private static (Socket Listener, int Port) StartRawUpstream()
    {
        var upstreamListener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        upstreamListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        upstreamListener.Listen();
        var upstreamThread = new Thread(() =>
        {
            try
            {
                using Socket s = upstreamListener.Accept();
                s.NoDelay = true; // a WINDOW_UPDATE and then the response: no Nagle wait between them
                RunUpstream(s);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
            {
            }
        }) { IsBackground = true };
        upstreamThread.Start();
        return (upstreamListener, ((IPEndPoint)upstreamListener.LocalEndPoint!).Port);
    }

    // The runtime API call: POST .../InvokeService with a gRPC frame of InvokeServiceRequest{id, message{method, data}}.
    private static readonly byte[] InvokeBlock =
    [
        0x83,                                                   // :method POST
        0x86,                                                   // :scheme http
        0x04, 0x2C, .. "/spec.proto.runtime.v1.Runtime/InvokeService"u8,
        0x01, 0x09, .. "localhost"u8,
        0x0f, 0x10, 0x10, .. "application/grpc"u8,
        0x00, 0x02, .. "te"u8, 0x08, .. "trailers"u8,
        0x00, 0x04, .. "name"u8, 0x07, .. "layotto"u8,
    ];

    private static byte[] InvokeMessage()
    {
        byte[] any = [0x12, 0x05, .. "hello"u8];                                // Any.value
        byte[] common = [0x0A, 0x06, .. "/hello"u8, 0x12, (byte)any.Length, .. any];
        byte[] id = "server.default.svc.cluster.local:9090"u8.ToArray();
        byte[] message = [0x0A, (byte)id.Length, .. id, 0x1A, (byte)common.Length, .. common];
        return [0, 0, 0, 0, (byte)message.Length, .. message];
    }

    [Fact]
    public async Task SteadyStateRuntimeInvokeService_AllocatesNothingPerCall()
    {
        var (upstreamListener, upstreamPort) = StartRawUpstream();
        using (upstreamListener)
        {
            var pools = new UpstreamPools();
            var cluster = new Cluster("c", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, upstreamPort), UpstreamProtocol.Http2)], TimeSpan.FromSeconds(5));
            var routes = new RouteConfiguration("9090", [new VirtualHost("server", ["server.default.svc.cluster.local", "server.default.svc.cluster.local:9090"], [
                new Route("v1", PathMatchKind.Prefix, "/", cluster, TimeSpan.Zero)])]);
            var listener = new ListenerConfig("l", new IPEndPoint(IPAddress.Loopback, 0), routes);
            await using var proxy = new ProxyServer(new ProxySnapshot([listener], [cluster], 1), pools);
            proxy.Start();
            await using var runtime = new Proxy.Core.Runtime.RuntimeApiServer(new IPEndPoint(IPAddress.Loopback, 0), proxy.Snapshots);
            runtime.Start();

            using var client = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.Connect((IPEndPoint)runtime.EndPoint);
            client.ReceiveTimeout = 10_000;
            var hello = new List<byte>(Preface);
            Frame(hello, 4, 0, 0, [0, 1, 0, 0, 0, 0]); // SETTINGS_HEADER_TABLE_SIZE 0: any block can be decoded alone
            Frame(hello, 8, 0, 0, [0, 0x10, 0, 0]);
            client.Send(hello.ToArray());
            var request = new List<byte>();
            Frame(request, 1, 0x4, 1, InvokeBlock);
            int dataAt = request.Count;
            Frame(request, 0, 0x1, 1, InvokeMessage());
            byte[] requestBytes = request.ToArray();
            byte[] ack = [0, 0, 0, 4, 1, 0, 0, 0, 0];
            var reader = new FrameReader(client);
            int streamId = 1;
            int answers = 0;
            byte[] windowUpdate = [0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0];

            void OneCall()
            {
                int before = answers;
                BinaryPrimitives.WriteInt32BigEndian(requestBytes.AsSpan(5), streamId);
                BinaryPrimitives.WriteInt32BigEndian(requestBytes.AsSpan(dataAt + 5), streamId);
                client.Send(requestBytes);
                while (true)
                {
                    (byte type, byte flags, int stream, int offset, int length) = reader.Next();
                    if (type == 4 && (flags & 1) == 0)
                    {
                        client.Send(ack);
                    }
                    else if (type == 3 || type == 7)
                    {
                        throw new IOException($"frame type {type} on stream {stream}");
                    }
                    else if (type == 0 && stream == streamId && length > 5)
                    {
                        answers++; // the InvokeResponse message
                        // Give the connection's window back (each stream's is used once).
                        BinaryPrimitives.WriteInt32BigEndian(windowUpdate.AsSpan(9), length);
                        client.Send(windowUpdate);
                    }
                    else if (type == 1 && stream == streamId && (flags & 1) != 0)
                    {
                        // A failed call is trailers-only: no message before the end.
                        if (answers == before)
                        {
                            var payload = new byte[length];
                            for (int i = 0; i < length; i++)
                            {
                                payload[i] = reader[offset + i];
                            }
                            var text = new System.Text.StringBuilder();
                            var decoder = new Proxy.Http2.Hpack.HpackDecoder();
                            decoder.Decode(payload, new AllocListener.Collect(text));
                            throw new IOException("the call failed: " + text);
                        }
                        break;
                    }
                }
                streamId += 2;
            }

            AssertNoAllocationPerRequest(OneCall);
            Assert.True(answers > 30_000, $"{answers} answers");
        }
    }
}

/// <summary>The runtime's allocation sampling (one event per ~100 KB), by type: said when the test fails.</summary>
internal sealed class AllocListener : System.Diagnostics.Tracing.EventListener
{
    public readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> Types = new();
    public volatile bool On;

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
    {
        if (On && e.EventName != null && e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal))
        {
            int i = e.PayloadNames!.IndexOf("TypeName");
            string name = i >= 0 ? e.Payload![i]?.ToString() ?? "?" : "?";
            Types.AddOrUpdate(name, 1, (_, v) => v + 1);
        }
    }

    internal sealed class Collect(System.Text.StringBuilder text) : Proxy.Http2.Hpack.IHpackHeaderHandler
    {
        public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags) =>
            text.Append(System.Text.Encoding.Latin1.GetString(name)).Append(": ").Append(System.Text.Encoding.Latin1.GetString(value)).Append("; ");
    }
}
