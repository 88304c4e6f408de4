namespace Proxy.Core.Transport;

/// <summary>
/// The process-wide cap on downstream connections (Envoy's overload manager
/// global_downstream_max_connections, or --max-connections): past it a new connection is closed as soon
/// as it is accepted, and counted. Also the counts the admin endpoint and tests read.
/// </summary>
public static class DownstreamLimits
{
    private static long s_max = long.MaxValue;
    private static long s_active;
    private static long s_rejected;
    private static long s_timedOut;
    private static long s_rbacDenied;

    /// <summary>The most downstream connections open at once, over every listener (no limit by default).</summary>
    public static long MaxConnections
    {
        get => Volatile.Read(ref s_max);
        set => Volatile.Write(ref s_max, value <= 0 ? long.MaxValue : value);
    }

    /// <summary>Downstream connections open now.</summary>
    public static long ActiveConnections => Volatile.Read(ref s_active);

    /// <summary>Connections closed at accept because the cap was reached (Envoy's downstream_cx_overflow).</summary>
    public static long RejectedConnections => Volatile.Read(ref s_rejected);

    /// <summary>Connections closed by a header, preface or idle timeout.</summary>
    public static long TimedOutConnections => Volatile.Read(ref s_timedOut);

    /// <summary>Requests and connections refused by an RBAC filter.</summary>
    public static long RbacDenied => Volatile.Read(ref s_rbacDenied);

    internal static bool TryOpen()
    {
        if (Interlocked.Increment(ref s_active) <= Volatile.Read(ref s_max))
        {
            return true;
        }
        Interlocked.Decrement(ref s_active);
        Interlocked.Increment(ref s_rejected);
        return false;
    }

    internal static void Closed() => Interlocked.Decrement(ref s_active);

    internal static void TimedOut() => Interlocked.Increment(ref s_timedOut);

    internal static void Denied() => Interlocked.Increment(ref s_rbacDenied);
}

/// <summary>A downstream protocol as its listener sees it: checked for timeouts, asked to drain.</summary>
internal interface IDownstreamProtocol : IConnectionProtocol
{
    /// <summary>Called a few times a second by the listener's sweep: closes the connection if a timeout passed.</summary>
    void CheckTimeouts(long nowMs);

    /// <summary>Finish what is in flight, take nothing new, then close (GOAWAY / connection: close).</summary>
    void Drain();

    /// <summary>
    /// A graceful drain (the listener still accepts): tell the client to go — HTTP/2 GOAWAY, HTTP/1.1
    /// connection: close on the next response — without closing an idle connection under it.
    /// </summary>
    void DrainGracefully();
}
