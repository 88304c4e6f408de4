using System.Buffers;
using System.Text;
using Proxy.Http2.Hpack;

namespace Proxy.Http2.Tests;

/// <summary>RFC 7541 primitives and the decoder's error cases.</summary>
public sealed class HpackTests
{
    [Theory]
    [InlineData(10, 5, "0a")]          // C.1.1
    [InlineData(1337, 5, "1f9a0a")]    // C.1.2
    [InlineData(42, 8, "2a")]          // C.1.3
    [InlineData(31, 5, "1f00")]
    [InlineData(int.MaxValue, 7, "7f80ffffff07")]
    public void Integer_EncodesAndDecodesAsRfcExamples(int value, int prefix, string hex)
    {
        var buffer = new byte[8];
        int written = HpackInteger.Encode(value, prefix, 0, buffer);
        Assert.Equal(hex, Convert.ToHexStringLower(buffer.AsSpan(0, written)));
        int pos = 0;
        Assert.Equal(value, HpackInteger.Decode(buffer.AsSpan(0, written), ref pos, prefix));
        Assert.Equal(written, pos);
    }

    [Theory]
    [InlineData("7f80808080808001")] // too many continuation octets
    [InlineData("7fffffffff0f")]     // above 2^31-1
    [InlineData("7f80")]             // truncated
    public void Integer_Invalid_Throws(string hex)
    {
        byte[] bytes = Convert.FromHexString(hex);
        Assert.Throws<HpackException>(() =>
        {
            int pos = 0;
            HpackInteger.Decode(bytes, ref pos, 7);
        });
    }

    [Theory]
    [InlineData("www.example.com", "f1e3c2e5f23a6ba0ab90f4ff")] // C.4.1
    [InlineData("no-cache", "a8eb10649cbf")]                     // C.4.2
    [InlineData("custom-key", "25a849e95ba97d7f")]               // C.4.3
    [InlineData("custom-value", "25a849e95bb8e8b4bf")]
    [InlineData("302", "6402")]                                  // C.6.1
    [InlineData("Mon, 21 Oct 2013 20:13:21 GMT", "d07abe941054d444a8200595040b8166e082a62d1bff")]
    public void Huffman_MatchesRfcExamples(string text, string hex)
    {
        byte[] input = Encoding.ASCII.GetBytes(text);
        var encoded = new byte[Huffman.GetEncodedLength(input)];
        Assert.Equal(encoded.Length, Huffman.Encode(input, encoded));
        Assert.Equal(hex, Convert.ToHexStringLower(encoded));
        var decoded = new byte[64];
        int n = Huffman.Decode(encoded, decoded);
        Assert.Equal(text, Encoding.ASCII.GetString(decoded, 0, n));
    }

    [Fact]
    public void Huffman_CanonicalCodesMatchAppendixB()
    {
        Assert.Equal((0x1ff8u, 13), (Huffman.Code(0), Huffman.CodeLength(0)));
        Assert.Equal((0x3u, 5), (Huffman.Code('a'), Huffman.CodeLength('a')));
        Assert.Equal((0x14u, 6), (Huffman.Code(' '), Huffman.CodeLength(' ')));
        Assert.Equal((0x3ffffffcu, 30), (Huffman.Code(10), Huffman.CodeLength(10)));
        Assert.Equal((0x3fffffffu, 30), (Huffman.Code(256), Huffman.CodeLength(256)));
        Assert.Equal((0x3ffffeeu, 26), (Huffman.Code(255), Huffman.CodeLength(255)));
    }

    [Fact]
    public void Huffman_AllOctets_RoundTrip()
    {
        byte[] all = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var encoded = new byte[Huffman.GetEncodedLength(all)];
        Huffman.Encode(all, encoded);
        var decoded = new byte[512];
        Assert.Equal(all, decoded.AsSpan(0, Huffman.Decode(encoded, decoded)).ToArray());
    }

