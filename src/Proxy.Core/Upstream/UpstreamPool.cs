using Proxy.Core.Peers;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>
/// Connections to one upstream endpoint. Pools outlive snapshots: a new snapshot that keeps an endpoint
/// keeps its pool, and with it the open connections.
/// </summary>
public abstract class UpstreamPool : EndpointState
{
    /// <summary>
    /// Connects within <paramref name="timeout"/> (Envoy's connect_timeout covers the TLS handshake too) and
    /// originates TLS when the endpoint's transport socket says so; the connection, or why there is none.
    /// </summary>
    protected async Task<(Transport.SocketConnection? Connection, string? Error)> OpenAsync(System.Net.EndPoint address, TimeSpan timeout)
    {
        // Connections run on an event loop of our own (the caller's, when it runs on one), TLS included.
        Transport.EventLoop? loop = Transport.EventLoop.ForNewConnection();
        (System.Net.Sockets.Socket? socket, string? error) = loop != null ? await UpstreamConnector.ConnectOnLoopAsync(address, timeout, Cluster?.Bind, loop)
            : await UpstreamConnector.ConnectAsync(address, timeout, Cluster?.Bind);
        if (loop != null)
        {
            // The connect completes on the thread pool: the rest (the waiting requests served or failed,
            // the protocol started) runs on the loop, which alone enters its connections' locks cheaply.
            await loop.SwitchTo();
        }
        if (socket == null)
        {
            return (null, error);
        }
        var connection = new Transport.SocketConnection(socket, loop: loop, tlsOnLoop: Tls != null) { BufferLimit = Cluster?.BufferLimit ?? Transport.SocketConnection.DefaultBufferLimit };
        if (Tls is { } tls)
        {
            string? refused = tls.IsReady ? await connection.ConnectTlsAsync(tls, timeout)
                : $"TLS secret(s) {string.Join(", ", tls.SecretNames())} not ready";
            if (refused != null)
            {
                connection.Close();
                Cluster?.Stats.SslConnectionError.Inc();
                Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Warning, $"upstream TLS to {address} (cluster {Cluster?.Name}) failed: {refused}");
                return (null, $"upstream connect error ({address}): TLS: {refused}");
            }
            Cluster?.Stats.SslHandshake.Inc();
            if (loop != null)
            {
                await loop.SwitchTo();
            }
        }
        return (connection, null);
    }

    protected bool TryReserveConnection() => Cluster?.TryReserveConnection() ?? true;

    protected void ReleaseConnection() => Cluster?.ReleaseConnection();

    /// <summary>A connection attempt failed: its slot is given back and the failure counted (upstream_cx_connect_fail).</summary>
    protected void ConnectFailed()
    {
        Cluster?.ReleaseConnection();
        Cluster?.Stats.UpstreamCxConnectFail.Inc();
    }

    /// <summary>
    /// Calls <see cref="ExchangeEvents.OnUpstreamReady"/> with a connection that has room for a stream (at once,
    /// or when one is connected), or <see cref="ExchangeEvents.OnUpstreamFailed"/> when none can be had.
    /// </summary>
    public abstract void Acquire(ExchangeEvents exchange, int generation, TimeSpan connectTimeout);

    /// <summary>
    /// No snapshot uses this endpoint any more: idle connections close now, busy ones when their requests
    /// are done (a request still in flight, or retried by an old snapshot, is served as before).
    /// </summary>
    public abstract void Retire();

    public bool IsRetired => Volatile.Read(ref _retired);

    protected void MarkRetired() => Volatile.Write(ref _retired, true);

    private bool _retired;
}

/// <summary>The connection pool behind an endpoint's state (every endpoint's state is its pool).</summary>
public static class UpstreamEndpointPool
{
    extension(UpstreamEndpoint endpoint)
    {
        public UpstreamPool Pool => (UpstreamPool)endpoint.State;
    }
}
