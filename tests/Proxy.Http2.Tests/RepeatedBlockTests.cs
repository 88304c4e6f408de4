using Proxy.Http2.Hpack;

namespace Proxy.Http2.Tests;

/// <summary>
/// A header block that repeats one decoded before (same octets, compression context unchanged) is handed
/// over from a kept copy instead of being decoded again. What the application sees, and every verdict of
/// RFC 9113 §8, must be exactly what decoding it would give, whatever happened to the table in between.
/// </summary>
public sealed class RepeatedBlockTests
{
    private static Http2TestPeer Server() => new Http2TestPeer().Handshake();

    private static void SendBlock(Http2TestPeer peer, int streamId, bool endStream, byte[] block) =>
        peer.SendFrame(w => Http2FrameWriter.WriteHeaders(w, streamId, block, endStream, 16384));

    [Fact]
    public void SameBlock_DeliversTheSameFields_EveryTime()
    {
        var peer = Server();
        (string, string)[] request = [.. Http2TestPeer.Get("/echo.Echo/Echo"), ("content-type", "application/grpc"), ("te", "trailers")];
        var blocks = new List<byte[]>();
        for (int i = 0; i < 6; i++)
        {
            byte[] block = peer.EncodeHeaders(request);
            blocks.Add(block);
            SendBlock(peer, 1 + 2 * i, true, block);
        }
        // From the second request on, every field is in the peer's dynamic table: the same few octets.
        Assert.All(blocks.Skip(2), b => Assert.Equal(blocks[1], b));
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(request, peer.Handler.Headers[1 + 2 * i]);
            Assert.Contains($"end {1 + 2 * i} True", peer.Handler.Events);
        }
    }

    [Fact]
    public void SameOctets_AfterTheTableChanged_AreDecodedAgainstTheNewTable()
    {
        var peer = Server();
        // :method GET, :scheme http, :path /, then :authority as a literal added to the table (index 62).
        byte[] indexed = [0x82, 0x86, 0x84, 0xBE]; // :authority from index 62: the newest entry
        SendBlock(peer, 1, true, [0x82, 0x86, 0x84, 0x41, 11, .. "example.com"u8]);
        for (int id = 3; id <= 9; id += 2)
        {
            SendBlock(peer, id, true, indexed);
            Assert.Contains((":authority", "example.com"), peer.Handler.Headers[id]);
        }
        // Trailers of another request insert a new entry (x-a: other), which index 62 now names; the
        // request blocks' kept copy was made when it named example.com.
        SendBlock(peer, 11, false, indexed);
        SendBlock(peer, 11, true, [0x40, 3, .. "x-a"u8, 5, .. "other"u8]);
        Assert.Equal([("x-a", "other")], peer.Handler.Trailers[11]);
        for (int id = 13; id <= 19; id += 2)
        {
            SendBlock(peer, id, true, indexed);
            Assert.Contains(("x-a", "other"), peer.Handler.Headers[id]);
            Assert.DoesNotContain((":authority", "example.com"), peer.Handler.Headers[id]);
        }
    }

    [Fact]
    public void SameBlock_KeepsItsContentLength_AndEndStreamIsCheckedEachTime()
    {
        var peer = Server();
        (string, string)[] post = Http2TestPeer.Post("/upload", ("content-length", "5"));
        for (int i = 0; i < 3; i++)
        {
            int id = 1 + 2 * i;
            SendBlock(peer, id, false, peer.EncodeHeaders(post));
            peer.SendData(id, "hello"u8.ToArray(), true);
            Assert.Contains($"data {id} 5 True", peer.Handler.Events);
        }
        // The same head again, now with a body shorter than its content-length: malformed (§8.1.1).
        SendBlock(peer, 7, false, peer.EncodeHeaders(post));
        peer.TakeFrames();
        peer.SendData(7, "hel"u8.ToArray(), true);
        peer.ExpectRstStream(7, Http2ErrorCode.ProtocolError);
        // And with END_STREAM on the head itself: content-length 5 with no body is malformed too.
        SendBlock(peer, 9, true, peer.EncodeHeaders(post));
        peer.ExpectRstStream(9, Http2ErrorCode.ProtocolError);
        Assert.DoesNotContain("end 9 True", peer.Handler.Events);
    }

    [Fact]
    public void SameMalformedBlock_IsRefusedEveryTime()
    {
        var peer = Server();
        (string, string)[] bad = [.. Http2TestPeer.Get(), ("x-Upper", "1")];
        for (int id = 1; id <= 9; id += 2)
        {
            SendBlock(peer, id, true, peer.EncodeHeaders(bad));
            peer.ExpectRstStream(id, Http2ErrorCode.ProtocolError);
            Assert.DoesNotContain($"end {id} True", peer.Handler.Events);
        }
        SendBlock(peer, 11, true, peer.EncodeHeaders(Http2TestPeer.Get("/fine")));
        Assert.Contains((":path", "/fine"), peer.Handler.Headers[11]);
    }

    [Fact]
    public void SameTrailers_AreDeliveredAsTrailers_EveryTime()
    {
        var peer = Server();
        for (int i = 0; i < 4; i++)
        {
            int id = 1 + 2 * i;
            SendBlock(peer, id, false, peer.EncodeHeaders(Http2TestPeer.Post("/p")));
            SendBlock(peer, id, true, peer.EncodeHeaders(("grpc-status", "0"), ("x-checksum", "abc")));
            Assert.Equal([("grpc-status", "0"), ("x-checksum", "abc")], peer.Handler.Trailers[id]);
            Assert.DoesNotContain(("grpc-status", "0"), peer.Handler.Headers[id]);
        }
        // A trailer block may not carry pseudo-headers, repeated or not (§8.1).
        for (int id = 9; id <= 13; id += 2)
        {
            SendBlock(peer, id, false, peer.EncodeHeaders(Http2TestPeer.Post("/p")));
            SendBlock(peer, id, true, peer.EncodeHeaders((":path", "/p")));
            peer.ExpectRstStream(id, Http2ErrorCode.ProtocolError);
        }
    }
}

