using System.Buffers;
using System.Buffers.Text;
using System.Net.Sockets;
using System.Text;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Load;

/// <summary>
/// h2c with prior knowledge on our own <see cref="Http2Connection"/> in the client role: one stream per
/// request, the body sent as the windows allow, response DATA credited back at once (the driver only
/// counts it), :status and grpc-status (from headers or trailers) kept per slot.
/// </summary>
internal sealed class Http2LoadConnection : LoadConnection, IHttp2ConnectionHandler
{
    private readonly Http2Connection _h2;
    private readonly HeaderList _request = new();
    private readonly int[] _status;
    private readonly int[] _grpcStatus;
    private readonly int[] _bodySent;
    private readonly int[] _streamOf;
    private readonly List<int> _waitingForWindow = [];

    public Http2LoadConnection(LoadRun run, Socket socket, int capacity) : base(run, socket, capacity)
    {
        LoadOptions o = run.Options;
        _h2 = new Http2Connection(isServer: false, this, Transport.Output, new Http2ConnectionOptions
        {
            MaxConcurrentStreams = 100,
            InitialStreamWindowSize = 1 << 20,
            ConnectionWindowSize = 16 << 20,
        }, Sync);
        _request.Add(":method"u8, Encoding.ASCII.GetBytes(o.Method));
        _request.Add(":scheme"u8, "http"u8);
        _request.Add(":authority"u8, Encoding.ASCII.GetBytes(o.Authority));
        _request.Add(":path"u8, Encoding.ASCII.GetBytes(o.Path));
        if (o.Grpc)
        {
            _request.Add("content-type"u8, "application/grpc"u8);
            _request.Add("te"u8, "trailers"u8);
        }
        foreach ((string name, string value) in o.Headers)
        {
            _request.Add(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value));
        }
        _status = new int[capacity];
        _grpcStatus = new int[capacity];
        _bodySent = new int[capacity];
        _streamOf = new int[capacity];
    }

    /// <summary>Room also needs a stream the peer allows (SETTINGS_MAX_CONCURRENT_STREAMS) on a connection not going away.</summary>
    public override bool HasRoom => base.HasRoom && _h2.CanOpenStream;

    protected override void OnStart() => _h2.Start();

    protected override bool Write(int slot)
    {
        byte[] body = Run.Options.Body;
        _status[slot] = 0;
        _grpcStatus[slot] = -1;
        int id = _h2.OpenStream(_request, endStream: body.Length == 0, userState: null, userTag: slot);
        if (id == 0)
        {
            return false;
        }
        _streamOf[slot] = id;
        _bodySent[slot] = 0;
        if (body.Length > 0)
        {
            SendBody(slot);
        }
        return true;
    }

    private void SendBody(int slot)
    {
        byte[] body = Run.Options.Body;
        int sent = _h2.SendData(_streamOf[slot], body.AsSpan(_bodySent[slot]), endStream: true);
        if (sent < 0)
        {
            return; // the stream was reset: OnStreamReset finishes it
        }
        _bodySent[slot] += sent;
        if (_bodySent[slot] < body.Length && !_waitingForWindow.Contains(slot))
        {
            _waitingForWindow.Add(slot);
        }
    }

    public override InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
    {
        bool open = _h2.ProcessInput(ref buffer);
        Transport.Output.Flush();
        return open ? InputStatus.Continue : InputStatus.Close;
    }

    protected override void OnTransportClosed() => _h2.OnTransportClosed();

    public void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind)
    {
    }

    public void OnHeader(Http2Stream stream, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags)
    {
        int slot = stream.UserTag;
        if (name.SequenceEqual(":status"u8))
        {
            _status[slot] = Utf8Parser.TryParse(value, out int status, out int used) && used == value.Length ? status : 0;
        }
        else if (name.SequenceEqual("grpc-status"u8))
        {
            _grpcStatus[slot] = Utf8Parser.TryParse(value, out int code, out int used) && used == value.Length ? code : 17;
        }
    }

    public void OnHeadersEnd(Http2Stream stream, bool endStream)
    {
        int slot = stream.UserTag;
        if (endStream && _status[slot] >= 200)
        {
            Complete(slot);
        }
    }

    public void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
    {
        int length = (int)data.Length;
        Received(stream.UserTag, length);
        _h2.ConsumeData(stream.Id, length);
        if (endStream)
        {
            Complete(stream.UserTag);
        }
    }

    /// <summary>The response ended (perhaps before all of the body went out: the server answered early).</summary>
    private void Complete(int slot)
    {
        if (_waitingForWindow.Count > 0)
        {
            using (Sync.Enter())
            {
                _waitingForWindow.Remove(slot);
            }
        }
        Finish(slot, _status[slot], _grpcStatus[slot], Failure.None);
    }

    public void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote)
    {
        int slot = stream.UserTag;
        using (Sync.Enter())
        {
            _waitingForWindow.Remove(slot);
        }
        Finish(slot, -1, -1, Failure.Reset);
    }

    public void OnWindowUpdate(int streamId)
    {
        using (Sync.Enter())
        {
            for (int i = _waitingForWindow.Count - 1; i >= 0; i--)
            {
                int slot = _waitingForWindow[i];
                _waitingForWindow.RemoveAt(i);
                SendBody(slot);
            }
        }
    }

    public void OnSettings(in Http2Settings peerSettings)
    {
    }

    private volatile bool _goingAway;

    public void OnGoAway(int lastStreamId, Http2ErrorCode errorCode)
    {
        // No new streams here: once the streams it still carries are done, it closes and the run opens
        // another in its place (a server that sends GOAWAY and then waits must not strand the slot).
        _goingAway = true;
        if (InFlight == 0)
        {
            Transport.CloseAfterFlush();
        }
    }

    protected override void OnFinished()
    {
        if (_goingAway && InFlight == 0)
        {
            Transport.CloseAfterFlush();
        }
    }

    public void OnConnectionClosed(Http2ErrorCode errorCode, bool remote, string reason) => Transport.CloseAfterFlush();
}
