using System.Buffers;
using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Proxy.Core.Transport.Tls;

/// <summary>
/// TLS on one connection: the platform's TLS engine (<see cref="SslStream"/>, OpenSSL on Linux) over
/// <see cref="TlsSocketStream"/>. The receive loop reads plaintext from it; <see cref="SocketOutput"/>
/// encrypts its segments through it in its sending turn. After the handshake nothing is allocated per
/// read or write.
/// </summary>
public sealed class TlsSession : IDisposable
{
    private readonly TlsSocketStream _transport;
    private readonly SslStream _ssl;

    private TlsSession(Socket socket, SocketAwaitableEventArgs? receiveArgs, SocketConnection? onLoop = null)
    {
        _transport = new TlsSocketStream(socket, receiveArgs, onLoop);
        _ssl = new SslStream(_transport, leaveInnerStreamOpen: true);
    }

    /// <summary>Why the peer's certificate was refused (for the log line), when it was.</summary>
    internal string? VerifyError { get; set; }

    /// <summary>The protocol ALPN settled on ("h2", "http/1.1", "istio-peer-exchange"…), empty when none.</summary>
    public string NegotiatedProtocol { get; private set; } = "";

    /// <summary>The peer's certificate, when it sent one.</summary>
    public X509Certificate2? PeerCertificate { get; private set; }

    /// <summary>The peer's SANs (none without a certificate).</summary>
    public SubjectAltNames PeerNames { get; private set; } = SubjectAltNames.None;

    /// <summary>The peer's identity (its SPIFFE URI), null when it is not authenticated by a certificate.</summary>
    public string? PeerPrincipal => PeerNames.Principal;

    private byte[]? _principalUtf8;

    /// <summary><see cref="PeerPrincipal"/> as UTF-8, made once per connection (RBAC matches it per request).</summary>
    public byte[]? PeerPrincipalUtf8 => _principalUtf8 ??= PeerPrincipal is { } principal ? System.Text.Encoding.UTF8.GetBytes(principal) : null;

    /// <summary>This side's certificate for the connection (for x-forwarded-client-cert's By).</summary>
    public TlsIdentity? LocalIdentity { get; private set; }

    public SslProtocols Protocol => _ssl.SslProtocol;

    public bool IsResumed { get; private set; }

    /// <summary>Runs a server handshake; the session, or null and why (for the log line).</summary>
    /// <param name="offeredAlpn">The client's ALPN list if already seen (tls_inspector); null: it is read here when ALPN is configured.</param>
    /// <param name="timedByCaller">The caller closes the socket when the handshake takes too long (no timer of our own).</param>
    public static Task<(TlsSession? Session, string? Error)> AcceptAsync(Socket socket, TlsServerContext context, string[]? offeredAlpn, CancellationToken cancel,
        bool timedByCaller = false) => AcceptAsync(socket, null, context, offeredAlpn, timedByCaller, cancel);

    internal static async Task<(TlsSession? Session, string? Error)> AcceptAsync(Socket socket, SocketAwaitableEventArgs? receiveArgs, TlsServerContext context, string[]? offeredAlpn,
        bool timedByCaller, CancellationToken cancel, SocketConnection? onLoop = null)
    {
        var session = new TlsSession(socket, receiveArgs, onLoop);
        CancellationTokenSource? timeout = null;
        CancellationTokenRegistration closeOnTimeout = default;
        try
        {
            if (!timedByCaller)
            {
                // Reads on the socket engine take no token: a handshake past its time ends by closing the socket.
                timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                timeout.CancelAfter(context.HandshakeTimeout);
                cancel = timeout.Token;
                closeOnTimeout = cancel.Register(static s => ((Socket)s!).Dispose(), socket);
            }
            if (offeredAlpn == null && context.Alpn.Length > 0)
            {
                // The platform's engine refuses a ClientHello with no ALPN protocol in common (a fatal
                // alert); Envoy goes on without ALPN. So the ClientHello is read first (as tls_inspector
                // would see it) and handed to the engine from that buffer: no peek, no second read.
                offeredAlpn = await session.ReadClientHelloAsync(cancel);
            }
            SslServerAuthenticationOptions options = context.Options(session, offeredAlpn ?? []);
            session.LocalIdentity = context.Identity?.Value;
            await session._ssl.AuthenticateAsServerAsync(options, cancel);
            session.Established();
            return (session, null);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException or SocketException or ObjectDisposedException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            session.Dispose();
            return (null, session.Reason(e, context.HandshakeTimeout));
        }
        finally
        {
            closeOnTimeout.Dispose();
            timeout?.Dispose();
        }
    }

