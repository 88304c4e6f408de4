using Google.Protobuf;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using PbRoutes = Proxy.Xds.Api.Route.RouteConfiguration;

namespace Proxy.Xds;

/// <summary>
/// A RouteConfiguration split at the wire level into its virtual hosts' encoded bytes and a shell with
/// every other field. A control plane resends the whole configuration (thousands of virtual hosts) for a
/// one-route change; comparing bytes finds the few hosts that changed, and only those are decoded and
/// built again.
/// </summary>
public static class RouteConfigurationParts
{
    private const int VirtualHostsField = 2;

    public static (PbRoutes Shell, ReadOnlyMemory<byte>[] VirtualHosts) Split(ReadOnlyMemory<byte> encoded)
    {
        ReadOnlySpan<byte> span = encoded.Span;
        var hosts = new List<ReadOnlyMemory<byte>>();
        var shell = new System.Buffers.ArrayBufferWriter<byte>();
        int position = 0;
        while (position < span.Length)
        {
            int start = position;
            ulong tag = ReadVarint(span, ref position);
            int field = (int)(tag >> 3);
            int wireType = (int)(tag & 7);
            switch (wireType)
            {
                case 0:
                    ReadVarint(span, ref position);
                    break;
                case 1:
                    position += 8;
                    break;
                case 2:
                    ulong length = ReadVarint(span, ref position);
                    if (length > (ulong)(span.Length - position))
                    {
                        throw Malformed();
                    }
                    if (field == VirtualHostsField)
                    {
                        hosts.Add(encoded.Slice(position, (int)length));
                        position += (int)length;
                        continue;
                    }
                    position += (int)length;
                    break;
                case 5:
                    position += 4;
                    break;
                default:
                    throw Malformed();
            }
            if (field == 0 || position > span.Length)
            {
                throw Malformed();
            }
            System.Buffers.BuffersExtensions.Write(shell, span[start..position]);
        }
        try
        {
            return (PbRoutes.Parser.ParseFrom(shell.WrittenSpan), [.. hosts]);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ConfigException($"a RouteConfiguration does not decode: {e.Message}");
        }
    }

    /// <summary>A decoded configuration in the same form (for callers that hold the message, such as tests).</summary>
    public static (PbRoutes Shell, ReadOnlyMemory<byte>[] VirtualHosts) Split(PbRoutes routes)
    {
        PbRoutes shell = routes.Clone();
        shell.VirtualHosts.Clear();
        return (shell, [.. routes.VirtualHosts.Select(static v => new ReadOnlyMemory<byte>(v.ToByteArray()))]);
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> span, ref int position)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (position >= span.Length)
            {
                throw Malformed();
            }
            byte b = span[position++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
        throw Malformed();
    }

    private static ConfigException Malformed() => new("a RouteConfiguration does not decode: malformed protobuf");
}