public sealed class HeaderListCopyTests
{
    [Fact]
    public void CopyFrom_MakesAnEqualIndependentList_GrowingWhenNeeded()
    {
        var source = new HeaderList(64, 2);
        source.Add(2, ":method"u8, "GET"u8, HpackFieldFlags.StaticEntry);
        source.Add(0, "x-secret"u8, "s3cr3t"u8, HpackFieldFlags.NeverIndexed);
        for (int i = 0; i < 20; i++)
        {
            source.Add(System.Text.Encoding.ASCII.GetBytes($"x-{i}"), new string('v', 10 + i).Select(c => (byte)c).ToArray());
        }
        var copy = new HeaderList(16, 1);
        copy.Add("stale"u8, "old"u8);
        copy.CopyFrom(source);
        Assert.Equal(source.Count, copy.Count);
        Assert.Equal(source.ListSize, copy.ListSize);
        for (int i = 0; i < source.Count; i++)
        {
            Assert.True(copy.Name(i).SequenceEqual(source.Name(i)));
            Assert.True(copy.Value(i).SequenceEqual(source.Value(i)));
            Assert.Equal(source.StaticIndex(i), copy.StaticIndex(i));
            Assert.Equal(source.DecodedFlags(i), copy.DecodedFlags(i));
        }
        Assert.Equal(HpackFieldFlags.StaticEntry | HpackFieldFlags.Checked, copy.DecodedFlags(0));
        Assert.Equal(HpackFieldFlags.NeverIndexed, copy.DecodedFlags(1));
        Assert.Equal(-1, copy.IndexOf("stale"u8));
        Assert.Equal(5, copy.IndexOf("x-3"u8));
        Assert.True(copy.SameAs(source));
        copy.SetValue(0, "POST"u8); // the copy is its own
        Assert.True(source.Value(0).SequenceEqual("GET"u8));
        Assert.False(copy.SameAs(source));
    }

    [Fact]
    public void FoldInto_JoinsLaterFieldsOfTheName_InOrder_AndKeepsTheListSizeTrue()
    {
        var list = new HeaderList(16, 2); // small: the joined values make the arena grow
        list.Add(":method"u8, "GET"u8);
        list.Add(32, "cookie"u8, "a=1"u8, HpackFieldFlags.None);
        list.Add("x-other"u8, "o"u8);
        list.Add(32, "cookie"u8, "b=2"u8, HpackFieldFlags.None);
        list.Add("cookies"u8, "not-me"u8);
        list.Add(32, "cookie"u8, "c=3"u8, HpackFieldFlags.None);
        Assert.Equal(2, list.FoldInto(1, "cookie"u8, "; "u8));
        var expected = new HeaderList();
        expected.Add(":method"u8, "GET"u8);
        expected.Add("cookie"u8, "a=1; b=2; c=3"u8);
        expected.Add("x-other"u8, "o"u8);
        expected.Add("cookies"u8, "not-me"u8);
        Assert.Equal(expected.Count, list.Count);
        for (int i = 0; i < list.Count; i++)
        {
            Assert.Equal(System.Text.Encoding.ASCII.GetString(expected.Name(i)), System.Text.Encoding.ASCII.GetString(list.Name(i)));
            Assert.Equal(System.Text.Encoding.ASCII.GetString(expected.Value(i)), System.Text.Encoding.ASCII.GetString(list.Value(i)));
        }
        Assert.Equal(expected.ListSize, list.ListSize);
        Assert.Equal(32, list.StaticIndex(1)); // still known as cookie for the encoder
        Assert.Equal(0, list.FoldInto(1, "cookie"u8, "; "u8));
    }

