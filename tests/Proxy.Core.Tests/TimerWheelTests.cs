using Proxy.Core.Transport;

namespace Proxy.Core.Tests;

/// <summary>Timers on an event loop's wheel fire on that loop's thread; cancelled or re-armed ones do not fire for the old arming.</summary>
public sealed class TimerWheelTests
{
    private sealed class Probe : WheelTimer
    {
        public readonly TaskCompletionSource<(int Tag, EventLoop? Loop)> Fired = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Count;

        protected internal override void OnExpired(int tag)
        {
            Interlocked.Increment(ref Count);
            Fired.TrySetResult((tag, EventLoop.Current));
        }
    }

    private static EventLoop Loop() => EventLoop.Next() ?? throw new InvalidOperationException("event loops are off");

    private static Task OnLoop(EventLoop loop, Action action)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        loop.Post(() =>
        {
            action();
            done.SetResult();
        });
        return done.Task;
    }

    [Fact]
    public async Task ATimerArmedOnALoopFiresOnThatLoopWithItsTag()
    {
        EventLoop loop = Loop();
        var probe = new Probe();
        await OnLoop(loop, () =>
        {
            Assert.Same(loop.Timers, TimerWheel.ForCurrentThread);
            TimerWheel.ForCurrentThread.Add(probe, Environment.TickCount64 + 30, tag: 7);
        });
        var (tag, firedOn) = await probe.Fired.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(7, tag);
        Assert.Same(loop, firedOn);
        Assert.True(loop.Timers.IsEmpty);
    }

    [Fact]
    public async Task ACancelledTimerDoesNotFire()
    {
        EventLoop loop = Loop();
        var cancelled = new Probe();
        var witness = new Probe();
        long deadline = 0;
        await OnLoop(loop, () =>
        {
            deadline = Environment.TickCount64 + 1_000;
            loop.Timers.Add(cancelled, deadline, tag: 1);
        });
        // A loaded machine can keep this thread off a core past any deadline; only a cancel that
        // really came before its deadline says anything.
        bool cancelledInTime = Environment.TickCount64 < deadline - 100;
        cancelled.Cancel(); // from another thread, as an exchange finished elsewhere would
        await OnLoop(loop, () => loop.Timers.Add(witness, deadline + 200, tag: 2));
        await witness.Fired.Task.WaitAsync(TimeSpan.FromSeconds(10));
        if (cancelledInTime)
        {
            Assert.Equal(0, Volatile.Read(ref cancelled.Count));
        }
        Assert.True(cancelledInTime || Volatile.Read(ref cancelled.Count) <= 1);
    }

    [Fact]
    public async Task ReArmingMovesTheTimerAndFiresOnceWithTheNewTag()
    {
        EventLoop loop = Loop();
        var probe = new Probe();
        TimerWheel.Shared.Add(probe, Environment.TickCount64 + 60_000, tag: 1);
        await OnLoop(loop, () => loop.Timers.Add(probe, Environment.TickCount64 + 20, tag: 2));
        var (tag, firedOn) = await probe.Fired.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, tag);
        Assert.Same(loop, firedOn);
        await Task.Delay(100);
        Assert.Equal(1, Volatile.Read(ref probe.Count));
    }

    [Fact]
    public async Task OffTheLoopsTheSharedWheelFires()
    {
        var probe = new Probe();
        await Task.Run(() =>
        {
            Assert.Same(TimerWheel.Shared, TimerWheel.ForCurrentThread);
            TimerWheel.ForCurrentThread.Add(probe, Environment.TickCount64 + 20, tag: 3);
        });
        var (tag, firedOn) = await probe.Fired.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(3, tag);
        Assert.Null(firedOn);
    }
}
