using System.Buffers;
using System.Buffers.Text;
using System.Runtime.CompilerServices;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text;
using Proxy.Http2;

namespace Proxy.Core.Http1;

/// <summary>How a message body is delimited (RFC 9112 §6).</summary>
public enum BodyFraming : byte
{
    None,
    ContentLength,
    Chunked,
    /// <summary>Response only: the body runs until the connection closes.</summary>
    UntilClose,
}

/// <summary>Why a message head was refused; the status is what a server answers.</summary>
public readonly record struct Http1Error(int Status, string Reason);

/// <summary>
/// HTTP/1.1 message heads (RFC 9112), parsed into the HTTP/2 field form the proxy works in: pseudo-header
/// fields first, names lowercased, hop-by-hop fields removed. Strict where the RFC lets a recipient be:
/// no obsolete line folding, no whitespace before the colon, no conflicting framing.
/// </summary>
public static class Http1Parser
{
    public const int DefaultMaxHeadSize = 64 * 1024;

    /// <summary>Envoy's default max_headers_count: field lines in one head.</summary>
    public const int DefaultMaxHeadersCount = 100;

    /// <summary>
    /// Options the Connection fields of one head may list (RFC 9110 §7.6.1). Each names fields to remove, so
    /// the bound keeps that work in proportion to the head; no client needs more than a few.
    /// </summary>
    public const int MaxConnectionOptions = 64;

    private static readonly SearchValues<byte> s_tokenChars = SearchValues.Create("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"u8);
    // RFC 9110 §5.5: a field value is VCHAR, obs-text, SP and HTAB; every other control character is refused.
    private static readonly SearchValues<byte> s_invalidValueChars = SearchValues.Create(
        [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
         0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F, 0x7F]);

    // tchar (RFC 9110 §5.6.2) -> its lowercase; 0 for every other octet.
    private static readonly byte[] s_lowerToken = BuildLowerToken();

