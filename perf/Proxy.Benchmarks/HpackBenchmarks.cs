using System.Buffers;
using BenchmarkDotNet.Attributes;
using Proxy.Http2.Hpack;

namespace Proxy.Benchmarks;

/// <summary>
/// HPACK decode and encode of a typical gRPC request block. "Steady" is what a long-lived connection
/// sees after the first request: every field indexed except grpc-timeout.
/// </summary>
[MemoryDiagnoser]
public class HpackBenchmarks
{
    private byte[] _first = [];
    private byte[] _steady = [];
    private HpackDecoder _steadyDecoder = null!;
    private HpackEncoder _steadyEncoder = null!;
    private readonly CountingHandler _handler = new();
    private readonly ArrayBufferWriter<byte> _output = new(1024);
    private object _frameworkDecoder = null!;
    private object _frameworkHandler = null!;
    private FrameworkDecode _frameworkDecode = null!;

    [GlobalSetup]
    public void Setup()
    {
        (_first, _steady) = GrpcHeaderBlock.Encode();
        _steadyDecoder = new HpackDecoder();
        _steadyDecoder.Decode(_first, _handler);
        _steadyEncoder = new HpackEncoder();
        foreach (var (n, v) in GrpcHeaderBlock.Fields)
        {
            _steadyEncoder.Encode(_output, n, v);
        }
        (_frameworkDecode, _frameworkHandler) = FrameworkHpack.Build();
        _frameworkDecoder = FrameworkHpack.CreateDecoder();
        _frameworkDecode(_frameworkDecoder, _first, _frameworkHandler);
    }

    /// <summary>The same steady-state block through System.Net.Http's internal HPackDecoder (HttpClient's).</summary>
    [Benchmark]
    public int FrameworkDecodeSteady()
    {
        _frameworkDecode(_frameworkDecoder, _steady, _frameworkHandler);
        return 0;
    }

    /// <summary>The first-request block through System.Net.Http's decoder.</summary>
    [Benchmark]
    public int FrameworkDecodeFirst()
    {
        _frameworkDecode(_frameworkDecoder, _first, _frameworkHandler);
        return 0;
    }

    /// <summary>Steady state: the block refers to the dynamic table built by the first request.</summary>
    [Benchmark(Baseline = true)]
    public int DecodeSteady()
    {
        _steadyDecoder.Decode(_steady, _handler);
        return _handler.Fields;
    }

    /// <summary>A first-request block: literals with Huffman strings, each inserted into the table (evicting older ones).</summary>
    [Benchmark]
    public int DecodeFirst()
    {
        _steadyDecoder.Decode(_first, _handler);
        return _handler.Fields;
    }

    [Benchmark]
    public int EncodeSteady()
    {
        _output.ResetWrittenCount();
        foreach (var (n, v) in GrpcHeaderBlock.Fields)
        {
            _steadyEncoder.Encode(_output, n, v);
        }
        return _output.WrittenCount;
    }
}
