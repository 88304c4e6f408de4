using System.Net;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Proxy.Core;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace EndToEnd.Tests;

/// <summary>
/// A real upstream (Kestrel: gRPC over h2c, plain HTTP over HTTP/1.1) and the proxy in front of it on
/// loopback, with ports from the OS. One instance per test class.
/// </summary>
public sealed class ProxyFixture : IAsyncLifetime
{
    private WebApplication? _upstream;
    private ProxyServer? _proxy;

    public UpstreamProbe Probe { get; } = new();
    public int GrpcUpstreamPort { get; private set; }
    public int HttpUpstreamPort { get; private set; }
    /// <summary>Proxy listener routing /layotto.test.Echo/ to the gRPC upstream over h2, everything else to the HTTP/1.1 upstream.</summary>
    public int ProxyPort { get; private set; }
    public ProxyServer Proxy => _proxy!;

    public async Task InitializeAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(Probe);
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = 32 << 20;
            o.MaxSendMessageSize = 32 << 20;
        });
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Limits.MaxRequestHeaderCount = 500;
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2);
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1);
        });
        WebApplication app = builder.Build();
        app.MapGrpcService<EchoService>();
        app.MapPost("/echo", static async (HttpContext context) =>
        {
            context.Response.ContentType = context.Request.ContentType ?? "application/octet-stream";
            long total = 0;
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
            {
                total += n;
            }
            await context.Response.WriteAsync($"received {total} bytes");
        });
        app.MapGet("/headers", static (HttpContext context) =>
            string.Join('\n', context.Request.Headers.Where(h => h.Key.StartsWith("x-", StringComparison.OrdinalIgnoreCase)).Select(h => $"{h.Key.ToLowerInvariant()}={h.Value}")));
        app.MapGet("/big/{size:int}", static async (int size, HttpContext context) =>
        {
            var chunk = new byte[8192];
            for (int i = 0; i < chunk.Length; i++)
            {
                chunk[i] = (byte)('a' + i % 26);
            }
            for (int sent = 0; sent < size; sent += chunk.Length)
            {
                await context.Response.Body.WriteAsync(chunk.AsMemory(0, Math.Min(chunk.Length, size - sent)));
            }
        });
        app.MapMethods("/hello", ["GET", "HEAD"], static () => "hello");
        var attempts = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        app.MapGet("/sleep/{ms:int}", static async (int ms, HttpContext context) =>
        {
            await Task.Delay(ms, context.RequestAborted);
            return "slept";
        });
        app.MapGet("/flaky/{id}", (string id) =>
            attempts.AddOrUpdate("flaky" + id, 1, static (_, n) => n + 1) is var n && n == 1 ? Results.StatusCode(503) : Results.Text($"ok after {n}"));
        var mirrored = new System.Collections.Concurrent.ConcurrentDictionary<string, System.Collections.Concurrent.ConcurrentQueue<string>>();
        app.MapPost("/mirror-probe/{id}", async (string id, HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            string body = await reader.ReadToEndAsync();
            mirrored.GetOrAdd(id, static _ => new()).Enqueue($"{context.Request.Host.Value} {body}");
            return "primary-answer";
        });
        app.MapGet("/mirror-seen/{id}", (string id) => string.Join('|', mirrored.GetOrAdd(id, static _ => new()).Order()));
        app.MapGet("/slow-once/{id}", async (string id, HttpContext context) =>
        {
            if (attempts.AddOrUpdate("slow" + id, 1, static (_, n) => n + 1) == 1)
            {
                await Task.Delay(5000, context.RequestAborted);
            }
            return "fast";
        });
        app.MapGet("/reset-once/{id}", (string id, HttpContext context) =>
        {
            if (attempts.AddOrUpdate("reset" + id, 1, static (_, n) => n + 1) == 1)
            {
                context.Abort();
                return Results.Empty;
            }
            return Results.Text("recovered");
        });
        app.MapGet("/slow", static async (HttpContext context) =>
        {
            await Task.Delay(10_000, context.RequestAborted);
            return "late";
        });
        await app.StartAsync();
        _upstream = app;
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToList();
        GrpcUpstreamPort = new Uri(addresses[0]).Port;
        HttpUpstreamPort = new Uri(addresses[1]).Port;

        var pools = new UpstreamPools();
        var grpc = new Cluster("grpc", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, GrpcUpstreamPort), UpstreamProtocol.Http2)], TimeSpan.FromSeconds(5));
        var http = new Cluster("http", UpstreamProtocol.Http1, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, HttpUpstreamPort), UpstreamProtocol.Http1)], TimeSpan.FromSeconds(5));
        var mixed = new Cluster("mixed", UpstreamProtocol.Http1,
            [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, ClosedPort()), UpstreamProtocol.Http1), pools.Endpoint(new IPEndPoint(IPAddress.Loopback, HttpUpstreamPort), UpstreamProtocol.Http1)],
            TimeSpan.FromSeconds(2));
        var fast = TimeSpan.FromMilliseconds(5);
        var limited = new Cluster("limited", UpstreamProtocol.Http1, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, HttpUpstreamPort), UpstreamProtocol.Http1)], TimeSpan.FromSeconds(2))
        {
            CircuitBreakers = new CircuitBreakers { MaxRequests = 1 },
        };
        var dead = new Cluster("dead", UpstreamProtocol.Http2, [pools.Endpoint(new IPEndPoint(IPAddress.Loopback, ClosedPort()), UpstreamProtocol.Http2)], TimeSpan.FromSeconds(2));
        var host = new VirtualHost("all", ["*"],
        [
            new Route("grpc-fault", PathMatchKind.Prefix, "/layotto.test.Echo/", grpc, TimeSpan.Zero)
            {
                Headers = [HeaderMatcher.ForString("x-fault", new StringMatcher(StringMatchKind.Exact, "grpc"))],
                Fault = new FaultPolicy { AbortGrpcStatus = 8, AbortFraction = 1 },
            },
            new Route("grpc", PathMatchKind.Prefix, "/layotto.test.Echo/", grpc, TimeSpan.Zero),
            new Route("dead", PathMatchKind.Prefix, "/dead.", dead, TimeSpan.Zero),
            new Route("slow", PathMatchKind.Path, "/slow", http, TimeSpan.FromMilliseconds(300)),
            new Route("moved", PathMatchKind.Prefix, "/old/", RouteAction.ToRedirect(301, "https", "new.example", 0, null, "/new/", stripQuery: false)),
            new Route("moved-host", PathMatchKind.Prefix, "/moved-host/", RouteAction.ToRedirect(302, null, "other.example", 0, null, null, stripQuery: false)),
            new Route("direct", PathMatchKind.Path, "/direct", RouteAction.Direct(202, "made by the proxy")),
            new Route("cors", PathMatchKind.Prefix, "/cors/", RouteAction.ToCluster(http, TimeSpan.Zero).WithRewrites("/"u8.ToArray(), null))
            {
                Cors = new CorsPolicy([new StringMatcher(StringMatchKind.Exact, "https://app.example")], "GET,POST", "content-type,x-token", "x-trace", "600", allowCredentials: true),
            },
            new Route("idle", PathMatchKind.Prefix, "/idle/", RouteAction.ToCluster(http, TimeSpan.Zero).WithIdleTimeout(TimeSpan.FromMilliseconds(300)).WithRewrites("/"u8.ToArray(), null)),
            new Route("limited", PathMatchKind.Prefix, "/limited/", RouteAction.ToCluster(limited, TimeSpan.Zero).WithRewrites("/"u8.ToArray(), null)),
            new Route("flaky", PathMatchKind.Prefix, "/flaky/", RouteAction.ToCluster(http, TimeSpan.Zero)
                .WithRewrites(null, null, new RetryPolicy { RetryOn = RetryOn.ServerError5xx, NumRetries = 2, BaseInterval = fast })),
            new Route("per-try", PathMatchKind.Prefix, "/slow-once/", RouteAction.ToCluster(http, TimeSpan.Zero)
                .WithRewrites(null, null, new RetryPolicy { RetryOn = RetryOn.GatewayError, NumRetries = 1, BaseInterval = fast, PerTryTimeout = TimeSpan.FromMilliseconds(300) })),
            new Route("mirror", PathMatchKind.Prefix, "/mirror-probe/", RouteAction.ToCluster(http, TimeSpan.Zero).WithMirror(new MirrorPolicy(http, 1))),
            new Route("flaky-no-retry", PathMatchKind.Prefix, "/flaky-no-retry/", RouteAction.ToCluster(http, TimeSpan.Zero).WithRewrites("/flaky/"u8.ToArray(), null)),
            new Route("reset-once", PathMatchKind.Prefix, "/reset-once/", RouteAction.ToCluster(http, TimeSpan.Zero)
                .WithRewrites(null, null, new RetryPolicy { RetryOn = RetryOn.Reset, NumRetries = 1, BaseInterval = fast })),
            new Route("mixed", PathMatchKind.Prefix, "/mixed/", RouteAction.ToCluster(mixed, TimeSpan.Zero)
                .WithRewrites("/"u8.ToArray(), null, new RetryPolicy { RetryOn = RetryOn.ConnectFailure, NumRetries = 2, BaseInterval = fast, AvoidPreviousHosts = true, HostSelectionRetryMaxAttempts = 5 })),
            new Route("headers", PathMatchKind.Path, "/headers", http, TimeSpan.Zero)
            {
                RequestHeaderMutations = new HeaderMutations([("x-added", "by-route", HeaderAppendAction.Append), ("x-replaced", "new", HeaderAppendAction.OverwriteOrAdd)], ["x-remove-me"]),
                ResponseHeaderMutations = new HeaderMutations([("x-response-added", "yes", HeaderAppendAction.Append)], []),
            },
            new Route("http", PathMatchKind.Prefix, "/", http, TimeSpan.Zero),
        ]);
        var noRouteHost = new VirtualHost("other", ["no-route.example"], []);
        var listener = new ListenerConfig("main", new IPEndPoint(IPAddress.Loopback, 0), new RouteConfiguration("routes", [noRouteHost, host]))
        {
            Options = new ListenerOptions { AcceptHttp10 = true },
        };
        _proxy = new ProxyServer(new ProxySnapshot([listener], [grpc, http, dead, mixed, limited], 1), pools);
        _proxy.Start();
        ProxyPort = _proxy.Listeners[0].LocalEndPoint.Port;
    }

    /// <summary>A port with nothing listening: connections to it are refused.</summary>
    private static int ClosedPort()
    {
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    public GrpcChannel Channel(int? port = null) => GrpcChannel.ForAddress($"http://127.0.0.1:{port ?? ProxyPort}", new GrpcChannelOptions
    {
        MaxReceiveMessageSize = 32 << 20,
        MaxSendMessageSize = 32 << 20,
        HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false },
    });

    public async Task DisposeAsync()
    {
        if (_proxy != null)
        {
            await _proxy.DisposeAsync();
        }
        if (_upstream != null)
        {
            await _upstream.StopAsync();
            await _upstream.DisposeAsync();
        }
    }
}
