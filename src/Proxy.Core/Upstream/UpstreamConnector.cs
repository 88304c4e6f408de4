using System.Net;
using System.Net.Sockets;
using Proxy.Core.Transport;

namespace Proxy.Core.Upstream;

/// <summary>Opens a TCP connection to an upstream endpoint within Envoy's connect_timeout.</summary>
internal static class UpstreamConnector
{
    /// <summary>
    /// Connects without the platform's socket engine, waiting for the connect's writable edge on
    /// <paramref name="loop"/> (a socket the engine has seen stays in its epoll set, and its every event
    /// would wake the engine's thread as well). The connected socket, or null and the reason.
    /// </summary>
    public static async Task<(Socket? Socket, string? Error)> ConnectOnLoopAsync(EndPoint address, TimeSpan timeout, UpstreamBind? bind, Transport.EventLoop loop)
    {
        var socket = new Socket(address.AddressFamily == AddressFamily.Unspecified ? AddressFamily.InterNetwork : address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (bind != null && bind.Apply(socket) is string refused)
            {
                socket.Dispose();
                return (null, $"upstream connect error ({address}): {refused}");
            }
            socket.Blocking = false;
            try
            {
                socket.Connect(address);
                return (socket, null);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
            }
            var waiter = new ConnectWaiter();
            int fd = (int)socket.Handle;
            loop.Register(fd, waiter);
            bool done;
            try
            {
                done = timeout > TimeSpan.Zero ? await waiter.Completion.WaitAsync(timeout).ContinueWith(static t => t.IsCompletedSuccessfully, TaskScheduler.Default)
                    : await waiter.Completion.ContinueWith(static t => t.IsCompletedSuccessfully, TaskScheduler.Default);
            }
            finally
            {
                loop.Unregister(waiter.LoopToken, fd); // the connection registers the descriptor again
            }
            if (!done)
            {
                socket.Dispose();
                return (null, $"upstream connect timeout ({address})");
            }
            int error = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
            if (error != 0)
            {
                socket.Dispose();
                return (null, $"upstream connect error ({address}): {Describe(error)}");
            }
            return (socket, null);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            return (null, $"upstream connect error ({address}): {e.SocketErrorCode}");
        }
    }

    private static string Describe(int error) => error switch
    {
        111 => nameof(SocketError.ConnectionRefused),
        113 => nameof(SocketError.HostUnreachable),
        101 => nameof(SocketError.NetworkUnreachable),
        110 => nameof(SocketError.TimedOut),
        104 => nameof(SocketError.ConnectionReset),
        _ => Enum.IsDefined((SocketError)error) ? ((SocketError)error).ToString() : $"errno {error}",
    };

    /// <summary>Waits for a non-blocking connect to finish (writable, or an error).</summary>
    private sealed class ConnectWaiter : Transport.ILoopSocket
    {
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Completion => _done.Task;

        public ulong LoopToken { get; set; }

        public void OnEvents(uint events)
        {
            if ((events & (Transport.EventLoop.EPOLLOUT | Transport.EventLoop.EPOLLERR | Transport.EventLoop.EPOLLHUP)) != 0)
            {
                _done.TrySetResult();
            }
        }
    }

    /// <summary>The connected socket, or null and the reason (for logs and the 503 the client gets).</summary>
    public static async Task<(Socket? Socket, string? Error)> ConnectAsync(EndPoint address, TimeSpan timeout, UpstreamBind? bind = null)
    {
        var socket = new Socket(address.AddressFamily == AddressFamily.Unspecified ? AddressFamily.InterNetwork : address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (bind != null && bind.Apply(socket) is string refused)
            {
                socket.Dispose();
                return (null, $"upstream connect error ({address}): {refused}");
            }
            using var cts = new CancellationTokenSource(timeout > TimeSpan.Zero ? timeout : Timeout.InfiniteTimeSpan);
            await socket.ConnectAsync(address, cts.Token);
            return (socket, null);
        }
        catch (OperationCanceledException)
        {
            socket.Dispose();
            return (null, $"upstream connect timeout ({address})");
        }
        catch (SocketException e)
        {
            socket.Dispose();
            return (null, $"upstream connect error ({address}): {e.SocketErrorCode}");
        }
    }
}
