using System.Buffers;
using System.Text;
using System.Text.Json;
using Proxy.Http2.Hpack;

namespace Proxy.Http2.Tests;

/// <summary>The public interoperability stories of http2jp/hpack-test-case (../shared/testdata/hpack).</summary>
public sealed class HpackVectorTests
{
    private const int TableLimit = 65536;

    public static TheoryData<string, string> EncodedStories()
    {
        var data = new TheoryData<string, string>();
        foreach (string dir in Directory.GetDirectories(TestData.Path_("hpack")).Order())
        {
            string folder = Path.GetFileName(dir);
            if (folder == "raw-data")
            {
                continue;
            }
            foreach (string file in Directory.GetFiles(dir, "story_*.json").Order())
            {
                data.Add(folder, Path.GetFileName(file));
            }
        }
        return data;
    }

    public static TheoryData<string> RawStories()
    {
        var data = new TheoryData<string>();
        foreach (string file in Directory.GetFiles(TestData.Path_("hpack", "raw-data"), "story_*.json").Order())
        {
            data.Add(Path.GetFileName(file));
        }
        return data;
    }

    [Fact]
    public void AllVectorFoldersArePresent()
    {
        // Seven folders, 31 or 32 stories each: a silent empty theory would check nothing.
        Assert.True(EncodedStories().Count >= 180, $"only {EncodedStories().Count} encoded stories found");
        Assert.Equal(32, RawStories().Count);
    }

    [Theory]
    [MemberData(nameof(EncodedStories))]
    public void Story_DecodesToExpectedHeaders(string folder, string story)
    {
        var decoder = new HpackDecoder(TableLimit, maxHeaderListSize: 1 << 20);
        var sink = new CollectingHandler();
        foreach (Case c in Load(folder, story))
        {
            if (c.TableSize is int size)
            {
                decoder.SetMaxTableSize(size);
            }
            sink.Headers.Clear();
            Assert.True(decoder.Decode(c.Wire, sink));
            Assert.Equal(c.Headers, sink.Headers);
        }
    }

    [Theory]
    [MemberData(nameof(RawStories))]
    public void RawStory_EncodesAndDecodesBack(string story)
    {
        var encoder = new HpackEncoder();
        var decoder = new HpackDecoder();
        var sink = new CollectingHandler();
        var buffer = new ArrayBufferWriter<byte>();
        long rawBytes = 0;
        foreach (Case c in Load("raw-data", story))
        {
            buffer.ResetWrittenCount();
            encoder.BeginBlock(buffer);
            foreach (var (name, value) in c.Headers)
            {
                encoder.Encode(buffer, Encoding.Latin1.GetBytes(name), Encoding.Latin1.GetBytes(value));
                rawBytes += name.Length + value.Length;
            }
            sink.Headers.Clear();
            Assert.True(decoder.Decode(buffer.WrittenSpan, sink));
            Assert.Equal(c.Headers, sink.Headers);
            Assert.Equal(encoder.Table.Size, decoder.Table.Size);
        }
    }

    [Theory]
    [MemberData(nameof(RawStories))]
    public void RawStory_WithSmallPeerTable_SignalsSizeAndDecodesBack(string story)
    {
        var encoder = new HpackEncoder();
        var decoder = new HpackDecoder();
        var sink = new CollectingHandler();
        var buffer = new ArrayBufferWriter<byte>();
        int i = 0;
        foreach (Case c in Load("raw-data", story))
        {
            // The peer shrinks and grows its table between blocks; the encoder must signal each change.
            uint size = (i++ % 3) switch { 0 => 4096u, 1 => 256u, _ => 0u };
            encoder.SetPeerMaxTableSize(size);
            decoder.SetMaxTableSize((int)size);
            buffer.ResetWrittenCount();
            encoder.BeginBlock(buffer);
            foreach (var (name, value) in c.Headers)
            {
                encoder.Encode(buffer, Encoding.Latin1.GetBytes(name), Encoding.Latin1.GetBytes(value));
            }
            sink.Headers.Clear();
            Assert.True(decoder.Decode(buffer.WrittenSpan, sink));
            Assert.Equal(c.Headers, sink.Headers);
            Assert.True(decoder.Table.Size <= size);
        }
    }

    internal sealed record Case(int? TableSize, byte[] Wire, List<(string, string)> Headers);

    internal static List<Case> Load(string folder, string story)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.Path_("hpack", folder, story)));
        var cases = new List<Case>();
        foreach (JsonElement c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            int? size = c.TryGetProperty("header_table_size", out JsonElement s) && s.ValueKind == JsonValueKind.Number ? s.GetInt32() : null;
            byte[] wire = c.TryGetProperty("wire", out JsonElement w) ? Convert.FromHexString(w.GetString()!) : [];
            var headers = new List<(string, string)>();
            foreach (JsonElement h in c.GetProperty("headers").EnumerateArray())
            {
                foreach (JsonProperty p in h.EnumerateObject())
                {
                    headers.Add((p.Name, p.Value.GetString()!));
                }
            }
            cases.Add(new Case(size, wire, headers));
        }
        return cases;
    }

    internal sealed class CollectingHandler : IHpackHeaderHandler
    {
        public List<(string, string)> Headers { get; } = [];
        public List<bool> NeverIndexed { get; } = [];

        public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags)
        {
            Headers.Add((Encoding.Latin1.GetString(name), Encoding.Latin1.GetString(value)));
            NeverIndexed.Add((flags & HpackFieldFlags.NeverIndexed) != 0);
        }
    }
}
