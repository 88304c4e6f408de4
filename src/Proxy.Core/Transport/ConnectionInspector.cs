using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Proxy.Core.Transport;

/// <summary>
/// Envoy's tls_inspector and http_inspector: what the first octets of a connection say, read with
/// MSG_PEEK so that whoever serves the connection still reads them. TLS: a ClientHello gives transport
/// "tls", its SNI and its ALPN list. Plain text: HTTP/2's preface gives "h2c", an HTTP/1.x request line
/// "http/1.1" or "http/1.0"; anything else is "raw_buffer" with no application protocol.
/// </summary>
public static class ConnectionInspector
{
    /// <summary>The most we look at: a ClientHello or request line longer than this is judged on what it has.</summary>
    public const int MaxInspected = 16 * 1024;

    private static readonly byte[] s_h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    /// <summary>The outcome of looking at some octets: decided (with what was found), or more needed.</summary>
    public readonly record struct Verdict(bool Decided, string TransportProtocol, string? ServerName, string[] ApplicationProtocols);

    private static readonly Verdict s_more = new(false, "raw_buffer", null, []);

    /// <summary>
    /// Peeks until the inspectors have decided, the client closes (null), or <paramref name="timeout"/>
    /// passes (zero: no limit): then null, or with <paramref name="continueOnTimeout"/>, what is known.
    /// </summary>
    public static async Task<Verdict?> InspectAsync(Socket socket, bool tls, bool http, TimeSpan timeout, bool continueOnTimeout, CancellationToken stop)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(stop);
        if (timeout > TimeSpan.Zero)
        {
            limit.CancelAfter(timeout);
        }
        int seen = 0;
        int wait = 1;
        long started = Environment.TickCount64;
        try
        {
            while (true)
            {
                if (seen == 0)
                {
                    // Wait for the first octets without holding a buffer: a silent connection costs no memory here.
                    await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, limit.Token);
                }
                byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxInspected);
                int n;
                Verdict verdict;
                try
                {
                    n = await socket.ReceiveAsync(buffer.AsMemory(0, MaxInspected), SocketFlags.Peek, limit.Token);
                    verdict = n == 0 ? default : Inspect(buffer.AsSpan(0, n), tls, http);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
                if (n == 0)
                {
                    return null; // closed before saying anything
                }
                if (verdict.Decided || n == MaxInspected)
                {
                    return verdict with { Decided = true };
                }
                // A peek returns at once while octets are waiting: poll for more, backing off to 50 ms, and
                // past the first second to 1 s (a client trickling its first line costs little CPU).
                wait = n > seen ? 1 : Math.Min(wait * 2, Environment.TickCount64 - started < 1000 ? 50 : 1000);
                seen = n;
                await Task.Delay(wait, limit.Token);
            }
        }
        catch (OperationCanceledException) when (!stop.IsCancellationRequested)
        {
            return continueOnTimeout ? s_more with { Decided = true } : null;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return null; // reset, or closed under us (the listener went away)
        }
    }

    /// <summary>Judges the first octets of a connection (all that has arrived so far).</summary>
    public static Verdict Inspect(ReadOnlySpan<byte> data, bool tls, bool http)
    {
        if (data.IsEmpty)
        {
            return s_more;
        }
        if (tls && data[0] == 0x16)
        {
            return InspectTls(data);
        }
        if (http)
        {
            return InspectHttp(data);
        }
        return new Verdict(true, "raw_buffer", null, []);
    }

    private static Verdict InspectHttp(ReadOnlySpan<byte> data)
    {
        int common = data.CommonPrefixLength(s_h2Preface);
        if (common == s_h2Preface.Length)
        {
            return new Verdict(true, "raw_buffer", null, ["h2c"]);
        }
        if (common == data.Length)
        {
            return s_more; // could still be the preface
        }
        int end = data.IndexOf("\r\n"u8);
        ReadOnlySpan<byte> line = end < 0 ? data : data.Slice(0, end);
        // method SP target SP HTTP/1.x
        int space = line.IndexOf((byte)' ');
        for (int i = 0; i < (space < 0 ? line.Length : space); i++)
        {
            if (!IsTokenChar(line[i]))
            {
                return NotHttp();
            }
        }
        if (end < 0)
        {
            return s_more;
        }
        if (space <= 0)
        {
            return NotHttp();
        }
        int last = line.LastIndexOf((byte)' ');
        if (last <= space)
        {
            return NotHttp();
        }
        ReadOnlySpan<byte> version = line.Slice(last + 1);
        return version.SequenceEqual("HTTP/1.1"u8) ? new Verdict(true, "raw_buffer", null, ["http/1.1"])
            : version.SequenceEqual("HTTP/1.0"u8) ? new Verdict(true, "raw_buffer", null, ["http/1.0"])
            : NotHttp();

        static Verdict NotHttp() => new(true, "raw_buffer", null, []);
    }

    private static bool IsTokenChar(byte c) =>
        c is (>= (byte)'a' and <= (byte)'z') or (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'0' and <= (byte)'9')
            or (byte)'!' or (byte)'#' or (byte)'$' or (byte)'%' or (byte)'&' or (byte)'\'' or (byte)'*' or (byte)'+'
            or (byte)'-' or (byte)'.' or (byte)'^' or (byte)'_' or (byte)'`' or (byte)'|' or (byte)'~';

    // A TLS record: type 22 (handshake), version 3.x, length; then the handshake: type 1 (ClientHello), length.
    private static Verdict InspectTls(ReadOnlySpan<byte> data)
    {
        var notTls = new Verdict(true, "raw_buffer", null, []);
        if (data.Length < 5)
        {
            return data.Length >= 2 && data[1] != 3 ? notTls : s_more;
        }
        if (data[1] != 3)
        {
            return notTls;
        }
        int recordLength = BinaryPrimitives.ReadUInt16BigEndian(data.Slice(3));
        if (recordLength < 4)
        {
            return new Verdict(true, "tls", null, []); // too short for a handshake message: TLS, nothing to read
        }
        if (data.Length < 9)
        {
            return s_more;
        }
        ReadOnlySpan<byte> record = data.Slice(5, Math.Min(recordLength, data.Length - 5));
        if (record[0] != 1)
        {
            return new Verdict(true, "tls", null, []); // a handshake, but not a ClientHello
        }
        int helloLength = (record[1] << 16) | (record[2] << 8) | record[3];
        if (record.Length < 4 + helloLength)
        {
            // Not all here yet (or spread over several records: judged on the first).
            return data.Length < MaxInspected && record.Length < recordLength ? s_more : new Verdict(true, "tls", null, []);
        }
        return ParseClientHello(record.Slice(4, helloLength));
    }

    private static Verdict ParseClientHello(ReadOnlySpan<byte> hello)
    {
        string? serverName = null;
        var protocols = new List<string>();
        try
        {
            int p = 2 + 32; // client_version, random
            p += 1 + hello[p]; // session_id
            p += 2 + BinaryPrimitives.ReadUInt16BigEndian(hello.Slice(p)); // cipher_suites
            p += 1 + hello[p]; // compression_methods
            if (p + 2 > hello.Length)
            {
                return new Verdict(true, "tls", null, []);
            }
            int extensionsEnd = p + 2 + BinaryPrimitives.ReadUInt16BigEndian(hello.Slice(p));
            p += 2;
            while (p + 4 <= Math.Min(extensionsEnd, hello.Length))
            {
                int type = BinaryPrimitives.ReadUInt16BigEndian(hello.Slice(p));
                int length = BinaryPrimitives.ReadUInt16BigEndian(hello.Slice(p + 2));
                ReadOnlySpan<byte> body = hello.Slice(p + 4, length);
                p += 4 + length;
                if (type == 0 && body.Length > 5 && body[2] == 0)
                {
                    // server_name: list length, then (type 0 = host_name, length, name)
                    int nameLength = BinaryPrimitives.ReadUInt16BigEndian(body.Slice(3));
                    serverName = Encoding.ASCII.GetString(body.Slice(5, nameLength)).ToLowerInvariant();
                }
                else if (type == 16 && body.Length > 2)
                {
                    // application_layer_protocol_negotiation: list length, then (length, name)*
                    ReadOnlySpan<byte> list = body.Slice(2, Math.Min(BinaryPrimitives.ReadUInt16BigEndian(body), body.Length - 2));
                    while (!list.IsEmpty)
                    {
                        int l = list[0];
                        protocols.Add(Encoding.ASCII.GetString(list.Slice(1, l)));
                        list = list.Slice(1 + l);
                    }
                }
            }
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or IndexOutOfRangeException)
        {
            // A malformed ClientHello: TLS, with what was read before the damage.
        }
        return new Verdict(true, "tls", serverName, [.. protocols]);
    }
}
