using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using Layotto.Runtime.V1;
using EndToEnd.Tests.Abuse;

namespace EndToEnd.Tests;

/// <summary>The runtime API of the published Native AOT binary: enabled by flag (a unix socket) or by LAYOTTO_RUNTIME_API.</summary>
public sealed class RuntimeApiBinaryTests : IAsyncLifetime
{
    private LayottoServer _server = null!;

    public async Task InitializeAsync() => _server = await LayottoServer.StartAsync("v1");

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private static InvokeServiceRequest Hello() => new()
    {
        Id = "server.default.svc.cluster.local:9090",
        Message = new CommonInvokeRequest { Method = "/hello", HttpExtension = new HTTPExtension { Verb = HTTPExtension.Types.Verb.Post }, Data = new Google.Protobuf.WellKnownTypes.Any { Value = Google.Protobuf.ByteString.CopyFromUtf8("hi ") } },
    };

    [Fact]
    public async Task RuntimeApiFlag_OnAUnixSocket()
    {
        string path = Path.Combine(Path.GetTempPath(), $"layotto-fast-aot-{Guid.NewGuid():N}.sock");
        await using (AotProxy proxy = await AotProxy.StartAsync(_server.Port, "h1", "--runtime-api", "unix:" + path))
        {
            for (int i = 0; i < 200 && !File.Exists(path); i++)
            {
                await Task.Delay(25);
            }
            var handler = new SocketsHttpHandler
            {
                ConnectCallback = async (_, token) =>
                {
                    var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), token);
                    return new NetworkStream(socket, ownsSocket: true);
                },
            };
            using GrpcChannel channel = GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler });
            var client = new Runtime.RuntimeClient(channel);
            InvokeResponse response = await client.InvokeServiceAsync(Hello()).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal("POST /hello \n hi hello, i am layotto v1", response.Data.Value.ToStringUtf8());
            Assert.Contains($"runtime API (spec.proto.runtime.v1.Runtime) on unix:{path}", proxy.Log, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task RuntimeApiFromTheEnvironment_AsUnderPilotAgent()
    {
        int port = AotProxy.FreePort();
        await using AotProxy proxy = await AotProxy.StartAsync(_server.Port, "h1", new Dictionary<string, string> { ["LAYOTTO_RUNTIME_API"] = $"127.0.0.1:{port}" });
        using GrpcChannel channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}");
        var client = new Runtime.RuntimeClient(channel);
        InvokeResponse response = null!;
        for (int i = 0; ; i++)
        {
            try
            {
                response = await client.InvokeServiceAsync(Hello()).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(20));
                break;
            }
            catch (RpcException) when (i < 100)
            {
                await Task.Delay(25); // the runtime API binds just after the listeners
            }
        }
        Assert.Equal("POST /hello \n hi hello, i am layotto v1", response.Data.Value.ToStringUtf8());
        SayHelloResponse hello = await client.SayHelloAsync(new SayHelloRequest { Name = "aot" }).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal("greetings, aot", hello.Hello);
    }
}
