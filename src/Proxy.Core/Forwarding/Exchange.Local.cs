using System.Buffers;
using System.Buffers.Text;
using System.Text;
using Proxy.Core.Peers;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;
using Proxy.Http2.Hpack;

namespace Proxy.Core.Forwarding;

public sealed partial class Exchange
{
    private int _authorityIndex = -1;
    private int _pathIndex = -1;

    /// <summary>One pass over the request's fields: where :authority/host and :path are, and whether it is gRPC or HEAD.</summary>
    private void ScanRequest()
    {
        _authorityIndex = _pathIndex = -1;
        int host = -1;
        for (int i = 0; i < RequestHeaders.Count; i++)
        {
            // A name the HPACK decoder found in the static table is known by its index, not compared.
            switch (RequestHeaders.StaticIndex(i))
            {
                case HpackStaticTable.Authority:
                    _authorityIndex = i;
                    continue;
                case HpackStaticTable.MethodGet or HpackStaticTable.MethodPost:
                    _isHead = RequestHeaders.Value(i).SequenceEqual("HEAD"u8);
                    continue;
                case HpackStaticTable.PathSlash or HpackStaticTable.PathSlash + 1:
                    _pathIndex = i;
                    continue;
                case HpackStaticTable.ContentType:
                    _isGrpc = RequestHeaders.Value(i).StartsWith("application/grpc"u8);
                    continue;
                case HpackStaticTable.Host:
                    host = i;
                    continue;
                case > 0:
                    continue; // no other static name matters here (upgrade is in no table)
            }
            ReadOnlySpan<byte> name = RequestHeaders.Name(i);
            switch (name.Length)
            {
                case 4 when name.SequenceEqual("host"u8):
                    host = i;
                    break;
                case 5 when name.SequenceEqual(":path"u8):
                    _pathIndex = i;
                    break;
                case 7 when name.SequenceEqual("upgrade"u8):
                    _isWebSocket = true; // only a WebSocket upgrade is kept as a field (Http1Parser)
                    break;
                case 7 when name.SequenceEqual(":method"u8):
                    _isHead = RequestHeaders.Value(i).SequenceEqual("HEAD"u8);
                    break;
                case 10 when name.SequenceEqual(":authority"u8):
                    _authorityIndex = i;
                    break;
                case 12 when name.SequenceEqual("content-type"u8):
                    _isGrpc = RequestHeaders.Value(i).StartsWith("application/grpc"u8);
                    break;
            }
        }
        if (_authorityIndex < 0)
        {
            _authorityIndex = host;
        }
    }

