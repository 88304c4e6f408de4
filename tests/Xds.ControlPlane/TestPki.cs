using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Xds.ControlPlane;

/// <summary>
/// A certificate authority made for a test, issuing workload certificates the way Istio's does: ECDSA
/// P-256, a SPIFFE URI SAN (spiffe://cluster.local/ns/NS/sa/SA) and optional DNS names, usable for both
/// server and client authentication. PEM out, as SDS and files carry them.
/// </summary>
public sealed class TestPki : IDisposable
{
    private readonly ECDsa _key;

    public TestPki(string name = "Test Root CA")
    {
        _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}, O=layotto-fast tests", _key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        Root = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        RootPem = Root.ExportCertificatePem();
    }

    public X509Certificate2 Root { get; }

    public string RootPem { get; }

    /// <summary>A workload certificate and its key (PEM), signed by this root.</summary>
    public (string CertificatePem, string KeyPem) Issue(string? spiffe, params string[] dnsNames) => Issue(spiffe, TimeSpan.FromDays(1), dnsNames);

    public (string CertificatePem, string KeyPem) Issue(string? spiffe, TimeSpan lifetime, params string[] dnsNames)
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(spiffe != null ? "O=cluster.local" : $"CN={dnsNames.FirstOrDefault() ?? "workload"}", key, HashAlgorithmName.SHA256);
        var sans = new SubjectAlternativeNameBuilder();
        if (spiffe != null)
        {
            sans.AddUri(new Uri(spiffe));
        }
        foreach (string dns in dnsNames)
        {
            sans.AddDnsName(dns);
        }
        request.CertificateExtensions.Add(sans.Build(critical: spiffe != null));
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        DateTimeOffset notBefore = DateTimeOffset.UtcNow.AddMinutes(-5);
        using X509Certificate2 issued = request.Create(Root.SubjectName, X509SignatureGenerator.CreateForECDsa(_key), notBefore, notBefore + lifetime, serial);
        return (issued.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>Writes a workload's cert-chain.pem, key.pem and root-cert.pem (Istio's file names) into <paramref name="directory"/>.</summary>
    public string WriteIstioFiles(string directory, string spiffe)
    {
        Directory.CreateDirectory(directory);
        (string cert, string key) = Issue(spiffe);
        File.WriteAllText(Path.Combine(directory, "cert-chain.pem"), cert);
        File.WriteAllText(Path.Combine(directory, "key.pem"), key);
        File.WriteAllText(Path.Combine(directory, "root-cert.pem"), RootPem);
        return directory;
    }

    /// <summary>An SDS Secret with a TLS certificate (what pilot-agent sends as "default").</summary>
    public static Proxy.Xds.Api.Tls.Secret CertificateSecret(string name, string certificatePem, string keyPem) => new()
    {
        Name = name,
        TlsCertificate = new Proxy.Xds.Api.Tls.TlsCertificate
        {
            CertificateChain = new Proxy.Xds.Api.Core.DataSource { InlineBytes = Google.Protobuf.ByteString.CopyFromUtf8(certificatePem) },
            PrivateKey = new Proxy.Xds.Api.Core.DataSource { InlineBytes = Google.Protobuf.ByteString.CopyFromUtf8(keyPem) },
        },
    };

    /// <summary>An SDS Secret with a validation context of trusted roots (what pilot-agent sends as "ROOTCA").</summary>
    public static Proxy.Xds.Api.Tls.Secret RootSecret(string name, string rootPem) => new()
    {
        Name = name,
        ValidationContext = new Proxy.Xds.Api.Tls.CertificateValidationContext
        {
            TrustedCa = new Proxy.Xds.Api.Core.DataSource { InlineBytes = Google.Protobuf.ByteString.CopyFromUtf8(rootPem) },
        },
    };

    public void Dispose()
    {
        Root.Dispose();
        _key.Dispose();
    }
}
