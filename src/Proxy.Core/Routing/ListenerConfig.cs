using System.Net;
using Proxy.Http2;

namespace Proxy.Core.Routing;

/// <summary>A listening address and the HTTP connection manager's route configuration (Envoy's Listener).</summary>
public sealed class ListenerConfig(string name, IPEndPoint address, RouteConfiguration routes)
{
    public string Name { get; } = name;
    public IPEndPoint Address { get; } = address;
    public RouteConfiguration Routes { get; } = routes;

    /// <summary>The connection manager's limits and timeouts, and its access-control filters.</summary>
    public ListenerOptions Options { get; init; } = ListenerOptions.Envoy;

    /// <summary>
    /// bind_to_port: false for Istio's per-port listeners (0.0.0.0_9090), which own no socket and are
    /// reached through a listener with <see cref="UseOriginalDst"/> handing them connections.
    /// </summary>
    public bool BindToPort { get; init; } = true;

    /// <summary>
    /// use_original_dst (Istio's virtualOutbound on 15001): each accepted connection goes to the
    /// listener its original destination names (SO_ORIGINAL_DST), else to this one's own chains.
    /// </summary>
    public bool UseOriginalDst { get; init; }

    /// <summary>The original_dst listener filter: each connection's original destination (SO_ORIGINAL_DST) is read, for chain matching and ORIGINAL_DST clusters, without dispatching.</summary>
    public bool RestoresOriginalDestination { get; init; }

    /// <summary>Whether the listener has an HTTP connection manager of its own (a dispatcher may have none).</summary>
    public bool ServesHttp { get; init; } = true;

    /// <summary>A listener whose filter chain is tcp_proxy (no HTTP): its connections are relayed as octets.</summary>
    public TcpProxyConfig? TcpProxy { get; init; }

    /// <summary>
    /// Filter chains chosen per connection by their match (<see cref="FilterChainSelector"/>); empty when
    /// the listener itself serves every connection (one chain, no match). This object's own routes and
    /// options are then its first HTTP chain's (what the runtime API routes by).
    /// </summary>
    public FilterChain[] FilterChains { get; init; } = [];

    /// <summary>The chain's transport_socket: TLS terminated with this context (null: plaintext).</summary>
    public Transport.Tls.TlsServerContext? Tls { get; init; }

    /// <summary>default_filter_chain: takes the connections no chain matches (else they are closed).</summary>
    public FilterChain? DefaultFilterChain { get; init; }

    /// <summary>Listener filters: envoy.filters.listener.tls_inspector (transport "tls", SNI, ALPN) and http_inspector ("http/1.1", "h2c").</summary>
    public bool TlsInspector { get; init; }

    public bool HttpInspector { get; init; }

    /// <summary>listener_filters_timeout (Envoy: 15 s; zero: none): how long the inspectors wait for the first octets.</summary>
    public TimeSpan ListenerFiltersTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>continue_on_listener_filters_timeout: on timeout, choose a chain with what is known (else close).</summary>
    public bool ContinueOnListenerFiltersTimeout { get; init; }

    /// <summary>Whether connections pick a chain (rather than this listener serving all of them).</summary>
    public bool HasFilterChains => FilterChains.Length > 0 || DefaultFilterChain != null;

    /// <summary>Whether choosing a chain needs the first octets read (an inspector runs and some chain matches on what it finds).</summary>
    public bool Inspects => (TlsInspector || HttpInspector) && FilterChains.Any(static c => c.Match.NeedsInspection);
}

/// <summary>
/// What a listener's connections are held to: Envoy's per_connection_buffer_limit_bytes, the HTTP
/// connection manager's timeouts (Envoy's names and defaults) and HTTP/2 protocol options, and the RBAC
/// filters that guard it. Zero for a timeout means none.
/// </summary>
/// <summary>The connection manager's codec_type: which protocols a listener's connections may speak.</summary>
public enum DownstreamCodec : byte
{
    /// <summary>HTTP/2 when a connection opens with the HTTP/2 preface, else HTTP/1.1 (Envoy's default).</summary>
    Auto,
    /// <summary>HTTP/1.1 only: an HTTP/2 preface is a bad request (400).</summary>
    Http1,
    /// <summary>HTTP/2 only (prior knowledge, or h2 by ALPN): anything but the preface is a connection error (GOAWAY PROTOCOL_ERROR).</summary>
    Http2,
}

public sealed class ListenerOptions
{
    // Before Envoy and Standalone: static initializers run in order.
    private static readonly Http2ConnectionOptions s_defaultHttp2 = new() { MaxConcurrentStreams = 100 };

    /// <summary>Envoy's defaults, for listeners from a bootstrap or xDS.</summary>
    public static ListenerOptions Envoy { get; } = new();

    /// <summary>
    /// The quick --listen/--upstream mode, which has no configuration to say otherwise: a request head
    /// must arrive within 30 s, the HTTP/2 preface and first SETTINGS within 10 s, and a connection with
    /// nothing in flight is closed after 5 minutes.
    /// </summary>
    public static ListenerOptions Standalone { get; } = new()
    {
        RequestHeadersTimeout = TimeSpan.FromSeconds(30),
        PrefaceTimeout = TimeSpan.FromSeconds(10),
        IdleTimeout = TimeSpan.FromMinutes(5),
        WebSocket = true,
        AcceptHttp10 = true,
    };

    /// <summary>
    /// http_protocol_options.accept_http_10: whether an HTTP/1.0 request is served. Envoy's default (and
    /// so a bootstrap's or xDS's, and Istio's unless the pod asks for HTTP10) is no: 426 Upgrade Required
    /// and the connection closes. The quick --listen mode serves it (load tools such as ab speak HTTP/1.0).
    /// </summary>
    public bool AcceptHttp10 { get; init; }