    private const int InitialHelloBuffer = 2048;

    /// <summary>Reads until the ClientHello is complete (or is no TLS): its ALPN offer; the octets stay for the engine.</summary>
    private async Task<string[]> ReadClientHelloAsync(CancellationToken cancel)
    {
        // A silent client holds no buffer: wait for its first octets with a zero-length read.
        int ready = await _transport.ReadAsync(Memory<byte>.Empty, cancel); // 0 when octets are there (or the peer closed: the next read says which)
        Debug.Assert(ready == 0);
        // Most ClientHellos fit the first buffer (one with a post-quantum key share is about 1.8 KiB): a
        // burst of handshakes then holds 2 KiB each here, not the 16 KiB a ClientHello may reach.
        byte[] hello = ArrayPool<byte>.Shared.Rent(InitialHelloBuffer);
        int n = 0;
        try
        {
            while (true)
            {
                if (n == hello.Length)
                {
                    byte[] grown = ArrayPool<byte>.Shared.Rent(Math.Min(hello.Length * 4, ConnectionInspector.MaxInspected));
                    hello.AsSpan(0, n).CopyTo(grown);
                    ArrayPool<byte>.Shared.Return(hello);
                    hello = grown;
                }
                int got = await _transport.ReadAsync(hello.AsMemory(n, Math.Min(hello.Length, ConnectionInspector.MaxInspected) - n), cancel);
                if (got <= 0)
                {
                    throw new IOException("the peer closed the connection before its ClientHello");
                }
                n += got;
                ConnectionInspector.Verdict verdict = ConnectionInspector.Inspect(hello.AsSpan(0, n), tls: true, http: false);
                if (verdict.Decided || n == ConnectionInspector.MaxInspected)
                {
                    _transport.SetPrefix(hello, n);
                    hello = null!;
                    return verdict.ApplicationProtocols;
                }
            }
        }
        finally
        {
            if (hello != null)
            {
                ArrayPool<byte>.Shared.Return(hello);
            }
        }
    }

    /// <summary>Runs a client handshake; the session, or null and why.</summary>
    public static Task<(TlsSession? Session, string? Error)> ConnectAsync(Socket socket, TlsClientContext context, TimeSpan timeoutAfter) =>
        ConnectAsync(socket, null, context, timeoutAfter);

    internal static async Task<(TlsSession? Session, string? Error)> ConnectAsync(Socket socket, SocketAwaitableEventArgs? receiveArgs, TlsClientContext context, TimeSpan timeoutAfter,
        SocketConnection? onLoop = null)
    {
        var session = new TlsSession(socket, receiveArgs, onLoop);
        using var timeout = new CancellationTokenSource(timeoutAfter > TimeSpan.Zero ? timeoutAfter : context.HandshakeTimeout);
        // Past the time the connection is closed (on a loop: closing wakes a read or write waiting for an edge).
        using CancellationTokenRegistration closeOnTimeout = onLoop != null ? timeout.Token.Register(static c => ((SocketConnection)c!).Close(), onLoop)
            : timeout.Token.Register(static s => ((Socket)s!).Dispose(), socket);
        try
        {
            SslClientAuthenticationOptions options = context.Options(session);
            session.LocalIdentity = context.Identity?.Value;
            await session._ssl.AuthenticateAsClientAsync(options, timeout.Token);
            session.Established();
            return (session, null);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException or SocketException or ObjectDisposedException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            session.Dispose();
            return (null, timeout.IsCancellationRequested ? $"the TLS handshake did not finish within {(timeoutAfter > TimeSpan.Zero ? timeoutAfter : context.HandshakeTimeout).TotalSeconds:0.###} s" : session.Reason(e, timeoutAfter));
        }
    }

    private string Reason(Exception e, TimeSpan timeout)
    {
        if (VerifyError != null)
        {
            return VerifyError;
        }
        if (e is OperationCanceledException)
        {
            return $"the TLS handshake did not finish within {timeout.TotalSeconds:0.###} s";
        }
        string message = e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;
        return $"TLS handshake failed: {message}";
    }

