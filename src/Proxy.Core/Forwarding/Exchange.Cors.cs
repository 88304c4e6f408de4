using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

public sealed partial class Exchange
{
    private CorsPolicy? _cors;
    private int _corsOriginIndex = -1;

    /// <summary>
    /// Under the lock, once routed: a CORS preflight from an allowed origin is answered here (true);
    /// an actual request from one is marked so its response carries the CORS headers.
    /// </summary>
    private bool ApplyCors(CorsPolicy cors)
    {
        int origin = RequestHeaders.IndexOf("origin"u8);
        if (origin < 0 || !cors.IsAllowed(RequestHeaders.Value(origin)))
        {
            return false;
        }
        int method = RequestHeaders.IndexOf(":method"u8);
        bool preflight = method >= 0 && RequestHeaders.Value(method).SequenceEqual("OPTIONS"u8)
                         && RequestHeaders.IndexOf("access-control-request-method"u8) >= 0;
        if (!preflight)
        {
            _cors = cors;
            _corsOriginIndex = origin;
            return false;
        }
        ResponseStarted();
        HeaderList headers = ResponseHeaders;
        headers.Clear();
        headers.Add(":status"u8, "200"u8);
        headers.Add("access-control-allow-origin"u8, RequestHeaders.Value(origin));
        if (cors.AllowCredentials)
        {
            headers.Add("access-control-allow-credentials"u8, "true"u8);
        }
        if (cors.AllowMethods != null)
        {
            headers.Add("access-control-allow-methods"u8, cors.AllowMethods);
        }
        if (cors.AllowHeaders != null)
        {
            headers.Add("access-control-allow-headers"u8, cors.AllowHeaders);
        }
        if (cors.MaxAge != null)
        {
            headers.Add("access-control-max-age"u8, cors.MaxAge);
        }
        headers.Add("content-length"u8, "0"u8);
        SendResponseHeaders(headers, endStream: true);
        _down!.ScheduleFlush();
        _response = ResponsePhase.Complete;
        Finish();
        return true;
    }

    /// <summary>The allow-origin headers on the response to an actual cross-origin request.</summary>
    private void AddCorsResponseHeaders()
    {
        CorsPolicy cors = _cors!;
        ResponseHeaders.Add("access-control-allow-origin"u8, RequestHeaders.Value(_corsOriginIndex));
        if (cors.AllowCredentials)
        {
            ResponseHeaders.Add("access-control-allow-credentials"u8, "true"u8);
        }
        if (cors.ExposeHeaders != null)
        {
            ResponseHeaders.Add("access-control-expose-headers"u8, cors.ExposeHeaders);
        }
    }
}