    [Fact]
    public void Huffman_TryEncode_StopsExactlyAtTheLimit()
    {
        // One pass with no length computed first: it must succeed whenever the code fits the limit (with
        // the same octets as the two-pass encoding) and give up whenever it does not.
        var random = new Random(5);
        for (int round = 0; round < 3000; round++)
        {
            byte[] text = new byte[random.Next(0, 140)];
            for (int i = 0; i < text.Length; i++)
            {
                text[i] = round % 3 == 0 ? (byte)random.Next(256) : (byte)"0123456789abcdef-/:. "[random.Next(21)];
            }
            int length = Huffman.GetEncodedLength(text);
            var expected = new byte[length];
            Assert.Equal(length, Huffman.Encode(text, expected));
            var room = new byte[length + 8];
            Assert.Equal(length, Huffman.TryEncode(text, room, length));
            Assert.Equal(expected, room.AsSpan(0, length).ToArray());
            if (length > 0)
            {
                Assert.Equal(-1, Huffman.TryEncode(text, room, length - 1));
            }
            var decoded = new byte[text.Length];
            Assert.Equal(text, decoded.AsSpan(0, Huffman.Decode(expected, decoded)).ToArray());
        }
    }

    [Theory]
    [InlineData("ffffffff")] // 32 one-bits: contains EOS (30 bits)
    [InlineData("ff")]       // 8 bits of padding: longer than 7 bits
    [InlineData("00")]       // '0' (00000), then padding 000 that is not the EOS prefix
    public void Huffman_InvalidInput_Throws(string hex)
    {
        Assert.Throws<HpackException>(() => Huffman.Decode(Convert.FromHexString(hex), new byte[16]));
    }

    [Fact]
    public void Huffman_ValidPadding_IsAccepted()
    {
        var output = new byte[4];
        // 00011 is 'a', then 111: the EOS prefix as padding.
        Assert.Equal("a", Encoding.ASCII.GetString(output, 0, Huffman.Decode([0x1f], output)));
    }

    [Fact]
    public void DynamicTable_GrowsFromSmall_AndMatchesAModelThroughEvictionsAndSizeChanges()
    {
        // The store starts small and grows as entries need it; whatever its size, the table must agree
        // with a plain list of (name, value) evicted by RFC 7541 §4.4's rule.
        var table = new HpackDynamicTable(4096, 16384);
        var model = new List<(byte[] Name, byte[] Value)>(); // newest first
        var random = new Random(7541);
        for (int step = 0; step < 20_000; step++)
        {
            if (step % 997 == 0)
            {
                int max = random.Next(4) switch { 0 => 0, 1 => 256, 2 => 4096, _ => 16384 };
                table.SetMaxSize(max);
                while (model.Sum(e => e.Name.Length + e.Value.Length + 32) > max)
                {
                    model.RemoveAt(model.Count - 1);
                }
            }
            byte[] name = Encoding.ASCII.GetBytes($"n{random.Next(50)}");
            byte[] value = new byte[random.Next(random.Next(10) == 0 ? 3000 : 60)];
            random.NextBytes(value);
            table.Add(name, value);
            int entry = name.Length + value.Length + 32;
            if (entry > table.MaxSize)
            {
                model.Clear();
            }
            else
            {
                while (model.Sum(e => e.Name.Length + e.Value.Length + 32) + entry > table.MaxSize)
                {
                    model.RemoveAt(model.Count - 1);
                }
                model.Insert(0, (name, value));
            }
            Assert.Equal(model.Count, table.Count);
            for (int i = 0; i < model.Count; i++)
            {
                Assert.True(table.Name(i + 1).SequenceEqual(model[i].Name), $"step {step}: name of entry {i + 1}");
                Assert.True(table.Value(i + 1).SequenceEqual(model[i].Value), $"step {step}: value of entry {i + 1}");
            }
        }
    }

