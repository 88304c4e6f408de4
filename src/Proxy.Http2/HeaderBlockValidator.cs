using System.Buffers.Text;
using Proxy.Http2.Hpack;

namespace Proxy.Http2;

/// <summary>
/// The rules of RFC 9113 §8.1–8.3 that make a message malformed, checked field by field as a block is
/// decoded. A malformed message is a stream error of type PROTOCOL_ERROR (§8.1.1).
/// </summary>
internal struct HeaderBlockValidator
{
    [Flags]
    private enum Pseudo : byte
    {
        None = 0,
        Method = 1,
        Scheme = 2,
        Authority = 4,
        Path = 8,
        Status = 16,
    }

    private Http2HeaderBlockKind _kind;
    private Pseudo _seen;
    private bool _regularSeen;
    private bool _isConnect;
    private bool _pathEmpty;
    private int _fieldsLeft;

    public string? Error { get; private set; }
    /// <summary>The response's :status, or 0.</summary>
    public int Status { get; private set; }
    /// <summary>content-length, or -1 when absent.</summary>
    public long ContentLength { get; private set; }
    public bool IsHeadRequest { get; private set; }

    /// <param name="maxFields">Fields the block may hold (a local limit: Envoy's max_headers_count).</param>
    public void Begin(Http2HeaderBlockKind kind, int maxFields = int.MaxValue)
    {
        this = default;
        _kind = kind;
        _fieldsLeft = maxFields;
        ContentLength = -1;
    }

    public bool IsMalformed => Error != null;

    /// <summary>
    /// Checks one field; returns false (and sets <see cref="Error"/>) when it makes the message malformed.
    /// <paramref name="octetsChecked"/>: the name's and value's octets are known to pass §8.2.1 (a table
    /// entry checked before), so only the rules about which fields may appear where are applied.
    /// </summary>
    public bool Check(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, bool octetsChecked = false)
    {
        if (--_fieldsLeft < 0)
        {
            return Fail("more header fields than allowed (max_headers_count)");
        }
        if ((uint)(staticIndex - 1) < HpackStaticTable.Count)
        {
            // The name is static entry staticIndex's (the decoder says so): known without comparing it.
            if (staticIndex <= HpackStaticTable.LastPseudoHeader)
            {
                return CheckPseudo(PseudoOfStaticName(staticIndex), value, octetsChecked);
            }
            _regularSeen = true;
            if (!octetsChecked && !CheckValue(value))
            {
                return false;
            }
            return staticIndex switch
            {
                HpackStaticTable.ContentLength => CheckContentLength(value),
                HpackStaticTable.TransferEncoding => Fail("connection-specific field"), // §8.2.2
                _ => true,
            };
        }
        if (name.IsEmpty)
        {
            return Fail("empty field name");
        }
        if (name[0] == (byte)':')
        {
            return CheckPseudo(PseudoOfName(name), value, octetsChecked);
        }
        _regularSeen = true;
        if (!octetsChecked)
        {
            if (staticIndex == 0 && !FieldSyntax.IsValidName(name))
            {
                return Fail("field name with an uppercase, separator or non-visible character");
            }
            if (!CheckValue(value))
            {
                return false;
            }
        }
        switch (name.Length)
        {
            case 2 when name.SequenceEqual("te"u8):
                // §8.2.2: TE may appear only with the value "trailers".
                return value.SequenceEqual("trailers"u8) || Fail("te other than \"trailers\"");
            case 7 when name.SequenceEqual("upgrade"u8):
            case 10 when name.SequenceEqual("connection"u8):
            case 10 when name.SequenceEqual("keep-alive"u8):
            case 16 when name.SequenceEqual("proxy-connection"u8):
            case 17 when name.SequenceEqual("transfer-encoding"u8):
                return Fail("connection-specific field"); // §8.2.2
            case 14 when name.SequenceEqual("content-length"u8):
                return CheckContentLength(value);
            default:
                return true;
        }
    }

    private static Pseudo PseudoOfName(ReadOnlySpan<byte> name) => name switch
    {
        _ when name.SequenceEqual(":method"u8) => Pseudo.Method,
        _ when name.SequenceEqual(":scheme"u8) => Pseudo.Scheme,
        _ when name.SequenceEqual(":authority"u8) => Pseudo.Authority,
        _ when name.SequenceEqual(":path"u8) => Pseudo.Path,
        _ when name.SequenceEqual(":status"u8) => Pseudo.Status,
        _ => Pseudo.None,
    };

    /// <summary>RFC 7541 Appendix A: 1 :authority, 2–3 :method, 4–5 :path, 6–7 :scheme, 8–14 :status.</summary>
    private static Pseudo PseudoOfStaticName(int staticIndex) => staticIndex switch
    {
        1 => Pseudo.Authority,
        2 or 3 => Pseudo.Method,
        4 or 5 => Pseudo.Path,
        6 or 7 => Pseudo.Scheme,
        _ => Pseudo.Status,
    };

