using Proxy.Http2.Hpack;

namespace Proxy.Http2.Tests;

/// <summary>RFC 9113 §8.1–8.3: malformed messages are stream errors of type PROTOCOL_ERROR; well-formed ones pass.</summary>
public sealed class MessageValidationTests
{
    private static Http2TestPeer Server() => new Http2TestPeer().Handshake();

    public static TheoryData<string, (string, string)[]> MalformedRequests() => new()
    {
        { "uppercase name", [.. Http2TestPeer.Get(), ("X-Upper", "1")] },
        { "space in name", [.. Http2TestPeer.Get(), ("bad name", "1")] },
        { "colon inside name", [.. Http2TestPeer.Get(), ("x:y", "1")] },
        { "connection header", [.. Http2TestPeer.Get(), ("connection", "keep-alive")] },
        { "keep-alive header", [.. Http2TestPeer.Get(), ("keep-alive", "5")] },
        { "proxy-connection header", [.. Http2TestPeer.Get(), ("proxy-connection", "close")] },
        { "transfer-encoding header", [.. Http2TestPeer.Get(), ("transfer-encoding", "chunked")] },
        { "upgrade header", [.. Http2TestPeer.Get(), ("upgrade", "h2c")] },
        { "te other than trailers", [.. Http2TestPeer.Get(), ("te", "gzip")] },
        { "pseudo after regular", [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/")] },
        { "unknown pseudo", [.. Http2TestPeer.Get(), (":foo", "bar")] },
        { ":status in request", [.. Http2TestPeer.Get(), (":status", "200")] },
        { "duplicate :method", [(":method", "GET"), (":method", "GET"), (":scheme", "http"), (":path", "/")] },
        { "missing :method", [(":scheme", "http"), (":path", "/")] },
        { "missing :path", [(":method", "GET"), (":scheme", "http")] },
        { "missing :scheme", [(":method", "GET"), (":path", "/")] },
        { "empty :path", [(":method", "GET"), (":scheme", "http"), (":path", "")] },
        { "relative :path", [(":method", "GET"), (":scheme", "http"), (":path", "a/b")] },
        { "userinfo in :authority", [(":method", "GET"), (":scheme", "http"), (":authority", "user@host"), (":path", "/")] },
        { "CONNECT with :path", [(":method", "CONNECT"), (":authority", "a:443"), (":path", "/")] },
        { "CONNECT without :authority", [(":method", "CONNECT")] },
        { "CR in value", [.. Http2TestPeer.Get(), ("x-a", "a\rb")] },
        { "LF in value", [.. Http2TestPeer.Get(), ("x-a", "a\nb")] },
        { "NUL in value", [.. Http2TestPeer.Get(), ("x-a", "a\0b")] },
        { "LF at the end of a 32-octet value", [.. Http2TestPeer.Get(), ("x-a", new string('v', 31) + "\n")] },
        { "CR in a long value", [.. Http2TestPeer.Get(), ("x-a", new string('v', 40) + "\r" + new string('v', 40))] },
        { "leading space in value", [.. Http2TestPeer.Get(), ("x-a", " a")] },
        { "trailing tab in value", [.. Http2TestPeer.Get(), ("x-a", "a\t")] },
        { "non-numeric content-length", [.. Http2TestPeer.Get(), ("content-length", "12a")] },
        { "conflicting content-length", [.. Http2TestPeer.Get(), ("content-length", "1"), ("content-length", "2")] },
    };

    [Theory]
    [MemberData(nameof(MalformedRequests))]
    public void MalformedRequest_IsStreamProtocolError(string why, (string, string)[] headers)
    {
        Assert.NotNull(why);
        var peer = Server();
        peer.SendHeaders(1, true, headers);
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
        Assert.DoesNotContain("end 1 True", peer.Handler.Events);
        // Sent again, the offending fields now come from the dynamic table (the encoder indexed them the
        // first time): a table entry is never trusted for having been seen before.
        peer.SendHeaders(3, true, headers);
        peer.ExpectRstStream(3, Http2ErrorCode.ProtocolError);
        Assert.DoesNotContain("end 3 True", peer.Handler.Events);
        // The connection and its compression context go on.
        peer.SendHeaders(5, true, Http2TestPeer.Get("/next"));
        Assert.Contains((":path", "/next"), peer.Handler.Headers[5]);
    }

    /// <summary>A literal without indexing (RFC 7541 §6.2.2) whose name is static entry <paramref name="index"/>.</summary>
    private static byte[] Literal(int index, string value) =>
        [.. index < 15 ? [(byte)index] : new[] { (byte)0x0F, (byte)(index - 15) }, (byte)value.Length, .. System.Text.Encoding.ASCII.GetBytes(value)];

    [Fact]
    public void PseudoHeadersNamedByAnyOfTheirStaticEntries_AreJudgedByName()
    {
        // The validator knows a static name by its index: every index of a pseudo-header's name must mean
        // that pseudo-header (:method is 2 and 3, :path 4 and 5, :scheme 6 and 7, :status 8 to 14).
        var peer = Server();
        byte[] request = [.. Literal(3, "GET"), .. Literal(7, "http"), .. Literal(5, "/x"), .. Literal(1, "a")];
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.EndStream, 1, request);
        peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.EndStream, 3,
            [.. Literal(2, "POST"), .. Literal(6, "https"), .. Literal(4, "/y"), .. Literal(HpackStaticTable.ContentLength, "0")]);
        peer.SendHeaders(5, true, Http2TestPeer.Get("/sync"));
        Assert.Contains((":path", "/sync"), peer.Handler.Headers[5]);
        Assert.Equal([(":method", "GET"), (":scheme", "http"), (":path", "/x"), (":authority", "a")], peer.Handler.Headers[1]);
        Assert.Equal([(":method", "POST"), (":scheme", "https"), (":path", "/y"), ("content-length", "0")], peer.Handler.Headers[3]);

        int stream = 7;
        byte[][] refused =
        [
            [.. request, .. Literal(2, "GET")],                                   // :method twice, by 3 then 2
            [.. Literal(3, "GET"), .. Literal(6, "http"), .. Literal(7, "http"), .. Literal(4, "/")], // :scheme by 6 and 7
            [.. Literal(2, "GET"), .. Literal(7, "http"), .. Literal(4, "/"), .. Literal(5, "/")],   // :path by 4 and 5
            .. Enumerable.Range(8, 7).Select(i => (byte[])[.. request, .. Literal(i, "200")]),  // :status in a request
            [.. Literal(2, "GET"), .. Literal(7, "http"), .. Literal(4, "/"), .. Literal(HpackStaticTable.ContentLength, "x")],
        ];
        foreach (byte[] block in refused)
        {
            peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.EndStream, stream, block);
            peer.ExpectRstStream(stream, Http2ErrorCode.ProtocolError);
            stream += 2;
        }
    }

    [Fact]
    public void RepeatedHuffmanLiteral_WithACr_IsRefusedEveryTime()
    {
        // The decoder copies a short Huffman-coded value it decoded in the last literals: a malformed one
        // must be refused each time it comes, a clean one taken each time.
        var peer = Server();
        static byte[] Block(string value)
        {
            byte[] raw = System.Text.Encoding.ASCII.GetBytes(value);
            byte[] coded = new byte[Huffman.GetEncodedLength(raw)];
            Huffman.Encode(raw, coded);
            // GET http / and user-agent (static 58) as a literal without indexing, Huffman-coded.
            return [0x82, 0x86, 0x84, 0x0F, HpackStaticTable.UserAgent - 15, (byte)(0x80 | coded.Length), .. coded];
        }
        for (int stream = 1; stream < 18; stream += 6)
        {
            peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.EndStream, stream, Block("a\rb"));
            peer.ExpectRstStream(stream, Http2ErrorCode.ProtocolError);
            peer.SendRaw(Http2FrameType.Headers, Http2FrameFlags.EndHeaders | Http2FrameFlags.EndStream, stream + 2, Block("ua/1"));
            peer.SendHeaders(stream + 4, true, Http2TestPeer.Get("/sync"));
            Assert.Contains(("user-agent", "ua/1"), peer.Handler.Headers[stream + 2]);
        }
    }

    [Fact]
    public void MoreFieldsThanMaxHeaderFields_ResetsTheStream_AndTheConnectionGoesOn()
    {
        // Envoy's max_headers_count (default 100) counts every field of a block, pseudo-headers included.
        var peer = Server();
        (string, string)[] Fields(int regular) => [.. Http2TestPeer.Get(), .. Enumerable.Range(0, regular).Select(i => ($"x-{i}", "v"))];
        peer.SendHeaders(1, true, Fields(96));
        peer.SendHeaders(3, true, Fields(97));
        peer.ExpectRstStream(3, Http2ErrorCode.ProtocolError);
        peer.SendHeaders(5, true, Http2TestPeer.Get("/next"));
        Assert.Equal(100, peer.Handler.Headers[1].Count);
        Assert.Contains((":path", "/next"), peer.Handler.Headers[5]);
        Assert.DoesNotContain("end 3 True", peer.Handler.Events);

        var strict = new Http2TestPeer(options: new Http2ConnectionOptions { MaxHeaderFields = 4 }).Handshake();
        strict.SendHeaders(1, true, Fields(1));
        strict.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
        strict.SendHeaders(3, true, Fields(0));
        strict.SendHeaders(5, true, Fields(0));
        Assert.Equal(4, strict.Handler.Headers[3].Count);
    }

    [Fact]
    public void TeTrailers_IsAccepted()
    {
        var peer = Server();
        peer.SendHeaders(1, true, [.. Http2TestPeer.Post("/pkg.Svc/M"), ("te", "trailers"), ("content-type", "application/grpc")]);
        Assert.Contains(1, peer.Handler.Ended);
        Assert.Contains(("te", "trailers"), peer.Handler.Headers[1]);
    }

    [Fact]
    public void ConnectWithAuthorityOnly_IsAccepted()
    {
        var peer = Server();
        peer.SendHeaders(1, false, [(":method", "CONNECT"), (":authority", "example.com:443")]);
        Assert.Contains("end 1 False", peer.Handler.Events);
    }

    [Fact]
    public void TrailersWithoutEndStream_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendHeaders(1, false, ("x-trailer", "1"));
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void TrailersWithPseudoHeader_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendHeaders(1, true, (":path", "/x"));
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void RequestTrailers_AreDelivered()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/"));
        peer.SendData(1, [1, 2, 3], endStream: false);
        peer.SendHeaders(1, true, ("grpc-status", "0"), ("x-meta", "v"));
        Assert.Equal([("grpc-status", "0"), ("x-meta", "v")], peer.Handler.Trailers[1]);
        Assert.Contains(1, peer.Handler.Ended);
    }

    [Fact]
    public void DataBeyondContentLength_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/", ("content-length", "2")));
        peer.SendData(1, [1, 2, 3], endStream: true);
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void DataShortOfContentLength_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/", ("content-length", "5")));
        peer.SendData(1, [1, 2, 3], endStream: true);
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void EndStreamOnHeadersWithPositiveContentLength_IsStreamProtocolError()
    {
        var peer = Server();
        peer.SendHeaders(1, true, Http2TestPeer.Post("/", ("content-length", "5")));
        peer.ExpectRstStream(1, Http2ErrorCode.ProtocolError);
    }

    [Fact]
    public void ExactContentLength_IsAccepted()
    {
        var peer = Server();
        peer.SendHeaders(1, false, Http2TestPeer.Post("/", ("content-length", "3")));
        peer.SendData(1, [1, 2], endStream: false);
        peer.SendData(1, [3], endStream: true);
        Assert.Empty(peer.TakeFrames());
        Assert.Equal(3, peer.Handler.Bodies[1].Length);
    }

    [Fact]
    public void EveryByteInAFieldNameIsJudgedByTheRule()
    {
        // §8.2.1: a regular field name holds only 0x21-0x7E, no uppercase, and no colon; short and long
        // names (the validator takes different paths for them) agree with the rule for each of the 256 bytes.
        foreach (int length in new[] { 3, 31, 33, 200 })
        {
            for (int b = 0; b <= 0xFF; b++)
            {
                byte[] name = new byte[length];
                name.AsSpan().Fill((byte)'a');
                name[length / 2] = (byte)b;
                bool valid = b is > 0x20 and < 0x7F && b is not (>= 'A' and <= 'Z') && b != ':';
                var validator = new HeaderBlockValidator();
                validator.Begin(Http2HeaderBlockKind.Request);
                Assert.True(valid == validator.Check(0, name, "v"u8), $"byte 0x{b:x2} in a name of {length}");
            }
        }
    }
}
