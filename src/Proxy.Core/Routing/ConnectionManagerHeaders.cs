using System.Buffers;
using System.Net;
using Proxy.Core.Transport.Tls;
using Proxy.Http2;

namespace Proxy.Core.Routing;

/// <summary>Envoy's server_header_transformation.</summary>
public enum ServerHeaderTransformation
{
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// <summary>
/// The headers Envoy's HTTP connection manager and router write, with Envoy's defaults: x-request-id
/// (generate_request_id: a random UUID v4 when absent; an edge proxy, use_remote_address, replaces a
/// client's unless preserve_external_request_id), x-forwarded-for (use_remote_address appends the peer's
/// address unless skip_xff_append), x-forwarded-proto (set when absent; an edge overwrites it), via
/// (appended both ways), the response's server header (server_name, "envoy"; overwritten, added if
/// absent, or passed through) and x-envoy-upstream-service-time (the router's; suppress_envoy_headers
/// drops it). Listeners from a bootstrap or xDS get these; the quick --listen mode has none.
/// </summary>
/// <summary>forward_client_cert_details: what happens to x-forwarded-client-cert.</summary>
public enum ForwardClientCertDetails : byte
{
    /// <summary>Removed (Envoy's default).</summary>
    Sanitize,
    /// <summary>Forwarded as received when the client connection is mutual TLS, else removed.</summary>
    ForwardOnly,
    /// <summary>With mutual TLS, this hop's element is appended; else removed.</summary>
    AppendForward,
    /// <summary>With mutual TLS, replaced by this hop's element; else removed.</summary>
    SanitizeSet,
    /// <summary>Forwarded as received, always.</summary>
    AlwaysForwardOnly,
}

public sealed class ConnectionManagerHeaders
{
    public ForwardClientCertDetails ForwardClientCert { get; init; }
    public ClientCertDetails CurrentClientCert { get; init; }

    public static ConnectionManagerHeaders Envoy { get; } = new();

    public bool UseRemoteAddress { get; init; }
    public int XffNumTrustedHops { get; init; }
    public bool SkipXffAppend { get; init; }
    public bool GenerateRequestId { get; init; } = true;
    public bool PreserveExternalRequestId { get; init; }
    public bool AlwaysSetRequestIdInResponse { get; init; }
    public byte[]? Via { get; init; }
    public byte[] ServerName { get; init; } = "envoy"u8.ToArray();
    public ServerHeaderTransformation ServerHeader { get; init; }

    /// <summary>x-envoy-upstream-service-time on proxied responses (the router's suppress_envoy_headers turns it off).</summary>
    public bool UpstreamServiceTime { get; init; } = true;

    /// <summary>
    /// Envoy's trusted client address (RBAC's remote_ip, the logs' downstream remote address), from the
    /// request as it arrived: with use_remote_address false, the (N+1)th address from the right of
    /// x-forwarded-for (N = xff_num_trusted_hops; the rightmost by default); with it true, the peer, or
    /// for N &gt; 0 the Nth from the right. Too few addresses (or none valid there): the peer.
    /// </summary>
    public IPEndPoint? ClientAddress(HeaderList headers, IPEndPoint? peer)
    {
        int fromRight = UseRemoteAddress ? XffNumTrustedHops - 1 : XffNumTrustedHops;
        if (fromRight < 0)
        {
            return peer;
        }
        // Every x-forwarded-for field, in order, as one list.
        int seen = 0;
        for (int i = headers.Count - 1; i >= 0; i--)
        {
            if (!headers.Name(i).SequenceEqual("x-forwarded-for"u8))
            {
                continue;
            }
            ReadOnlySpan<byte> value = headers.Value(i);
            while (!value.IsEmpty)
            {
                int comma = value.LastIndexOf((byte)',');
                ReadOnlySpan<byte> entry = (comma < 0 ? value : value.Slice(comma + 1)).Trim((byte)' ');
                value = comma < 0 ? default : value.Slice(0, comma);
                if (seen++ == fromRight)
                {
                    Span<char> text = stackalloc char[64];
                    if (entry.Length <= text.Length && System.Text.Encoding.ASCII.GetChars(entry, text) is var n
                        && IPAddress.TryParse(text.Slice(0, n), out IPAddress? address))
                    {
                        return new IPEndPoint(address, 0);
                    }
                    return peer;
                }
            }
        }
        return peer;
    }

    /// <summary>Writes the request side: x-forwarded-for/-proto, x-request-id, via.</summary>
    public void ApplyToRequest(HeaderList headers, EndPoint? remote, Transport.Tls.TlsSession? tls = null)
    {
        ReadOnlySpan<byte> scheme = tls != null ? "https"u8 : "http"u8;
        if (UseRemoteAddress)
        {
            if (!SkipXffAppend && remote is IPEndPoint peer)
            {
                AppendXff(headers, peer.Address);
            }
            Set(headers, "x-forwarded-proto"u8, scheme);
        }
        else if (headers.IndexOf("x-forwarded-proto"u8) < 0)
        {
            headers.Add("x-forwarded-proto"u8, scheme);
        }
        ApplyClientCert(headers, tls);
        if (GenerateRequestId)
        {
            int existing = headers.IndexOf("x-request-id"u8);
            if (existing < 0 || headers.Value(existing).IsEmpty || (UseRemoteAddress && !PreserveExternalRequestId))
            {
                Span<byte> id = stackalloc byte[36];
                NewUuid(id);
                Set(headers, "x-request-id"u8, id);
            }
        }
        if (Via != null)
        {
            AppendListValue(headers, "via"u8, Via);
        }
    }