    private bool CheckPseudo(Pseudo which, ReadOnlySpan<byte> value, bool octetsChecked)
    {
        // §8.3: pseudo-header fields only before regular ones, never in trailers, only those defined.
        if (_regularSeen)
        {
            return Fail("pseudo-header field after a regular field");
        }
        if (_kind == Http2HeaderBlockKind.Trailers)
        {
            return Fail("pseudo-header field in trailers");
        }
        if (which == Pseudo.None)
        {
            return Fail("unknown pseudo-header field");
        }
        bool isResponseField = which == Pseudo.Status;
        if (isResponseField != (_kind == Http2HeaderBlockKind.Response))
        {
            return Fail(isResponseField ? ":status in a request" : "request pseudo-header in a response");
        }
        if ((_seen & which) != 0)
        {
            return Fail("duplicate pseudo-header field");
        }
        _seen |= which;
        if (!octetsChecked && !CheckValue(value))
        {
            return false;
        }
        switch (which)
        {
            case Pseudo.Method:
                _isConnect = value.SequenceEqual("CONNECT"u8);
                IsHeadRequest = value.SequenceEqual("HEAD"u8);
                return !value.IsEmpty || Fail("empty :method");
            case Pseudo.Path:
                _pathEmpty = value.IsEmpty;
                // §8.3.1: the absolute path and query of the target ("*" for OPTIONS): never a relative one.
                return value.IsEmpty || value[0] == (byte)'/' || value.SequenceEqual("*"u8) || Fail(":path is not an absolute path");
            case Pseudo.Authority:
                // §8.3.1: no userinfo in the authority of an http or https URI.
                return value.IndexOf((byte)'@') < 0 || Fail(":authority with userinfo");
            case Pseudo.Status:
                if (value.Length != 3 || !Utf8Parser.TryParse(value, out int status, out int consumed) || consumed != 3 || status < 100)
                {
                    return Fail(":status is not a three-digit code");
                }
                Status = status;
                return true;
            default:
                return true;
        }
    }

    private bool CheckValue(ReadOnlySpan<byte> value)
    {
        if (value.IsEmpty)
        {
            return true;
        }
        if (FieldSyntax.HasNulCrLf(value))
        {
            return Fail("field value with NUL, CR or LF");
        }
        if (FieldSyntax.HasEdgeWhitespace(value))
        {
            return Fail("field value with leading or trailing whitespace");
        }
        return true;
    }

    private bool CheckContentLength(ReadOnlySpan<byte> value)
    {
        if (value.Length > 18 || value.ContainsAnyExceptInRange((byte)'0', (byte)'9')
            || !Utf8Parser.TryParse(value, out long length, out int consumed) || consumed != value.Length)
        {
            return Fail("content-length is not a number");
        }
        if (ContentLength >= 0 && ContentLength != length)
        {
            return Fail("conflicting content-length values");
        }
        ContentLength = length;
        return true;
    }

    /// <summary>Checks what must be present once the whole block is seen (§8.3.1, §8.3.2).</summary>
    public bool Finish(bool endStream)
    {
        if (Error != null)
        {
            return false;
        }
        switch (_kind)
        {
            case Http2HeaderBlockKind.Request:
                if ((_seen & Pseudo.Method) == 0)
                {
                    return Fail("request without :method");
                }
                if (_isConnect)
                {
                    // §8.5: CONNECT carries :authority only.
                    return (_seen & (Pseudo.Scheme | Pseudo.Path)) != 0 ? Fail("CONNECT with :scheme or :path")
                        : (_seen & Pseudo.Authority) == 0 ? Fail("CONNECT without :authority") : true;
                }
                if ((_seen & (Pseudo.Scheme | Pseudo.Path)) != (Pseudo.Scheme | Pseudo.Path))
                {
                    return Fail("request without :scheme or :path");
                }
                return !_pathEmpty || Fail("empty :path");
            case Http2HeaderBlockKind.Response:
                if ((_seen & Pseudo.Status) == 0)
                {
                    return Fail("response without :status");
                }
                if (Status == 101)
                {
                    return Fail("101 Switching Protocols is not allowed in HTTP/2"); // §8.6
                }
                // §8.1: an informational response cannot end the stream.
                return Status >= 200 || !endStream || Fail("1xx response with END_STREAM");
            default:
                // §8.1: trailers MUST end the stream.
                return endStream || Fail("trailer block without END_STREAM");
        }
    }

    private bool Fail(string error)
    {
        Error ??= error;
        return false;
    }
}