    [Theory]
    [InlineData(0, false)]     // the encoder's name index exists from the first insertion
    [InlineData(5000, false)]  // built from a full table on the first lookup
    [InlineData(0, true)]      // and the lookup by static name an encoder's table also has
    public void DynamicTable_Find_AgreesWithAScanOfTheModel(int firstLookup, bool staticNames)
    {
        // Find walks a per-name-bucket chain; it must answer what a scan of the entries, newest first,
        // answers: the newest full match, else the newest entry with that name, else 0. FindByStaticName
        // may say it cannot tell (-1); when it answers, it must be right.
        var table = new HpackDynamicTable(4096, 4096);
        if (staticNames)
        {
            table.TrackStaticNames();
        }
        int answered = 0;
        var model = new List<(byte[] Name, byte[] Value)>(); // newest first
        var random = new Random(7541 + firstLookup);
        string[] names = ["a", "b", "x-request-id", ":path", "content-type", "abc", "acb", "x-" + new string('y', 40), ":status", "date"];
        for (int step = 0; step < 20_000; step++)
        {
            if (step % 1499 == 0)
            {
                int max = random.Next(3) switch { 0 => 0, 1 => 200, _ => 4096 };
                table.SetMaxSize(max);
                while (model.Sum(e => e.Name.Length + e.Value.Length + 32) > max)
                {
                    model.RemoveAt(model.Count - 1);
                }
            }
            byte[] name = Encoding.ASCII.GetBytes(names[random.Next(names.Length)]);
            byte[] value = Encoding.ASCII.GetBytes($"v{random.Next(12)}" + new string('z', random.Next(3) * 20));
            if (step >= firstLookup)
            {
                int expected = 0;
                bool expectedFull = false;
                for (int i = 0; i < model.Count && !expectedFull; i++)
                {
                    if (model[i].Name.AsSpan().SequenceEqual(name))
                    {
                        expectedFull = model[i].Value.AsSpan().SequenceEqual(value);
                        expected = expectedFull || expected == 0 ? i + 1 : expected;
                    }
                }
                Assert.Equal(expected, table.Find(name, value, out bool full));
                Assert.Equal(expectedFull, full);
                int key = HpackStaticTable.Find(name, value, out _);
                if (staticNames && key != 0)
                {
                    int byName = table.FindByStaticName(HpackStaticTable.FirstOfName(key), value, out bool byNameFull);
                    if (byName >= 0)
                    {
                        answered++;
                        Assert.Equal(byName == 0 ? 0 : expected, byName);
                        Assert.Equal(byName != 0, byNameFull);
                        Assert.True(byName != 0 || !model.Exists(e => e.Name.AsSpan().SequenceEqual(name)), $"step {step}: said no entry is named {Encoding.ASCII.GetString(name)}");
                        Assert.True(byName == 0 || expectedFull);
                    }
                }
            }
            if (random.Next(3) != 0)
            {
                int staticName = HpackStaticTable.Find(name, value, out _);
                table.Add(name, value, staticName: staticName == 0 ? 0 : HpackStaticTable.FirstOfName(staticName));
                int entry = name.Length + value.Length + 32;
                while (model.Sum(e => e.Name.Length + e.Value.Length + 32) + entry > table.MaxSize && model.Count > 0)
                {
                    model.RemoveAt(model.Count - 1);
                }
                if (entry <= table.MaxSize)
                {
                    model.Insert(0, (name, value));
                }
            }
            Assert.Equal(model.Count, table.Count);
        }
        Assert.True(!staticNames || answered > 2000, $"the lookup by static name answered only {answered} times");
    }

