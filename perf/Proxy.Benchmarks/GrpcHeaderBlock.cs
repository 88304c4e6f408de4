using System.Buffers;
using Proxy.Http2;
using Proxy.Http2.Hpack;

namespace Proxy.Benchmarks;

/// <summary>The typical gRPC request header block of the codec issue.</summary>
internal static class GrpcHeaderBlock
{
    public static readonly (byte[] Name, byte[] Value)[] Fields =
    [
        (":method"u8.ToArray(), "POST"u8.ToArray()),
        (":scheme"u8.ToArray(), "http"u8.ToArray()),
        (":path"u8.ToArray(), "/helloworld.Greeter/SayHello"u8.ToArray()),
        (":authority"u8.ToArray(), "server.default.svc.cluster.local:9090"u8.ToArray()),
        ("content-type"u8.ToArray(), "application/grpc"u8.ToArray()),
        ("te"u8.ToArray(), "trailers"u8.ToArray()),
        ("grpc-timeout"u8.ToArray(), "1S"u8.ToArray()),
        ("user-agent"u8.ToArray(), "grpc-dotnet/2.85.0 (.NET 10.0.0; CLR 10.0.0; net10.0; linux; x64)"u8.ToArray()),
    ];

    /// <summary>The block as our encoder writes it the first time (literals, Huffman) and in steady state (indexed).</summary>
    public static (byte[] First, byte[] Steady) Encode()
    {
        var encoder = new HpackEncoder();
        var w = new ArrayBufferWriter<byte>();
        foreach (var (n, v) in Fields)
        {
            encoder.Encode(w, n, v);
        }
        byte[] first = w.WrittenSpan.ToArray();
        w.ResetWrittenCount();
        foreach (var (n, v) in Fields)
        {
            encoder.Encode(w, n, v);
        }
        return (first, w.WrittenSpan.ToArray());
    }
}

/// <summary>Counts fields and octets so the decode cannot be optimised away.</summary>
internal sealed class CountingHandler : IHpackHeaderHandler
{
    public int Fields;
    public int Octets;

    public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags)
    {
        Fields++;
        Octets += name.Length + value.Length;
    }
}
