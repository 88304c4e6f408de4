using Proxy.Core.Transport;

namespace Proxy.Core.Forwarding;

/// <summary>
/// Coalesces socket sends: frames written while handling one batch of input (to any connection) are
/// flushed once at the end of that batch, so a response's HEADERS, DATA and trailers that arrive
/// together leave in one send. One list per thread: each event loop thread flushes its own.
/// </summary>
internal static class FlushBatch
{
    [ThreadStatic]
    private static List<SocketOutput>? t_dirty;
    [ThreadStatic]
    private static int t_depth;

    /// <summary>Marks <paramref name="output"/> to be flushed when the current batch ends (at once outside a batch).</summary>
    public static void Add(SocketOutput output)
    {
        if (t_depth == 0)
        {
            output.Flush();
            return;
        }
        List<SocketOutput> dirty = t_dirty ??= new List<SocketOutput>(8);
        foreach (SocketOutput o in dirty)
        {
            if (ReferenceEquals(o, output))
            {
                return;
            }
        }
        dirty.Add(output);
    }

    public static void Begin() => t_depth++;

    [ThreadStatic]
    private static (Exchange Exchange, int Token, Upstream.UpstreamPool Pool, TimeSpan Timeout)[]? t_starts;
    [ThreadStatic]
    private static int t_startCount;

    /// <summary>
    /// Asks <paramref name="pool"/> for a connection for <paramref name="exchange"/> when the current batch
    /// of input ends (at once outside a batch). A request whose stream the client resets in the same batch
    /// (HEADERS then RST_STREAM, the rapid-reset pattern) never reaches the upstream.
    /// </summary>
    public static void StartUpstream(Exchange exchange, int token, Upstream.UpstreamPool pool, TimeSpan timeout)
    {
        if (t_depth == 0)
        {
            pool.Acquire(exchange, token, timeout);
            return;
        }
        var starts = t_starts ??= new (Exchange, int, Upstream.UpstreamPool, TimeSpan)[16];
        if (t_startCount == starts.Length)
        {
            Array.Resize(ref t_starts, starts.Length * 2);
        }
        t_starts![t_startCount++] = (exchange, token, pool, timeout);
    }

    public static void End()
    {
        if (t_depth == 1 && t_startCount > 0)
        {
            // Still inside the batch: what the starts write is flushed below with the rest. A start may
            // add more (the array is re-read each time round).
            for (int i = 0; i < t_startCount; i++)
            {
                var (exchange, token, pool, timeout) = t_starts![i];
                t_starts[i] = default;
                if (exchange.IsWaitingForUpstream(token))
                {
                    pool.Acquire(exchange, token, timeout);
                }
            }
            t_startCount = 0;
        }
        if (--t_depth > 0)
        {
            return;
        }
        List<SocketOutput>? dirty = t_dirty;
        if (dirty == null)
        {
            return;
        }
        for (int i = 0; i < dirty.Count; i++)
        {
            dirty[i].Flush();
        }
        dirty.Clear();
    }
}