    /// <summary>x-forwarded-client-cert as forward_client_cert_details says (Envoy's rules; mutual TLS: the peer sent a certificate).</summary>
    private void ApplyClientCert(HeaderList headers, Transport.Tls.TlsSession? tls)
    {
        ForwardClientCertDetails mode = ForwardClientCert;
        if (mode == ForwardClientCertDetails.AlwaysForwardOnly)
        {
            return;
        }
        bool mutual = tls?.PeerCertificate != null;
        int index = headers.IndexOf("x-forwarded-client-cert"u8);
        if (!mutual || mode == ForwardClientCertDetails.Sanitize)
        {
            Remove(headers, "x-forwarded-client-cert"u8);
            return;
        }
        if (mode == ForwardClientCertDetails.ForwardOnly)
        {
            return;
        }
        byte[] element = tls!.ClientCertElement(CurrentClientCert);
        if (mode == ForwardClientCertDetails.SanitizeSet || index < 0 || headers.Value(index).IsEmpty)
        {
            Set(headers, "x-forwarded-client-cert"u8, element);
            return;
        }
        // APPEND_FORWARD: the elements of earlier hops, then this one's, separated by a comma.
        ReadOnlySpan<byte> existing = headers.Value(index);
        int length = existing.Length + 1 + element.Length;
        byte[] joined = ArrayPool<byte>.Shared.Rent(length);
        existing.CopyTo(joined);
        joined[existing.Length] = (byte)',';
        element.CopyTo(joined.AsSpan(existing.Length + 1));
        Set(headers, "x-forwarded-client-cert"u8, joined.AsSpan(0, length));
        ArrayPool<byte>.Shared.Return(joined);
    }

    private static void Remove(HeaderList headers, ReadOnlySpan<byte> name)
    {
        int index;
        while ((index = headers.IndexOf(name)) >= 0)
        {
            headers.RemoveAt(index);
        }
    }

    /// <summary>
    /// Writes the response side: server, via, x-request-id (when asked always), and for a proxied response
    /// x-envoy-upstream-service-time (<paramref name="upstreamMs"/>; negative: a local reply).
    /// </summary>
    public void ApplyToResponse(HeaderList headers, HeaderList request, long upstreamMs)
    {
        switch (ServerHeader)
        {
            case ServerHeaderTransformation.Overwrite:
                Set(headers, "server"u8, ServerName);
                break;
            case ServerHeaderTransformation.AppendIfAbsent when headers.IndexOf("server"u8) < 0:
                headers.Add("server"u8, ServerName);
                break;
        }
        if (upstreamMs >= 0 && UpstreamServiceTime)
        {
            Span<byte> digits = stackalloc byte[20];
            System.Buffers.Text.Utf8Formatter.TryFormat(upstreamMs, digits, out int n);
            Set(headers, "x-envoy-upstream-service-time"u8, digits.Slice(0, n));
        }
        if (AlwaysSetRequestIdInResponse && request.IndexOf("x-request-id"u8) is var id and >= 0 && headers.IndexOf("x-request-id"u8) < 0)
        {
            headers.Add("x-request-id"u8, request.Value(id));
        }
        if (Via != null)
        {
            AppendListValue(headers, "via"u8, Via);
        }
    }

    private static void Set(HeaderList headers, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        int index = headers.IndexOf(name);
        if (index < 0)
        {
            headers.Add(name, value);
            return;
        }
        headers.SetValue(index, value);
        // A repeated field keeps only the one written.
        while ((index = IndexAfter(headers, name, index)) >= 0)
        {
            headers.RemoveAt(index);
        }
    }

    private static int IndexAfter(HeaderList headers, ReadOnlySpan<byte> name, int after)
    {
        for (int i = after + 1; i < headers.Count; i++)
        {
            if (headers.Name(i).SequenceEqual(name))
            {
                return i;
            }
        }
        return -1;
    }

    private static void AppendXff(HeaderList headers, IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }
        Span<byte> text = stackalloc byte[64];
        if (!address.TryFormat(text, out int written))
        {
            return;
        }
        AppendListValue(headers, "x-forwarded-for"u8, text.Slice(0, written));
    }

    /// <summary>Appends to a comma-separated header ("a, b"), or adds it.</summary>
    private static void AppendListValue(HeaderList headers, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        int index = headers.IndexOf(name);
        if (index < 0 || headers.Value(index).IsEmpty)
        {
            Set(headers, name, value);
            return;
        }
        ReadOnlySpan<byte> existing = headers.Value(index);
        int length = existing.Length + 2 + value.Length;
        byte[]? rented = length > 512 ? ArrayPool<byte>.Shared.Rent(length) : null;
        Span<byte> joined = rented ?? stackalloc byte[512];
        existing.CopyTo(joined);
        ", "u8.CopyTo(joined.Slice(existing.Length));
        value.CopyTo(joined.Slice(existing.Length + 2));
        headers.SetValue(index, joined.Slice(0, length));
        if (rented != null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>A random (version 4) UUID, lower-case hex with dashes, into 36 octets. Not for secrets: Random.Shared is fast, not cryptographic, as Envoy's is.</summary>
    public static void NewUuid(Span<byte> destination)
    {
        Span<byte> bits = stackalloc byte[16];
        Random.Shared.NextBytes(bits);
        bits[6] = (byte)((bits[6] & 0x0F) | 0x40);
        bits[8] = (byte)((bits[8] & 0x3F) | 0x80);
        ReadOnlySpan<byte> hex = "0123456789abcdef"u8;
        int o = 0;
        for (int i = 0; i < 16; i++)
        {
            if (i is 4 or 6 or 8 or 10)
            {
                destination[o++] = (byte)'-';
            }
            destination[o++] = hex[bits[i] >> 4];
            destination[o++] = hex[bits[i] & 0xF];
        }
    }
}