    [Fact]
    public void Decoder_ReportsStaticEntriesAndCheckedTableEntries()
    {
        // :method GET (static 2), then "x-a: ok" and "x-b: a<TAB>" inserted with incremental indexing,
        // then both referenced from the dynamic table: only the clean one comes back as checked.
        var encoder = new HpackEncoder();
        var w = new ArrayBufferWriter<byte>();
        encoder.Encode(w, ":method"u8, "GET"u8);
        encoder.Encode(w, "x-a"u8, "ok"u8);
        encoder.Encode(w, "x-b"u8, "a\t"u8);
        encoder.Encode(w, "x-a"u8, "ok"u8);
        encoder.Encode(w, "x-b"u8, "a\t"u8);
        var decoder = new HpackDecoder();
        var flags = new FlagsHandler();
        decoder.Decode(w.WrittenSpan, flags);
        Assert.Equal(
            [HpackFieldFlags.StaticEntry | HpackFieldFlags.Checked, HpackFieldFlags.None, HpackFieldFlags.None, HpackFieldFlags.Checked, HpackFieldFlags.None],
            flags.Flags);
    }

    [Fact]
    public void Decoder_RepeatedHuffmanLiterals_DecodeAlike_AndAreCheckedOnlyWhenClean()
    {
        // Short Huffman-coded values of literals are kept (two at a time) and copied when they come again;
        // values of one length evict each other, and one with a CR is never reported as checked.
        string[] values = ["/echo.Echo/Echo", "/echo.Echo/Ecxo", "100", "a\rb", " lead", "ok", new string('v', 45)];
        var decoder = new HpackDecoder();
        var random = new Random(5);
        for (int round = 0; round < 500; round++)
        {
            string value = values[random.Next(values.Length)];
            int nameIndex = random.Next(2) == 0 ? HpackStaticTable.UserAgent : 0;
            byte[] raw = Encoding.ASCII.GetBytes(value);
            byte[] coded = new byte[Huffman.GetEncodedLength(raw)];
            Huffman.Encode(raw, coded);
            byte[] name = nameIndex == 0 ? [0x00, 0x03, .. "x-v"u8] : [0x0F, (byte)(nameIndex - 15)];
            byte[] block = [.. name, (byte)(0x80 | coded.Length), .. coded];
            var sink = new CollectingFlags();
            decoder.Decode(block, sink);
            Assert.Equal(value, sink.Value);
            bool clean = !value.Contains('\r', StringComparison.Ordinal) && value[0] != ' ';
            Assert.True(!sink.Checked || (clean && nameIndex != 0), $"'{value}' reported checked");
        }
    }

    private sealed class CollectingFlags : IHpackHeaderHandler
    {
        public string? Value { get; private set; }
        public bool Checked { get; private set; }

