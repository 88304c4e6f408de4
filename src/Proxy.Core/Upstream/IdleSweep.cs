using Proxy.Core.Transport;

namespace Proxy.Core.Upstream;

/// <summary>
/// One pool slot's idle sweep (idle_timeout): a one-shot timer whose work runs on the event loop that armed
/// it. Not on the loop's timer wheel: a timer there keeps the loop waking every wheel tick, and an idle
/// timeout is typically an hour; the runtime's timer thread sleeps until the sweep is due.
/// </summary>
internal sealed class IdleSweep : IDisposable
{
    private readonly Action _run;
    private readonly Timer _timer;
    private EventLoop? _loop;

    public IdleSweep(Action run)
    {
        _run = run;
        _timer = new Timer(static state => ((IdleSweep)state!).Fire(), this, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>Runs the sweep at <paramref name="dueMilliseconds"/> (Environment.TickCount64), on the calling event loop.</summary>
    public void Arm(long dueMilliseconds)
    {
        _loop = EventLoop.Current;
        try
        {
            _timer.Change(Math.Clamp(dueMilliseconds - Environment.TickCount64, 1, uint.MaxValue - 1), Timeout.Infinite);
        }
        catch (ObjectDisposedException)
        {
            // The pool was retired meanwhile: it closes its idle connections itself.
        }
    }

    private void Fire()
    {
        if (_loop is { } loop)
        {
            loop.Post(_run);
        }
        else
        {
            _run();
        }
    }

    public void Dispose() => _timer.Dispose();
}
