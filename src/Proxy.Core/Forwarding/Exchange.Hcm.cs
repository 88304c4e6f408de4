using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

/// <summary>What the HTTP connection manager adds around a request: its headers, response flags and access logs.</summary>
public sealed partial class Exchange
{
    private ConnectionManagerHeaders? _headerPolicy;
    private AccessLog[]? _accessLogs;
    private DateTime _startTime;
    private long _bytesReceived;
    private long _bytesSent;

    // Envoy's trusted client address (x-forwarded-for per the connection manager), when it differs from the peer.
    private System.Net.IPEndPoint? _clientAddress;

    // Envoy's %RESPONSE_FLAGS%: why the proxy answered or the request ended as it did.
    private string? _flags;

    /// <summary>Takes the connection manager's header policy and access logs for this request, and writes the request side.</summary>
    private void StartConnectionManager(ListenerOptions? options)
    {
        if (options == null)
        {
            return;
        }
        _headerPolicy = options.Headers;
        if (options.AccessLogs.Length > 0)
        {
            _accessLogs = options.AccessLogs;
            _startTime = DateTime.UtcNow;
        }
        if (_headerPolicy is { } policy)
        {
            var peer = _down!.RemoteEndPoint as System.Net.IPEndPoint;
            System.Net.IPEndPoint? client = policy.ClientAddress(RequestHeaders, peer);
            _clientAddress = ReferenceEquals(client, peer) ? null : client;
            policy.ApplyToRequest(RequestHeaders, peer, _down.Tls);
        }
    }

    /// <summary>Sends a response head downstream, with the connection manager's response headers (x-envoy-upstream-service-time when proxied).</summary>
    private bool SendResponseHeaders(HeaderList headers, bool endStream, bool proxied = false)
    {
        if (_headerPolicy is { } policy)
        {
            long upstreamMs = proxied && _upstreamTicks != 0 ? (long)System.Diagnostics.Stopwatch.GetElapsedTime(_upstreamTicks).TotalMilliseconds : -1;
            policy.ApplyToResponse(headers, RequestHeaders, upstreamMs);
        }
        return _down!.SendHeaders(_downId, headers, endStream);
    }

    /// <summary>x-envoy-attempt-count: which attempt this is (1, then 2 on the first retry, ...).</summary>
    private void SetAttemptCount(HeaderList headers)
    {
        Span<byte> digits = stackalloc byte[4];
        System.Buffers.Text.Utf8Formatter.TryFormat(_attempt + 1, digits, out int n);
        int index = headers.IndexOf("x-envoy-attempt-count"u8);
        if (index >= 0)
        {
            headers.SetValue(index, digits.Slice(0, n));
        }
        else
        {
            headers.Add("x-envoy-attempt-count"u8, digits.Slice(0, n));
        }
    }

    private static string? FlagFor(string localReply) => localReply switch
    {
        "no route" => "NR",
        "no cluster for the request" => "NC",
        "no healthy upstream" => "UH",
        "upstream overflow" => "UO",
        "upstream request timeout" or "upstream per-try timeout" => "UT",
        "stream idle timeout" => "SI",
        "fault filter abort" => "FI",
        "RBAC: access denied" => "RBAC",
        "upstream refused the stream" or "upstream reset before response" => "UR",
        _ => null,
    };

    private void WriteAccessLogs(AccessLog[] logs, int status, long nowTicks)
    {
        string? flags = _flags ?? (_downstreamClosed && _response != ResponsePhase.Complete ? "DC" : null);
        var record = new AccessLogRecord
        {
            StartTime = _startTime,
            Request = RequestHeaders,
            Response = _response != ResponsePhase.Awaiting ? ResponseHeaders : null,
            Status = status,
            Flags = flags,
            Protocol = _down is Http2Downstream ? "HTTP/2" : "HTTP/1.1",
            BytesReceived = _bytesReceived,
            BytesSent = _bytesSent,
            DurationMs = (long)System.Diagnostics.Stopwatch.GetElapsedTime(_startTicks, nowTicks).TotalMilliseconds,
            UpstreamHost = _endpoint?.Address,
            UpstreamCluster = _cluster?.Name,
            RouteName = _route?.Name,
            DownstreamRemote = _clientAddress ?? _down?.RemoteEndPoint,
            DownstreamDirectRemote = _down?.RemoteEndPoint,
            DownstreamLocal = _down?.LocalEndPoint,
        };
        foreach (AccessLog log in logs)
        {
            try
            {
                log.Write(record);
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                ProxyLog.Write(LogLevel.Debug, $"access log: {e.Message}");
            }
        }
    }

    private void ResetConnectionManager()
    {
        _headerPolicy = null;
        _accessLogs = null;
        _bytesReceived = _bytesSent = 0;
        _flags = null;
        _clientAddress = null;
    }
}
