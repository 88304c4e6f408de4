using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace EndToEnd.Tests.Abuse;

/// <summary>
/// A plain HTTP/1.1 upstream (Kestrel) that counts what reaches it: requests, and the body octets it
/// managed to write for /big/{size} (so a test sees whether the proxy back-pressures it).
/// </summary>
public sealed class CountingUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private long _requests;
    private long _bigBytesWritten;

    private CountingUpstream(WebApplication app) => _app = app;

    public int Port { get; private set; }
    public long Requests => Interlocked.Read(ref _requests);
    public long BigBytesWritten => Interlocked.Read(ref _bigBytesWritten);

    public static async Task<CountingUpstream> StartAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxConcurrentConnections = null;
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1);
        });
        WebApplication app = builder.Build();
        var upstream = new CountingUpstream(app);
        app.Use(async (context, next) =>
        {
            Interlocked.Increment(ref upstream._requests);
            await next(context);
        });
        app.MapGet("/hello", static () => "hello");
        app.MapGet("/big/{size:long}", async (long size, HttpContext context) =>
        {
            context.Response.ContentLength = size;
            var chunk = new byte[64 * 1024];
            try
            {
                for (long sent = 0; sent < size; sent += chunk.Length)
                {
                    int n = (int)Math.Min(chunk.Length, size - sent);
                    await context.Response.Body.WriteAsync(chunk.AsMemory(0, n), context.RequestAborted);
                    Interlocked.Add(ref upstream._bigBytesWritten, n);
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (IOException)
            {
            }
        });
        await app.StartAsync();
        upstream.Port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        return upstream;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
