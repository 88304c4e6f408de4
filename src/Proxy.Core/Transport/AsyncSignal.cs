using System.Threading.Tasks.Sources;

namespace Proxy.Core.Transport;

/// <summary>A reusable one-waiter signal: Wait() then Set() from another thread, without allocating.</summary>
internal sealed class AsyncSignal : IValueTaskSource
{
    private ManualResetValueTaskSourceCore<bool> _source;
    private int _state; // 0 idle, 1 waiting, 2 set before wait

    /// <param name="inline">Run the waiter's continuation on the thread that sets the signal (an event loop's), not the thread pool.</param>
    public AsyncSignal(bool inline = false)
    {
        _source.RunContinuationsAsynchronously = !inline;
    }

    public ValueTask WaitAsync()
    {
        if (Interlocked.CompareExchange(ref _state, 0, 2) == 2)
        {
            return default;
        }
        _source.Reset();
        if (Interlocked.CompareExchange(ref _state, 1, 0) == 2)
        {
            _state = 0;
            return default;
        }
        return new ValueTask(this, _source.Version);
    }

    public void Set()
    {
        while (true)
        {
            int state = Volatile.Read(ref _state);
            if (state == 1)
            {
                if (Interlocked.CompareExchange(ref _state, 0, 1) == 1)
                {
                    _source.SetResult(true);
                    return;
                }
            }
            else if (state == 2 || Interlocked.CompareExchange(ref _state, 2, 0) == 0)
            {
                return;
            }
        }
    }

    void IValueTaskSource.GetResult(short token) => _source.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _source.GetStatus(token);
    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _source.OnCompleted(continuation, state, token, flags);
}
