using Proxy.Core.Transport;

namespace Proxy.Core.Forwarding;

/// <summary>
/// Request deadlines (route timeouts, grpc-timeout) on a hashed timer wheel: adding and cancelling is
/// O(1) through links kept in the exchange itself, so arming a deadline allocates nothing. One timer
/// ticks every <see cref="TickMilliseconds"/> ms; a deadline fires within one tick of its time.
/// </summary>
internal static class DeadlineWheel
{
    public const int TickMilliseconds = 10;
    private const int Slots = 512;

    private static readonly object s_lock = new();
    private static readonly Exchange?[] s_heads = new Exchange?[Slots];
    private static readonly List<(Exchange Exchange, int Generation)> s_due = [];
    private static readonly Timer s_timer = new(static _ => Tick(), null, TickMilliseconds, TickMilliseconds);
    private static long s_lastTick = Environment.TickCount64 / TickMilliseconds;

    public static void Add(Exchange exchange, long dueMilliseconds)
    {
        GC.KeepAlive(s_timer);
        lock (s_lock)
        {
            int slot = (int)((dueMilliseconds / TickMilliseconds) % Slots);
            exchange.TimerDue = dueMilliseconds;
            exchange.TimerSlot = slot;
            exchange.TimerPrev = null;
            exchange.TimerNext = s_heads[slot];
            if (exchange.TimerNext != null)
            {
                exchange.TimerNext.TimerPrev = exchange;
            }
            s_heads[slot] = exchange;
        }
    }

    public static void Remove(Exchange exchange)
    {
        if (exchange.TimerSlot < 0)
        {
            return;
        }
        lock (s_lock)
        {
            Unlink(exchange);
        }
    }

    private static void Unlink(Exchange exchange)
    {
        if (exchange.TimerSlot < 0)
        {
            return;
        }
        if (exchange.TimerPrev != null)
        {
            exchange.TimerPrev.TimerNext = exchange.TimerNext;
        }
        else
        {
            s_heads[exchange.TimerSlot] = exchange.TimerNext;
        }
        if (exchange.TimerNext != null)
        {
            exchange.TimerNext.TimerPrev = exchange.TimerPrev;
        }
        exchange.TimerNext = exchange.TimerPrev = null;
        exchange.TimerSlot = -1;
    }

    private static int s_ticking;

    private static void Tick()
    {
        // Timer callbacks overlap when one runs long: the later one leaves the work to the running one
        // (which covers every slot up to its own time; the next tick covers the rest), so no two share s_due.
        if (Interlocked.Exchange(ref s_ticking, 1) != 0)
        {
            return;
        }
        try
        {
            TickOnce();
        }
        finally
        {
            Volatile.Write(ref s_ticking, 0);
        }
    }

    private static void TickOnce()
    {
        long now = Environment.TickCount64;
        long tick = now / TickMilliseconds;
        lock (s_lock)
        {
            long from = s_lastTick;
            // After a long pause, one full turn of the wheel covers every slot.
            long to = Math.Min(tick, from + Slots);
            for (long t = from; t <= to; t++)
            {
                int slot = (int)(t % Slots);
                for (Exchange? e = s_heads[slot], next; e != null; e = next)
                {
                    next = e.TimerNext;
                    if (e.TimerDue <= now)
                    {
                        s_due.Add((e, e.TimerGeneration));
                        Unlink(e);
                    }
                }
            }
            s_lastTick = tick;
        }
        if (s_due.Count == 0)
        {
            return;
        }
        // Only the one running tick touches s_due (see Tick).
        (Exchange Exchange, int Generation)[] due = [.. s_due];
        s_due.Clear();
        FlushBatch.Begin();
        try
        {
            foreach (var (exchange, generation) in due)
            {
                exchange.OnDeadline(generation);
            }
        }
        finally
        {
            FlushBatch.End();
        }
    }
}
