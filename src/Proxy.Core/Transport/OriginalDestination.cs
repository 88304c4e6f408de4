using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Proxy.Core.Transport;

/// <summary>
/// The address a connection was meant for before iptables REDIRECT (or DNAT) sent it to us: Linux's
/// SO_ORIGINAL_DST (IPv4, SOL_IP) and IP6T_SO_ORIGINAL_DST (IPv6, SOL_IPV6), both option 80, answered
/// by the connection-tracking table. What Istio's virtualOutbound listener (use_original_dst) reads.
/// </summary>
public static partial class OriginalDestination
{
    private const int SolIp = 0;
    private const int SolIpv6 = 41;
    private const int SoOriginalDst = 80;

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int getsockopt(nint socket, int level, int name, byte* value, ref int length);

    /// <summary>
    /// The original destination of an accepted connection, or null when the kernel has none (no
    /// redirect happened, no connection tracking, not Linux): then the connection was for us.
    /// </summary>
    public static unsafe IPEndPoint? Get(Socket socket)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        bool v6 = socket.AddressFamily == AddressFamily.InterNetworkV6;
        byte* address = stackalloc byte[28]; // sockaddr_in6 (sockaddr_in is 16)
        int length = 28;
        int level = v6 ? SolIpv6 : SolIp;
        if (getsockopt(socket.Handle, level, SoOriginalDst, address, ref length) != 0)
        {
            // A dual-stack socket accepting IPv4 (an IPv4-mapped peer): the IPv4 table has it.
            if (!v6 || getsockopt(socket.Handle, SolIp, SoOriginalDst, address, ref length) != 0)
            {
                return null;
            }
        }
        var bytes = new ReadOnlySpan<byte>(address, length);
        ushort family = MemoryMarshal.Read<ushort>(bytes);
        int port = BinaryPrimitives.ReadUInt16BigEndian(bytes[2..]);
        return family switch
        {
            2 when length >= 8 => new IPEndPoint(new IPAddress(bytes.Slice(4, 4)), port), // AF_INET
            10 when length >= 24 => new IPEndPoint(new IPAddress(bytes.Slice(8, 16)), port), // AF_INET6
            _ => null,
        };
    }
}
