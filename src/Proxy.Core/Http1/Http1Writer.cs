using System.Buffers;
using System.Buffers.Text;
using Proxy.Http2;
using Proxy.Http2.Hpack;

namespace Proxy.Core.Http1;

/// <summary>Writes HTTP/1.1 message heads and chunk framing into an <see cref="IBufferWriter{T}"/>.</summary>
internal static class Http1Writer
{
    public static void Write(IBufferWriter<byte> output, ReadOnlySpan<byte> bytes)
    {
        Span<byte> span = output.GetSpan(bytes.Length);
        bytes.CopyTo(span);
        output.Advance(bytes.Length);
    }

    public static void WriteNumber(IBufferWriter<byte> output, long value)
    {
        Span<byte> span = output.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out int written);
        output.Advance(written);
    }

    /// <summary>"HTTP/1.1 {status} {reason}\r\n" for a status of our own.</summary>
    public static void WriteStatusLine(IBufferWriter<byte> output, int status)
    {
        Span<byte> digits = stackalloc byte[3];
        Utf8Formatter.TryFormat(status, digits, out int n);
        WriteStatusLine(output, digits.Slice(0, n));
    }

    public static void WriteStatusLine(IBufferWriter<byte> output, ReadOnlySpan<byte> status)
    {
        Write(output, "HTTP/1.1 "u8);
        Write(output, status);
        Write(output, " "u8);
        Write(output, ReasonPhrase(status));
        Write(output, "\r\n"u8);
    }

    /// <summary>Every regular field of <paramref name="fields"/> as "name: value" lines; pseudo-headers and hop-by-hop fields are left out.</summary>
    public static void WriteFields(IBufferWriter<byte> output, HeaderList fields, bool skipHost = false)
    {
        // One reservation for the whole block, then plain copies.
        // ListSize counts each field's octets plus 32 (RFC 9113 §6.5.2); a line takes its octets plus 4.
        long total = fields.ListSize - (HpackDynamicTable.EntryOverhead - 4) * (long)fields.Count;
        Span<byte> span = output.GetSpan(checked((int)total));
        int pos = 0;
        for (int i = 0; i < fields.Count; i++)
        {
            ReadOnlySpan<byte> name = fields.Name(i);
            if (name.IsEmpty || name[0] == (byte)':' || IsHopByHop(name) || (skipHost && name.SequenceEqual("host"u8)))
            {
                continue;
            }
            ReadOnlySpan<byte> value = fields.Value(i);
            name.CopyTo(span.Slice(pos));
            pos += name.Length;
            span[pos++] = (byte)':';
            span[pos++] = (byte)' ';
            value.CopyTo(span.Slice(pos));
            pos += value.Length;
            span[pos++] = (byte)'\r';
            span[pos++] = (byte)'\n';
        }
        output.Advance(pos);
    }

    public static void WriteField(IBufferWriter<byte> output, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        Span<byte> span = output.GetSpan(name.Length + value.Length + 4);
        name.CopyTo(span);
        span[name.Length] = (byte)':';
        span[name.Length + 1] = (byte)' ';
        value.CopyTo(span.Slice(name.Length + 2));
        span[name.Length + 2 + value.Length] = (byte)'\r';
        span[name.Length + 3 + value.Length] = (byte)'\n';
        output.Advance(name.Length + value.Length + 4);
    }

    public static void WriteChunk(IBufferWriter<byte> output, in ReadOnlySequence<byte> data)
    {
        Span<byte> span = output.GetSpan(18 + (int)data.Length + 2);
        Utf8Formatter.TryFormat((ulong)data.Length, span, out int n, new StandardFormat('x'));
        span[n++] = (byte)'\r';
        span[n++] = (byte)'\n';
        data.CopyTo(span.Slice(n));
        n += (int)data.Length;
        span[n++] = (byte)'\r';
        span[n++] = (byte)'\n';
        output.Advance(n);
    }

    public static void WriteData(IBufferWriter<byte> output, in ReadOnlySequence<byte> data)
    {
        foreach (ReadOnlyMemory<byte> segment in data)
        {
            Write(output, segment.Span);
        }
    }

    /// <summary>Fields that describe one hop only (RFC 9110 §7.6.1), plus HTTP/2's te.</summary>
    public static bool IsHopByHop(ReadOnlySpan<byte> name) => name.Length switch
    {
        2 => name.SequenceEqual("te"u8),
        7 => name.SequenceEqual("upgrade"u8),
        10 => name.SequenceEqual("connection"u8) || name.SequenceEqual("keep-alive"u8),
        16 => name.SequenceEqual("proxy-connection"u8),
        17 => name.SequenceEqual("transfer-encoding"u8),
        _ => false,
    };

    public static int ParseStatus(ReadOnlySpan<byte> status) =>
        Utf8Parser.TryParse(status, out int code, out int consumed) && consumed == status.Length ? code : 0;

    private static ReadOnlySpan<byte> ReasonPhrase(ReadOnlySpan<byte> status) => ParseStatus(status) switch
    {
        100 => "Continue"u8,
        200 => "OK"u8,
        201 => "Created"u8,
        204 => "No Content"u8,
        206 => "Partial Content"u8,
        301 => "Moved Permanently"u8,
        302 => "Found"u8,
        304 => "Not Modified"u8,
        400 => "Bad Request"u8,
        401 => "Unauthorized"u8,
        403 => "Forbidden"u8,
        404 => "Not Found"u8,
        405 => "Method Not Allowed"u8,
        408 => "Request Timeout"u8,
        413 => "Content Too Large"u8,
        417 => "Expectation Failed"u8,
        426 => "Upgrade Required"u8,
        429 => "Too Many Requests"u8,
        431 => "Request Header Fields Too Large"u8,
        500 => "Internal Server Error"u8,
        501 => "Not Implemented"u8,
        502 => "Bad Gateway"u8,
        503 => "Service Unavailable"u8,
        504 => "Gateway Timeout"u8,
        505 => "HTTP Version Not Supported"u8,
        _ => ""u8,
    };
}
