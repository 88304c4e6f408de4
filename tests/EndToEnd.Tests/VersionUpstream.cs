using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace EndToEnd.Tests;

/// <summary>One version (subset) of the service `server`: Kestrel over h2c answering GET /hello with its name.</summary>
internal static class VersionUpstream
{
    public static async Task<(WebApplication App, int Port)> StartAsync(string version, Action<WebApplication>? more = null, HttpProtocols protocols = HttpProtocols.Http2)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = protocols));
        WebApplication app = builder.Build();
        app.MapGet("/hello", () => version);
        more?.Invoke(app);
        await app.StartAsync();
        return (app, new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port);
    }
}