    // RFC 3986 authority without userinfo: reg-name (unreserved, pct-encoded, sub-delims), IP-literal, port.
    private static readonly SearchValues<byte> s_authorityChars = SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]"u8);

    /// <summary>Whether <paramref name="authority"/> is a non-empty uri-host [ ":" port ] of the characters RFC 3986 allows there.</summary>
    public static bool IsValidAuthority(ReadOnlySpan<byte> authority) => !authority.IsEmpty && !authority.ContainsAnyExcept(s_authorityChars);

    private static byte[] BuildLowerToken()
    {
        var map = new byte[256];
        foreach (byte b in "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"u8)
        {
            map[b] = b;
        }
        for (int b = 'A'; b <= 'Z'; b++)
        {
            map[b] = (byte)(b | 0x20);
        }
        return map;
    }

    /// <summary>Finds the empty line that ends a head; -1 when more bytes are needed.</summary>
    public static int FindHeadEnd(ReadOnlySpan<byte> buffer)
    {
        // The first CRLFCRLF: an LF followed by CRLF, preceded by CR.
        var scanner = new LineFeedScanner(buffer);
        for (int lf = scanner.Next(); lf >= 0; lf = scanner.Next())
        {
            if (lf >= 1 && lf + 2 < buffer.Length && buffer[lf + 2] == (byte)'\n' && buffer[lf + 1] == (byte)'\r' && buffer[lf - 1] == (byte)'\r')
            {
                return lf + 3;
            }
        }
        return -1;
    }

    /// <summary>
    /// Whether a head still waiting for its end holds a line ended by a bare LF. We do not take a lone LF
    /// as a line terminator (RFC 9112 §2.2 lets a recipient choose; two parsers that disagree are how
    /// requests get smuggled), and such a head would otherwise wait for a CRLFCRLF that never comes: the
    /// caller refuses it at once. <paramref name="from"/>: where the bytes not yet checked begin.
    /// </summary>
    public static bool HasBareLf(ReadOnlySpan<byte> buffer, int from)
    {
        while (true)
        {
            int lf = buffer.Slice(from).IndexOf((byte)'\n');
            if (lf < 0)
            {
                return false;
            }
            lf += from;
            if (lf == 0 || buffer[lf - 1] != (byte)'\r')
            {
                return true;
            }
            from = lf + 1;
        }
    }

    public struct RequestHead
    {
        public bool Http10;
        public bool KeepAlive;
        public bool ExpectContinue;
        public bool IsHead;
        /// <summary>A WebSocket upgrade (RFC 6455 §4.1: Upgrade: websocket with Connection: upgrade, no body).</summary>
        public bool WebSocket;
        public BodyFraming Framing;
        public long ContentLength;
    }

    /// <summary>
    /// Parses a whole request head (what <see cref="FindHeadEnd"/> delimited) into <paramref name="fields"/>.
    /// Returns null when valid, else the error to answer with.
    /// </summary>
    public static Http1Error? ParseRequest(ReadOnlySpan<byte> head, HeaderList fields, ref RequestHead request, int maxFields = DefaultMaxHeadersCount)
        => ParseRequest(head, fields, ref request, open: false, maxFields, out _);

    /// <summary>
    /// Finds and parses a request head in one pass over <paramref name="buffer"/>, which may end before the
    /// head does or run on past it. <paramref name="headLength"/>: the head's length with its final CRLFCRLF,
    /// or 0 (and no error) when the buffer ends first. An error in the lines already complete is returned
    /// at once. More than <paramref name="maxFields"/> field lines is 431.
    /// </summary>
    public static Http1Error? TryParseRequest(ReadOnlySpan<byte> buffer, HeaderList fields, ref RequestHead request, out int headLength, int maxFields = DefaultMaxHeadersCount)
        => ParseRequest(buffer, fields, ref request, open: true, maxFields, out headLength);

    private static Http1Error? ParseRequest(ReadOnlySpan<byte> head, HeaderList fields, ref RequestHead request, bool open, int maxFields, out int headLength)
    {
        headLength = 0;
        fields.Clear();
        var lines = new LineFeedScanner(head);
        int lf = lines.Next();
        if (lf < 0 && open)
        {
            return null;
        }
        int lineEnd = lf > 0 && head[lf - 1] == (byte)'\r' ? lf - 1 : -1;
        if (lineEnd <= 0)
        {
            return new Http1Error(400, "bad request line");
        }
        ReadOnlySpan<byte> line = head.Slice(0, lineEnd);
        // request-line = method SP request-target SP HTTP-version (RFC 9112 §3): exactly two spaces.
        int sp1 = line.IndexOf((byte)' ');
        int sp2 = line.LastIndexOf((byte)' ');
        // An extra token puts a space inside the target (checked below, 400); a missing one leaves no version.
        if (sp1 <= 0 || sp2 <= sp1 + 1)
        {
            return new Http1Error(400, "bad request line");
        }
        ReadOnlySpan<byte> method = line.Slice(0, sp1);
        ReadOnlySpan<byte> target = line.Slice(sp1 + 1, sp2 - sp1 - 1);
        ReadOnlySpan<byte> version = line.Slice(sp2 + 1);
        if (method.ContainsAnyExcept(s_tokenChars))
        {
            return new Http1Error(400, "bad method");
        }
        if (version.SequenceEqual("HTTP/1.1"u8))
        {
            request.Http10 = false;
        }
        else if (version.SequenceEqual("HTTP/1.0"u8))
        {
            request.Http10 = true;
        }
        else if (version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5]) && version[6] == (byte)'.' && char.IsAsciiDigit((char)version[7]))
        {
            return new Http1Error(505, "unsupported HTTP version");
        }
        else
        {
            return new Http1Error(400, "bad request line"); // not an HTTP-version (RFC 9112 §2.3)
        }
        // A fragment is never sent (RFC 9112 §3.2: origin-form is a path and query); Envoy refuses it too. No
        // whitespace either: a URI has none (RFC 3986), and a space or HTAB there splits the line differently for others.
        if (target.IsEmpty || (!lines.Clean && target.ContainsAny(s_invalidValueChars)) || target.IndexOfAny((byte)' ', (byte)'\t', (byte)'#') >= 0)
        {
            return new Http1Error(400, "bad request target");
        }
        request.IsHead = method.SequenceEqual("HEAD"u8);
        request.KeepAlive = !request.Http10;

        fields.Add(":method"u8, method);
        fields.Add(":scheme"u8, "http"u8);
        int authorityIndex = fields.Count;
        fields.Add(":authority"u8, default);
        ReadOnlySpan<byte> absoluteAuthority = default;
        if (target[0] != (byte)'/' && target[0] != (byte)'*')
        {
            // absolute-form (RFC 9112 §3.2.2): the authority comes from the target.
            int scheme = target.IndexOf("://"u8);
            if (scheme <= 0)
            {
                if (!method.SequenceEqual("CONNECT"u8))
                {
                    return new Http1Error(400, "bad request target");
                }
                absoluteAuthority = target;
                target = default;
            }
            else
            {
                ReadOnlySpan<byte> rest = target.Slice(scheme + 3);
                int slash = rest.IndexOfAny((byte)'/', (byte)'?');
                absoluteAuthority = slash < 0 ? rest : rest.Slice(0, slash);
                target = slash < 0 ? "/"u8 : rest.Slice(slash);
                if (target[0] == (byte)'?')
                {
                    // "http://h?q": the path is empty and becomes "/" (RFC 9112 §3.2.1).
                    fields.Add(":path"u8, [(byte)'/', .. target]);
                    target = default;
                }
            }
        }
        if (!target.IsEmpty)
        {
            fields.Add(":path"u8, target);
        }

        long contentLength = -1;
        bool chunked = false;
        bool transferEncoding = false;
        ReadOnlySpan<byte> host = default;
        int hostCount = 0;
        bool websocketAsked = false, connectionUpgrade = false;
        Span<byte> lower = stackalloc byte[256];
        // Fields the Connection header names are hop-by-hop too (RFC 9110 §7.6.1): removed below.
        Span<Range> connectionValues = stackalloc Range[8];
        int connectionCount = 0;
        int connectionOptions = 0;
        int pos = lineEnd + 2;
        while (true)
        {
            FieldLineKind kind = NextFieldLine(head, ref lines, ref pos, open, ref maxFields, lower, 400, 431, out int nameLength, out ReadOnlySpan<byte> value, out Http1Error bad);
            if (kind != FieldLineKind.Field)
            {
                if (kind == FieldLineKind.End)
                {
                    break;
                }
                return kind == FieldLineKind.Incomplete ? null : bad;
            }
            ReadOnlySpan<byte> lname = lower.Slice(0, nameLength);
            switch (lname.Length)
            {
                case 4 when lname.SequenceEqual("host"u8):
                    host = value;
                    hostCount++;
                    continue;
                case 2 when lname.SequenceEqual("te"u8):
                    if (Ascii.EqualsIgnoreCase(value, "trailers"u8))
                    {
                        fields.Add("te"u8, "trailers"u8);
                    }
                    continue;
                case 6 when lname.SequenceEqual("expect"u8):
                    if (Ascii.EqualsIgnoreCase(value, "100-continue"u8))
                    {
                        request.ExpectContinue = true;
                        continue;
                    }
                    return new Http1Error(417, "unsupported expectation");
                case 7 when lname.SequenceEqual("upgrade"u8):
                    websocketAsked |= Ascii.EqualsIgnoreCase(value, "websocket"u8);
                    continue;
                case 10 when lname.SequenceEqual("keep-alive"u8):
                case 13 when lname.SequenceEqual("http2-settings"u8):
                case 16 when lname.SequenceEqual("proxy-connection"u8):
                    continue; // hop-by-hop (RFC 9110 §7.6.1; h2c upgrade fields never go upstream, RFC 9113 §3.1)
                case 10 when lname.SequenceEqual("connection"u8):
                    if (IsOnlyKeepAliveOrClose(value, out bool keepAlive))
                    {
                        request.KeepAlive = keepAlive; // the usual value: it names no field to remove
                        continue;
                    }
                    if (connectionCount == connectionValues.Length || (connectionOptions += value.Count((byte)',') + 1) > MaxConnectionOptions)
                    {
                        return new Http1Error(400, "too many connection options");
                    }
                    int offset = (int)Unsafe.ByteOffset(ref MemoryMarshal.GetReference(head), ref MemoryMarshal.GetReference(value));
                    connectionValues[connectionCount++] = new Range(offset, offset + value.Length);
                    if (ContainsToken(value, "close"u8))
                    {
                        request.KeepAlive = false;
                    }
                    else if (ContainsToken(value, "keep-alive"u8))
                    {
                        request.KeepAlive = true;
                    }
                    connectionUpgrade |= ContainsToken(value, "upgrade"u8);
                    continue;
                case 14 when lname.SequenceEqual("content-length"u8):
                    if (!TryParseLength(value, out long length) || (contentLength >= 0 && contentLength != length))
                    {
                        return new Http1Error(400, "bad or conflicting content-length");
                    }
                    contentLength = length;
                    continue;
                case 17 when lname.SequenceEqual("transfer-encoding"u8):
                    // Only "chunked", once, is understood (RFC 9112 §6.3, §7: never chunked twice; a
                    // second field line is a list continued, "chunked, chunked").
                    chunked = !transferEncoding && Ascii.EqualsIgnoreCase(value, "chunked"u8);
                    transferEncoding = true;
                    if (!chunked)
                    {
                        return new Http1Error(501, "unsupported transfer-encoding");
                    }
                    continue;
            }
            fields.Add(lname, value);
        }

        if (transferEncoding && request.Http10)
        {
            // RFC 9112 §6.1: HTTP/1.0 has no chunked coding; a Transfer-Encoding here means a broken or smuggling sender.
            return new Http1Error(400, "transfer-encoding in an HTTP/1.0 request");
        }
        for (int c = 0; c < connectionCount; c++)
        {
            RemoveConnectionOptions(fields, head[connectionValues[c]]);
        }
        if (transferEncoding && contentLength >= 0)
        {
            // RFC 9112 §6.1: both present is a smuggling risk; we refuse rather than guess.
            return new Http1Error(400, "both content-length and transfer-encoding");
        }
        if (hostCount > 1)
        {
            return new Http1Error(400, "more than one host header");
        }
        if (!absoluteAuthority.IsEmpty)
        {
            host = absoluteAuthority;
        }
        else if (hostCount == 0 && !request.Http10)
        {
            return new Http1Error(400, "missing host header"); // RFC 9112 §3.2
        }
        if (host.ContainsAnyExcept(s_authorityChars))
        {
            return new Http1Error(400, "bad host"); // RFC 9112 §3.2: uri-host [ ":" port ], no userinfo
        }
        fields.SetValue(authorityIndex, host);
        request.Framing = chunked ? BodyFraming.Chunked : contentLength > 0 ? BodyFraming.ContentLength : BodyFraming.None;
        request.ContentLength = Math.Max(contentLength, 0);
        if (contentLength >= 0)
        {
            Span<byte> digits = stackalloc byte[20];
            Utf8Formatter.TryFormat(contentLength, digits, out int n);
            fields.Add("content-length"u8, digits.Slice(0, n));
        }
        // The upgrade stays a field (hop-by-hop: the HTTP/1.1 writers skip it) for the connection to act
        // on; without Connection: upgrade, or with a body, Upgrade is only dropped.
        if (websocketAsked && connectionUpgrade && request.Framing == BodyFraming.None && !request.Http10)
        {
            request.WebSocket = true;
            fields.Add("upgrade"u8, "websocket"u8);
        }
        headLength = pos;
        return null;
    }

    public struct ResponseHead
    {
        public int Status;
        public bool KeepAlive;
        public BodyFraming Framing;
        public long ContentLength;
    }

    /// <summary>Parses a whole response head into <paramref name="fields"/> (":status" first). <paramref name="requestWasHead"/> means no body follows.</summary>
    public static Http1Error? ParseResponse(ReadOnlySpan<byte> head, HeaderList fields, bool requestWasHead, ref ResponseHead response, int maxFields = DefaultMaxHeadersCount)
        => ParseResponse(head, fields, requestWasHead, ref response, open: false, maxFields, out _);

    /// <summary>
    /// Finds and parses a response head in one pass, as <see cref="TryParseRequest"/> does a request's:
    /// <paramref name="headLength"/> is 0 (and no error) when the buffer ends before the head.
    /// </summary>
    public static Http1Error? TryParseResponse(ReadOnlySpan<byte> buffer, HeaderList fields, bool requestWasHead, ref ResponseHead response, out int headLength, int maxFields = DefaultMaxHeadersCount)
        => ParseResponse(buffer, fields, requestWasHead, ref response, open: true, maxFields, out headLength);

    private static Http1Error? ParseResponse(ReadOnlySpan<byte> head, HeaderList fields, bool requestWasHead, ref ResponseHead response, bool open, int maxFields, out int headLength)
    {
        headLength = 0;
        fields.Clear();
        var lines = new LineFeedScanner(head);
        int lf = lines.Next();
        if (lf < 0 && open)
        {
            return null;
        }
        int lineEnd = lf > 0 && head[lf - 1] == (byte)'\r' ? lf - 1 : -1;
        // status-line = HTTP-version SP status-code SP [ reason-phrase ]
        if (lineEnd < 12 || !head.StartsWith("HTTP/1."u8) || head[8] != (byte)' ' || head[12] is not ((byte)' ' or (byte)'\r'))
        {
            return new Http1Error(502, "bad status line");
        }
        bool http10 = head[7] == (byte)'0';
        ReadOnlySpan<byte> code = head.Slice(9, 3);
        if (!Utf8Parser.TryParse(code, out int status, out int consumed) || consumed != 3 || status < 100)
        {
            return new Http1Error(502, "bad status code");
        }
        response.Status = status;
        response.KeepAlive = !http10;
        fields.Add(":status"u8, code);

        long contentLength = -1;
        bool chunked = false;
        Span<byte> lower = stackalloc byte[256];
        int pos = lineEnd + 2;
        Span<Range> connectionValues = stackalloc Range[8];
        int connectionCount = 0;
        int connectionOptions = 0;
        while (true)
        {
            FieldLineKind kind = NextFieldLine(head, ref lines, ref pos, open, ref maxFields, lower, 502, 502, out int nameLength, out ReadOnlySpan<byte> value, out Http1Error bad);
            if (kind != FieldLineKind.Field)
            {
                if (kind == FieldLineKind.End)
                {
                    break;
                }
                return kind == FieldLineKind.Incomplete ? null : bad;
            }
            ReadOnlySpan<byte> lname = lower.Slice(0, nameLength);
            switch (lname.Length)
            {
                case 7 when lname.SequenceEqual("upgrade"u8):
                case 10 when lname.SequenceEqual("keep-alive"u8):
                case 16 when lname.SequenceEqual("proxy-connection"u8):
                    continue;
                case 10 when lname.SequenceEqual("connection"u8):
                    if (IsOnlyKeepAliveOrClose(value, out bool keepAlive))
                    {
                        response.KeepAlive = keepAlive; // the usual value: it names no field to remove
                        continue;
                    }
                    if (ContainsToken(value, "close"u8))
                    {
                        response.KeepAlive = false;
                    }
                    else if (ContainsToken(value, "keep-alive"u8))
                    {
                        response.KeepAlive = true;
                    }
                    if (connectionCount == connectionValues.Length || (connectionOptions += value.Count((byte)',') + 1) > MaxConnectionOptions)
                    {
                        return new Http1Error(502, "too many connection options");
                    }
                    int offset = (int)Unsafe.ByteOffset(ref MemoryMarshal.GetReference(head), ref MemoryMarshal.GetReference(value));
                    connectionValues[connectionCount++] = new Range(offset, offset + value.Length);
                    continue;
                case 14 when lname.SequenceEqual("content-length"u8):
                    if (!TryParseLength(value, out long length) || (contentLength >= 0 && contentLength != length))
                    {
                        return new Http1Error(502, "bad or conflicting content-length");
                    }
                    contentLength = length;
                    fields.Add(lname, value);
                    continue;
                case 17 when lname.SequenceEqual("transfer-encoding"u8):
                    chunked = Ascii.EqualsIgnoreCase(LastToken(value), "chunked"u8);
                    continue;
            }
            fields.Add(lname, value);
        }

        for (int c = 0; c < connectionCount; c++)
        {
            // Fields the Connection header names are hop-by-hop (RFC 9110 §7.6.1): not passed on.
            RemoveConnectionOptions(fields, head[connectionValues[c]]);
        }
        bool noBody = requestWasHead || status is 204 or 304 || status < 200;
        if (noBody)
        {
            response.Framing = BodyFraming.None;
        }
        else if (chunked)
        {
            response.Framing = BodyFraming.Chunked; // chunked wins over content-length (RFC 9112 §6.3)
            int cl = fields.IndexOf("content-length"u8);
            if (cl >= 0)
            {
                fields.RemoveAt(cl);
            }
        }
        else if (contentLength >= 0)
        {
            response.Framing = contentLength == 0 ? BodyFraming.None : BodyFraming.ContentLength;
        }
        else
        {
            response.Framing = BodyFraming.UntilClose;
            response.KeepAlive = false;
        }
        response.ContentLength = Math.Max(contentLength, 0);
        headLength = pos;
        return null;
    }

    /// <summary>
    /// One field line: name ":" OWS value OWS (RFC 9112 §5). No obsolete line folding (§5.2), no
    /// whitespace before the colon (§5.1), a token name, no control characters in the value. The line is the
    /// first <paramref name="lineLength"/> octets of <paramref name="rest"/> (the octets after it may be read,
    /// never taken). The name is lowercased into <paramref name="lower"/>. <paramref name="status"/> is what a
    /// failure answers with. <paramref name="checkValue"/>: whether the value may hold control characters
    /// (false when the scanner found the line clean).
    /// </summary>
    private static Http1Error? ParseFieldLine(ReadOnlySpan<byte> rest, int lineLength, scoped Span<byte> lower, int status, bool checkValue, out int nameLength, out ReadOnlySpan<byte> value)
    {
        ReadOnlySpan<byte> fieldLine = rest.Slice(0, lineLength);
        int colon = LowerShortName(rest, lineLength, lower);
        if (colon < 0)
        {
            nameLength = 0;
            value = default;
            if (fieldLine[0] is (byte)' ' or (byte)'\t')
            {
                return new Http1Error(status, "obsolete line folding");
            }
            // The name, checked and lowercased in one pass: token characters up to the colon.
            ref byte map = ref MemoryMarshal.GetArrayDataReference(s_lowerToken); // 256 entries: any octet indexes it
            ref byte line = ref MemoryMarshal.GetReference(fieldLine);
            ref byte lowered = ref MemoryMarshal.GetReference(lower);
            colon = 0;
            while (colon < fieldLine.Length && Unsafe.Add(ref map, Unsafe.Add(ref line, colon)) is byte l and not 0)
            {
                if (colon == lower.Length)
                {
                    return new Http1Error(status, "bad header name");
                }
                Unsafe.Add(ref lowered, colon++) = l; // colon < lower.Length
            }
            if (colon == fieldLine.Length || fieldLine[colon] != (byte)':' || colon == 0)
            {
                return new Http1Error(status, fieldLine.IndexOf((byte)':') <= 0 ? "bad header line" : "bad header name");
            }
        }
        value = TrimOws(fieldLine.Slice(colon + 1));
        if (checkValue && value.ContainsAny(s_invalidValueChars))
        {
            nameLength = 0;
            return new Http1Error(status, "bad header value");
        }
        nameLength = colon;
        return null;
    }

    /// <summary>
    /// A name of up to fifteen token characters and its colon, checked and lowercased sixteen octets at a
    /// time: the length of the name, or -1 for the octet-by-octet loop (a longer name, a line near the end of
    /// the buffer, or anything it must refuse, which the loop then explains).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LowerShortName(ReadOnlySpan<byte> rest, int lineLength, scoped Span<byte> lower)
    {
        if (!Ssse3.IsSupported || rest.Length < 16 || lower.Length < 16)
        {
            return -1;
        }
        Vector128<byte> octets = Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(rest));
        uint colons = Vector128.Equals(octets, Vector128.Create((byte)':')).ExtractMostSignificantBits();
        int colon = BitOperations.TrailingZeroCount(colons | 0x10000); // 16 when none
        if (colon >= lineLength || colon is 0 or 16)
        {
            return -1;
        }
        // tchar (RFC 9110 §5.6.2) by nibbles: a bit per high nibble 2..7, set in the low nibble's entry
        // when that octet is a token character.
        Vector128<byte> low = Ssse3.Shuffle(
            Vector128.Create((byte)0x3A, 0x3F, 0x3E, 0x3F, 0x3F, 0x3F, 0x3F, 0x3F, 0x3E, 0x3E, 0x3D, 0x15, 0x34, 0x15, 0x3D, 0x1C),
            octets & Vector128.Create((byte)0x0F));
        Vector128<byte> high = Ssse3.Shuffle(
            Vector128.Create((byte)0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
            Vector128.ShiftRightLogical(octets.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
        uint notTokens = Vector128.Equals(low & high, Vector128<byte>.Zero).ExtractMostSignificantBits();
        if ((notTokens & ((1u << colon) - 1)) != 0)
        {
            return -1;
        }
        Vector128<byte> upper = Vector128.LessThan(octets - Vector128.Create((byte)'A'), Vector128.Create((byte)26));
        (octets | (upper & Vector128.Create((byte)0x20))).StoreUnsafe(ref MemoryMarshal.GetReference(lower));
        return colon;
    }

    /// <summary>Optional whitespace (RFC 9110 §5.6.3: SP and HTAB) trimmed from both ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySpan<byte> TrimOws(ReadOnlySpan<byte> value)
    {
        ref byte first = ref MemoryMarshal.GetReference(value);
        int start = 0;
        int end = value.Length;
        while (start < end && IsOws(Unsafe.Add(ref first, start)))
        {
            start++;
        }
        while (end > start && IsOws(Unsafe.Add(ref first, end - 1)))
        {
            end--;
        }
        return MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref first, start), end - start); // 0 <= start <= end <= length

        static bool IsOws(byte b) => b == (byte)' ' || b == (byte)'\t';
    }

    private enum FieldLineKind : byte
    {
        Field,
        /// <summary>The empty line that ends the head (or, for a head given whole, its end).</summary>
        End,
        /// <summary>No LF follows: the head is not all here yet.</summary>
        Incomplete,
        /// <summary>The line makes the head invalid: the error says how.</summary>
        Error,
    }

    /// <summary>
    /// The next field line of a head, parsed (<see cref="ParseFieldLine"/>), and <paramref name="pos"/> moved
    /// past it. A bare LF is <paramref name="status"/>; more field lines than <paramref name="fieldsLeft"/>
    /// allows is <paramref name="tooManyStatus"/> (max_headers_count, answered as Envoy does; with
    /// <see cref="MaxConnectionOptions"/> it also bounds the work of removing the fields a Connection
    /// header names).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FieldLineKind NextFieldLine(ReadOnlySpan<byte> head, scoped ref LineFeedScanner lines, scoped ref int pos, bool open, scoped ref int fieldsLeft,
        scoped Span<byte> lower, int status, int tooManyStatus, out int nameLength, out ReadOnlySpan<byte> value, out Http1Error error)
    {
        nameLength = 0;
        value = default;
        error = default;
        if (pos == head.Length && !open)
        {
            return FieldLineKind.End; // a head given without its final empty line
        }
        int lineStart = pos;
        LineStatus next = NextLine(head, ref lines, ref pos, open, out ReadOnlySpan<byte> fieldLine);
        if (next == LineStatus.Incomplete)
        {
            return FieldLineKind.Incomplete;
        }
        if (next == LineStatus.BareLf)
        {
            error = new Http1Error(status, "bare LF in the head");
            return FieldLineKind.Error;
        }
        if (fieldLine.IsEmpty)
        {
            return FieldLineKind.End;
        }
        if (--fieldsLeft < 0)
        {
            error = new Http1Error(tooManyStatus, "too many header fields");
            return FieldLineKind.Error;
        }
        if (ParseFieldLine(head.Slice(lineStart), fieldLine.Length, lower, status, !lines.Clean, out nameLength, out value) is Http1Error bad)
        {
            error = bad;
            return FieldLineKind.Error;
        }
        return FieldLineKind.Field;
    }

    private enum LineStatus : byte
    {
        Line,
        /// <summary>No LF follows: the head is not all here yet.</summary>
        Incomplete,
        /// <summary>A line ended by an LF without its CR, never a terminator here (see <see cref="HasBareLf"/>).</summary>
        BareLf,
    }

    /// <summary>
    /// The line at <paramref name="pos"/>, without its CRLF, and <paramref name="pos"/> moved past it. When
    /// no LF follows, the rest of a closed head is its last line; an open buffer is incomplete.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static LineStatus NextLine(ReadOnlySpan<byte> head, scoped ref LineFeedScanner lines, scoped ref int pos, bool open, out ReadOnlySpan<byte> line)
    {
        int lf = lines.Next();
        if (lf < 0)
        {
            line = open ? default : head.Slice(pos);
            pos = open ? pos : head.Length;
            return open ? LineStatus.Incomplete : LineStatus.Line;
        }
        if (lf == pos || head[lf - 1] != (byte)'\r')
        {
            line = default;
            return LineStatus.BareLf;
        }
        line = head.Slice(pos, lf - 1 - pos);
        pos = lf + 1;
        return LineStatus.Line;
    }

    /// <summary>Removes the fields a Connection header names (its connection options), but never the pseudo-headers.</summary>
    private static void RemoveConnectionOptions(HeaderList fields, ReadOnlySpan<byte> value)
    {
        Span<byte> lower = stackalloc byte[64];
        foreach (Range part in value.Split((byte)','))
        {
            ReadOnlySpan<byte> token = TrimOws(value[part]);
            if (token.IsEmpty || token.Length > lower.Length)
            {
                continue;
            }
            Ascii.ToLower(token, lower, out int n);
            ReadOnlySpan<byte> name = lower.Slice(0, n);
            if (name.SequenceEqual("close"u8) || name.SequenceEqual("keep-alive"u8) || name.SequenceEqual("te"u8))
            {
                continue; // options of the connection itself, already acted on
            }
            for (int i = fields.Count - 1; i >= 0; i--)
            {
                if (fields.Name(i).SequenceEqual(name) && fields.Name(i)[0] != (byte)':')
                {
                    fields.RemoveAt(i);
                }
            }
        }
    }

    /// <summary>A field line of a chunked trailer section, checked like a header field line.</summary>
    internal static Http1Error? ParseTrailerLine(ReadOnlySpan<byte> fieldLine, scoped Span<byte> lower, out int nameLength, out ReadOnlySpan<byte> value)
    {
        if (fieldLine.IsEmpty)
        {
            nameLength = 0;
            value = default;
            return new Http1Error(400, "bad trailer field");
        }
        return ParseFieldLine(fieldLine, fieldLine.Length, lower, 400, checkValue: true, out nameLength, out value);
    }

    private static bool TryParseLength(ReadOnlySpan<byte> value, out long length)
    {
        length = 0;
        return value.Length is > 0 and <= 18 && !value.ContainsAnyExceptInRange((byte)'0', (byte)'9')
               && Utf8Parser.TryParse(value, out length, out int consumed) && consumed == value.Length;
    }

    private static ReadOnlySpan<byte> LastToken(ReadOnlySpan<byte> value)
    {
        int comma = value.LastIndexOf((byte)',');
        ReadOnlySpan<byte> last = comma < 0 ? value : value.Slice(comma + 1);
        last = TrimOws(last);
        return last;
    }

    /// <summary>A Connection value that is just "keep-alive" or "close" (any case): <paramref name="keepAlive"/> says which.</summary>
    private static bool IsOnlyKeepAliveOrClose(ReadOnlySpan<byte> value, out bool keepAlive)
    {
        keepAlive = value.Length == 10;
        return (value.Length == 10 && Ascii.EqualsIgnoreCase(value, "keep-alive"u8)) || (value.Length == 5 && Ascii.EqualsIgnoreCase(value, "close"u8));
    }

    private static bool ContainsToken(ReadOnlySpan<byte> value, ReadOnlySpan<byte> token)
    {
        while (!value.IsEmpty)
        {
            int comma = value.IndexOf((byte)',');
            ReadOnlySpan<byte> item = TrimOws(comma < 0 ? value : value.Slice(0, comma));
            if (Ascii.EqualsIgnoreCase(item, token))
            {
                return true;
            }
            value = comma < 0 ? default : value.Slice(comma + 1);
        }
        return false;
    }
}
