using System.Text;
using Proxy.Core.Http1;
using Proxy.Http2;

namespace Proxy.Core.Tests;

/// <summary>RFC 9112 message heads and the chunked coding, table by table.</summary>
public sealed class Http1ParserTests
{
    /// <summary>
    /// Parses a request head whole, and checks that the one-pass parser agrees: on the head followed by body
    /// octets (controls and bare CR/LF among them) it gives the same answer and the head's length, and on
    /// every shorter prefix it waits for more or gives that same error.
    /// </summary>
    private static (Http1Error? Error, HeaderList Fields, Http1Parser.RequestHead Head) Request(string text)
    {
        byte[] bytes = Encoding.Latin1.GetBytes(text);
        var fields = new HeaderList();
        var head = new Http1Parser.RequestHead();
        Http1Error? error = Http1Parser.ParseRequest(bytes, fields, ref head);

        bool whole = text.EndsWith("\r\n\r\n", StringComparison.Ordinal);
        var onePass = new HeaderList();
        var onePassHead = new Http1Parser.RequestHead();
        Http1Error? onePassError = Http1Parser.TryParseRequest([.. bytes, .. "\0\u0001\r\r\n\nX"u8], onePass, ref onePassHead, out int length);
        if (whole || onePassError != null)
        {
            Assert.Equal(error?.Status, onePassError?.Status);
        }
        if (whole && error == null)
        {
            Assert.Equal(bytes.Length, length);
            Assert.Equal(head, onePassHead);
            Assert.Equal(Describe(fields), Describe(onePass));
        }
        for (int prefix = 0; prefix < bytes.Length - (whole ? 0 : 1); prefix++)
        {
            var partial = new Http1Parser.RequestHead();
            Http1Error? partialError = Http1Parser.TryParseRequest(bytes.AsSpan(0, prefix), new HeaderList(), ref partial, out int partialLength);
            Assert.Equal(0, partialLength);
            Assert.True(partialError == null || partialError.Value.Status == error?.Status, $"prefix {prefix}: {partialError}");
        }
        return (error, fields, head);
    }

    private static string Describe(HeaderList fields)
    {
        var text = new StringBuilder();
        for (int i = 0; i < fields.Count; i++)
        {
            text.Append(Encoding.Latin1.GetString(fields.Name(i))).Append(": ").Append(Encoding.Latin1.GetString(fields.Value(i))).Append('\n');
        }
        return text.ToString();
    }

    private static string Field(HeaderList fields, string name)
    {
        int i = fields.IndexOf(Encoding.ASCII.GetBytes(name));
        return i < 0 ? "(absent)" : Encoding.ASCII.GetString(fields.Value(i));
    }

