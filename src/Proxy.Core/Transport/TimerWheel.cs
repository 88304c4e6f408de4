using Proxy.Core.Diagnostics;
using Proxy.Http2;

namespace Proxy.Core.Transport;

/// <summary>
/// A timer kept on a <see cref="TimerWheel"/> through links in the timer itself, so arming one allocates
/// nothing. Its owner makes it once and arms it again and again.
/// </summary>
public abstract class WheelTimer
{
    internal WheelTimer? Next;
    internal WheelTimer? Prev;
    internal long Due;
    internal int Slot = -1;
    internal int Tag;
    internal TimerWheel? Wheel;

    /// <summary>Runs on the wheel's thread once its time has passed (it is off the wheel by then); <paramref name="tag"/> is the one it was armed with.</summary>
    protected internal abstract void OnExpired(int tag);

    /// <summary>Takes the timer off its wheel, if it is on one (from any thread).</summary>
    public void Cancel() => Volatile.Read(ref Wheel)?.Remove(this);
}

/// <summary>
/// Timers (route timeouts, grpc-timeout, idle and per-try timeouts) on a hashed wheel: adding and
/// cancelling are O(1); a timer fires within one tick (<see cref="TickMilliseconds"/>) of its time. Each
/// event loop has its own, ticked by its thread between batches of events (Envoy's per-worker timers):
/// a request's deadlines fire on the loop its connections live on, and loops share no timer state. The
/// lock only orders a cancel from another thread; its loop enters it without atomic instructions.
/// Threads that are not event loops use <see cref="Shared"/>, which a timer thread ticks.
/// </summary>
public sealed class TimerWheel(int ownerThreadId = 0)
{
    public const int TickMilliseconds = 10;
    private const int Slots = 512;

    private readonly OwnedLock _lock = new(ownerThreadId); // the loop's own thread enters it without atomics
    private readonly WheelTimer?[] _heads = new WheelTimer?[Slots];
    private readonly List<(WheelTimer Timer, int Tag)> _due = [];
    private long _lastTick = Environment.TickCount64 / TickMilliseconds;
    private int _count;
    private int _ticking;
    private Timer? _timer;

    /// <summary>The wheel of the shared timer thread, for timers armed off the event loops.</summary>
    public static TimerWheel Shared { get; } = new();

    /// <summary>The calling event loop's wheel, or <see cref="Shared"/> off the loops.</summary>
    public static TimerWheel ForCurrentThread => EventLoop.Current?.Timers ?? Shared;

    /// <summary>Whether no timer is on the wheel (an idle loop then waits without a timeout).</summary>
    public bool IsEmpty => Volatile.Read(ref _count) == 0;

    /// <summary>Arms <paramref name="timer"/> for <paramref name="dueMilliseconds"/> (Environment.TickCount64), off any wheel it was on.</summary>
    public void Add(WheelTimer timer, long dueMilliseconds, int tag)
    {
        timer.Cancel();
        if (ReferenceEquals(this, Shared) && _timer == null)
        {
            EnsureTicking();
        }
        using (_lock.Enter())
        {
            int slot = (int)((dueMilliseconds / TickMilliseconds) % Slots);
            timer.Due = dueMilliseconds;
            timer.Tag = tag;
            timer.Slot = slot;
            timer.Prev = null;
            timer.Next = _heads[slot];
            if (timer.Next != null)
            {
                timer.Next.Prev = timer;
            }
            _heads[slot] = timer;
            Volatile.Write(ref timer.Wheel, this);
            _count++;
        }
    }

    internal void Remove(WheelTimer timer)
    {
        using (_lock.Enter())
        {
            if (ReferenceEquals(timer.Wheel, this))
            {
                Unlink(timer);
            }
        }
    }

    private void Unlink(WheelTimer timer)
    {
        if (timer.Prev != null)
        {
            timer.Prev.Next = timer.Next;
        }
        else
        {
            _heads[timer.Slot] = timer.Next;
        }
        if (timer.Next != null)
        {
            timer.Next.Prev = timer.Prev;
        }
        timer.Next = timer.Prev = null;
        timer.Slot = -1;
        Volatile.Write(ref timer.Wheel, null);
        _count--;
    }

    /// <summary>From the owning loop between batches: fires what is due if a tick has passed since the last.</summary>
    internal void TickIfDue()
    {
        long now = Environment.TickCount64;
        if (now / TickMilliseconds > _lastTick)
        {
            Tick(now);
        }
    }

    private void EnsureTicking()
    {
        using (_lock.Enter())
        {
            _timer ??= new Timer(static state => ((TimerWheel)state!).TickFromTimer(), this, TickMilliseconds, TickMilliseconds);
        }
    }

    private void TickFromTimer()
    {
        // Timer callbacks overlap when one runs long: the later one leaves the work to the running one
        // (which covers every slot up to its own time; the next tick covers the rest), so no two share _due.
        if (Interlocked.Exchange(ref _ticking, 1) != 0)
        {
            return;
        }
        try
        {
            Tick(Environment.TickCount64);
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    private void Tick(long now)
    {
        long tick = now / TickMilliseconds;
        using (_lock.Enter())
        {
            long from = _lastTick;
            // After a long pause, one full turn of the wheel covers every slot.
            long to = Math.Min(tick, from + Slots);
            for (long t = from; t <= to && _count > 0; t++)
            {
                int slot = (int)(t % Slots);
                for (WheelTimer? e = _heads[slot], next; e != null; e = next)
                {
                    next = e.Next;
                    if (e.Due <= now)
                    {
                        _due.Add((e, e.Tag));
                        Unlink(e);
                    }
                }
            }
            _lastTick = tick;
        }
        if (_due.Count == 0)
        {
            return;
        }
        FlushBatch.Begin();
        try
        {
            // Only one tick runs at a time on a wheel (its loop's thread, or see TickFromTimer).
            for (int i = 0; i < _due.Count; i++)
            {
                var (timer, tag) = _due[i];
                try
                {
                    timer.OnExpired(tag);
                }
                catch (Exception e)
                {
                    ProxyLog.Peer(LogLevel.Error, $"timer: {e}");
                }
            }
        }
        finally
        {
            _due.Clear();
            FlushBatch.End();
        }
    }
}
