// The seed's `client`: HTTP on port 9080.
//   GET /grpc  calls its sidecar's runtime API (spec.proto.runtime.v1.Runtime/InvokeService on
//              localhost:34904): id "server.default.svc.cluster.local:9090", method "/hello", the request
//              body as data, the incoming `name` header as gRPC metadata; writes data.value and a newline.
//   GET /http  a plain HTTP GET of server.default.svc.cluster.local:9090/ through the sidecar's outbound
//              listener (127.0.0.1:9090: with INTERCEPTION_MODE NONE the app talks to it directly).
//   layotto-demo-client [--listen 0.0.0.0:9080] [--runtime-api http://localhost:34904] [--sidecar 127.0.0.1:9090]
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using Layotto.Runtime.V1;

string listen = Option("--listen", "LISTEN") ?? "0.0.0.0:9080";
string runtimeApi = Option("--runtime-api", "RUNTIME_API") ?? "http://localhost:34904";
string sidecar = Option("--sidecar", "SIDECAR_HTTP") ?? "127.0.0.1:9090";
const string Service = "server.default.svc.cluster.local:9090";
if (!IPEndPoint.TryParse(listen, out IPEndPoint? endPoint) || !IPEndPoint.TryParse(sidecar, out IPEndPoint? sidecarEndPoint))
{
    Console.Error.WriteLine("layotto-demo-client: --listen and --sidecar take IP:PORT");
    return 2;
}

using GrpcChannel channel = GrpcChannel.ForAddress(runtimeApi);
var runtime = new Runtime.RuntimeClient(channel);
using var http = new HttpClient(new SocketsHttpHandler
{
    // The request names the service; the connection goes to the sidecar.
    ConnectCallback = async (_, token) =>
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(sidecarEndPoint, token);
        return new NetworkStream(socket, ownsSocket: true);
    },
}) { Timeout = TimeSpan.FromSeconds(10) };

WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k => k.Listen(endPoint));
WebApplication app = builder.Build();
app.MapGet("/grpc", async context =>
{
    using var body = new MemoryStream();
    await context.Request.Body.CopyToAsync(body);
    var request = new InvokeServiceRequest
    {
        Id = Service,
        Message = new CommonInvokeRequest { Method = "/hello", Data = new Any { Value = ByteString.CopyFrom(body.ToArray()) } },
    };
    var metadata = new Metadata();
    if (context.Request.Headers.TryGetValue("name", out var name))
    {
        metadata.Add("name", name.ToString());
    }
    try
    {
        InvokeResponse response = await runtime.InvokeServiceAsync(request, metadata, deadline: DateTime.UtcNow.AddSeconds(5));
        await context.Response.WriteAsync(response.Data.Value.ToStringUtf8() + "\n");
    }
    catch (RpcException e)
    {
        context.Response.StatusCode = 502;
        await context.Response.WriteAsync($"InvokeService failed: {e.StatusCode}: {e.Status.Detail}\n");
    }
});
app.MapGet("/http", async context =>
{
    try
    {
        string answer = await http.GetStringAsync($"http://{Service}/");
        await context.Response.WriteAsync(answer + "\n");
    }
    catch (HttpRequestException e)
    {
        context.Response.StatusCode = 502;
        await context.Response.WriteAsync($"GET failed: {e.Message}\n");
    }
});
Console.Out.WriteLine($"client listening on {endPoint}; runtime API {runtimeApi}; sidecar {sidecarEndPoint}");
await app.RunAsync();
return 0;

string? Option(string flag, string environment)
{
    int i = Array.IndexOf(args, flag);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : Environment.GetEnvironmentVariable(environment);
}
