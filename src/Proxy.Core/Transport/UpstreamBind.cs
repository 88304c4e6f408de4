using System.Net;
using System.Net.Sockets;

namespace Proxy.Core.Transport;

/// <summary>
/// A cluster's upstream_bind_config: the source address its connections bind (Istio: 127.0.0.6 for
/// inbound passthrough), IP_FREEBIND, and socket options set before connecting (SO_MARK, buffers).
/// </summary>
public sealed class UpstreamBind(IPAddress? sourceAddress, bool freebind, (int Level, int Name, byte[] Value)[] options)
{
    public IPAddress? SourceAddress { get; } = sourceAddress;
    public bool Freebind { get; } = freebind;
    public (int Level, int Name, byte[] Value)[] Options { get; } = options;

    /// <summary>Applies it to a socket about to connect; the error when the kernel refuses (the connection then fails, as Envoy's does).</summary>
    internal string? Apply(Socket socket)
    {
        try
        {
            foreach (var (level, name, value) in Options)
            {
                socket.SetRawSocketOption(level, name, value);
            }
            if (Freebind)
            {
                socket.SetRawSocketOption(0, 15, BitConverter.GetBytes(1)); // SOL_IP, IP_FREEBIND
            }
            if (SourceAddress != null)
            {
                socket.Bind(new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 && SourceAddress.AddressFamily == AddressFamily.InterNetwork ? SourceAddress.MapToIPv6() : SourceAddress, 0));
            }
            return null;
        }
        catch (SocketException e)
        {
            return $"upstream_bind_config refused: {e.SocketErrorCode}";
        }
    }
}