    [Fact]
    public void SameAs_TellsFieldsApart_ByNameValueAndHowTheyAreIndexed()
    {
        static HeaderList Of(HeaderIndexing indexing, params string[] pairs)
        {
            var list = new HeaderList();
            for (int i = 0; i < pairs.Length; i += 2)
            {
                list.Add(System.Text.Encoding.ASCII.GetBytes(pairs[i]), System.Text.Encoding.ASCII.GetBytes(pairs[i + 1]), indexing);
            }
            return list;
        }
        HeaderList a = Of(HeaderIndexing.Auto, "x-a", "1", "x-b", "2");
        Assert.True(a.SameAs(Of(HeaderIndexing.Auto, "x-a", "1", "x-b", "2")));
        Assert.False(a.SameAs(Of(HeaderIndexing.Auto, "x-a", "1", "x-b", "3")));
        Assert.False(a.SameAs(Of(HeaderIndexing.Auto, "x-b", "2", "x-a", "1")));
        Assert.False(a.SameAs(Of(HeaderIndexing.Auto, "x-a", "1")));
        Assert.False(a.SameAs(Of(HeaderIndexing.NeverIndexed, "x-a", "1", "x-b", "2")));
        Assert.False(a.SameAs(Of(HeaderIndexing.Auto, "x-a1", "", "x-b", "2"))); // same octets, other split
    }
}

/// <summary>
/// The connection copies the octets a field list encoded to before instead of encoding it again. What the
/// peer decodes must always be the list sent, however the encoder's table moved in between.
/// </summary>
public sealed class RepeatedSendTests
{
    private static HeaderList List(params (string Name, string Value)[] fields)
    {
        var list = new HeaderList();
        foreach (var (name, value) in fields)
        {
            list.Add(System.Text.Encoding.ASCII.GetBytes(name), System.Text.Encoding.ASCII.GetBytes(value));
        }
        return list;
    }

    /// <summary>Opens stream <paramref name="id"/> with a request and answers it with <paramref name="head"/> (and trailers); returns the blocks sent.</summary>
    private static List<byte[]> Answer(Http2TestPeer peer, int id, HeaderList head, HeaderList? trailers = null)
    {
        peer.SendHeaders(id, true, Http2TestPeer.Get());
        Assert.True(peer.Connection.SendHeaders(id, head, trailers == null));
        if (trailers != null)
        {
            Assert.True(peer.Connection.SendHeaders(id, trailers, true));
        }
        return [.. peer.TakeFrames().Where(f => f.Type == Http2FrameType.Headers && f.StreamId == id).Select(f => f.Payload)];
    }

    [Fact]
    public void SameHeadAndTrailers_AreDecodedAsSent_EveryTime()
    {
        var peer = new Http2TestPeer().Handshake();
        (string, string)[] head = [(":status", "200"), ("content-type", "application/grpc"), ("x-a", "1")];
        (string, string)[] trailers = [("grpc-status", "0"), ("grpc-message", "")];
        var sent = new List<byte[]>();
        for (int i = 0; i < 6; i++)
        {
            List<byte[]> blocks = Answer(peer, 1 + 2 * i, List(head), List(trailers));
            Assert.Equal(2, blocks.Count);
            Assert.Equal(head, peer.DecodeHeaders(blocks[0]));
            Assert.Equal(trailers, peer.DecodeHeaders(blocks[1]));
            sent.Add(blocks[0]);
        }
        Assert.All(sent.Skip(2), b => Assert.Equal(sent[1], b)); // all indexed from the second on
    }

    [Fact]
    public void SameHead_AfterTheTableChanged_IsEncodedAgainstTheNewTable()
    {
        var peer = new Http2TestPeer().Handshake();
        (string, string)[] a = [(":status", "200"), ("x-a", "1")];
        (string, string)[] b = [(":status", "200"), ("x-b", "2")];
        for (int id = 1; id <= 7; id += 2)
        {
            Assert.Equal(a, peer.DecodeHeaders(Answer(peer, id, List(a))[0]));
        }
        // x-b: 2 becomes the newest entry (index 62), x-a: 1 moves to 63: the octets kept for a are stale.
        Assert.Equal(b, peer.DecodeHeaders(Answer(peer, 9, List(b))[0]));
        for (int id = 11; id <= 17; id += 2)
        {
            Assert.Equal(a, peer.DecodeHeaders(Answer(peer, id, List(a))[0]));
        }
    }

    [Fact]
    public void SameHead_AfterThePeerShrankTheTable_StartsWithTheSizeUpdate()
    {
        var peer = new Http2TestPeer().Handshake();
        (string, string)[] a = [(":status", "200"), ("x-a", "1")];
        for (int id = 1; id <= 5; id += 2)
        {
            Assert.Equal(a, peer.DecodeHeaders(Answer(peer, id, List(a))[0]));
        }
        peer.SendFrame(w => Http2FrameWriter.WriteSettings(w, [(Http2SettingsParameter.HeaderTableSize, 0u)]));
        peer.TakeFrames();
        byte[] block = Answer(peer, 7, List(a))[0];
        Assert.Equal(0x20, block[0]); // §4.2: a dynamic table size update to 0 comes first
        Assert.Equal(a, peer.DecodeHeaders(block));
        // The table is empty now: the field goes as a literal every time, and decodes as sent.
        for (int id = 9; id <= 13; id += 2)
        {
            block = Answer(peer, id, List(a))[0];
            Assert.NotEqual(0x20, block[0]);
            Assert.Equal(a, peer.DecodeHeaders(block));
        }
    }
}
