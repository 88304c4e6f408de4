namespace Proxy.Core.Transport;

/// <summary>
/// Coalesces socket sends: frames written while handling one batch of input (to any connection) are
/// flushed once at the end of that batch, so a response's HEADERS, DATA and trailers that arrive
/// together leave in one send. One list per thread: each event loop thread flushes its own, and an event
/// loop's batch is its whole iteration, whose sends leave together through its io_uring.
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
                try
                {
                    work.RunDeferred(token);
                }
                catch (Exception e)
                {
                    Report(e); // one failure must not leave the batch open (nothing would be flushed again)
                }
            }
            t_deferredCount = 0;
        }
        if (--t_depth > 0)
        {
            return;
        }
        List<SocketOutput>? dirty = t_dirty;
        if (dirty == null || dirty.Count == 0)
        {
            return;
        }
        // Sending runs other code (completions, drain callbacks) that may open and end a batch of its own:
        // what that one marks goes to another list, flushed by its own end, never into this one meanwhile.
        t_dirty = t_spare ?? new List<SocketOutput>(8);
        t_spare = null;
        if (dirty.Count > 1 && EventLoop.Current?.Ring is { } ring)
        {
            FlushTogether(dirty, ring);
        }
        else
        {
            for (int i = 0; i < dirty.Count; i++)
            {
                Flush(dirty[i]);
            }
        }
        dirty.Clear();
        t_spare ??= dirty;
    }

    [ThreadStatic]
    private static List<SocketOutput>? t_spare;

    private static void Flush(SocketOutput output)
    {
        try
        {
            output.Flush();
        }
        catch (Exception e)
        {
            Report(e); // the other outputs of the batch are still sent
        }
    }

    private static void Report(Exception e) => Diagnostics.ProxyLog.Peer(Diagnostics.LogLevel.Error, $"send batch: {e}");

    [ThreadStatic]
    private static (SocketOutput Output, byte[] Buffer, int Count, bool Held, System.Runtime.InteropServices.GCHandle Pin)[]? t_batch;

    /// <summary>
    /// The first segment of every dirty output goes to the kernel in one submission (one system call for all
    /// of them); each output then goes on as after its own send: the rest of its queue, a wait for the
    /// writable edge, or a close.
    /// </summary>
    private static unsafe void FlushTogether(List<SocketOutput> dirty, IoUring ring)
    {
        // Taken while in use: a batch that a completion below opens and ends uses one of its own.
        var batch = t_batch ?? new (SocketOutput, byte[], int, bool, System.Runtime.InteropServices.GCHandle)[ring.Capacity];
        t_batch = null;
        int n = 0;
        for (int i = 0; i < dirty.Count; i++)
        {
            SocketOutput output = dirty[i];
            if (n < batch.Length && output.TryBeginBatchedSend(out byte[] buffer, out int count))
            {
                batch[n++] = (output, buffer, count, false, default);
            }
            else
            {
                Flush(output); // TLS, nothing to send, a turn already running, or no room left in the ring
            }
        }
        if (n == 0)
        {
            t_batch = batch;
            return;
        }
        // Held handles: a close elsewhere cannot hand a descriptor number to another socket meanwhile. An
        // output whose socket is already closed goes on (to its close) at once and leaves the batch.
        int held = 0;
        for (int i = 0; i < n; i++)
        {
            var entry = batch[i];
            batch[i] = default;
            try
            {
                entry.Output.Handle.DangerousAddRef(ref entry.Held);
            }
            catch (ObjectDisposedException)
            {
            }
            if (!entry.Held)
            {
                Complete(entry.Output, entry.Buffer, entry.Count, -9); // EBADF
                continue;
            }
            // Pinned until the kernel has taken the octets (a collection on another thread could move it).
            entry.Pin = System.Runtime.InteropServices.GCHandle.Alloc(entry.Buffer, System.Runtime.InteropServices.GCHandleType.Pinned);
            ring.PrepareSend((int)entry.Output.Handle.DangerousGetHandle(), (byte*)entry.Pin.AddrOfPinnedObject(), entry.Count, (ulong)held);
            batch[held++] = entry;
        }
        int taken = ring.Submit();
        Span<int> results = stackalloc int[held];
        results.Fill(-5); // EIO: taken by the kernel with no completion seen (never expected): the connection closes
        while (ring.TryReap(out ulong index, out int result))
        {
            if (index < (ulong)held)
            {
                results[(int)index] = result;
            }
        }
        // Handles and pins are let go before any output goes on (which may run other code).
        for (int i = 0; i < held; i++)
        {
            ref var entry = ref batch[i];
            entry.Pin.Free();
            entry.Output.Handle.DangerousRelease();
            if (i >= taken)
            {
                results[i] = Send(entry.Output, entry.Buffer, entry.Count); // the kernel refused the submission
            }
        }
        for (int i = 0; i < held; i++)
        {
            (SocketOutput output, byte[] buffer, int count, _, _) = batch[i];
            batch[i] = default;
            Complete(output, buffer, count, results[i]);
        }
        t_batch ??= batch;
    }

    private static void Complete(SocketOutput output, byte[] buffer, int count, int result)
    {
        try
        {
            output.CompleteBatchedSend(buffer, count, result);
        }
        catch (Exception e)
        {
            Report(e);
        }
    }

    /// <summary>One send the ring did not take (the submission was refused).</summary>
    private static int Send(SocketOutput output, byte[] buffer, int count) => EventLoop.Send(output.Handle, buffer.AsSpan(0, count));
}

/// <summary>Work deferred to the end of the current input batch (<see cref="FlushBatch.Defer"/>).</summary>
public interface IDeferred
{
    /// <summary>Runs the work; <paramref name="token"/> is what was passed to <see cref="FlushBatch.Defer"/>.</summary>
    void RunDeferred(int token);
}
