using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using Layotto.Runtime.V1;
using Proxy.Core;
using Proxy.Core.Routing;
using Proxy.Core.Runtime;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>
/// Layotto's runtime API over real sockets: a Grpc.Net.Client (code generated from our runtime.proto)
/// calls InvokeService on the proxy, which routes it by an Envoy route configuration in Istio's shape
/// (outbound listener not bound to a port, RDS named "9090", header `name: layotto` → v1, the rest → v2)
/// to real HTTP/1.1 upstreams.
/// </summary>
public sealed class RuntimeApiTests : IAsyncLifetime
{
    private const string Service = "server.default.svc.cluster.local:9090";
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);

    private LayottoServer _v1 = null!;
    private LayottoServer _v2 = null!;
    private UpstreamPools _pools = null!;
    private ProxyServer _proxy = null!;
    private RuntimeApiServer _runtime = null!;
    private RuntimeApiServer? _unix;
    private string? _unixPath;

    private const string HeaderRoutes = """
                      - match: { prefix: "/flaky/" }
                        route:
                          cluster: "outbound|9090|v1|server.default.svc.cluster.local"
                          retry_policy: { retry_on: 5xx, num_retries: 3, retry_back_off: { base_interval: 0.005s } }
                      - match: { prefix: "/limited/" }
                        route: { cluster: "outbound|9090|limited|server.default.svc.cluster.local", timeout: 0s }
                      - match: { prefix: "/", headers: [ { name: name, string_match: { exact: layotto } } ] }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local", timeout: 0s }
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v2|server.default.svc.cluster.local", timeout: 0s }
        """;

    private const string Limited = "outbound|9090|limited|server.default.svc.cluster.local";

    private const string AllToV1 = """
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local", timeout: 0s }
        """;

    private string Bootstrap(string routes) => $$"""
        static_resources:
          listeners:
          - name: 0.0.0.0_9090
            address: { socket_address: { address: 0.0.0.0, port_value: 9090 } }
            bind_to_port: false
            filter_chains:
            - filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  route_config:
                    name: "9090"
                    virtual_hosts:
                    - name: server.default.svc.cluster.local:9090
                      domains: [server.default.svc.cluster.local, "server.default.svc.cluster.local:9090", server, "server:9090"]
                      routes:
        {{routes}}
          clusters:
          - name: outbound|9090|v1|server.default.svc.cluster.local
            connect_timeout: 1s
            load_assignment: { endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{_v1.Port}} } } } } ] } ] }
          - name: outbound|9090|limited|server.default.svc.cluster.local
            connect_timeout: 1s
            circuit_breakers: { thresholds: [ { max_requests: 1 } ] }
            load_assignment: { endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{_v1.Port}} } } } } ] } ] }
          - name: outbound|9090|v2|server.default.svc.cluster.local
            connect_timeout: 1s
            load_assignment: { endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{_v2.Port}} } } } } ] } ] }
        """;

    public async Task InitializeAsync()
    {
        _v1 = await LayottoServer.StartAsync("v1");
        _v2 = await LayottoServer.StartAsync("v2");
        _pools = new UpstreamPools();
        _proxy = new ProxyServer(new BootstrapLoader(_pools).Load(Bootstrap(HeaderRoutes), "test"), _pools);
        _proxy.Start();
        _runtime = new RuntimeApiServer(new IPEndPoint(IPAddress.Loopback, 0), _proxy.Snapshots);
        _runtime.Start();
    }

    public async Task DisposeAsync()
    {
        await _runtime.DisposeAsync();
        if (_unix != null)
        {
            await _unix.DisposeAsync();
        }
        await _proxy.DisposeAsync();
        await _v1.DisposeAsync();
        await _v2.DisposeAsync();
    }

    private GrpcChannel Channel() => GrpcChannel.ForAddress($"http://127.0.0.1:{((IPEndPoint)_runtime.EndPoint).Port}", new GrpcChannelOptions
    {
        MaxReceiveMessageSize = 32 << 20,
        MaxSendMessageSize = 32 << 20,
        HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false },
    });

    private static InvokeServiceRequest Invoke(string method, string? body = null, HTTPExtension.Types.Verb verb = HTTPExtension.Types.Verb.None, string? query = null, string? contentType = null, string id = Service)
    {
        var message = new CommonInvokeRequest { Method = method };
        if (body != null)
        {
            message.Data = new Any { TypeUrl = "type.googleapis.com/ignored", Value = ByteString.CopyFromUtf8(body) };
        }
        if (verb != HTTPExtension.Types.Verb.None || query != null)
        {
            message.HttpExtension = new HTTPExtension { Verb = verb, Querystring = query ?? "" };
        }
        if (contentType != null)
        {
            message.ContentType = contentType;
        }
        return new InvokeServiceRequest { Id = id, Message = message };
    }

    private static Metadata Name(string name) => new() { { "name", name } };

    [Fact]
    public async Task GetByDefault_RoutedToV2_AnswerInData()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        InvokeResponse response = await client.InvokeServiceAsync(Invoke("/hello")).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("GET /hello \n hello, i am layotto v2", response.Data.Value.ToStringUtf8());
        Assert.Equal("", response.Data.TypeUrl);
        Assert.Equal("text/plain; charset=utf-8", response.ContentType);
    }

    [Fact]
    public async Task NameMetadata_SelectsV1()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        for (int i = 0; i < 10; i++)
        {
            InvokeResponse v1 = await client.InvokeServiceAsync(Invoke("/hello"), Name("layotto")).ResponseAsync.WaitAsync(Limit);
            Assert.Equal("GET /hello \n hello, i am layotto v1", v1.Data.Value.ToStringUtf8());
            InvokeResponse v2 = await client.InvokeServiceAsync(Invoke("/hello"), Name("someone")).ResponseAsync.WaitAsync(Limit);
            Assert.Equal("GET /hello \n hello, i am layotto v2", v2.Data.Value.ToStringUtf8());
        }
    }

    [Fact]
    public async Task PostWithQueryAndBody_ContentTypeBothWays_MetadataToHeadersAndBack()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        var metadata = new Metadata { { "x-custom", "abc" }, { "name", "layotto" } };
        using var call = client.InvokeServiceAsync(Invoke("hello", "the body", HTTPExtension.Types.Verb.Post, "a=1&b=2", "application/json"), metadata);
        InvokeResponse response = await call.ResponseAsync.WaitAsync(Limit);
        Assert.Equal("POST /hello?a=1&b=2 \n the bodyhello, i am layotto v1", response.Data.Value.ToStringUtf8());
        Metadata headers = await call.ResponseHeadersAsync;
        Assert.Equal(Service, headers.GetValue("x-seen-host"));
        Assert.Equal(Service, headers.GetValue("x-seen-id"));
        Assert.Equal("application/json", headers.GetValue("x-seen-content-type"));
        Assert.Equal("abc", headers.GetValue("x-seen-custom"));
        Assert.Equal("8", headers.GetValue("x-seen-content-length"));
        Assert.Equal("", headers.GetValue("x-seen-grpc")); // no grpc-* or pseudo-header reached the upstream
        Assert.Null(headers.GetValue("content-length"));
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Head_AnswersWithoutData_ThoughTheUpstreamGivesAContentLength()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        using var call = client.InvokeServiceAsync(Invoke("/hello", verb: HTTPExtension.Types.Verb.Head));
        InvokeResponse response = await call.ResponseAsync.WaitAsync(Limit);
        Assert.True(response.Data.Value.IsEmpty);
        Assert.Equal("text/plain; charset=utf-8", response.ContentType);
        Assert.Equal(Service, (await call.ResponseHeadersAsync).GetValue("x-seen-host"));
    }

    [Fact]
    public async Task IdWithoutPort_FoundThroughTheVirtualHosts()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        InvokeResponse response = await client.InvokeServiceAsync(Invoke("/hello", id: "server")).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("GET /hello \n hello, i am layotto v2", response.Data.Value.ToStringUtf8());
    }

    [Fact]
    public async Task OneMebibyteBodies_BothWays()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        string body = new string('x', 1 << 20);
        InvokeResponse response = await client.InvokeServiceAsync(Invoke("/echo", body, HTTPExtension.Types.Verb.Put)).ResponseAsync.WaitAsync(Limit);
        string text = response.Data.Value.ToStringUtf8();
        Assert.Equal("PUT /echo \n " + body + "hello, i am layotto v2", text);
    }

    [Fact]
    public async Task TwoHundredConcurrentCalls_OnOneChannel()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        var calls = Enumerable.Range(0, 200).Select(async i =>
        {
            bool v1 = i % 2 == 0;
            InvokeResponse r = await client.InvokeServiceAsync(Invoke($"/n/{i}"), v1 ? Name("layotto") : null).ResponseAsync;
            Assert.Equal($"GET /n/{i} \n hello, i am layotto {(v1 ? "v1" : "v2")}", r.Data.Value.ToStringUtf8());
        });
        await Task.WhenAll(calls).WaitAsync(Limit);
    }

    [Fact]
    public async Task Upstream503_IsUnavailable_NamingTheStatusAndBody()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        long before = RuntimeApiStats.WithStatus(14);
        var e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/status/503")).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.Equal("http response code 503, body: status 503 from v2", e.Status.Detail);
        Assert.True(RuntimeApiStats.WithStatus(14) > before);
    }

    [Fact]
    public async Task CircuitBreakerOverflow_IsUnavailable_AndCounted()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        ClusterState state = _proxy.Snapshots.Current.Clusters[Limited].State;
        long overflows = state.Overflows;
        // One call holds the cluster's only request slot (max_requests: 1) until its deadline.
        using var holder = client.InvokeServiceAsync(Invoke("/limited/slow"), new Metadata { { "rpc_request_timeout", "2000" } });
        await WaitUntilAsync(() => state.ActiveRequests == 1);
        var e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/limited/x")).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.Equal("http response code 503, body: upstream overflow\n", e.Status.Detail);
        Assert.Equal(overflows + 1, state.Overflows);
        var held = await Assert.ThrowsAsync<RpcException>(() => holder.ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.DeadlineExceeded, held.StatusCode);
    }

    [Fact]
    public async Task UnknownService_IsUnavailable()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        var e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/hello", id: "nowhere.default.svc.cluster.local:7777")).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.Contains("nowhere.default.svc.cluster.local:7777", e.Status.Detail, StringComparison.Ordinal);
        // A known port whose virtual hosts do not know the host: the router's 404.
        e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/hello", id: "other:9090")).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.StartsWith("http response code 404", e.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Deadline_IsDeadlineExceeded_AndTheUpstreamRequestCancelled()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        int aborted = _v2.Aborted;
        // The call's own deadline (grpc-timeout): the client may see it first; either way the proxy gives up.
        var e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/slow"), deadline: DateTime.UtcNow.AddMilliseconds(400)).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        // Layotto's rpc_request_timeout metadata: only the proxy knows it, so the status is its answer.
        var started = System.Diagnostics.Stopwatch.StartNew();
        e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/slow"), new Metadata { { "rpc_request_timeout", "300" } }).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.InRange(started.ElapsedMilliseconds, 250, 5000);
        await WaitUntilAsync(() => _v2.Aborted >= aborted + 2);
    }

    [Fact]
    public async Task DefaultTimeout_IsLayottosThreeSeconds()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        var started = System.Diagnostics.Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/slow")).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.InRange(started.ElapsedMilliseconds, 2900, 8000);
    }

    [Fact]
    public async Task RetriesOnA503Route_Succeed()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        InvokeResponse response = await client.InvokeServiceAsync(Invoke("/flaky/one", "replayed body", HTTPExtension.Types.Verb.Post)).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("POST /flaky/one \n replayed bodyhello, i am layotto v1", response.Data.Value.ToStringUtf8());
    }

    [Fact]
    public async Task OtherRuntimeMethods_AreUnimplemented()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        var e = await Assert.ThrowsAsync<RpcException>(() => client.GetStateAsync(new GetStateRequest()).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
        e = await Assert.ThrowsAsync<RpcException>(() => client.TryLockAsync(new TryLockRequest()).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
        using var stream = client.SubscribeTopicEvents();
        e = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None).WaitAsync(Limit));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
        using var put = client.PutFile();
        e = await Assert.ThrowsAsync<RpcException>(() => put.ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
    }

    [Fact]
    public async Task SayHello_GreetsAndEchoesData()
    {
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        var data = new Any { TypeUrl = "type.googleapis.com/x", Value = ByteString.CopyFrom(new byte[10_000]) };
        SayHelloResponse response = await client.SayHelloAsync(new SayHelloRequest { ServiceName = "helloworld", Name = "layotto", Data = data }).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("greetings, layotto", response.Hello);
        Assert.Equal(data, response.Data);
        response = await client.SayHelloAsync(new SayHelloRequest()).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("greetings", response.Hello);
        Assert.Null(response.Data);
    }

    [Fact]
    public async Task OverAUnixSocket()
    {
        _unixPath = Path.Combine(Path.GetTempPath(), $"layotto-fast-{Guid.NewGuid():N}.sock");
        _unix = new RuntimeApiServer(new UnixDomainSocketEndPoint(_unixPath), _proxy.Snapshots);
        _unix.Start();
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, token) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(_unixPath), token);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        using GrpcChannel channel = GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler });
        var client = new Runtime.RuntimeClient(channel);
        InvokeResponse response = await client.InvokeServiceAsync(Invoke("/hello"), Name("layotto")).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("GET /hello \n hello, i am layotto v1", response.Data.Value.ToStringUtf8());
        await _unix.DisposeAsync();
        _unix = null;
        Assert.False(File.Exists(_unixPath)); // the socket file goes with the server
    }

    [Fact]
    public async Task RoutesChangedWhileCallsRun_NoCallFails()
    {
        ProxySnapshot allToV1 = new BootstrapLoader(_pools).Load(Bootstrap(AllToV1), "v1");
        ProxySnapshot byHeader = new BootstrapLoader(_pools).Load(Bootstrap(HeaderRoutes), "header");
        using GrpcChannel channel = Channel();
        var client = new Runtime.RuntimeClient(channel);
        using var stop = new CancellationTokenSource();
        int swaps = 0;
        Task swapper = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await _proxy.ApplyAsync(++swaps % 2 == 0 ? byHeader : allToV1);
                await Task.Delay(5);
            }
        });
        int v1 = 0;
        int v2 = 0;
        // At least 2000 calls, and on until the routes have changed more than 10 times under them (a fast
        // box can make 2000 calls within a few swaps); at most 50,000.
        int started = 0;
        await Parallel.ForAsync(0, 16, async (_, token) =>
        {
            while (Interlocked.Increment(ref started) is var n && n <= 50_000 && (n <= 2000 || Volatile.Read(ref swaps) <= 10))
            {
                InvokeResponse r = await client.InvokeServiceAsync(Invoke("/hello"), cancellationToken: token).ResponseAsync.WaitAsync(Limit, token);
                Interlocked.Increment(ref r.Data.Value.ToStringUtf8().EndsWith("v1", StringComparison.Ordinal) ? ref v1 : ref v2);
            }
        });
        await stop.CancelAsync();
        await swapper;
        Assert.True(swaps > 10, $"only {swaps} swaps");
        Assert.True(v1 > 0 && v2 > 0, $"v1 {v1}, v2 {v2}: both routings should have answered");
        // After the last swap every call follows it.
        await _proxy.ApplyAsync(allToV1);
        InvokeResponse last = await client.InvokeServiceAsync(Invoke("/hello")).ResponseAsync.WaitAsync(Limit);
        Assert.EndsWith("v1", last.Data.Value.ToStringUtf8(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task RawMessages_UnknownFieldsSkipped_BadOnesRefused()
    {
        using GrpcChannel channel = Channel();
        var method = new Method<byte[], byte[]>(MethodType.Unary, "spec.proto.runtime.v1.Runtime", "InvokeService",
            Marshallers.Create(static b => b, static b => b), Marshallers.Create(static b => b, static b => b));
        CallInvoker invoker = channel.CreateCallInvoker();
        // Our request with an unknown varint field (99) and an unknown length field (100) in front.
        byte[] known = Invoke("/hello").ToByteArray();
        byte[] withUnknown = [0x98, 0x06, 0x2A, 0xA2, 0x06, 0x03, (byte)'a', (byte)'b', (byte)'c', .. known];
        byte[] answer = await invoker.AsyncUnaryCall(method, null, new CallOptions(), withUnknown).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("GET /hello \n hello, i am layotto v2", InvokeResponse.Parser.ParseFrom(answer).Data.Value.ToStringUtf8());
        // Two `message` fields merge (proto3): the method from the first, the verb from the second.
        byte[] merged = [.. new InvokeServiceRequest { Id = Service, Message = new CommonInvokeRequest { Method = "/merged" } }.ToByteArray(),
            .. new InvokeServiceRequest { Message = new CommonInvokeRequest { HttpExtension = new HTTPExtension { Verb = HTTPExtension.Types.Verb.Delete } } }.ToByteArray()];
        answer = await invoker.AsyncUnaryCall(method, null, new CallOptions(), merged).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("DELETE /merged \n hello, i am layotto v2", InvokeResponse.Parser.ParseFrom(answer).Data.Value.ToStringUtf8());
        // A truncated message: INTERNAL, as gRPC servers answer what they cannot decode.
        var e = await Assert.ThrowsAsync<RpcException>(() => invoker.AsyncUnaryCall(method, null, new CallOptions(), known[..^2]).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Internal, e.StatusCode);
        // No id, or an id with a space: INVALID_ARGUMENT.
        e = await Assert.ThrowsAsync<RpcException>(() => invoker.AsyncUnaryCall(method, null, new CallOptions(), Invoke("/hello", id: "").ToByteArray()).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        e = await Assert.ThrowsAsync<RpcException>(() => invoker.AsyncUnaryCall(method, null, new CallOptions(), Invoke("/a b").ToByteArray()).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
    }

    [Fact]
    public async Task MessageOverTheLimit_IsResourceExhausted_AndTheConnectionGoesOn()
    {
        await using var small = new RuntimeApiServer(new IPEndPoint(IPAddress.Loopback, 0), _proxy.Snapshots, new RuntimeApiOptions { MaxMessageBytes = 64 * 1024 });
        small.Start();
        using GrpcChannel channel = GrpcChannel.ForAddress($"http://127.0.0.1:{((IPEndPoint)small.EndPoint).Port}", new GrpcChannelOptions { MaxSendMessageSize = null, MaxReceiveMessageSize = null });
        var client = new Runtime.RuntimeClient(channel);
        var e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/echo", new string('x', 100_000), HTTPExtension.Types.Verb.Post)).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        // A response over the limit too, and one just under it (chunked: the buffer grows as it comes).
        e = await Assert.ThrowsAsync<RpcException>(() => client.InvokeServiceAsync(Invoke("/big/70000")).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        InvokeResponse big = await client.InvokeServiceAsync(Invoke("/big/60000")).ResponseAsync.WaitAsync(Limit);
        Assert.Equal(new string('b', 60_000), big.Data.Value.ToStringUtf8());
        InvokeResponse ok = await client.InvokeServiceAsync(Invoke("/hello")).ResponseAsync.WaitAsync(Limit);
        Assert.Equal("GET /hello \n hello, i am layotto v2", ok.Data.Value.ToStringUtf8());
    }

    [Fact]
    public async Task ClientThatDoesNotRead_IsResetAtTheDeadline_AndItsAnswerLetGo()
    {
        // A stream window of 0: the answer's DATA can never go out. The call's deadline ends it.
        using var client = await Abuse.RawH2Client.ConnectAsync(((IPEndPoint)_runtime.EndPoint).Port);
        byte[] message = Invoke("/hello").ToByteArray();
        byte[] frame = [0, .. BitConverter.GetBytes(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(message.Length)), .. message];
        client.Preface((Proxy.Http2.Http2SettingsParameter.InitialWindowSize, 0))
            .Headers(1, "POST", "/spec.proto.runtime.v1.Runtime/InvokeService", endStream: false, "localhost",
                ("content-type", "application/grpc"), ("te", "trailers"), ("rpc_request_timeout", "400"))
            .Data(1, frame, endStream: true);
        Assert.True(await client.FlushAsync());
        long before = RuntimeApiStats.WithStatus(4);
        var frames = await client.ReadFramesAsync((type, _) => type == Proxy.Http2.Http2FrameType.RstStream, Limit);
        var reset = frames.Last();
        Assert.Equal(Proxy.Http2.Http2FrameType.RstStream, reset.Type);
        Assert.Equal(1, reset.StreamId);
        Assert.Equal((int)Proxy.Http2.Http2ErrorCode.Cancel, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(reset.Payload));
        Assert.Contains(frames, f => f.Type == Proxy.Http2.Http2FrameType.Headers && f.StreamId == 1); // the answer's head went out
        Assert.DoesNotContain(frames, f => f.Type == Proxy.Http2.Http2FrameType.Data);
        Assert.True(RuntimeApiStats.WithStatus(4) > before);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Limit;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(20);
        }
    }
}
