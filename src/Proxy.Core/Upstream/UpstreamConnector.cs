using System.Net;
using System.Net.Sockets;

namespace Proxy.Core.Upstream;

/// <summary>Opens a TCP connection to an upstream endpoint within Envoy's connect_timeout.</summary>
internal static class UpstreamConnector
{
    /// <summary>The connected socket, or null and the reason (for logs and the 503 the client gets).</summary>
    public static async Task<(Socket? Socket, string? Error)> ConnectAsync(EndPoint address, TimeSpan timeout)
    {
        var socket = new Socket(address.AddressFamily == AddressFamily.Unspecified ? AddressFamily.InterNetwork : address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
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
