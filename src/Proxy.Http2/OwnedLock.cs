using System.Runtime.CompilerServices;

namespace Proxy.Http2;

/// <summary>
/// A re-entrant lock for state that lives on one thread (an event loop) and is reached from other threads
/// only now and then (a configuration change, a drain, a timer off the loop). Its owner enters and leaves
/// with plain memory accesses, no atomic instruction: it marks itself inside, then checks that no other
/// thread wants in. Any other thread announces itself with an interlocked increment, takes an ordinary lock,
/// makes the owner's mark visible with a process-wide memory barrier, and waits until the owner is out: an
/// asymmetric Dekker handshake, in which the owner's side costs a store and a load and the rare side a
/// system call. While another thread wants in, the owner queues on the ordinary lock like anyone else.
/// Without an owner (thread id 0) it is an ordinary lock.
/// </summary>
public sealed class OwnedLock(int ownerThreadId = 0)
{
    // -1 for no owner: never equal to a thread's mark (0 for threads that own nothing).
    private readonly int _owner = ownerThreadId == 0 ? -1 : ownerThreadId;
    private readonly Lock _shared = new();
    private int _depth;        // the owner's nesting on the fast path; written by the owner alone
    private int _contenders;   // threads inside or waiting on the shared path
    private static long s_foreignEntries;

    [ThreadStatic]
    private static int t_thread; // the owner id the calling thread answers to (0: it owns no lock)

    /// <summary>
    /// Marks the calling thread as the owner of the locks made with <paramref name="threadId"/> (its managed
    /// thread id): an owning thread calls this once, before it enters any of them.
    /// </summary>
    public static void BecomeOwner(int threadId) => t_thread = threadId;

    /// <summary>The managed thread id of the thread that enters without atomics (0: none).</summary>
    public int OwnerThreadId => _owner == -1 ? 0 : _owner;

    /// <summary>
    /// How many times, process-wide, a lock with an owner was entered by another thread (each costs a
    /// process-wide barrier): near zero while every connection's work stays on its loop.
    /// </summary>
    public static long ForeignEntries => Volatile.Read(ref s_foreignEntries);

    /// <summary>Enters the lock (re-entrant); dispose the scope to leave: <c>using (x.Enter()) { … }</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Scope Enter()
    {
        if (_owner == t_thread)
        {
            int depth = _depth;
            if (depth != 0)
            {
                _depth = depth + 1; // already inside: no other thread can be
                return new Scope(this, fast: true);
            }
            Volatile.Write(ref _depth, 1);
            if (Volatile.Read(ref _contenders) == 0)
            {
                return new Scope(this, fast: true);
            }
            Volatile.Write(ref _depth, 0); // someone else wants in: queue like them
        }
        return EnterShared();
    }

    private Scope EnterShared()
    {
        if (_owner == -1)
        {
            _shared.Enter();
            return new Scope(this, fast: false);
        }
        Interlocked.Increment(ref _contenders);
        bool nested = _shared.IsHeldByCurrentThread;
        _shared.Enter();
        if (!nested)
        {
            // The owner either sees _contenders > 0 at its next entry, or its mark is visible now.
            Interlocked.MemoryBarrierProcessWide();
            SpinWait spin = default;
            while (Volatile.Read(ref _depth) != 0)
            {
                spin.SpinOnce();
            }
            if (_owner != t_thread)
            {
                Interlocked.Increment(ref s_foreignEntries);
            }
        }
        return new Scope(this, fast: false);
    }

    private void ExitShared()
    {
        _shared.Exit();
        if (_owner != -1)
        {
            Interlocked.Decrement(ref _contenders);
        }
    }

    /// <summary>A held <see cref="OwnedLock"/>; leaving is disposing.</summary>
    public readonly ref struct Scope
    {
        private readonly OwnedLock _lock;
        private readonly bool _fast;

        internal Scope(OwnedLock owned, bool fast)
        {
            _lock = owned;
            _fast = fast;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Dispose()
        {
            if (_fast)
            {
                Volatile.Write(ref _lock._depth, _lock._depth - 1);
            }
            else
            {
                _lock.ExitShared();
            }
        }
    }
}