    /// <summary>
    /// http_protocol_options.default_host_for_http_10: the authority of an HTTP/1.0 request that names none
    /// (no Host, no absolute-form target), for routing and for the Host sent upstream; null: left empty.
    /// </summary>
    public byte[]? DefaultHostForHttp10 { get; init; }

    /// <summary>
    /// upgrade_configs with upgrade_type websocket: an HTTP/1.1 request with Upgrade: websocket goes to an
    /// HTTP/1.1 upstream as an upgrade, and after its 101 both connections carry the octets through.
    /// Without it (Envoy's default) such a request is refused with 403. The quick --listen mode allows it.
    /// </summary>
    public bool WebSocket { get; init; }

    /// <summary>codec_type (Envoy's default AUTO): HTTP/1.1, HTTP/2, or whichever the first octets say.</summary>
    public DownstreamCodec Codec { get; init; }

    /// <summary>normalize_path: RFC 3986 normalization of the path before RBAC and routing (<see cref="PathNormalizer"/>; Envoy: off, Istio: on).</summary>
    public bool NormalizePath { get; init; }

    /// <summary>merge_slashes: "//" in the path becomes "/" (Envoy: off).</summary>
    public bool MergeSlashes { get; init; }

    /// <summary>path_with_escaped_slashes_action: what %2F and %5C in the path do (Envoy and Istio: kept).</summary>
    public EscapedSlashesAction EscapedSlashes { get; init; }

    /// <summary>Whether the path is touched at all before RBAC and routing.</summary>
    public bool RewritesPath => NormalizePath || MergeSlashes || EscapedSlashes != EscapedSlashesAction.KeepUnchanged;

    /// <summary>
    /// The headers the connection manager writes (x-request-id, x-forwarded-*, via, server, ...): a
    /// bootstrap's or xDS's connection manager has Envoy's (<see cref="ConnectionManagerHeaders.Envoy"/>);
    /// null writes none (the quick --listen mode, which has no connection manager configuration).
    /// </summary>
    public ConnectionManagerHeaders? Headers { get; init; }

    /// <summary>The connection manager's access logs; empty: none.</summary>
    public Diagnostics.AccessLog[] AccessLogs { get; init; } = [];

    /// <summary>The HTTP connection manager's stats (its stat_prefix); null: not counted.</summary>
    public Diagnostics.HttpConnectionManagerStats? Stats { get; init; }

    /// <summary>per_connection_buffer_limit_bytes: the high watermark of each connection's queues (1 MiB).</summary>
    public int BufferLimit { get; init; } = Transport.SocketConnection.DefaultBufferLimit;

    /// <summary>
    /// common_http_protocol_options.max_headers_count (Envoy's default 100): an HTTP/1.1 request head with
    /// more field lines is refused with 431 before anything is done with its fields.
    /// </summary>
    public int MaxHeadersCount { get; init; } = Http1.Http1Parser.DefaultMaxHeadersCount;

    /// <summary>request_headers_timeout: from the first octet of a request to the end of its head (Envoy: none).</summary>
    public TimeSpan RequestHeadersTimeout { get; init; }

    /// <summary>
    /// stream_idle_timeout (5 min): a stream with no activity either way is ended (408 before the response
    /// began, a reset after); also bounds a request head that stops arriving when there is no request_headers_timeout.
    /// </summary>
    public TimeSpan StreamIdleTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>common_http_protocol_options.idle_timeout (1 h): a connection with no request in flight is closed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromHours(1);

    /// <summary>request_timeout: the whole request must have arrived within it (Envoy: none).</summary>
    public TimeSpan RequestTimeout { get; init; }

    /// <summary>common_http_protocol_options.max_connection_duration: then the connection drains (Envoy: none).</summary>
    public TimeSpan MaxConnectionDuration { get; init; }

    /// <summary>
    /// How long an HTTP/2 connection may take to send its preface and first SETTINGS; zero means as for a
    /// request head (request_headers_timeout, else stream_idle_timeout).
    /// </summary>
    public TimeSpan PrefaceTimeout { get; init; }

    /// <summary>http2_protocol_options of the connection manager: Envoy's max_concurrent_streams is 2^31-1, ours 100 (nghttp2's and the RFC's floor).</summary>
    public Http2ConnectionOptions Http2 { get; init; } = s_defaultHttp2;

    /// <summary>The HTTP RBAC filters (envoy.filters.http.rbac) in order, evaluated on every request before routing: each must allow it.</summary>
    public RbacPolicySet[] HttpRbac { get; init; } = [];

    /// <summary>The network RBAC filter (envoy.filters.network.rbac), evaluated once per connection.</summary>
    public RbacPolicySet? NetworkRbac { get; init; }

    /// <summary>How long a request head (or HTTP/2 preface) may take to arrive, from its first octet.</summary>
    internal long HeadTimeoutMs(bool preface)
    {
        TimeSpan t = preface && PrefaceTimeout > TimeSpan.Zero ? PrefaceTimeout
            : RequestHeadersTimeout > TimeSpan.Zero ? RequestHeadersTimeout : StreamIdleTimeout;
        return (long)t.TotalMilliseconds;
    }
}

/// <summary>The connection manager's path_with_escaped_slashes_action.</summary>
public enum EscapedSlashesAction : byte
{
    KeepUnchanged,
    /// <summary>A path with %2F or %5C is refused with 400.</summary>
    RejectRequest,
    /// <summary>%2F and %5C are decoded to / and \ before normalization, and the request goes on.</summary>
    UnescapeAndForward,
}