    private void Established()
    {
        _transport.Established = true;
        NegotiatedProtocol = _ssl.NegotiatedApplicationProtocol.ToString();
        if (_ssl.RemoteCertificate is { } remote)
        {
            PeerCertificate = remote as X509Certificate2 ?? new X509Certificate2(remote);
            PeerNames = SubjectAltNames.Read(PeerCertificate);
        }
    }

    private byte[]? _xfcc;
    private ClientCertDetails _xfccDetails;

    /// <summary>
    /// This hop's x-forwarded-client-cert element, made once per connection: By (our URI SAN), Hash (the
    /// peer certificate's SHA-256), then Cert, Chain, Subject, URI, DNS as <paramref name="details"/> asks.
    /// </summary>
    internal byte[] ClientCertElement(ClientCertDetails details)
    {
        byte[]? cached = _xfcc;
        if (cached != null && _xfccDetails == details)
        {
            return cached;
        }
        var text = new System.Text.StringBuilder();
        void Field(string key, string value)
        {
            if (text.Length > 0)
            {
                text.Append(';');
            }
            text.Append(key).Append('=').Append(value);
        }
        if (LocalIdentity?.SubjectAltNames.Uris is [string by, ..])
        {
            Field("By", by);
        }
        X509Certificate2 peer = PeerCertificate!;
        Field("Hash", Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(peer.RawData)));
        if ((details & ClientCertDetails.Cert) != 0)
        {
            Field("Cert", "\"" + Uri.EscapeDataString(peer.ExportCertificatePem() + "\n") + "\"");
        }
        if ((details & ClientCertDetails.Chain) != 0)
        {
            Field("Chain", "\"" + Uri.EscapeDataString(peer.ExportCertificatePem() + "\n") + "\"");
        }
        if ((details & ClientCertDetails.Subject) != 0)
        {
            Field("Subject", "\"" + peer.SubjectName.Decode(X500DistinguishedNameFlags.UseCommas).Replace(", ", ",", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"");
        }
        if ((details & ClientCertDetails.Uri) != 0)
        {
            foreach (string uri in PeerNames.Uris)
            {
                Field("URI", uri);
            }
            if (PeerNames.Uris.Length == 0)
            {
                Field("URI", "");
            }
        }
        if ((details & ClientCertDetails.Dns) != 0)
        {
            foreach (string dns in PeerNames.Dns)
            {
                Field("DNS", dns);
            }
        }
        byte[] element = System.Text.Encoding.UTF8.GetBytes(text.ToString());
        _xfccDetails = details;
        _xfcc = element;
        return element;
    }

    /// <summary>Reads plaintext (a zero-length read waits for data without holding a buffer).</summary>
    internal ValueTask<int> ReadAsync(Memory<byte> buffer) => _ssl.ReadAsync(buffer);

    /// <summary>Encrypts and sends (what the socket does not take waits in the backlog); false when the connection is broken.</summary>
    internal bool Write(byte[] buffer, int count)
    {
        try
        {
            _ssl.Write(buffer, 0, count);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            return false;
        }
        return !_transport.Failed;
    }

    /// <summary>Sends close_notify (into the backlog when the socket is full).</summary>
    internal async Task ShutdownAsync()
    {
        try
        {
            await _ssl.ShutdownAsync();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
        }
    }

    /// <summary>Sends close_notify before a close, if the socket takes it now (best effort: the connection is going anyway).</summary>
    internal void SendCloseNotify(Socket socket)
    {
        Task shutdown = ShutdownAsync();
        if (!shutdown.IsCompleted)
        {
            return;
        }
        if (_transport.HasBacklog)
        {
            socket.Send(_transport.Backlog.Span, SocketFlags.None, out _);
        }
    }

    internal bool HasBacklog => _transport.HasBacklog;

    internal ReadOnlyMemory<byte> Backlog => _transport.Backlog;

    internal void BacklogSent(int count) => _transport.BacklogSent(count);

    internal void ReleaseBacklog() => _transport.ReleaseBacklog();

    public void Dispose()
    {
        try
        {
            _ssl.Dispose();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
        _transport.ReleasePrefix();
    }
}
