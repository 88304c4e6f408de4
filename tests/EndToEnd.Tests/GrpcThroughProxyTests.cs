using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using EndToEnd.Tests.Grpc;

namespace EndToEnd.Tests;

/// <summary>Grpc.Net.Client → the proxy (h2c) → Grpc.AspNetCore (h2c): every call shape, over real sockets.</summary>
public sealed class GrpcThroughProxyTests(ProxyFixture fixture) : IClassFixture<ProxyFixture>
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    private Echo.EchoClient Client(GrpcChannel? channel = null) => new((channel ?? fixture.Channel()).CreateCallInvoker());

    [Fact]
    public async Task Unary_RoundTripsWithHeadersAndTrailers()
    {
        using GrpcChannel channel = fixture.Channel();
        var call = Client(channel).UnaryAsync(new EchoRequest { Message = "hello" }, new Metadata { { "x-echo-one", "1" }, { "x-echo-bin", new byte[] { 0, 1, 2, 255 } } });
        EchoReply reply = await call.ResponseAsync.WaitAsync(Limit);
        Assert.Equal("hello", reply.Message);
        Metadata headers = await call.ResponseHeadersAsync;
        Assert.Equal("1", headers.GetValue("x-echo-one"));
        Assert.Equal(new byte[] { 0, 1, 2, 255 }, headers.GetValueBytes("x-echo-bin"));
        Assert.Equal("trailer-value", call.GetTrailers().GetValue("x-trailer"));
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Unary_ErrorStatusWithUnicodeMessage_IsCarriedIntact()
    {
        using GrpcChannel channel = fixture.Channel();
        var call = Client(channel).UnaryAsync(new EchoRequest { Status = (int)StatusCode.FailedPrecondition, Message = "ünïcødé ✓ 错误" });
        var e = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Equal("ünïcødé ✓ 错误", e.Status.Detail);
        Assert.Equal("trailer-value", e.Trailers.GetValue("x-trailer"));
    }

    [Fact]
    public async Task ServerStreaming_DeliversEveryMessage()
    {
        using GrpcChannel channel = fixture.Channel();
        using var call = Client(channel).ServerStream(new EchoRequest { Message = "s", Count = 500 });
        int n = 0;
        await foreach (EchoReply reply in call.ResponseStream.ReadAllAsync().WithCancellation(new CancellationTokenSource(Limit).Token))
        {
            Assert.Equal(n++, reply.Index);
        }
        Assert.Equal(500, n);
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task ClientStreaming_CountsEveryMessage()
    {
        using GrpcChannel channel = fixture.Channel();
        using var call = Client(channel).ClientStream();
        for (int i = 0; i < 300; i++)
        {
            await call.RequestStream.WriteAsync(new EchoRequest { Payload = ByteString.CopyFrom(new byte[1000]) });
        }
        await call.RequestStream.CompleteAsync();
        EchoReply reply = await call.ResponseAsync.WaitAsync(Limit);
        Assert.Equal("300 messages, 300000 bytes", reply.Message);
    }

    [Fact]
    public async Task Duplex_IsFullDuplex()
    {
        using GrpcChannel channel = fixture.Channel();
        using var call = Client(channel).Duplex();
        // Ping-pong: each reply must arrive before the next request is sent, so nothing is buffered to the end.
        for (int i = 0; i < 50; i++)
        {
            await call.RequestStream.WriteAsync(new EchoRequest { Message = $"m{i}" });
            Assert.True(await call.ResponseStream.MoveNext(new CancellationTokenSource(Limit).Token));
            Assert.Equal($"m{i}", call.ResponseStream.Current.Message);
        }
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext(new CancellationTokenSource(Limit).Token));
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Theory]
    [InlineData(4 << 20)]
    [InlineData(16 << 20)]
    public async Task LargeMessages_PassEachWay(int size)
    {
        using GrpcChannel channel = fixture.Channel();
        var payload = new byte[size];
        new Random(size).NextBytes(payload);
        EchoReply reply = await Client(channel).UnaryAsync(new EchoRequest { Payload = ByteString.CopyFrom(payload) }).ResponseAsync.WaitAsync(Limit);
        Assert.Equal(payload, reply.Payload.ToByteArray());
        EchoReply big = await Client(channel).UnaryAsync(new EchoRequest { ReplySize = size }).ResponseAsync.WaitAsync(Limit);
        Assert.Equal(size, big.Payload.Length);
    }

    [Fact]
    public async Task HundredConcurrentStreams_OnOneConnection()
    {
        using GrpcChannel channel = fixture.Channel();
        Echo.EchoClient client = Client(channel);
        var calls = Enumerable.Range(0, 100).Select(i => client.UnaryAsync(new EchoRequest { Message = $"c{i}", DelayMs = 50 }).ResponseAsync).ToArray();
        EchoReply[] replies = await Task.WhenAll(calls).WaitAsync(Limit);
        Assert.Equal(Enumerable.Range(0, 100).Select(i => $"c{i}"), replies.Select(r => r.Message));
    }

    [Fact]
    public async Task Deadline_ExpiresAndCancelsTheUpstream()
    {
        var probe = new ProxyFixture();
        await probe.InitializeAsync();
        try
        {
            using GrpcChannel channel = probe.Channel();
            var sw = Stopwatch.StartNew();
            var e = await Assert.ThrowsAsync<RpcException>(() =>
                new Echo.EchoClient(channel).UnaryAsync(new EchoRequest { DelayMs = 20_000 }, deadline: DateTime.UtcNow.AddMilliseconds(300)).ResponseAsync.WaitAsync(Limit));
            Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
            // The upstream handler saw its call cancelled: the cancellation crossed the proxy.
            Assert.Equal("/layotto.test.Echo/Unary", await probe.Probe.Cancelled.Task.WaitAsync(Limit));
        }
        finally
        {
            await probe.DisposeAsync();
        }
    }

    [Fact]
    public async Task CancelAfterFirstResponse_ReachesTheUpstream()
    {
        var probe = new ProxyFixture();
        await probe.InitializeAsync();
        try
        {
            using GrpcChannel channel = probe.Channel();
            using var cts = new CancellationTokenSource();
            using var call = new Echo.EchoClient(channel).ServerStream(new EchoRequest { Count = 1000, DelayMs = 20 }, cancellationToken: cts.Token);
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
            await cts.CancelAsync();
            Assert.Equal("/layotto.test.Echo/ServerStream", await probe.Probe.Cancelled.Task.WaitAsync(Limit));
        }
        finally
        {
            await probe.DisposeAsync();
        }
    }

    [Fact]
    public async Task NoRoute_IsUnimplemented()
    {
        // The authority names a virtual host without routes; the socket still goes to the proxy.
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, token) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await socket.ConnectAsync(System.Net.IPAddress.Loopback, fixture.ProxyPort, token);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        using GrpcChannel channel = GrpcChannel.ForAddress("http://no-route.example", new GrpcChannelOptions { HttpHandler = handler });
        var e = await Assert.ThrowsAsync<RpcException>(() => new Echo.EchoClient(channel).UnaryAsync(new EchoRequest()).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
    }

    [Fact]
    public async Task UpstreamReset_SurfacesToTheClient()
    {
        using GrpcChannel channel = fixture.Channel();
        using var call = Client(channel).ServerStream(new EchoRequest { Message = "abort", Count = 10 });
        // The upstream sends one message and resets; the reset may overtake the message at the client.
        var e = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await call.ResponseStream.MoveNext(new CancellationTokenSource(Limit).Token))
            {
            }
        });
        Assert.NotEqual(StatusCode.OK, e.StatusCode);
    }

    [Fact]
    public async Task FaultAbortWithGrpcStatus_ReachesTheClient()
    {
        using GrpcChannel channel = fixture.Channel();
        var e = await Assert.ThrowsAsync<RpcException>(() =>
            Client(channel).UnaryAsync(new EchoRequest(), new Metadata { { "x-fault", "grpc" } }).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.Equal("fault filter abort", e.Status.Detail);
    }

    [Fact]
    public async Task UpstreamDown_IsUnavailable()
    {
        using GrpcChannel channel = fixture.Channel();
        var method = new Method<EchoRequest, EchoReply>(MethodType.Unary, "dead.Service", "Call",
            Marshallers.Create(r => r.ToByteArray(), EchoRequest.Parser.ParseFrom), Marshallers.Create(r => r.ToByteArray(), EchoReply.Parser.ParseFrom));
        var e = await Assert.ThrowsAsync<RpcException>(() => channel.CreateCallInvoker().AsyncUnaryCall(method, null, new CallOptions(), new EchoRequest()).ResponseAsync.WaitAsync(Limit));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
    }
}
