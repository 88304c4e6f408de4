namespace Proxy.Core.Transport;

/// <summary>
/// Coalesces socket sends: frames written while handling one batch of input (to any connection) are
/// flushed once at the end of that batch, so a response's HEADERS, DATA and trailers that arrive
/// together leave in one send. One list per thread: each event loop thread flushes its own.
/// </summary>
public static class FlushBatch
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
    private static (IDeferred Work, int Token)[]? t_deferred;
    [ThreadStatic]
    private static int t_deferredCount;

    /// <summary>
    /// Runs <paramref name="work"/> when the current batch of input ends, before its flush (at once
    /// outside a batch). The exchange asks for its upstream this way, so that a request whose stream the
    /// client resets in the same batch (HEADERS then RST_STREAM, the rapid-reset pattern) never reaches it.
    /// </summary>
    public static void Defer(IDeferred work, int token)
    {
        if (t_depth == 0)
        {
            work.RunDeferred(token);
            return;
        }
        var deferred = t_deferred ??= new (IDeferred, int)[16];
        if (t_deferredCount == deferred.Length)
        {
            Array.Resize(ref t_deferred, deferred.Length * 2);
        }
        t_deferred![t_deferredCount++] = (work, token);
    }

    public static void End()
    {
        if (t_depth == 1 && t_deferredCount > 0)
        {
            // Still inside the batch: what the deferred work writes is flushed below with the rest. It may
            // defer more (the array is re-read each time round).
            for (int i = 0; i < t_deferredCount; i++)
            {
                var (work, token) = t_deferred![i];
                t_deferred[i] = default;
                work.RunDeferred(token);
            }
            t_deferredCount = 0;
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

/// <summary>Work deferred to the end of the current input batch (<see cref="FlushBatch.Defer"/>).</summary>
public interface IDeferred
{
    /// <summary>Runs the work; <paramref name="token"/> is what was passed to <see cref="FlushBatch.Defer"/>.</summary>
    void RunDeferred(int token);
}
