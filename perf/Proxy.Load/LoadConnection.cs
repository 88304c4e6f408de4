using System.Buffers;
using System.Diagnostics;
using System.Net.Sockets;
using Proxy.Core.Transport;

namespace Proxy.Load;

/// <summary>
/// One connection to the target with up to <see cref="Capacity"/> requests in flight. The receive loop is
/// the proxy's own <see cref="SocketConnection"/> (inline on the socket engine's thread); requests go out
/// from that thread (closed model: the next request when one completes) or from the open model's pacer.
/// Each request in flight has a slot holding its intended send time and whether it is measured.
/// </summary>
internal abstract class LoadConnection : IConnectionProtocol
{
    protected readonly LoadRun Run;
    protected readonly SocketConnection Transport;
    protected readonly Proxy.Http2.OwnedLock Sync;
    private readonly long[] _intended;
    private readonly bool[] _measured;
    private readonly Stack<int> _free;
    private int _inFlight;
    private int _closed;

    protected LoadConnection(LoadRun run, Socket socket, int capacity)
    {
        Run = run;
        Transport = new SocketConnection(socket);
        Sync = Transport.Output.SyncRoot;
        _intended = new long[capacity];
        _measured = new bool[capacity];
        _free = new Stack<int>(Enumerable.Range(0, capacity).Reverse());
    }

    public int Capacity => _intended.Length;
    public int InFlight => Volatile.Read(ref _inFlight);
    public bool IsClosed => Volatile.Read(ref _closed) != 0;
    public virtual bool HasRoom => !IsClosed && InFlight < Capacity;

    public void Start()
    {
        OnStart();
        Transport.Output.Flush();
        _ = Transport.RunAsync(this);
    }

    protected virtual void OnStart()
    {
    }

    /// <summary>Sends one request intended at <paramref name="intended"/>; false when this connection has no room (or is closed).</summary>
    public bool TrySend(long intended, bool measured, bool flush = true)
    {
        int slot;
        using (Sync.Enter())
        {
            if (IsClosed || _free.Count == 0)
            {
                return false;
            }
            slot = _free.Pop();
            _intended[slot] = intended;
            _measured[slot] = measured;
            _inFlight++;
            if (!Write(slot))
            {
                _inFlight--;
                _free.Push(slot);
                return false;
            }
        }
        if (measured)
        {
            Run.Stats.OnSent();
            Interlocked.Increment(ref Run.MeasuredInFlight);
            Interlocked.Add(ref Run.Stats.BytesSent, Run.Options.Body.Length);
        }
        if (flush)
        {
            Transport.Output.Flush();
        }
        return true;
    }

    public void Flush() => Transport.Output.Flush();

    /// <summary>The open model's pacer wrote to it since its last flush (pacer thread only).</summary>
    internal bool Dirty;

    private long _readTime;

    /// <summary>
    /// The time of the read being processed (one clock read per read, as an event loop caches its time: the
    /// responses it completes and the requests sent in their place share it), or the clock outside a read.
    /// </summary>
    public long Now => _readTime != 0 ? _readTime : Stopwatch.GetTimestamp();

    InputStatus IConnectionProtocol.OnInput(ref ReadOnlySequence<byte> buffer)
    {
        _readTime = Stopwatch.GetTimestamp();
        try
        {
            return OnInput(ref buffer);
        }
        finally
        {
            _readTime = 0;
        }
    }

    /// <summary>Whether the request in <paramref name="slot"/> is counted (sent, or intended, in the measured window).</summary>
    protected bool IsMeasured(int slot) => _measured[slot];

    /// <summary>Response body octets of a measured request.</summary>
    protected void Received(int slot, int octets)
    {
        if (_measured[slot])
        {
            Interlocked.Add(ref Run.Stats.BytesReceived, octets);
        }
    }

    /// <summary>Writes the request for <paramref name="slot"/> (under the lock); false if it cannot go on this connection now.</summary>
    protected abstract bool Write(int slot);

    /// <summary>The response for <paramref name="slot"/> is complete (status -1: failed with <paramref name="why"/>).</summary>
    protected void Finish(int slot, int status, int grpcStatus, Failure why)
    {
        long now = Now;
        bool measured;
        long intended;
        using (Sync.Enter())
        {
            measured = _measured[slot];
            intended = _intended[slot];
            _inFlight--;
            _free.Push(slot);
        }
        if (measured && Run.Accounting)
        {
            if (why == Failure.None)
            {
                Run.Stats.OnResponse(intended, now, status, grpcStatus, Run.Options.Grpc);
            }
            else
            {
                Run.Stats.OnFailed(why);
            }
            Interlocked.Decrement(ref Run.MeasuredInFlight);
        }
        OnFinished();
        Run.OnRoom(this);
    }

    /// <summary>After a request finished (its slot is free again).</summary>
    protected virtual void OnFinished()
    {
    }

    /// <summary>Every request in flight fails (the connection is gone).</summary>
    protected void FailAll(Failure why, Func<int, bool>? inFlight = null)
    {
        for (int slot = 0; slot < Capacity; slot++)
        {
            bool busy;
            using (Sync.Enter())
            {
                busy = !_free.Contains(slot);
            }
            if (busy && (inFlight == null || inFlight(slot)))
            {
                Finish(slot, -1, -1, why);
            }
        }
    }

    public abstract InputStatus OnInput(ref ReadOnlySequence<byte> buffer);

    public void OnClosed()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }
        OnTransportClosed();
        FailAll(Failure.Connection);
        Run.OnConnectionClosed(this);
    }

    protected virtual void OnTransportClosed()
    {
    }

    public void Close() => Transport.Close();
}
