using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Threading.Channels;
using Proxy.Core.Forwarding;
using Proxy.Core.Listeners;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Grpc;

/// <summary>
/// A small gRPC server on our own HTTP/2 engine and transport (h2c, TCP or a unix socket), for streaming
/// control-plane services (the embedded xDS server): each call is a <see cref="GrpcServerStream"/> whose
/// request messages arrive on a channel and whose responses are queued and sent as flow control allows.
/// Not a hot path: messages are copied into arrays of their own.
/// </summary>
public sealed class GrpcServer : IAsyncDisposable
{
    private readonly ProxyListener _listener;

    /// <param name="onCall">Takes a new call (its :path is <see cref="GrpcServerStream.Path"/>); false answers UNIMPLEMENTED.</param>
    public GrpcServer(EndPoint address, Func<GrpcServerStream, bool> onCall, int maxMessageBytes = 64 * 1024 * 1024)
    {
        OnCall = onCall;
        MaxMessageBytes = maxMessageBytes;
        // Streams live as long as their proxies (xDS): no idle or stream timeouts; but a connection must
        // send its preface within 10 s, as on any listener, so silent ones do not stay forever.
        var options = new ListenerOptions { IdleTimeout = TimeSpan.Zero, StreamIdleTimeout = TimeSpan.Zero, PrefaceTimeout = TimeSpan.FromSeconds(10), BufferLimit = 16 * 1024 * 1024 };
        var config = new ListenerConfig("grpc", new IPEndPoint(IPAddress.Loopback, 0), new RouteConfiguration("grpc", [])) { Options = options };
        _listener = new ProxyListener(config, () => config, address, (connection, c, o) => new GrpcServerConnection(connection, c, o, this));
    }

    internal Func<GrpcServerStream, bool> OnCall { get; }
    internal int MaxMessageBytes { get; }

    public EndPoint EndPoint => _listener.BoundEndPoint;

    public void Start() => _listener.Start();

    public async ValueTask DisposeAsync()
    {
        await _listener.StopAcceptingAndDrainAsync();
        await _listener.DisposeAsync();
    }
}

internal sealed class GrpcServerConnection(SocketConnection connection, Func<ListenerConfig> listener, ListenerOptions options, GrpcServer server)
    : Http2Downstream(connection, listener, options)
{
    private readonly HashSet<GrpcServerStream> _waiting = [];

    public GrpcServer Server => server;

    public override void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        if (stream.UserState is GrpcServerStream existing)
        {
            existing.OnRequestData(ReadOnlySequence<byte>.Empty, endStream: true); // trailers end the client's half
            return;
        }
        int path = Scratch.IndexOf(":path"u8);
        var call = new GrpcServerStream(this, stream.Id, path >= 0 ? System.Text.Encoding.ASCII.GetString(Scratch.Value(path)) : "/");
        stream.UserState = call;
        if (!server.OnCall(call))
        {
            call.Finish(GrpcStatus.Unimplemented, $"unknown method {call.Path}");
            return;
        }
        if (endStream)
        {
            call.OnRequestData(ReadOnlySequence<byte>.Empty, endStream: true);
        }
    }

    public override void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        Protocol.ConsumeData(stream.Id, (int)data.Length);
        (stream.UserState as GrpcServerStream)?.OnRequestData(data, endStream);
    }

    public override void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote) =>
        (stream.UserState as GrpcServerStream)?.OnReset();

    protected override void CheckStream(object? state, int tag, long now)
    {
    }

    public void Wait(GrpcServerStream stream)
    {
        lock (_waiting)
        {
            _waiting.Add(stream);
            _waitingCount = _waiting.Count;
        }
    }

    protected override bool HasBlocked => base.HasBlocked || Volatile.Read(ref _waitingCount) > 0;

    private int _waitingCount;

    public override void OnWindowUpdate(int streamId)
    {
        base.OnWindowUpdate(streamId);
        GrpcServerStream[] woken;
        lock (_waiting)
        {
            if (_waiting.Count == 0)
            {
                return;
            }
            woken = [.. _waiting];
            _waiting.Clear();
            _waitingCount = 0;
        }
        foreach (GrpcServerStream stream in woken)
        {
            stream.Drain();
        }
    }
}