    [Fact]
    public void FieldNames_AreLowercased_AndValuesLoseTheirOptionalWhitespace()
    {
        string longName = "X-" + new string('N', 254); // 256 octets: the longest name taken
        var (error, fields, _) = Request($"GET / HTTP/1.1\r\nHost: a\r\nX-MiXeD_~!#$%&'*+.^`|: \t v a l \t \r\n{longName}:1\r\nX-Empty:\r\n\r\n");
        Assert.Null(error);
        Assert.Equal("v a l", Field(fields, "x-mixed_~!#$%&'*+.^`|"));
        Assert.Equal("1", Field(fields, longName.ToLowerInvariant()));
        Assert.Equal("", Field(fields, "x-empty"));
        Assert.Equal(400, Request($"GET / HTTP/1.1\r\nHost: a\r\n{longName}N: 1\r\n\r\n").Error?.Status);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n")]
    public void MalformedResponses_Are502(string text)
    {
        var head = new Http1Parser.ResponseHead();
        Assert.Equal(502, Http1Parser.ParseResponse(Encoding.ASCII.GetBytes(text), new HeaderList(), false, ref head)?.Status);
    }

    [Fact]
    public void FindHeadEnd_AgreesWithASearchForCrLfCrLf()
    {
        // LFs are found sixteen octets at a time; every length and position around those blocks must give
        // the first CRLFCRLF, as a plain search does.
        var random = new Random(9112);
        for (int round = 0; round < 20_000; round++)
        {
            byte[] buffer = new byte[random.Next(0, 80)];
            for (int i = 0; i < buffer.Length; i++)
            {
                buffer[i] = (byte)"\r\n\r\nab: "[random.Next(round % 2 == 0 ? 4 : 8)];
            }
            int expected = buffer.AsSpan().IndexOf("\r\n\r\n"u8);
            Assert.Equal(expected < 0 ? -1 : expected + 4, Http1Parser.FindHeadEnd(buffer));
        }
    }

    [Fact]
    public void Request_BecomesHttp2Fields_WithoutHopByHop()
    {
        var (error, fields, head) = Request("POST /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Up: A\r\nConnection: keep-alive, x-up\r\nKeep-Alive: 5\r\nTE: trailers\r\nContent-Length: 3\r\n\r\n");
        Assert.Null(error);
        Assert.Equal("POST", Field(fields, ":method"));
        Assert.Equal("/a?b=1", Field(fields, ":path"));
        Assert.Equal("Example.com:8080", Field(fields, ":authority"));
        // x-up is named by Connection: a connection option, removed before forwarding (RFC 9110 §7.6.1).
        Assert.Equal("(absent)", Field(fields, "x-up"));
        Assert.Equal("trailers", Field(fields, "te"));
        Assert.Equal("(absent)", Field(fields, "keep-alive"));
        Assert.Equal("(absent)", Field(fields, "connection"));
        Assert.Equal(BodyFraming.ContentLength, head.Framing);
        Assert.Equal(3, head.ContentLength);
        Assert.True(head.KeepAlive);
    }

    [Theory]
    [InlineData("GET / extra HTTP/1.1")]
    [InlineData("GET / HTTP/1.1 extra")]
    [InlineData("GET  / HTTP/1.1")]
    [InlineData("GET / FOO")]
    [InlineData("GET /")]
    public void RequestLine_WithAnExtraOrMissingToken_Is400(string line)
    {
        var (error, _, _) = Request(line + "\r\nHost: x\r\n\r\n");
        Assert.NotNull(error);
        Assert.Equal(400, error.Value.Status);
    }

    [Fact]
    public void UnknownHttpVersion_Is505()
    {
        var (error, _, _) = Request("GET / HTTP/2.0\r\nHost: x\r\n\r\n");
        Assert.Equal(505, error!.Value.Status);
    }

    [Fact]
    public void TransferEncoding_InAnHttp10Request_Is400()
    {
        var (error, _, _) = Request("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        Assert.Equal(400, error!.Value.Status);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\n\tb\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n Host: x\r\n\r\n")]
    public void ObsFold_InAnyField_Is400(string head)
    {
        var (error, _, _) = Request(head);
        Assert.Equal(400, error!.Value.Status);
    }

    [Fact]
    public void ConnectionOptions_AndH2cUpgradeFields_AreNotForwarded()
    {
        var (error, fields, _) = Request("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, X-Hop\r\nUpgrade: h2c\r\n"
            + "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Hop: 1\r\nX-Kept: 2\r\nConnection: x-second\r\nX-Second: 3\r\n\r\n");
        Assert.Null(error);
        foreach (string gone in new[] { "connection", "upgrade", "http2-settings", "x-hop", "x-second" })
        {
            Assert.Equal("(absent)", Field(fields, gone));
        }
        Assert.Equal("2", Field(fields, "x-kept"));
        Assert.Equal("x", Field(fields, ":authority"));
    }

    [Fact]
    public void AbsoluteForm_TakesTheAuthorityFromTheTarget()
    {
        var (error, fields, _) = Request("GET http://svc.local:9090/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n");
        Assert.Null(error);
        Assert.Equal("svc.local:9090", Field(fields, ":authority"));
        Assert.Equal("/p?q", Field(fields, ":path"));
    }

    [Fact]
    public void Http10_DefaultsToClose_AndNeedsNoHost()
    {
        var (error, _, head) = Request("GET / HTTP/1.0\r\n\r\n");
        Assert.Null(error);
        Assert.False(head.KeepAlive);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)]
    [InlineData("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX: a\u0001b\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417)]
    [InlineData("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400)]
    [InlineData("GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n", 400)]          // a bare LF ends no line
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n", 400)]          // nor a bare CR
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", 400)]                 // a separator in a name
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400)]                     // an empty name
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-\u00e9: 1\r\n\r\n", 400)]            // a non-ASCII name
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n", 400)]
    [InlineData("GET /\n HTTP/1.1\r\nHost: a\r\n\r\n", 400)]                           // a bare LF in the request line
    [InlineData("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400)]                          // a bare CR in the target
    [InlineData("GET /a\u007fb HTTP/1.1\r\nHost: a\r\n\r\n", 400)]                      // DEL in the target
    [InlineData("GET /a\u0000b HTTP/1.1\r\nHost: a\r\n\r\n", 400)]                      // NUL in the target
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-Long-Enough-Name: 0123456\u007f\r\n\r\n", 400)] // DEL after a clean block
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-Long-Enough-Name: 01234567\r\r\n\r\n", 400)]    // a CR before the CRLF
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: 0123456789ab\r\u0001\r\n\r\n", 400)]      // a CR across a block's end
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: \u001f\r\n\r\n", 400)]
    [InlineData("HEAD /\u0009 HTTP/1.1\r\nHost: a\r\n\r\n", 400)]                         // HTAB in the target
    public void MalformedRequests_AreRefused(string text, int status)
    {
        Assert.Equal(status, Request(text).Error?.Status);
    }

    [Theory]
    [InlineData("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", true)]
    [InlineData("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n", true)]
    [InlineData("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false)]                              // no Connection: upgrade
    [InlineData("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", false)]          // h2c is dropped
    [InlineData("POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n", false)]
    public void WebSocketUpgrade_IsKeptAsAField_OnlyWhenWhole(string text, bool websocket)
    {
        var (error, fields, head) = Request(text);
        Assert.Null(error);
        Assert.Equal(websocket, head.WebSocket);
        Assert.Equal(websocket, fields.IndexOf("upgrade"u8) >= 0);
        Assert.Equal(-1, fields.IndexOf("connection"u8));
    }

    [Fact]
    public void AbsoluteForm_WithAQueryAndNoPath_HasPathSlash()
    {
        var (error, fields, _) = Request("GET http://b?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Null(error);
        Assert.Equal("/?q=1", Field(fields, ":path"));
        Assert.Equal("b", Field(fields, ":authority"));
    }

    [Theory]
    [InlineData(99, null)]
    [InlineData(100, 431)]    // Host and 100 more: 101 field lines, one over Envoy's default max_headers_count
    public void MoreFieldLinesThanMaxHeadersCount_Is431(int extra, int? status)
    {
        var text = new StringBuilder("GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 0; i < extra; i++)
        {
            text.Append("X-").Append(i).Append(": v\r\n");
        }
        Assert.Equal(status, Request(text.Append("\r\n").ToString()).Error?.Status);
        var head = new Http1Parser.RequestHead();
        Assert.Equal(431, Http1Parser.ParseRequest(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"), new HeaderList(), ref head, maxFields: 2)?.Status);
        var response = new Http1Parser.ResponseHead();
        string many = "HTTP/1.1 200 OK\r\n" + string.Concat(Enumerable.Range(0, 101).Select(i => $"X-{i}: v\r\n")) + "\r\n";
        Assert.Equal(502, Http1Parser.ParseResponse(Encoding.ASCII.GetBytes(many), new HeaderList(), false, ref response)?.Status);
    }

    [Theory]
    [InlineData("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", false)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n", true)]
    [InlineData("GET / HTTP/1.0\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\n", true)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a, close\r\n\r\n", false)]
    public void ConnectionKeepAliveAndClose_SetKeepAlive(string text, bool keepAlive)
    {
        var (error, fields, head) = Request(text);
        Assert.Null(error);
        Assert.Equal(keepAlive, head.KeepAlive);
        Assert.Equal(-1, fields.IndexOf("x-a"u8));
        Assert.Equal(-1, fields.IndexOf("connection"u8));
        foreach ((string response, bool responseKeepAlive) in new[]
        {
            ("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: x-b, close\r\nX-B: 1\r\nContent-Length: 0\r\n\r\n", false),
        })
        {
            var parsed = new Http1Parser.ResponseHead();
            var responseFields = new HeaderList();
            Assert.Null(Http1Parser.ParseResponse(Encoding.ASCII.GetBytes(response), responseFields, false, ref parsed));
            Assert.Equal(responseKeepAlive, parsed.KeepAlive);
            Assert.Equal(-1, responseFields.IndexOf("x-b"u8));
        }
    }

    [Theory]
    [InlineData(64, null)]
    [InlineData(65, 400)]
    public void ConnectionOptions_AreBounded(int options, int? status)
    {
        // Split over two Connection fields: the bound is on the head's options, not on one field's.
        string first = string.Join(", ", Enumerable.Range(0, options / 2).Select(i => "x-" + i));
        string second = string.Join(",", Enumerable.Range(options / 2, options - options / 2).Select(i => "x-" + i));
        Assert.Equal(status, Request($"GET / HTTP/1.1\r\nHost: a\r\nConnection: {first}\r\nConnection: {second}\r\n\r\n").Error?.Status);
    }

    [Fact]
    public void EveryOctetInAName_IsTakenOnlyWhenATokenCharacter()
    {
        // Names of up to fifteen octets are checked sixteen at a time, longer ones octet by octet: both
        // must take exactly the tchar set (RFC 9110 §5.6.2) and lowercase only A-Z.
        const string tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for (int b = 0; b < 256; b++)
        {
            if (b is ':' or '\r' or '\n')
            {
                continue;
            }
            foreach (string prefix in new[] { "x", "x-a-long-prefix-", "0123456789abcd" })
            {
                string name = prefix + (char)b + "y";
                var (error, fields, _) = Request($"GET / HTTP/1.1\r\nHost: a\r\n{name}: 1\r\nX-After: 2\r\n\r\n");
                if (tchar.Contains((char)b, StringComparison.Ordinal))
                {
                    Assert.True(error == null, $"octet 0x{b:X2} in '{prefix}': {error}");
                    Assert.Equal("1", Field(fields, name.ToLowerInvariant()));
                    Assert.Equal("2", Field(fields, "x-after"));
                }
                else
                {
                    Assert.True(error?.Status == 400, $"octet 0x{b:X2} in '{prefix}' was taken");
                }
            }
        }
    }

    [Fact]
    public void ValuesWithTabsAndObsText_AreTaken_ByBothParsers()
    {
        var (error, fields, _) = Request("GET /caf\u00e9 HTTP/1.1\r\nHost: a\r\nX-A: a\tb \u00e9\u00ff\r\nX-Long-Enough-Name: 0123456789abcdef\r\n\r\n");
        Assert.Null(error);
        Assert.Equal("a\tb \u00e9\u00ff", Encoding.Latin1.GetString(fields.Value(fields.IndexOf("x-a"u8))));
    }

    [Fact]
    public void LineFeedScanner_CallsAHeadClean_OnlyWhenItIs()
    {
        // Clean: no control octet but HTAB, each CR followed by an LF and each LF preceded by a CR. At every
        // LF it returns, the scanner must not call clean what is not (values would go unchecked), and must
        // call a wholly clean buffer clean (else the fast path is never taken).
        var random = new Random(9110);
        byte[] alphabet = [(byte)'a', (byte)' ', (byte)'\t', (byte)'\r', (byte)'\n', 0x01, 0x7F, 0x80, 0x00, 0x1F, 0x20, 0xFF];
        for (int round = 0; round < 20_000; round++)
        {
            byte[] buffer = new byte[random.Next(0, 70)];
            bool pairsOnly = round % 2 == 0; // half the rounds build wholly clean buffers from text and CRLFs
            for (int i = 0; i < buffer.Length; i++)
            {
                if (pairsOnly)
                {
                    buffer[i] = i + 1 < buffer.Length && random.Next(6) == 0 ? (byte)'\r' : (byte)"ab \t\u00e9"[random.Next(5)];
                    if (buffer[i] == (byte)'\r')
                    {
                        buffer[++i] = (byte)'\n';
                    }
                }
                else
                {
                    buffer[i] = random.Next(3) == 0 ? alphabet[random.Next(alphabet.Length)] : (byte)'a';
                }
            }
            var scanner = new LineFeedScanner(buffer);
            for (int lf = scanner.Next(); lf >= 0; lf = scanner.Next())
            {
                Assert.Equal((byte)'\n', buffer[lf]);
                if (!IsClean(buffer.AsSpan(0, lf + 1)))
                {
                    Assert.False(scanner.Clean, $"round {round}, LF at {lf}: {Convert.ToHexString(buffer)}");
                }
                else if (IsClean(buffer))
                {
                    Assert.True(scanner.Clean, $"round {round}, LF at {lf}: {Convert.ToHexString(buffer)}");
                }
            }
        }

        static bool IsClean(ReadOnlySpan<byte> octets)
        {
            for (int i = 0; i < octets.Length; i++)
            {
                byte b = octets[i];
                if ((b < 0x20 && b is not ((byte)'\t' or (byte)'\r' or (byte)'\n')) || b == 0x7F
                    || (b == (byte)'\r' && (i + 1 == octets.Length || octets[i + 1] != (byte)'\n'))
                    || (b == (byte)'\n' && (i == 0 || octets[i - 1] != (byte)'\r')))
                {
                    return false;
                }
            }
            return true;
        }
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: a:8080\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: \r\n\r\n")]
    public void ValidHosts_AreTaken(string text)
    {
        Assert.Null(Request(text).Error);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\nHost: a\n", 0, true)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\n", 0, true)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n", 0, false)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r", 0, false)]
    [InlineData("\n", 0, true)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n", 16, false)]
    public void BareLf_InAnUnfinishedHead_IsFound(string text, int from, bool bare)
    {
        Assert.Equal(bare, Http1Parser.HasBareLf(System.Text.Encoding.ASCII.GetBytes(text), from));
    }

    [Fact]
    public void Response_FieldsTheConnectionHeaderNames_AreRemoved()
    {
        var fields = new HeaderList();
        var head = new Http1Parser.ResponseHead();
        Assert.Null(Http1Parser.ParseResponse("HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n"u8, fields, false, ref head));
        Assert.Equal(-1, fields.IndexOf("x-secret"u8));
        Assert.True(fields.IndexOf("x-kept"u8) >= 0);
        Assert.True(head.KeepAlive);
    }

    [Fact]
    public void Response_ChunkedWinsOverContentLength_AndHeadHasNoBody()
    {
        var fields = new HeaderList();
        var head = new Http1Parser.ResponseHead();
        Assert.Null(Http1Parser.ParseResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"u8, fields, false, ref head));
        Assert.Equal(BodyFraming.Chunked, head.Framing);
        Assert.Equal(-1, fields.IndexOf("content-length"u8));
        head = new Http1Parser.ResponseHead();
        Assert.Null(Http1Parser.ParseResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"u8, fields, requestWasHead: true, ref head));
        Assert.Equal(BodyFraming.None, head.Framing);
        head = new Http1Parser.ResponseHead();
        Assert.Null(Http1Parser.ParseResponse("HTTP/1.0 200 OK\r\n\r\n"u8, fields, false, ref head));
        Assert.Equal(BodyFraming.UntilClose, head.Framing);
        Assert.False(head.KeepAlive);
        Assert.Equal(502, Http1Parser.ParseResponse("HTTP/1.1 2x0 OK\r\n\r\n"u8, fields, false, ref head)?.Status);
    }

    [Fact]
    public void Chunked_DecodesDataExtensionsAndTrailers_AcrossSplits()
    {
        byte[] wire = Encoding.ASCII.GetBytes("5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n");
        for (int split = 1; split < wire.Length; split++)
        {
            var decoder = new ChunkedDecoder();
            var body = new StringBuilder();
            var trailers = new List<string>();
            bool done = false;
            byte[] buffer = [];
            foreach (byte[] part in new[] { wire[..split], wire[split..] })
            {
                buffer = [.. buffer, .. part];
                int consumed = 0;
                while (true)
                {
                    ChunkedDecoder.Result r = decoder.Decode(buffer, ref consumed, out ReadOnlySpan<byte> data);
                    if (r == ChunkedDecoder.Result.NeedMore)
                    {
                        break;
                    }
                    Assert.NotEqual(ChunkedDecoder.Result.Error, r);
                    if (r == ChunkedDecoder.Result.Data)
                    {
                        body.Append(Encoding.ASCII.GetString(data));
                    }
                    else if (r == ChunkedDecoder.Result.Trailer)
                    {
                        trailers.Add(Encoding.ASCII.GetString(data));
                    }
                    else
                    {
                        done = true;
                        break;
                    }
                }
                buffer = buffer[consumed..];
            }
            Assert.True(done, $"split {split}");
            Assert.Equal("hello world", body.ToString());
            Assert.Equal(["x-t: 1"], trailers);
        }
    }

    [Theory]
    [InlineData("zz\r\n")]
    [InlineData("5\r\nhelloXX")]
    [InlineData("5\nhello\r\n")]
    public void Chunked_RejectsBadFraming(string wire)
    {
        var decoder = new ChunkedDecoder();
        int consumed = 0;
        ChunkedDecoder.Result r;
        do
        {
            r = decoder.Decode(Encoding.ASCII.GetBytes(wire), ref consumed, out _);
        }
        while (r == ChunkedDecoder.Result.Data);
        Assert.Equal(ChunkedDecoder.Result.Error, r);
    }

    [Fact]
    public void Chunked_BoundsTheSizeLine()
    {
        var decoder = new ChunkedDecoder();
        int consumed = 0;
        Assert.Equal(ChunkedDecoder.Result.Error, decoder.Decode(Encoding.ASCII.GetBytes("1" + new string(';', 5000)), ref consumed, out _));
    }
}
