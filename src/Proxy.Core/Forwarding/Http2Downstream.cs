using System.Buffers;
using Proxy.Core.Diagnostics;
using Proxy.Core.Peers;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

/// <summary>A client's HTTP/2 connection to the proxy: each request stream becomes an <see cref="Exchange"/>.</summary>
internal class Http2Downstream(SocketConnection connection, Func<ListenerConfig> listener, ListenerOptions options)
    : Http2ProxyConnection(connection, isServer: true, options.Http2), IDownstreamProtocol
{
    private readonly long _openedAt = Environment.TickCount64;
    [ThreadStatic]
    private static List<(object? State, int Tag)>? s_sweepScratch;
    private long _idleSince;

    public void CheckTimeouts(long now)
    {
        if (!Protocol.HandshakeReceived)
        {
            // The preface and first SETTINGS are due within the preface (or request head) timeout.
            long limit = options.HeadTimeoutMs(preface: true);
            if (limit > 0 && now - _openedAt >= limit)
            {
                DownstreamLimits.TimedOut();
                Connection.Close();
            }
            return;
        }
        if (_drainWhenSettled)
        {
            _drainWhenSettled = false;
            DrainGracefully();
        }
        if (_abandoned.Count > 0)
        {
            ResetAbandoned(now);
        }
        long announced = Interlocked.Read(ref _announcedAt);
        if (announced != 0 && !_draining && now - announced >= 1000)
        {
            Drain();
        }
        if (_draining && Protocol.ActiveStreamCount == 0)
        {
            // GOAWAY went out and every stream it let finish has: nothing more can come (Envoy closes too).
            Connection.CloseAfterFlush();
            return;
        }
        if (Protocol.ActiveStreamCount > 0)
        {
            _idleSince = 0;
            // stream_idle_timeout of each open stream (the sweep is the only caller: one scratch list).
            List<(object? State, int Tag)> streams = s_sweepScratch ??= [];
            Protocol.CopyStreamStates(streams);
            foreach (var (state, tag) in streams)
            {
                CheckStream(state, tag, now);
            }
            streams.Clear();
            return;
        }
        if (_idleSince == 0)
        {
            _idleSince = now;
            return;
        }
        long idle = (long)options.IdleTimeout.TotalMilliseconds;
        if (idle > 0 && now - _idleSince >= idle)
        {
            // idle_timeout: GOAWAY, then close (Envoy drains the connection the same way).
            DownstreamLimits.TimedOut();
            Protocol.GoAway(Http2ErrorCode.NoError, "idle timeout");
            Connection.CloseAfterFlush();
        }
    }

    /// <summary>From the sweep, for each open stream: its exchange's stream_idle_timeout.</summary>
    protected virtual void CheckStream(object? state, int tag, long now) => (state as Exchange)?.CheckStreamIdle(tag, now);

    private volatile bool _draining;

    public void Drain()
    {
        _draining = true;
        Protocol.GoAway(Http2ErrorCode.NoError, "draining");
        Connection.Output.Flush();
    }

    // When the shutdown was announced (the final GOAWAY follows a second later); 0: not announced.
    private long _announcedAt;

    // A connection opened during a graceful drain: told to go at the first sweep after its handshake,
    // not before it (a GOAWAY before the client's SETTINGS were even read fails its first request).
    private volatile bool _drainWhenSettled;

    public void DrainWhenSettled() => _drainWhenSettled = true;

    /// <summary>
    /// Tells the client to go without failing a request it may be sending right now: GOAWAY with the
    /// last stream identifier 2^31-1 first, the final GOAWAY (with the real one) from the sweep a second
    /// later; streams in flight finish either way, new ones go to a new connection.
    /// </summary>
    public void DrainGracefully()
    {
        if (_draining || Interlocked.CompareExchange(ref _announcedAt, Math.Max(1, Environment.TickCount64), 0) != 0)
        {
            return;
        }
        Protocol.AnnounceShutdown("draining");
        Connection.Output.Flush();
    }

    public void Start()
    {
        Protocol.Start();
        Connection.Output.Flush();
    }

    public override void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind) => Scratch.Clear();

    public override void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        if (stream.UserState is Exchange existing)
        {
            existing.OnRequestTrailers(stream.UserTag, ref Scratch);
            return;
        }
        ListenerConfig config = listener();
        Exchange exchange = Exchange.Rent(this, stream.Id, out int generation);
        stream.UserState = exchange;
        stream.UserTag = generation;
        exchange.OnRequestHeaders(generation, ref Scratch, config.Routes, endStream, config.Options);
    }

    public override void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        if (stream.UserState is Exchange exchange && exchange.OnRequestData(stream.UserTag, data, endStream))
        {
            return;
        }
        if (stream.UserState != null)
        {
            // Body after its exchange ended (an abandoned request): dropped, and only the connection's
            // window reopens, so no more than the stream's window comes before the stream is reset.
            Protocol.DropData((int)data.Length);
        }
        else
        {
            Protocol.ConsumeData(stream.Id, (int)data.Length);
        }
        ScheduleFlush();
    }

    // Streams whose exchange ended before the client finished its request, and since when (see AbandonRequest).
    private readonly List<(int StreamId, long Since)> _abandoned = [];
    private readonly Lock _abandonedLock = new();
    private const int AbandonGraceMilliseconds = 500;

    /// <summary>
    /// The stream stays half-closed (local) for a moment (half a second to a second, the sweep's) rather than
    /// being reset at once: what the client sends meanwhile is still held to the protocol (trailers without
    /// END_STREAM, frames after its own RST_STREAM are errors, not ignored as frames in flight after ours),
    /// more body is dropped within the stream's window, and then the stream is reset with NO_ERROR (§8.1)
    /// unless the client ended it first.
    /// </summary>
    public override void AbandonRequest(int streamId)
    {
        using (_abandonedLock.EnterScope())
        {
            _abandoned.Add((streamId, Environment.TickCount64));
        }
    }

    private void ResetAbandoned(long now)
    {
        using (_abandonedLock.EnterScope())
        {
            int kept = 0;
            for (int i = 0; i < _abandoned.Count; i++)
            {
                var (id, since) = _abandoned[i];
                if (now - since >= AbandonGraceMilliseconds)
                {
                    Protocol.ResetStream(id, Http2ErrorCode.NoError); // nothing when it has closed meanwhile
                }
                else
                {
                    _abandoned[kept++] = (id, since);
                }
            }
            if (kept != _abandoned.Count)
            {
                _abandoned.RemoveRange(kept, _abandoned.Count - kept);
                Connection.Output.Flush();
            }
        }
    }

    public override void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote)
    {
        if (!remote && ProxyLog.IsEnabled(LogLevel.Debug))
        {
            ProxyLog.Peer(LogLevel.Debug, $"downstream {Connection.RemoteAddress}: stream {stream.Id} reset with {errorCode}");
        }
        if (stream.UserState is Exchange exchange)
        {
            exchange.OnDownstreamReset(stream.UserTag);
        }
    }
}