/// <summary>One call on a <see cref="GrpcServer"/>: request messages in, response messages out, then a status.</summary>
#pragma warning disable CA1001 // the token source has no timer: it holds nothing that needs disposing
public sealed class GrpcServerStream
{
    private readonly GrpcServerConnection _connection;
    private readonly int _streamId;
    private readonly Channel<byte[]> _requests = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _aborted = new();
    // Framed messages (5-byte prefix + message) waiting for the window; pooled ones go back once sent.
    private readonly Queue<(byte[] Framed, int Length, bool Pooled)> _out = new();
    private long _queued;
    private int _outOffset;
    private byte[] _partial = [];
    private int _partialCount;
    private bool _headersSent;
    private (int Status, string? Message)? _finish;
    private bool _done;
    private bool _clientDone;

    internal GrpcServerStream(GrpcServerConnection connection, int streamId, string path)
    {
        _connection = connection;
        _streamId = streamId;
        Path = path;
    }

    public string Path { get; }

    /// <summary>The client's messages; completed when the client ends its half or the call is aborted.</summary>
    public ChannelReader<byte[]> Requests => _requests.Reader;

    /// <summary>Cancelled when the client resets the call or the connection closes.</summary>
    public CancellationToken Aborted => _aborted.Token;

    public EndPoint? RemoteEndPoint => _connection.Connection.RemoteEndPoint;

    internal void OnRequestData(in ReadOnlySequence<byte> data, bool endStream)
    {
        lock (this)
        {
            // Reassemble length-prefixed messages (a message may span frames, a frame hold several).
            ReadOnlySequence<byte> rest = data;
            while (!rest.IsEmpty)
            {
                if (_partialCount < 5)
                {
                    if (_partial.Length < 5)
                    {
                        _partial = new byte[5];
                    }
                    int take = (int)Math.Min(rest.Length, 5 - _partialCount);
                    rest.Slice(0, take).CopyTo(_partial.AsSpan(_partialCount));
                    _partialCount += take;
                    rest = rest.Slice(take);
                    if (_partialCount < 5)
                    {
                        break;
                    }
                    int length = BinaryPrimitives.ReadInt32BigEndian(_partial.AsSpan(1));
                    if (_partial[0] != 0 || length < 0 || length > _connection.Server.MaxMessageBytes)
                    {
                        FinishLocked(_partial[0] != 0 ? GrpcStatus.Unimplemented : GrpcStatus.ResourceExhausted,
                            _partial[0] != 0 ? "compressed messages are not supported" : "message too large");
                        return;
                    }
                    byte[] grown = new byte[5 + length];
                    _partial.AsSpan(0, 5).CopyTo(grown);
                    _partial = grown;
                }
                int need = _partial.Length - _partialCount;
                int copy = (int)Math.Min(rest.Length, need);
                rest.Slice(0, copy).CopyTo(_partial.AsSpan(_partialCount));
                _partialCount += copy;
                rest = rest.Slice(copy);
                if (_partialCount == _partial.Length)
                {
                    _requests.Writer.TryWrite(_partial.AsSpan(5).ToArray());
                    _partial = [];
                    _partialCount = 0;
                }
            }
            if (endStream)
            {
                _clientDone = true;
                _requests.Writer.TryComplete();
            }
        }
    }

    internal void OnReset()
    {
        lock (this)
        {
            _done = true;
            ClearOut();
        }
        _requests.Writer.TryComplete();
        _aborted.Cancel();
    }

    /// <summary>Queues a response message (safe from any thread); false when the call is over.</summary>
    public bool Send(ReadOnlySpan<byte> message)
    {
        byte[] framed = new byte[5 + message.Length];
        message.CopyTo(framed.AsSpan(5));
        return Enqueue(framed, message.Length, pooled: false);
    }

    /// <summary>
    /// Sends a message already written at offset 5 of <paramref name="framed"/>, rented from
    /// <see cref="System.Buffers.ArrayPool{T}.Shared"/>; the stream owns it from here (returned once sent
    /// or dropped), so a large message is never copied again.
    /// </summary>
    public bool SendFramed(byte[] framed, int messageLength) => Enqueue(framed, messageLength, pooled: true);

