// The seed's `server`: plain HTTP/1.1 on port 9090, in one version (v1 or v2). For any request it answers
// "<METHOD> <URI> \n <body>hello, i am layotto <version>" (Layotto's Istio demo).
//   layotto-demo-server --version v1 --listen 127.0.0.2:9090      (or VERSION=v1 LISTEN=...)
using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

string version = Option("--version", "VERSION") ?? "v1";
string listen = Option("--listen", "LISTEN") ?? "0.0.0.0:9090";
if (!IPEndPoint.TryParse(listen, out IPEndPoint? endPoint))
{
    Console.Error.WriteLine($"layotto-demo-server: --listen '{listen}' is not IP:PORT");
    return 2;
}

WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k => k.Listen(endPoint, o => o.Protocols = HttpProtocols.Http1));
WebApplication app = builder.Build();
app.Run(async context =>
{
    using var reader = new StreamReader(context.Request.Body);
    string body = await reader.ReadToEndAsync();
    context.Response.ContentType = "text/plain; charset=utf-8";
    await context.Response.WriteAsync($"{context.Request.Method} {context.Request.Path}{context.Request.QueryString} \n {body}hello, i am layotto {version}");
});
Console.Out.WriteLine($"server {version} listening on {endPoint}");
await app.RunAsync();
return 0;

string? Option(string flag, string environment)
{
    int i = Array.IndexOf(args, flag);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : Environment.GetEnvironmentVariable(environment);
}
