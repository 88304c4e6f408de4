using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;

namespace Proxy.Core.Tests;

/// <summary>The TLS building blocks: SANs, SAN matching, Envoy's TLS parameters, PEM loading, and a handshake over real sockets.</summary>
public sealed class TlsTests
{
    private static (X509Certificate2 Root, ECDsa RootKey) Root()
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=Unit Root", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        return (request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1)), key);
    }

    private static (string Cert, string Key) Leaf((X509Certificate2 Root, ECDsa Key) issuer, Action<SubjectAlternativeNameBuilder> sans)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("O=unit", key, HashAlgorithmName.SHA256);
        var builder = new SubjectAlternativeNameBuilder();
        sans(builder);
        request.CertificateExtensions.Add(builder.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        using X509Certificate2 cert = request.Create(issuer.Root.SubjectName, X509SignatureGenerator.CreateForECDsa(issuer.Key), DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1), [1, 2, 3, 4]);
        return (cert.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem());
    }

    [Fact]
    public void SubjectAltNames_AreReadByType_AndTheFirstUriIsThePrincipal()
    {
        var root = Root();
        (string cert, string key) = Leaf(root, b =>
        {
            b.AddDnsName("svc.example");
            b.AddUri(new Uri("spiffe://cluster.local/ns/default/sa/client"));
            b.AddIpAddress(IPAddress.Parse("10.1.2.3"));
            b.AddEmailAddress("ops@example.com");
        });
        TlsIdentity identity = TlsIdentity.FromPem(cert, key, "unit");
        SubjectAltNames names = identity.SubjectAltNames;
        Assert.Equal(["svc.example"], names.Dns);
        Assert.Equal(["spiffe://cluster.local/ns/default/sa/client"], names.Uris);
        Assert.Equal(["10.1.2.3"], names.IpAddresses);
        Assert.Equal(["ops@example.com"], names.Emails);
        Assert.Equal("spiffe://cluster.local/ns/default/sa/client", names.Principal);

        Assert.True(new SanMatcher(SanType.Uri, new StringMatcher(StringMatchKind.Prefix, "spiffe://cluster.local/")).Matches(names));
        Assert.False(new SanMatcher(SanType.Dns, new StringMatcher(StringMatchKind.Prefix, "spiffe://")).Matches(names));
        Assert.True(new SanMatcher(SanType.Any, new StringMatcher(StringMatchKind.Exact, "10.1.2.3")).Matches(names));
        Assert.False(new SanMatcher(SanType.Uri, new StringMatcher(StringMatchKind.Exact, "spiffe://cluster.local/ns/default/sa/other")).Matches(names));
    }

    [Fact]
    public void ExactDnsMatcher_AcceptsACoveringWildcard_AsEnvoyDoes()
    {
        var root = Root();
        (string cert, string key) = Leaf(root, b => b.AddDnsName("*.example.com"));
        SubjectAltNames names = TlsIdentity.FromPem(cert, key, "unit").SubjectAltNames;
        Assert.True(new SanMatcher(SanType.Dns, new StringMatcher(StringMatchKind.Exact, "api.example.com")).Matches(names));
        Assert.False(new SanMatcher(SanType.Dns, new StringMatcher(StringMatchKind.Exact, "a.b.example.com")).Matches(names));
        Assert.False(new SanMatcher(SanType.Dns, new StringMatcher(StringMatchKind.Exact, "example.com")).Matches(names));
    }

    [Fact]
    public void BadPem_IsAConfigErrorThatSaysWhat()
    {
        var root = Root();
        (string cert, string key) = Leaf(root, b => b.AddDnsName("x"));
        (_, string otherKey) = Leaf(root, b => b.AddDnsName("y"));
        Assert.Contains("no certificate", Assert.Throws<ConfigException>(() => TlsIdentity.FromPem("nothing here", key, "w")).Message, StringComparison.Ordinal);
        Assert.Contains("private key", Assert.Throws<ConfigException>(() => TlsIdentity.FromPem(cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "w")).Message, StringComparison.Ordinal);
        Assert.Contains("does not belong", Assert.Throws<ConfigException>(() => TlsIdentity.FromPem(cert, otherKey, "w")).Message, StringComparison.Ordinal);
        Assert.Contains("no certificate", Assert.Throws<ConfigException>(() => TlsTrust.FromPem("", "w")).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EnvoyTlsParameters_MapToPlatformSettings()
    {
        Assert.Equal(SslProtocols.Tls12 | SslProtocols.Tls13, TlsContext.ProtocolRange(null, null, client: false));
        Assert.Equal(SslProtocols.Tls12, TlsContext.ProtocolRange(null, null, client: true)); // Envoy's client default tops at 1.2
        Assert.Equal(SslProtocols.Tls13, TlsContext.ProtocolRange("TLSv1_3", "TLSv1_3", client: false));
        Assert.Equal(SslProtocols.None, TlsContext.ProtocolRange("TLSv1_3", "TLSv1_2", client: false));
        Assert.Throws<ConfigException>(() => TlsContext.ProtocolRange("SSLv3", null, client: false));
        var (known, unknown) = TlsContext.ParseCipherSuites(["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "AES256-GCM-SHA384", "RC4-MD5"]);
        Assert.Equal([TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TlsCipherSuite.TLS_RSA_WITH_AES_256_GCM_SHA384], known);
        Assert.Equal(["RC4-MD5"], unknown);
    }

    [Fact]
    public async Task Handshake_OverRealSockets_VerifiesBothSides_AndSaysWhyItRefuses()
    {
        var root = Root();
        string rootPem = root.Root.ExportCertificatePem();
        (string serverCert, string serverKey) = Leaf(root, b => b.AddUri(new Uri("spiffe://cluster.local/ns/default/sa/server")));
        (string clientCert, string clientKey) = Leaf(root, b => b.AddUri(new Uri("spiffe://cluster.local/ns/default/sa/client")));
        var server = new TlsServerContext
        {
            Identity = SecretSlot.Of("s", TlsIdentity.FromPem(serverCert, serverKey, "s")),
            Trust = SecretSlot.Of("r", TlsTrust.FromPem(rootPem, "r")),
            RequireClientCertificate = true,
            Alpn = ["h2"],
            Protocols = TlsContext.ProtocolRange(null, null, client: false),
        };
        TlsClientContext Client(string san, bool withCertificate = true) => new()
        {
            Identity = withCertificate ? SecretSlot.Of("c", TlsIdentity.FromPem(clientCert, clientKey, "c")) : null,
            Trust = SecretSlot.Of("r", TlsTrust.FromPem(rootPem, "r")),
            SubjectAltNames = [new SanMatcher(SanType.Uri, new StringMatcher(StringMatchKind.Exact, san))],
            Alpn = ["istio-peer-exchange", "istio"], // nothing in common with the server's: no ALPN, no failure
            Protocols = TlsContext.ProtocolRange(null, "TLSv1_3", client: true),
        };

        async Task<(TlsSession? Server, string? ServerError, TlsSession? Client, string? ClientError)> Handshake(TlsClientContext client)
        {
            using var listener = new Socket(SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen();
            var clientSocket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await clientSocket.ConnectAsync(listener.LocalEndPoint!);
            Socket accepted = await listener.AcceptAsync();
            Task<(TlsSession?, string?)> serverSide = TlsSession.AcceptAsync(accepted, server, null, CancellationToken.None);
            (TlsSession? c, string? ce) = await TlsSession.ConnectAsync(clientSocket, client, TimeSpan.FromSeconds(10));
            if (c == null)
            {
                clientSocket.Dispose();
            }
            (TlsSession? s, string? se) = await serverSide;
            return (s, se, c, ce);
        }

        var ok = await Handshake(Client("spiffe://cluster.local/ns/default/sa/server"));
        Assert.True(ok.Server != null && ok.Client != null, ok.ServerError + " / " + ok.ClientError);
        Assert.Equal("spiffe://cluster.local/ns/default/sa/client", ok.Server!.PeerPrincipal);
        Assert.Equal("spiffe://cluster.local/ns/default/sa/server", ok.Client!.PeerPrincipal);
        Assert.Equal("", ok.Server.NegotiatedProtocol);
        Assert.Equal(SslProtocols.Tls13, ok.Server.Protocol);

        var wrongSan = await Handshake(Client("spiffe://cluster.local/ns/default/sa/other"));
        Assert.Null(wrongSan.Client);
        Assert.Contains("match none of", wrongSan.ClientError, StringComparison.Ordinal);

        var noCertificate = await Handshake(Client("spiffe://cluster.local/ns/default/sa/server", withCertificate: false));
        Assert.Null(noCertificate.Server);
        Assert.NotNull(noCertificate.ServerError);
    }
}