    private bool Enqueue(byte[] framed, int messageLength, bool pooled)
    {
        lock (this)
        {
            if (_done || _finish != null || _queued + 5L + messageLength > 2L * _connection.Server.MaxMessageBytes)
            {
                if (!_done && _finish == null)
                {
                    // A client that does not read its responses: the call is cut off rather than queued without bound.
                    _connection.Protocol.ResetStream(_streamId, Http2ErrorCode.Cancel);
                    End();
                    _aborted.Cancel();
                }
                Release(framed, pooled);
                return false;
            }
            framed[0] = 0;
            BinaryPrimitives.WriteInt32BigEndian(framed.AsSpan(1), messageLength);
            _out.Enqueue((framed, 5 + messageLength, pooled));
            _queued += 5 + messageLength;
            DrainLocked();
            return true;
        }
    }

    private static void Release(byte[] framed, bool pooled)
    {
        if (pooled)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(framed);
        }
    }

    private void ClearOut()
    {
        while (_out.TryDequeue(out var item))
        {
            Release(item.Framed, item.Pooled);
        }
        _outOffset = 0;
        _queued = 0;
    }

    /// <summary>Bytes queued and not yet handed to the connection (at most twice the message limit).</summary>
    public long Queued
    {
        get
        {
            lock (this)
            {
                return _queued - _outOffset;
            }
        }
    }

    /// <summary>Ends the call with <paramref name="status"/> once queued messages are out.</summary>
    public void Finish(int status, string? message = null)
    {
        lock (this)
        {
            FinishLocked(status, message);
        }
    }

    private void FinishLocked(int status, string? message)
    {
        if (_done || _finish != null)
        {
            return;
        }
        _finish = (status, message);
        DrainLocked();
    }

    internal void Drain()
    {
        lock (this)
        {
            DrainLocked();
        }
    }

    private void DrainLocked()
    {
        if (_done)
        {
            return;
        }
        Http2Connection protocol = _connection.Protocol;
        if (!_headersSent)
        {
            var headers = new HeaderList();
            headers.Add(":status"u8, "200"u8);
            headers.Add("content-type"u8, "application/grpc"u8);
            if (_out.Count == 0 && _finish is { } only)
            {
                AddStatus(headers, only.Status, only.Message);
                protocol.SendHeaders(_streamId, headers, endStream: true);
                End();
                return;
            }
            if (!protocol.SendHeaders(_streamId, headers, endStream: false))
            {
                End();
                return;
            }
            _headersSent = true;
        }
        while (_out.Count > 0)
        {
            var (head, length, pooled) = _out.Peek();
            int sent = _connection.Connection.IsOutputFull ? 0 : protocol.SendData(_streamId, head.AsSpan(_outOffset, length - _outOffset), endStream: false);
            if (sent < 0)
            {
                End();
                return;
            }
            _outOffset += sent;
            if (_outOffset == length)
            {
                _out.Dequeue();
                Release(head, pooled);
                _queued -= length;
                _outOffset = 0;
                continue;
            }
            _connection.Wait(this);
            FlushBatch.Add(_connection.Connection.Output);
            return;
        }
        if (_finish is { } end)
        {
            var trailers = new HeaderList();
            AddStatus(trailers, end.Status, end.Message);
            protocol.SendHeaders(_streamId, trailers, endStream: true);
            End();
            return;
        }
        FlushBatch.Add(_connection.Connection.Output);
    }

    private static void AddStatus(HeaderList headers, int status, string? message)
    {
        headers.Add("grpc-status"u8, System.Text.Encoding.ASCII.GetBytes(status.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        if (!string.IsNullOrEmpty(message))
        {
            headers.Add("grpc-message"u8, Runtime.RuntimeCall.PercentEncode(message));
        }
    }

    private void End()
    {
        _done = true;
        ClearOut();
        if (!_clientDone)
        {
            // The answer is complete while the client still sends: RST_STREAM(NO_ERROR) (RFC 9113 §8.1).
            _connection.Protocol.ResetStream(_streamId, Http2ErrorCode.NoError);
            _requests.Writer.TryComplete();
        }
        FlushBatch.Add(_connection.Connection.Output);
    }
}
#pragma warning restore CA1001