        public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HpackFieldFlags flags)
        {
            Value = Encoding.ASCII.GetString(value);
            Checked = (flags & HpackFieldFlags.Checked) != 0;
        }
    }

    private sealed class FlagsHandler : IHpackHeaderHandler
    {
        public List<HpackFieldFlags> Flags { get; } = [];

        public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HpackFieldFlags flags) => Flags.Add(flags);
    }

    [Fact]
    public void HeaderList_EncodedLengthBound_IsTheSumOfEachFieldsBound_ThroughChanges()
    {
        var list = new HeaderList();
        var random = new Random(3);
        for (int step = 0; step < 500; step++)
        {
            switch (random.Next(4))
            {
                case 0 when list.Count > 0:
                    list.RemoveAt(random.Next(list.Count));
                    break;
                case 1 when list.Count > 0:
                    list.SetValue(random.Next(list.Count), new byte[random.Next(60)]);
                    break;
                case 2 when step % 50 == 0:
                    list.Clear();
                    break;
                default:
                    list.Add(new byte[1 + random.Next(20)], new byte[random.Next(40)]);
                    break;
            }
            int expected = 0;
            for (int i = 0; i < list.Count; i++)
            {
                expected += HpackEncoder.MaxFieldOctets(list.Name(i).Length, list.Value(i).Length);
            }
            Assert.Equal(expected, list.EncodedLengthBound());
        }
    }

    [Fact]
    public void Encoder_UsesTheDecodersHints_AndAChangedValueDropsTheStaticEntry()
    {
        // A field list filled from a decoder keeps each field's static index; re-encoding a whole static
        // entry is one octet, and a value changed afterwards is encoded as the new value.
        var list = new HeaderList();
        list.Add(2, ":method"u8, "GET"u8, HpackFieldFlags.StaticEntry | HpackFieldFlags.Checked);
        list.Add(4, ":path"u8, "/"u8, HpackFieldFlags.StaticEntry | HpackFieldFlags.Checked);
        list.Add(31, "content-type"u8, "application/grpc"u8, HpackFieldFlags.None);
        list.SetValue(1, "/changed"u8);
        var connectionEncoder = new HpackEncoder();
        var block = new byte[list.EncodedLengthBound()];
        int length = list.EncodeTo(connectionEncoder, block);
        Assert.Equal(0x82, block[0]);
        Assert.Equal(0x44, block[1]); // literal with indexing, name = static 4 (:path)
        var sink = new HpackVectorTests.CollectingHandler();
        new HpackDecoder().Decode(block.AsSpan(0, length), sink);
        Assert.Equal([(":method", "GET"), (":path", "/changed"), ("content-type", "application/grpc")], sink.Headers);
    }

    [Fact]
    public void Decoder_RfcC3_RequestsWithoutHuffman_MaintainTable()
    {
        var decoder = new HpackDecoder();
        var sink = new HpackVectorTests.CollectingHandler();
        decoder.Decode(Convert.FromHexString("828684410f7777772e6578616d706c652e636f6d"), sink);
        Assert.Equal(57, decoder.Table.Size);
        decoder.Decode(Convert.FromHexString("828684be58086e6f2d6361636865"), sink);
        Assert.Equal(110, decoder.Table.Size);
        sink.Headers.Clear();
        decoder.Decode(Convert.FromHexString("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"), sink);
        Assert.Equal(164, decoder.Table.Size);
        Assert.Equal([(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"), ("custom-key", "custom-value")], sink.Headers);
    }

    [Fact]
    public void Decoder_RfcC5_ResponsesEvictWithSmallTable()
    {
        var decoder = new HpackDecoder();
        var encoderSide = new HpackEncoder();
        var sink = new HpackVectorTests.CollectingHandler();
        // C.5 uses a 256-octet table: signalled by a size update at the start of the first block.
        decoder.Decode(Convert.FromHexString("3fe101" + "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d"), sink);
        Assert.Equal(222, decoder.Table.Size);
        decoder.Decode(Convert.FromHexString("4803333037c1c0bf"), sink);
        Assert.Equal(222, decoder.Table.Size);
        Assert.Equal(4, decoder.Table.Count);
        Assert.NotNull(encoderSide);
    }

    [Fact]
    public void Decoder_NeverIndexedFlag_IsReported()
    {
        var decoder = new HpackDecoder();
        var sink = new HpackVectorTests.CollectingHandler();
        // C.2.3: literal never indexed, new name "password" = "secret".
        decoder.Decode(Convert.FromHexString("100870617373776f726406736563726574"), sink);
        Assert.Equal([("password", "secret")], sink.Headers);
        Assert.Equal([true], sink.NeverIndexed);
        Assert.Equal(0, decoder.Table.Count);
    }

    [Theory]
    [InlineData("82" + "3f0100", "size update after a field")]
    [InlineData("3fe21f", "size update above the setting (4096)")]
    [InlineData("be", "dynamic index beyond the table")]
    [InlineData("80", "index 0")]
    [InlineData("4085", "truncated string")]
    [InlineData("0f2f", "truncated integer of name index")]
    public void Decoder_InvalidBlock_Throws(string hex, string why)
    {
        var decoder = new HpackDecoder();
        Assert.Throws<HpackException>(() => decoder.Decode(Convert.FromHexString(hex), new HpackVectorTests.CollectingHandler()));
        Assert.NotNull(why);
    }

    [Fact]
    public void Decoder_RequiresSizeUpdateAfterSettingShrinks()
    {
        var decoder = new HpackDecoder();
        decoder.SetMaxTableSize(1024);
        Assert.Throws<HpackException>(() => decoder.Decode(Convert.FromHexString("82"), new HpackVectorTests.CollectingHandler()));
        var ok = new HpackDecoder();
        ok.SetMaxTableSize(1024);
        Assert.True(ok.Decode(Convert.FromHexString("3fe10782"), new HpackVectorTests.CollectingHandler()));
        Assert.Equal(1024, ok.Table.MaxSize);
    }

    [Fact]
    public void Decoder_ListTooLarge_ReturnsFalseButKeepsTableInStep()
    {
        var encoder = new HpackEncoder();
        var w = new ArrayBufferWriter<byte>();
        encoder.Encode(w, "x-a"u8, Encoding.ASCII.GetBytes(new string('a', 300)));
        encoder.Encode(w, "x-b"u8, "b"u8);
        var decoder = new HpackDecoder(maxHeaderListSize: 200);
        var sink = new HpackVectorTests.CollectingHandler();
        Assert.False(decoder.Decode(w.WrittenSpan, sink));
        Assert.Empty(sink.Headers);
        Assert.Equal(encoder.Table.Size, decoder.Table.Size);
        // The next block refers to the entry by index and decodes.
        w.ResetWrittenCount();
        encoder.Encode(w, "x-b"u8, "b"u8);
        Assert.True(decoder.Decode(w.WrittenSpan, sink));
        Assert.Equal([("x-b", "b")], sink.Headers);
    }

    [Fact]
    public void Decoder_HugeHuffmanString_IsBoundedAndEvictsTable()
    {
        // A 1 MiB Huffman literal with incremental indexing: too large to decode, so the table is emptied (RFC 7541 §4.4).
        var encoded = new byte[1 << 20];
        Array.Fill(encoded, (byte)0x18); // '0' = 00000: never the EOS prefix
        var decoder = new HpackDecoder(maxHeaderListSize: 64 * 1024);
        var tiny = new ArrayBufferWriter<byte>();
        var enc = new HpackEncoder();
        enc.Encode(tiny, "x-keep"u8, "v"u8);
        decoder.Decode(tiny.WrittenSpan, new HpackVectorTests.CollectingHandler());
        Assert.Equal(1, decoder.Table.Count);

        var hostile = new ArrayBufferWriter<byte>();
        Span<byte> head = hostile.GetSpan(16);
        head[0] = 0x40 | 1; // literal with indexing, name = static 1
        int len = 1 + HpackInteger.Encode(encoded.Length, 7, 0x80, head.Slice(1));
        hostile.Advance(len);
        hostile.Write(encoded);
        Assert.False(decoder.Decode(hostile.WrittenSpan, new HpackVectorTests.CollectingHandler()));
        Assert.Equal(0, decoder.Table.Count);
    }

    [Fact]
    public void Encoder_IndexesRepeatedFields_AndNeverIndexesSecrets()
    {
        var encoder = new HpackEncoder();
        var w = new ArrayBufferWriter<byte>();
        encoder.Encode(w, "content-type"u8, "application/grpc"u8);
        int first = w.WrittenCount;
        encoder.Encode(w, "content-type"u8, "application/grpc"u8);
        Assert.Equal(1, w.WrittenCount - first); // the second time it is one indexed octet
        w.ResetWrittenCount();
        encoder.Encode(w, "authorization"u8, "Bearer x"u8);
        Assert.Equal(0x10, w.WrittenSpan[0] & 0xF0); // literal never indexed
        var decoder = new HpackDecoder();
        var sink = new HpackVectorTests.CollectingHandler();
        decoder.Decode(w.WrittenSpan, sink);
        Assert.Equal([true], sink.NeverIndexed);
    }

    [Fact]
    public void Encoder_RepeatedLiteral_IsTheSameOctets_AndAnotherValueIsCodedAfresh()
    {
        // date is not indexed; the same value again is copied from the last coding, a new one is coded.
        var encoder = new HpackEncoder();
        var fields = new (string Name, string Value)[]
        {
            ("date", "Thu, 03 Dec 2026 09:00:00 GMT"), ("date", "Thu, 03 Dec 2026 09:00:00 GMT"),
            ("date", "Thu, 03 Dec 2026 09:00:01 GMT"), ("content-length", "12"), ("date", "Thu, 03 Dec 2026 09:00:01 GMT"),
            ("date", "Thu, 03 Dec 2026 09:00:00 GMT"), ("authorization", "secret"), ("authorization", "secret"),
        };
        var blocks = new List<byte[]>();
        var decoder = new HpackDecoder();
        foreach (var (name, value) in fields)
        {
            var w = new ArrayBufferWriter<byte>();
            encoder.Encode(w, Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value));
            blocks.Add(w.WrittenSpan.ToArray());
            var sink = new HpackVectorTests.CollectingHandler();
            decoder.Decode(w.WrittenSpan, sink);
            Assert.Equal([(name, value)], sink.Headers);
        }
        Assert.Equal(blocks[0], blocks[1]);
        Assert.Equal(blocks[2], blocks[4]);
        Assert.Equal(blocks[0], blocks[5]);
        Assert.Equal(0x10, blocks[7][0] & 0xF0); // still never indexed
    }

    [Fact]
    public void HeaderList_IndexOf_AgreesWithAScan_ThroughAddsRemovesAndClears()
    {
        // Lookups first test a bit per name hash: names that share a bit, removed names and a cleared list
        // must all still answer as a plain scan does.
        var list = new HeaderList();
        var model = new List<string>();
        var random = new Random(1);
        for (int step = 0; step < 20_000; step++)
        {
            int op = random.Next(10);
            string name = $"n{random.Next(300)}";
            if (op < 5)
            {
                list.Add(Encoding.ASCII.GetBytes(name), "v"u8);
                model.Add(name);
            }
            else if (op < 7 && model.Count > 0)
            {
                int at = random.Next(model.Count);
                list.RemoveAt(at);
                model.RemoveAt(at);
            }
            else if (op == 7 && random.Next(50) == 0)
            {
                list.Clear();
                model.Clear();
            }
            Assert.Equal(model.IndexOf(name), list.IndexOf(Encoding.ASCII.GetBytes(name)));
        }
    }

    [Fact]
    public void Encoder_StaticFullMatch_IsOneOctet()
    {
        var encoder = new HpackEncoder();
        var w = new ArrayBufferWriter<byte>();
        encoder.Encode(w, ":method"u8, "POST"u8);
        encoder.Encode(w, ":status"u8, "200"u8);
        Assert.Equal([0x83, 0x88], w.WrittenSpan.ToArray());
    }

    [Fact]
    public void Encoder_GivenTheDecodersHints_WritesWhatItWritesWithout()
    {
        // Hints (a name's static index, from the decoder) only skip lookups: the octets are the same as
        // when the encoder finds everything itself, secrets and volatile fields included.
        (string Name, string Value)[] fields =
        [
            (":method", "POST"), (":path", "/a"), (":authority", "h"), ("content-type", "application/grpc"),
            ("date", "Mon, 01 Jan 2026 00:00:00 GMT"), ("etag", "\"x\""), ("cookie", "a=1"), ("cookie", "session=" + new string('s', 30)),
            ("authorization", "Bearer t"), ("proxy-authorization", "Basic u"), ("content-length", "100"), ("last-modified", "x"),
            ("if-modified-since", "y"), ("user-agent", "u/1"), ("grpc-timeout", "1S"), ("x-request-id", "r"), ("te", "trailers"),
            (":status", "200"), (":status", "299"), ("accept-encoding", "gzip, deflate"),
        ];
        var hinted = new HpackEncoder();
        var plain = new HpackEncoder();
        var random = new Random(7541);
        for (int round = 0; round < 2000; round++)
        {
            (string name, string value) = fields[random.Next(fields.Length)];
            byte[] n = Encoding.ASCII.GetBytes(name);
            byte[] v = Encoding.ASCII.GetBytes(value);
            int staticIndex = HpackStaticTable.Find(n, v, out bool whole);
            if (staticIndex != 0 && !whole)
            {
                // A decoder passes whichever index of the name the peer used (:status is 8 to 14).
                int last = staticIndex;
                while (last < HpackStaticTable.Count && HpackStaticTable.FirstOfName(last + 1) == staticIndex)
                {
                    last++;
                }
                staticIndex = random.Next(staticIndex, last + 1);
            }
            byte[] a = new byte[HpackEncoder.MaxFieldOctets(n.Length, v.Length)];
            byte[] b = new byte[a.Length];
            int written = hinted.Encode(a, n, v, HeaderIndexing.Auto, staticIndex, whole);
            Assert.Equal(Convert.ToHexString(b, 0, plain.Encode(b, n, v, HeaderIndexing.Auto, 0, false)), Convert.ToHexString(a, 0, written));
        }
    }

    [Fact]
    public void StaticTableFindsEveryEntryAndTheFirstIndexOfEachName()
    {
        for (int i = 1; i <= HpackStaticTable.Count; i++)
        {
            ReadOnlySpan<byte> name = HpackStaticTable.Name(i);
            Assert.Equal(i, HpackStaticTable.Find(name, HpackStaticTable.Value(i), out bool full));
            Assert.True(full, Encoding.ASCII.GetString(name));
            int first = 1;
            while (!HpackStaticTable.Name(first).SequenceEqual(name))
            {
                first++;
            }
            Assert.Equal(first, HpackStaticTable.Find(name, "no such value"u8, out full));
            Assert.False(full);
            Assert.Equal(first, HpackStaticTable.FirstOfName(i));
        }
        (int Index, string Name)[] named =
        [
            (HpackStaticTable.Authority, ":authority"), (HpackStaticTable.Authorization, "authorization"),
            (HpackStaticTable.ContentLength, "content-length"), (HpackStaticTable.ContentType, "content-type"),
            (HpackStaticTable.Cookie, "cookie"), (HpackStaticTable.Date, "date"), (HpackStaticTable.ETag, "etag"),
            (HpackStaticTable.IfModifiedSince, "if-modified-since"), (HpackStaticTable.LastModified, "last-modified"),
            (HpackStaticTable.ProxyAuthorization, "proxy-authorization"), (HpackStaticTable.TransferEncoding, "transfer-encoding"),
            (HpackStaticTable.UserAgent, "user-agent"), (HpackStaticTable.Host, "host"), (HpackStaticTable.LastPseudoHeader, ":status"),
        ];
        foreach ((int index, string expected) in named)
        {
            Assert.Equal(expected, Encoding.ASCII.GetString(HpackStaticTable.Name(index)));
        }
        Assert.Equal("accept-charset", Encoding.ASCII.GetString(HpackStaticTable.Name(HpackStaticTable.LastPseudoHeader + 1)));
        Assert.Equal(0, HpackStaticTable.Find("x-custom"u8, ""u8, out bool none));
        Assert.False(none);
        Assert.Equal(0, HpackStaticTable.Find(":statu"u8, "200"u8, out _));
        Assert.Equal(0, HpackStaticTable.Find(""u8, ""u8, out _));
        Assert.Equal(0, HpackStaticTable.Find("content-typf"u8, ""u8, out _));
    }
}
