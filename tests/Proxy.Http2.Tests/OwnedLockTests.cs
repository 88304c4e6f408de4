namespace Proxy.Http2.Tests;

/// <summary>
/// The lock an event loop enters without atomics: mutual exclusion between its owner and other threads
/// (who pay a process-wide barrier), re-entrancy on both paths, and an ordinary lock without an owner.
/// </summary>
public sealed class OwnedLockTests
{
    private sealed class Shared
    {
        public long Counter;  // plain read-modify-write: lost updates show any overlap
        public int Inside;    // who is in the critical section (0: nobody)
        public int Overlaps;
    }

    private static void Critical(OwnedLock owned, Shared shared, int me, int spin = 20)
    {
        using (owned.Enter())
        {
            if (Volatile.Read(ref shared.Inside) != 0)
            {
                Interlocked.Increment(ref shared.Overlaps);
            }
            Volatile.Write(ref shared.Inside, me);
            long value = shared.Counter;
            Thread.SpinWait(spin); // widen the window a racing thread would need
            shared.Counter = value + 1;
            using (owned.Enter())
            {
                shared.Counter++; // re-entered: still exclusive
            }
            if (Volatile.Read(ref shared.Inside) != me)
            {
                Interlocked.Increment(ref shared.Overlaps);
            }
            Volatile.Write(ref shared.Inside, 0);
        }
    }

    [Fact]
    public void OwnerAndOtherThreadsNeverOverlap()
    {
        const int ForeignRounds = 2_000;
        const int Foreigners = 2;
        var shared = new Shared();
        OwnedLock? owned = null;
        using var ready = new ManualResetEventSlim();
        int foreignersDone = 0;
        bool gaveUp = false;
        long ownerRounds = 0;
        long foreignBefore = OwnedLock.ForeignEntries;
        var owner = new Thread(() =>
        {
            OwnedLock.BecomeOwner(Environment.CurrentManagedThreadId);
            owned = new OwnedLock(Environment.CurrentManagedThreadId);
            ready.Set();
            // The owner keeps going for as long as the others do, as a loop would.
            while ((Volatile.Read(ref foreignersDone) < Foreigners || ownerRounds < 10_000) && !Volatile.Read(ref gaveUp))
            {
                // Now and then a long stay inside, longer than another thread's barrier takes.
                Critical(owned, shared, 1, ownerRounds % 8 == 0 ? 20_000 : 20);
                ownerRounds++;
            }
        }) { IsBackground = true };
        owner.Start();
        ready.Wait();
        var others = Enumerable.Range(0, Foreigners).Select(n => new Thread(() =>
        {
            for (int i = 0; i < ForeignRounds; i++)
            {
                Critical(owned!, shared, 2 + n);
                Thread.SpinWait(500); // come back while the owner is inside on its own path
            }
            Interlocked.Increment(ref foreignersDone);
        }) { IsBackground = true }).ToArray();
        foreach (Thread t in others)
        {
            t.Start();
        }
        // A busy owner must let the others in (it queues behind them): they finish within the minute.
        bool finished = others.All(t => t.Join(TimeSpan.FromSeconds(60)));
        Volatile.Write(ref gaveUp, !finished);
        owner.Join();
        Assert.True(finished, $"threads other than the owner starved: {Volatile.Read(ref foreignersDone)} of {Foreigners} finished");
        Assert.Equal(2L * (ownerRounds + (Foreigners * ForeignRounds)), shared.Counter);
        // Each outermost entry by another thread is counted (other tests may add their own).
        Assert.True(OwnedLock.ForeignEntries - foreignBefore >= Foreigners * ForeignRounds);
    }

    [Fact]
    public void WithoutAnOwnerItIsAnOrdinaryLock()
    {
        var owned = new OwnedLock();
        Assert.Equal(0, owned.OwnerThreadId);
        var shared = new Shared();
        Parallel.For(0, 4, n =>
        {
            for (int i = 0; i < 5_000; i++)
            {
                Critical(owned, shared, 1 + n);
            }
        });
        Assert.Equal(0, shared.Overlaps);
        Assert.Equal(2L * 4 * 5_000, shared.Counter);
    }

    [Fact]
    public void AThreadThatOwnsAnotherLockTakesTheSharedPathHere()
    {
        var owned = new OwnedLock(int.MaxValue); // owned by no thread that runs
        var shared = new Shared();
        var t = new Thread(() =>
        {
            OwnedLock.BecomeOwner(Environment.CurrentManagedThreadId); // owns other locks, not this one
            for (int i = 0; i < 1_000; i++)
            {
                Critical(owned, shared, 1);
            }
        });
        t.Start();
        for (int i = 0; i < 1_000; i++)
        {
            Critical(owned, shared, 2);
        }
        t.Join();
        Assert.Equal(0, shared.Overlaps);
        Assert.Equal(4_000, shared.Counter);
    }
}
