using Proxy.Core.Forwarding;
using Proxy.Http2;

namespace Proxy.Core.Upstream;

/// <summary>An upstream connection as the exchange sees it: a peer on which it can open a stream.</summary>
public interface IUpstreamConnection : IExchangePeer
{
    /// <summary>Opens a stream with the request's header block; returns its id, or 0 when this connection has no room.</summary>
    int OpenStream(HeaderList headers, bool endStream, Exchange exchange, int generation);
}

/// <summary>
/// Connections to one upstream endpoint. Pools outlive snapshots: a new snapshot that keeps an endpoint
/// keeps its pool, and with it the open connections.
/// </summary>
public abstract class UpstreamPool
{
    private int _activeRequests;

    /// <summary>Requests in flight to this endpoint, across snapshots (the least-request balancer reads it).</summary>
    public int ActiveRequests => Volatile.Read(ref _activeRequests);

    public void RequestStarted() => Interlocked.Increment(ref _activeRequests);

    public void RequestEnded() => Interlocked.Decrement(ref _activeRequests);

    /// <summary>
    /// Calls <see cref="Exchange.OnUpstreamReady"/> with a connection that has room for a stream (at once,
    /// or when one is connected), or <see cref="Exchange.OnUpstreamFailed"/> when none can be had.
    /// </summary>
    public abstract void Acquire(Exchange exchange, int generation, TimeSpan connectTimeout);
}
