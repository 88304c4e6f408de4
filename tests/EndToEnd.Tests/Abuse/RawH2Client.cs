using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Proxy.Http2;
using Proxy.Http2.Hpack;

namespace EndToEnd.Tests.Abuse;

/// <summary>
/// A deliberately rude HTTP/2 client over a plain socket: it writes whatever frames a test asks for and
/// reads frames back only when asked (so it can also never read at all).
/// </summary>
public sealed class RawH2Client : IDisposable
{
    private readonly Socket _socket;
    private readonly HpackEncoder _encoder = new(0);
    private readonly ArrayBufferWriter<byte> _out = new(64 * 1024);
    private byte[] _in = new byte[256 * 1024];
    private int _inCount;

    private RawH2Client(Socket socket) => _socket = socket;

    public Socket Socket => _socket;

    public static async Task<RawH2Client> ConnectAsync(int port, int receiveBuffer = 0)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (receiveBuffer > 0)
        {
            socket.ReceiveBufferSize = receiveBuffer;
        }
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return new RawH2Client(socket);
    }

    /// <summary>The preface and a SETTINGS frame (with the given parameters).</summary>
    public RawH2Client Preface(params (Http2SettingsParameter, uint)[] settings)
    {
        _out.Write(Http2FrameWriter.ClientPreface);
        Http2FrameWriter.WriteSettings(_out, settings);
        return this;
    }

    public RawH2Client WindowUpdate(int streamId, int increment)
    {
        Http2FrameWriter.WriteWindowUpdate(_out, streamId, increment);
        return this;
    }

    public RawH2Client Headers(int streamId, string method, string path, bool endStream, string authority = "proxy.test", params (string Name, string Value)[] more)
    {
        var block = new ArrayBufferWriter<byte>(128);
        _encoder.BeginBlock(block);
        foreach (var (name, value) in new[] { (":method", method), (":scheme", "http"), (":authority", authority), (":path", path) }.Concat(more))
        {
            _encoder.Encode(block, System.Text.Encoding.ASCII.GetBytes(name), System.Text.Encoding.ASCII.GetBytes(value), HeaderIndexing.Auto);
        }
        Http2FrameWriter.WriteHeaders(_out, streamId, block.WrittenSpan, endStream, 16384);
        return this;
    }

    public RawH2Client Data(int streamId, ReadOnlySpan<byte> data, bool endStream)
    {
        Http2FrameWriter.WriteData(_out, streamId, data, endStream);
        return this;
    }

    public RawH2Client Reset(int streamId, Http2ErrorCode code)
    {
        Http2FrameWriter.WriteRstStream(_out, streamId, code);
        return this;
    }

    public RawH2Client Raw(ReadOnlySpan<byte> bytes)
    {
        _out.Write(bytes);
        return this;
    }

    /// <summary>Sends what was written; false when the proxy closed the connection.</summary>
    public async Task<bool> FlushAsync()
    {
        try
        {
            ReadOnlyMemory<byte> data = _out.WrittenMemory;
            while (!data.IsEmpty)
            {
                int n = await _socket.SendAsync(data);
                data = data.Slice(n);
            }
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
        finally
        {
            _out.ResetWrittenCount();
        }
    }

    /// <summary>Reads frames until <paramref name="until"/> holds for one of them, the peer closes, or time runs out.</summary>
    public async Task<List<(Http2FrameType Type, byte Flags, int StreamId, byte[] Payload)>> ReadFramesAsync(
        Func<Http2FrameType, byte[], bool> until, TimeSpan timeout)
    {
        var frames = new List<(Http2FrameType, byte, int, byte[])>();
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            while (_inCount >= 9)
            {
                int length = (_in[0] << 16) | (_in[1] << 8) | _in[2];
                if (_inCount < 9 + length)
                {
                    break;
                }
                var type = (Http2FrameType)_in[3];
                byte flags = _in[4];
                int stream = (int)(BinaryPrimitives.ReadUInt32BigEndian(_in.AsSpan(5)) & 0x7FFFFFFF);
                byte[] payload = _in.AsSpan(9, length).ToArray();
                Buffer.BlockCopy(_in, 9 + length, _in, 0, _inCount - 9 - length);
                _inCount -= 9 + length;
                frames.Add((type, flags, stream, payload));
                if (until(type, payload))
                {
                    return frames;
                }
            }
            if (_inCount == _in.Length)
            {
                Array.Resize(ref _in, _in.Length * 2);
            }
            int received;
            try
            {
                received = await _socket.ReceiveAsync(_in.AsMemory(_inCount), cts.Token);
            }
            catch (OperationCanceledException)
            {
                return frames;
            }
            catch (SocketException)
            {
                return frames;
            }
            if (received == 0)
            {
                return frames;
            }
            _inCount += received;
        }
    }

    public void Dispose() => _socket.Dispose();
}
