using System.Buffers;
using System.Net.Sockets;
using System.Text;
using Proxy.Core.Http1;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Load;

/// <summary>
/// HTTP/1.1 keep-alive, one request in flight: the request's octets are made once; responses are parsed
/// with the proxy's own <see cref="Http1Parser"/> and <see cref="ChunkedDecoder"/>. A response that ends
/// the connection (Connection: close, HTTP/1.0, a body delimited by the close) finishes the connection;
/// the run opens another in its place.
/// </summary>
internal sealed class Http1LoadConnection : LoadConnection
{
    private readonly byte[] _requestBytes;
    private readonly bool _head;
    private readonly HeaderList _fields = new();
    private int _slot = -1;
    private bool _inBody;
    private Http1Parser.ResponseHead _response;
    private long _remaining;
    private ChunkedDecoder _chunked;
    private volatile bool _closing;

    public Http1LoadConnection(LoadRun run, Socket socket) : base(run, socket, capacity: 1)
    {
        LoadOptions o = run.Options;
        var head = new StringBuilder();
        head.Append(o.Method).Append(' ').Append(o.Path).Append(" HTTP/1.1\r\nhost: ").Append(o.Authority).Append("\r\n");
        foreach ((string name, string value) in o.Headers)
        {
            head.Append(name).Append(": ").Append(value).Append("\r\n"); // host and framing fields are not among them (LoadOptions)
        }
        if (o.Body.Length > 0 || o.Method is "POST" or "PUT" or "PATCH")
        {
            head.Append("content-length: ").Append(o.Body.Length).Append("\r\n");
        }
        head.Append("\r\n");
        byte[] headBytes = Encoding.ASCII.GetBytes(head.ToString());
        _requestBytes = [.. headBytes, .. o.Body];
        _head = o.Method == "HEAD";
    }

    public override bool HasRoom => base.HasRoom && !_closing;

    protected override bool Write(int slot)
    {
        if (_closing)
        {
            return false;
        }
        _slot = slot;
        _inBody = false;
        Transport.Output.Write(_requestBytes);
        return true;
    }

    public override InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
    {
        // The transport's buffer is one array: the sequence is always a single segment.
        ReadOnlySpan<byte> input = buffer.FirstSpan;
        int consumed = 0;
        InputStatus status = InputStatus.Continue;
        while (consumed < input.Length)
        {
            if (_slot < 0)
            {
                status = Fail(Failure.Protocol); // octets with no request in flight
                break;
            }
            if (!_inBody)
            {
                _response = default;
                ReadOnlySpan<byte> rest = input.Slice(consumed);
                if (Http1Parser.TryParseResponse(rest.Slice(0, Math.Min(rest.Length, Http1Parser.DefaultMaxHeadSize)), _fields, _head, ref _response, out int end) != null)
                {
                    status = Fail(Failure.Protocol);
                    break;
                }
                if (end == 0)
                {
                    if (rest.Length > Http1Parser.DefaultMaxHeadSize)
                    {
                        status = Fail(Failure.Protocol);
                    }
                    break;
                }
                consumed += end;
                if (_response.Status < 200)
                {
                    continue; // 1xx: the final response follows
                }
                _inBody = true;
                _remaining = _response.ContentLength;
                _chunked = default;
                if (_response.Framing == BodyFraming.None || (_response.Framing == BodyFraming.ContentLength && _remaining == 0))
                {
                    status = Respond();
                    if (status != InputStatus.Continue)
                    {
                        break;
                    }
                }
                continue;
            }
            switch (_response.Framing)
            {
                case BodyFraming.ContentLength:
                {
                    int take = (int)Math.Min(_remaining, input.Length - consumed);
                    consumed += take;
                    _remaining -= take;
                    Received(_slot, take);
                    if (_remaining == 0)
                    {
                        status = Respond();
                    }
                    break;
                }
                case BodyFraming.Chunked:
                {
                    ChunkedDecoder.Result result = _chunked.Decode(input, ref consumed, out ReadOnlySpan<byte> data);
                    if (result == ChunkedDecoder.Result.Data)
                    {
                        Received(_slot, data.Length);
                    }
                    else if (result == ChunkedDecoder.Result.Done)
                    {
                        status = Respond();
                    }
                    else if (result == ChunkedDecoder.Result.Error)
                    {
                        status = Fail(Failure.Protocol);
                    }
                    else if (result == ChunkedDecoder.Result.NeedMore)
                    {
                        buffer = buffer.Slice(consumed);
                        return InputStatus.Continue;
                    }
                    break;
                }
                default: // until the close: counted when the connection ends
                    Received(_slot, input.Length - consumed);
                    consumed = input.Length;
                    break;
            }
            if (status != InputStatus.Continue)
            {
                break;
            }
        }
        buffer = buffer.Slice(consumed);
        Transport.Output.Flush(); // the next request, sent when this one finished
        return status;
    }

    private InputStatus Respond()
    {
        int slot = _slot;
        _slot = -1;
        _inBody = false;
        bool keepAlive = _response.KeepAlive;
        _closing |= !keepAlive; // no new request on this connection: it closes, and the run replaces it
        Finish(slot, _response.Status, -1, Failure.None);
        return keepAlive ? InputStatus.Continue : InputStatus.Close;
    }

    private InputStatus Fail(Failure why)
    {
        int slot = _slot;
        _slot = -1;
        if (slot >= 0)
        {
            Finish(slot, -1, -1, why);
        }
        return InputStatus.Close;
    }

    protected override void OnTransportClosed()
    {
        // A body delimited by the close is complete now.
        if (_slot >= 0 && _inBody && _response.Framing == BodyFraming.UntilClose)
        {
            int slot = _slot;
            _slot = -1;
            Finish(slot, _response.Status, -1, Failure.None);
        }
    }
}
