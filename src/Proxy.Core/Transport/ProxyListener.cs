using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Http2;

namespace Proxy.Core.Transport;

/// <summary>
/// Accepts connections on one address and serves HTTP/1.1 and HTTP/2 with prior knowledge on the same
/// port, telling them apart by the first octets (the HTTP/2 connection preface, RFC 9113 §3.4).
/// </summary>
public sealed class ProxyListener : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly Func<RouteConfiguration?> _routes;
    private readonly Http2ConnectionOptions _http2Options;
    private readonly CancellationTokenSource _stop = new();
    private Task? _acceptLoop;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Sniffer, byte> _connections = new();

    public ProxyListener(IPEndPoint address, Func<RouteConfiguration?> routes, Http2ConnectionOptions? http2Options = null)
    {
        _routes = routes;
        _http2Options = http2Options ?? new Http2ConnectionOptions { MaxConcurrentStreams = 1024 };
        _socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        _socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        if (address.AddressFamily == AddressFamily.InterNetworkV6 && address.Address.Equals(IPAddress.IPv6Any))
        {
            _socket.DualMode = true;
        }
        _socket.Bind(address);
        LocalEndPoint = (IPEndPoint)_socket.LocalEndPoint!;
    }

    public IPEndPoint LocalEndPoint { get; }

    public void Start()
    {
        _socket.Listen(4096);
        _acceptLoop = AcceptLoopAsync();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket accepted;
            try
            {
                accepted = await _socket.AcceptAsync(_stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
                continue; // a connection reset before accept completed, or fd pressure: keep accepting
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            var connection = new SocketConnection(accepted, new object());
            var sniffer = new Sniffer(this, connection);
            _connections.TryAdd(sniffer, 0);
            _ = connection.RunAsync(sniffer);
        }
    }

    /// <summary>
    /// Stops accepting and asks every open connection to finish: HTTP/2 clients get GOAWAY(NO_ERROR) and
    /// may complete their streams; HTTP/1.1 connections close after their current response.
    /// </summary>
    public async Task StopAcceptingAndDrainAsync()
    {
        await _stop.CancelAsync();
        _socket.Dispose();
        foreach (Sniffer sniffer in _connections.Keys)
        {
            sniffer.Drain();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _socket.Dispose();
        if (_acceptLoop != null)
        {
            await _acceptLoop;
        }
        _stop.Dispose();
    }

    /// <summary>Picks the protocol from the first octets, then hands the connection over.</summary>
    private sealed class Sniffer(ProxyListener listener, SocketConnection connection) : IConnectionProtocol
    {
        private IConnectionProtocol? _chosen;

        public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
        {
            if (_chosen != null)
            {
                return _chosen.OnInput(ref buffer);
            }
            ReadOnlySpan<byte> preface = Http2FrameWriter.ClientPreface;
            int n = (int)Math.Min(buffer.Length, preface.Length);
            Span<byte> head = stackalloc byte[preface.Length];
            buffer.Slice(0, n).CopyTo(head);
            if (head.Slice(0, n).SequenceEqual(preface.Slice(0, n)))
            {
                if (n < preface.Length)
                {
                    return InputStatus.Continue; // could still be the preface: wait for more
                }
                var h2 = new Http2Downstream(connection, listener._routes, listener._http2Options);
                _chosen = h2;
                h2.Start();
                return h2.OnInput(ref buffer);
            }
            var h1 = new Http1Downstream(connection, listener._routes);
            _chosen = h1;
            return h1.OnInput(ref buffer);
        }

        public void OnClosed()
        {
            listener._connections.TryRemove(this, out _);
            _chosen?.OnClosed();
        }

        public void Drain()
        {
            switch (_chosen)
            {
                case Http2Downstream h2:
                    h2.Protocol.GoAway(Http2ErrorCode.NoError, "draining");
                    h2.Connection.Output.Flush();
                    break;
                case Http1Downstream h1:
                    h1.CloseWhenIdle();
                    break;
                default:
                    connection.Close(); // not even a request yet
                    break;
            }
        }
    }
}
