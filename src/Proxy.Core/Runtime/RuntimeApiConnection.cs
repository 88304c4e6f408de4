using System.Buffers;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Runtime;

/// <summary>
/// An application's HTTP/2 connection to the runtime API: each stream is a <see cref="RuntimeCall"/>. The
/// connection's timeouts, limits and draining are those of any downstream HTTP/2 connection.
/// </summary>
internal sealed class RuntimeApiConnection(SocketConnection connection, Func<ListenerConfig> listener, ListenerOptions options, RuntimeApiServer server)
    : Http2Downstream(connection, listener, options)
{
    private readonly List<(RuntimeCall Call, int Generation)> _blockedCalls = [];
    private (RuntimeCall, int)[] _wakeCalls = new (RuntimeCall, int)[4];
    private long _held;

    public RuntimeApiServer Server => server;

    public override void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        if (stream.UserState is RuntimeCall existing)
        {
            existing.OnRequestEnd(stream.UserTag); // trailers from the client end its half
            return;
        }
        RuntimeCall call = RuntimeCall.Rent(this, stream.Id, out int generation);
        stream.UserState = call;
        stream.UserTag = generation;
        call.OnHeaders(generation, ref Scratch, endStream);
    }

    public override void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (stream.UserState is RuntimeCall call && call.OnData(stream.UserTag, data, endStream))
        {
            return;
        }
        Protocol.ConsumeData(stream.Id, (int)data.Length); // no call takes it: dropped, and credited
    }

    public override void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote)
    {
        if (stream.UserState is RuntimeCall call)
        {
            call.OnClientReset(stream.UserTag);
        }
    }

    protected override void CheckStream(object? state, int tag, long now) => (state as RuntimeCall)?.CheckDeadline(tag, now);

    /// <summary>Takes <paramref name="bytes"/> of the connection's message budget; false when its calls already hold it all.</summary>
    public bool TryHold(long bytes)
    {
        long budget = server.Options.ConnectionBudgetBytes;
        while (true)
        {
            long current = Volatile.Read(ref _held);
            if (current + bytes > budget)
            {
                return false;
            }
            if (Interlocked.CompareExchange(ref _held, current + bytes, current) == current)
            {
                return true;
            }
        }
    }

    public void Release(long bytes) => Interlocked.Add(ref _held, -bytes);

    /// <summary>Wakes <paramref name="call"/> when windows open or the send queue drains.</summary>
    public void AddBlocked(RuntimeCall call, int generation)
    {
        lock (_blockedCalls)
        {
            _blockedCalls.Add((call, generation));
            _blockedCallCount = _blockedCalls.Count;
        }
    }

    public void RemoveBlocked(RuntimeCall call)
    {
        lock (_blockedCalls)
        {
            for (int i = _blockedCalls.Count - 1; i >= 0; i--)
            {
                if (ReferenceEquals(_blockedCalls[i].Call, call))
                {
                    _blockedCalls.RemoveAt(i);
                }
            }
            _blockedCallCount = _blockedCalls.Count;
        }
    }

    protected override bool HasBlocked => base.HasBlocked || Volatile.Read(ref _blockedCallCount) > 0;

    private int _blockedCallCount;

    public override void OnWindowUpdate(int streamId)
    {
        base.OnWindowUpdate(streamId);
        int count;
        lock (_blockedCalls)
        {
            count = _blockedCalls.Count;
            if (count == 0)
            {
                return;
            }
            if (_wakeCalls.Length < count)
            {
                _wakeCalls = new (RuntimeCall, int)[Math.Max(count, _wakeCalls.Length * 2)];
            }
            _blockedCalls.CopyTo(_wakeCalls);
            _blockedCalls.Clear();
            _blockedCallCount = 0;
        }
        for (int i = 0; i < count; i++)
        {
            var (call, generation) = _wakeCalls[i];
            _wakeCalls[i] = default;
            call.OnWritable(generation);
        }
    }
}
