using System.Collections.Concurrent;
using System.Net;
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
/// The seed's `server`, one version of it: plain HTTP/1.1 answering any request with
/// "&lt;METHOD&gt; &lt;URI&gt; \n &lt;body&gt;hello, i am layotto v1". It also tells what it saw in response headers
/// (x-seen-*), and has a few paths for failure cases: /status/N, /slow, /big/N (N octets, chunked), /flaky/KEY (503 twice, then 200).
/// </summary>
internal sealed class LayottoServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, int> _flaky = new();
    private int _aborted;

    private LayottoServer(WebApplication app) => _app = app;

    public int Port { get; private set; }

    /// <summary>Requests whose client went away before the answer (a cancelled upstream request).</summary>
    public int Aborted => Volatile.Read(ref _aborted);

    public int Requests;

    public static async Task<LayottoServer> StartAsync(string version)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1);
            k.Limits.MaxRequestBodySize = 64 << 20;
        });
        WebApplication app = builder.Build();
        var server = new LayottoServer(app);
        app.Run(context => server.HandleAsync(context, version));
        await app.StartAsync();
        server.Port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        return server;
    }

    private async Task HandleAsync(HttpContext context, string version)
    {
        Interlocked.Increment(ref Requests);
        HttpRequest request = context.Request;
        string path = request.Path.Value ?? "/";
        if (path.StartsWith("/slow", StringComparison.Ordinal) || path.EndsWith("/slow", StringComparison.Ordinal))
        {
            try
            {
                await Task.Delay(10_000, context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                Interlocked.Increment(ref _aborted);
                return;
            }
        }
        if (path.StartsWith("/status/", StringComparison.Ordinal))
        {
            context.Response.StatusCode = int.Parse(path[8..], System.Globalization.CultureInfo.InvariantCulture);
            await context.Response.WriteAsync($"status {context.Response.StatusCode} from {version}");
            return;
        }
        if (path.StartsWith("/big/", StringComparison.Ordinal))
        {
            // N octets of body, chunked (no content-length): the answer grows as it arrives.
            int size = int.Parse(path[5..], System.Globalization.CultureInfo.InvariantCulture);
            byte[] chunk = new byte[Math.Min(size, 16 * 1024)];
            Array.Fill(chunk, (byte)'b');
            for (int sent = 0; sent < size; sent += chunk.Length)
            {
                await context.Response.Body.WriteAsync(chunk.AsMemory(0, Math.Min(chunk.Length, size - sent)));
            }
            return;
        }
        if (path.StartsWith("/flaky/", StringComparison.Ordinal) && _flaky.AddOrUpdate(path, 1, (_, n) => n + 1) <= 2)
        {
            context.Response.StatusCode = 503;
            await context.Response.WriteAsync("try again");
            return;
        }
        using var body = new MemoryStream();
        await request.Body.CopyToAsync(body);
        context.Response.Headers["x-seen-host"] = request.Host.Value;
        context.Response.Headers["x-seen-id"] = request.Headers["id"].ToString();
        context.Response.Headers["x-seen-content-type"] = request.ContentType ?? "";
        context.Response.Headers["x-seen-custom"] = request.Headers["x-custom"].ToString();
        context.Response.Headers["x-seen-grpc"] = string.Join(",", request.Headers.Keys.Where(k => k.StartsWith("grpc-", StringComparison.OrdinalIgnoreCase) || k.StartsWith(':')));
        context.Response.Headers["x-seen-content-length"] = request.ContentLength?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none";
        context.Response.ContentType = "text/plain; charset=utf-8";
        byte[] head = System.Text.Encoding.UTF8.GetBytes($"{request.Method} {request.Path}{request.QueryString} \n ");
        byte[] tail = System.Text.Encoding.UTF8.GetBytes($"hello, i am layotto {version}");
        context.Response.ContentLength = head.Length + body.Length + tail.Length;
        await context.Response.Body.WriteAsync(head);
        await context.Response.Body.WriteAsync(body.GetBuffer().AsMemory(0, (int)body.Length));
        await context.Response.Body.WriteAsync(tail);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
