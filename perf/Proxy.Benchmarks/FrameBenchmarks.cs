using System.Buffers;
using BenchmarkDotNet.Attributes;
using Proxy.Http2;

namespace Proxy.Benchmarks;

[MemoryDiagnoser]
public class FrameBenchmarks
{
    private readonly byte[] _frames = new byte[Http2FrameHeader.Size * 2 + 100];
    private ReadOnlySequence<byte> _sequence;

    [GlobalSetup]
    public void Setup()
    {
        Http2FrameHeader.Write(_frames, 100, Http2FrameType.Data, Http2FrameFlags.EndStream, 1);
        _sequence = new ReadOnlySequence<byte>(_frames);
    }

    /// <summary>The 9-octet frame header (RFC 9113 §4.1) from a span.</summary>
    [Benchmark(Baseline = true)]
    public int ParseFrameHeader()
    {
        var h = Http2FrameHeader.Read(_frames);
        return h.Length + h.StreamId;
    }

    /// <summary>Header plus payload slice from a pipe-style sequence.</summary>
    [Benchmark]
    public long ReadFrame()
    {
        ReadOnlySequence<byte> buffer = _sequence;
        Http2FrameReader.TryReadFrame(ref buffer, 16384, out Http2FrameHeader h, out ReadOnlySequence<byte> payload);
        return payload.Length + h.StreamId;
    }
}
