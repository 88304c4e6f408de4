using System.Text;
using Proxy.Core.Config;

namespace Proxy.Core.Routing;

/// <summary>
/// Envoy's CorsPolicy (the CORS filter's per-route config, and v2's RouteAction/VirtualHost cors): a
/// preflight from an allowed origin is answered by the proxy; an actual request from one is forwarded and
/// its response gets the allow-origin (and credentials, expose) headers. A request from an origin that is
/// not allowed passes unchanged, without CORS headers, so the browser refuses it.
/// </summary>
public sealed class CorsPolicy
{
    public CorsPolicy(IReadOnlyList<StringMatcher> allowOrigins, string? allowMethods, string? allowHeaders, string? exposeHeaders, string? maxAge, bool allowCredentials)
    {
        AllowOrigins = [.. allowOrigins];
        AllowMethods = Bytes(allowMethods);
        AllowHeaders = Bytes(allowHeaders);
        ExposeHeaders = Bytes(exposeHeaders);
        MaxAge = Bytes(maxAge);
        AllowCredentials = allowCredentials;
    }

    public StringMatcher[] AllowOrigins { get; }
    public byte[]? AllowMethods { get; }
    public byte[]? AllowHeaders { get; }
    public byte[]? ExposeHeaders { get; }
    public byte[]? MaxAge { get; }
    public bool AllowCredentials { get; }

    public bool IsAllowed(ReadOnlySpan<byte> origin)
    {
        foreach (StringMatcher matcher in AllowOrigins)
        {
            if (matcher.Matches(origin))
            {
                return true;
            }
        }
        return false;
    }

    private static byte[]? Bytes(string? value) => string.IsNullOrEmpty(value) ? null : Encoding.ASCII.GetBytes(value);
}