    /// <summary>prefix_rewrite of :path and host_rewrite_literal of :authority, in place.</summary>
    private void ApplyRewrites(Proxy.Core.Routing.Route route, UpstreamEndpoint endpoint)
    {
        if (route.Action.RegexRewrite is { } regex && _pathIndex >= 0)
        {
            // Cold path (strings): regex rewrites are configured rarely and cost what Envoy's do.
            string path = Encoding.Latin1.GetString(RequestHeaders.Value(_pathIndex));
            int q = path.IndexOfAny(['?', '#']);
            string rewritten = regex.Replace(q >= 0 ? path[..q] : path, route.Action.RegexSubstitution!) + (q >= 0 ? path[q..] : "");
            RequestHeaders.SetValue(_pathIndex, Encoding.Latin1.GetBytes(rewritten));
        }
        if (route.Action.AutoHostRewrite && endpoint.Address is System.Net.DnsEndPoint dns && _authorityIndex >= 0 && RequestHeaders.Name(_authorityIndex)[0] == (byte)':')
        {
            RequestHeaders.SetValue(_authorityIndex, Encoding.ASCII.GetBytes(dns.Host));
        }
        if (route.Action.PrefixRewrite != null && _pathIndex >= 0)
        {
            ReadOnlySpan<byte> path = RequestHeaders.Value(_pathIndex);
            int needed = path.Length + route.Action.PrefixRewrite.Length;
            byte[]? rented = needed > 1024 ? ArrayPool<byte>.Shared.Rent(needed) : null;
            Span<byte> rewritten = rented ?? stackalloc byte[1024];
            int length = route.RewritePath(path, rewritten);
            if (length >= 0)
            {
                RequestHeaders.SetValue(_pathIndex, rewritten.Slice(0, length));
            }
            if (rented != null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
        if (route.Action.HostRewrite != null)
        {
            if (_authorityIndex >= 0 && RequestHeaders.Name(_authorityIndex)[0] == (byte)':')
            {
                RequestHeaders.SetValue(_authorityIndex, route.Action.HostRewrite);
            }
            else
            {
                RequestHeaders.Add(":authority"u8, route.Action.HostRewrite);
            }
        }
    }

    /// <summary>Envoy's redirect: the request URL with the configured parts replaced, in a Location header (cold path).</summary>
    private void SendRedirect(Proxy.Core.Routing.Route route)
    {
        RouteAction action = route.Action;
        string path = _pathIndex >= 0 ? System.Text.Encoding.Latin1.GetString(RequestHeaders.Value(_pathIndex)) : "/";
        int q = path.IndexOf('?', StringComparison.Ordinal);
        string query = q >= 0 && !action.StripQuery ? path[q..] : "";
        string bare = q >= 0 ? path[..q] : path;
        if (action.RedirectPath != null)
        {
            // path_redirect replaces the whole path; a query in it wins over the request's.
            bare = action.RedirectPath;
            if (bare.Contains('?', StringComparison.Ordinal))
            {
                query = "";
            }
        }
        else if (action.RedirectPrefixRewrite != null && route.Kind is PathMatchKind.Prefix or PathMatchKind.PathSeparatedPrefix)
        {
            bare = action.RedirectPrefixRewrite + bare[Math.Min(route.MatchValue.Length, bare.Length)..];
        }
        int schemeIndex = RequestHeaders.IndexOf(":scheme"u8);
        string scheme = action.RedirectScheme ?? (schemeIndex >= 0 ? System.Text.Encoding.Latin1.GetString(RequestHeaders.Value(schemeIndex)) : "http");
        string authority = System.Text.Encoding.Latin1.GetString(RequestAuthority());
        string host = authority;
        string port = "";
        int colon = authority.LastIndexOf(':');
        if (colon > 0 && authority.LastIndexOf(']') < colon)
        {
            host = authority[..colon];
            port = authority[colon..];
        }
        if (action.RedirectHost != null)
        {
            // host_redirect replaces the whole authority: the request's port goes with it unless
            // port_redirect names one (Envoy's newUri).
            host = action.RedirectHost;
            port = "";
        }
        if (action.RedirectPort > 0)
        {
            port = ":" + action.RedirectPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        else if (action.RedirectScheme != null)
        {
            port = ""; // a scheme change drops the port, as Envoy does
        }
        string location = $"{scheme}://{host}{port}{bare}{query}";
        ResponseStarted();
        HeaderList headers = ResponseHeaders;
        headers.Clear();
        Span<byte> number = stackalloc byte[11];
        Utf8Formatter.TryFormat(action.DirectStatus, number, out int n);
        headers.Add(":status"u8, number.Slice(0, n));
        headers.Add("location"u8, System.Text.Encoding.UTF8.GetBytes(location));
        headers.Add("content-length"u8, "0"u8);
        SendResponseHeaders(headers, endStream: true);
        _down!.ScheduleFlush();
        _response = ResponsePhase.Complete;
        Finish();
    }

    /// <summary>Envoy's direct_response: the status and body from the route, for every kind of request.</summary>
    private void SendDirectResponse(int status, byte[] body)
    {
        ResponseStarted();
        HeaderList headers = ResponseHeaders;
        headers.Clear();
        Span<byte> number = stackalloc byte[11];
        Utf8Formatter.TryFormat(status, number, out int n);
        headers.Add(":status"u8, number.Slice(0, n));
        bool hasBody = body.Length > 0 && !_isHead;
        if (body.Length > 0)
        {
            headers.Add("content-type"u8, "text/plain"u8);
        }
        Utf8Formatter.TryFormat(body.Length, number, out n);
        headers.Add("content-length"u8, number.Slice(0, n));
        SendResponseHeaders(headers, endStream: !hasBody);
        if (hasBody)
        {
            SendLocalBody(body);
            return;
        }
        _down!.ScheduleFlush();
        _response = ResponsePhase.Complete;
        Finish();
    }

    /// <summary>
    /// Sends a body the proxy made and ends the response. It is held to flow control like a proxied one: a
    /// client may open with a window smaller than the body (even 0), so what the stream's window does not
    /// take now waits for WINDOW_UPDATE; the exchange finishes once END_STREAM is out.
    /// </summary>
    private void SendLocalBody(byte[] body)
    {
        _responsePending.Append(new ReadOnlySequence<byte>(body));
        _responsePending.EndStream = true;
        FlushResponse();
        _down?.ScheduleFlush();
    }

    private ReadOnlySpan<byte> RequestAuthority() => _authorityIndex >= 0 ? RequestHeaders.Value(_authorityIndex) : default;

    /// <summary>
    /// path_with_escaped_slashes_action, normalize_path and merge_slashes, in Envoy's order: the :path as
    /// RBAC, routing and the upstream see it. False when the request was refused (the reply is sent).
    /// </summary>
    private bool RewritePath(ListenerOptions options)
    {
        ReadOnlySpan<byte> path = RequestHeaders.Value(_pathIndex);
        byte[]? rented = path.Length > 1024 ? System.Buffers.ArrayPool<byte>.Shared.Rent(path.Length) : null;
        Span<byte> output = rented ?? stackalloc byte[1024];
        try
        {
            if (options.EscapedSlashes != EscapedSlashesAction.KeepUnchanged && PathNormalizer.HasEscapedSlash(path))
            {
                if (options.EscapedSlashes == EscapedSlashesAction.RejectRequest)
                {
                    SendLocalReply(400, GrpcStatus.Internal, "path with escaped slashes");
                    return false;
                }
                RequestHeaders.SetValue(_pathIndex, output.Slice(0, PathNormalizer.UnescapeSlashes(path, output)));
                path = RequestHeaders.Value(_pathIndex);
            }
            if (options.NormalizePath || options.MergeSlashes)
            {
                int length = PathNormalizer.Normalize(path, output, options.MergeSlashes, options.NormalizePath);
                if (length >= 0)
                {
                    RequestHeaders.SetValue(_pathIndex, output.Slice(0, length));
                }
            }
            return true;
        }
        finally
        {
            if (rented != null)
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    private ReadOnlySpan<byte> RequestPath() => _pathIndex >= 0 ? RequestHeaders.Value(_pathIndex) : "/"u8;

    /// <summary>
    /// A response made by the proxy itself. For gRPC it follows gRPC's HTTP mapping: HTTP 200 with a
    /// trailers-only response carrying grpc-status and grpc-message; otherwise the HTTP status with a
    /// short text body. If response bytes already went downstream, the stream is reset instead.
    /// </summary>
    private void SendLocalReply(int httpStatus, int grpcStatus, string message)
    {
        if (_response != ResponsePhase.Awaiting || _downstreamClosed)
        {
            if (!_downstreamClosed)
            {
                IExchangePeer down = _down!;
                int current = _generation;
                _downstreamClosed = true;
                down.Reset(_downId, Http2ErrorCode.InternalError);
                down.ScheduleFlush();
                if (current != _generation)
                {
                    return; // the peer's close came back at once and finished the exchange
                }
            }
            Finish();
            return;
        }
        ResponseStarted();
        _flags ??= FlagFor(message);
        HeaderList headers = ResponseHeaders;
        headers.Clear();
        Span<byte> number = stackalloc byte[11];
        if (_isGrpc)
        {
            headers.Add(":status"u8, "200"u8);
            headers.Add("content-type"u8, "application/grpc"u8);
            Utf8Formatter.TryFormat(grpcStatus, number, out int n);
            headers.Add("grpc-status"u8, number.Slice(0, n));
            headers.Add("grpc-message"u8, Encoding.ASCII.GetBytes(message));
            if (_overloaded)
            {
                headers.Add("x-envoy-overloaded"u8, "true"u8);
            }
            SendResponseHeaders(headers, endStream: true);
        }
        else
        {
            Utf8Formatter.TryFormat(httpStatus, number, out int n);
            headers.Add(":status"u8, number.Slice(0, n));
            headers.Add("content-type"u8, "text/plain"u8);
            byte[] body = Encoding.ASCII.GetBytes(message + "\n");
            Utf8Formatter.TryFormat(body.Length, number, out n);
            headers.Add("content-length"u8, number.Slice(0, n));
            if (_overloaded)
            {
                headers.Add("x-envoy-overloaded"u8, "true"u8);
            }
            bool bodyless = _isHead;
            SendResponseHeaders(headers, endStream: bodyless);
            if (!bodyless)
            {
                SendLocalBody(body);
                return;
            }
        }
        _down!.ScheduleFlush();
        _response = ResponsePhase.Complete;
        Finish();
    }
}
