using System.Net;
using System.Net.Sockets;

namespace Proxy.Core.Transport;

/// <summary>A TCP socket about to listen: SO_REUSEADDR alone, so a port another socket holds is refused.</summary>
public static class ListenSocket
{
    private const int SolSocket = 1, SoReuseAddr = 2;

    /// <summary>
    /// A stream socket for <paramref name="address"/> with SO_REUSEADDR (a restart binds at once over
    /// connections in TIME_WAIT). Not .NET's ReuseAddress option: on Linux that sets SO_REUSEPORT too, and
    /// a second process (or our own admin endpoint) could then bind the same port and silently take
    /// half of its connections.
    /// </summary>
    public static Socket Create(IPEndPoint address)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (OperatingSystem.IsLinux())
        {
            socket.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
        }
        if (address.AddressFamily == AddressFamily.InterNetworkV6 && address.Address.Equals(IPAddress.IPv6Any))
        {
            socket.DualMode = true;
        }
        return socket;
    }
}
