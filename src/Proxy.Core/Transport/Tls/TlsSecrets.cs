using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Proxy.Core.Config;

namespace Proxy.Core.Transport.Tls;

/// <summary>
/// A certificate chain and its private key (Envoy's TlsCertificate), loaded once: the handshake context
/// (<see cref="SslStreamCertificateContext"/>, which caches the chain) is built here, not per connection.
/// </summary>
public sealed class TlsIdentity
{
    private TlsIdentity(X509Certificate2 certificate, X509Certificate2Collection intermediates)
    {
        Certificate = certificate;
        Intermediates = intermediates;
        Context = SslStreamCertificateContext.Create(certificate, intermediates, offline: true);
        SubjectAltNames = Tls.SubjectAltNames.Read(certificate);
    }

    public X509Certificate2 Certificate { get; }
    public X509Certificate2Collection Intermediates { get; }
    internal SslStreamCertificateContext Context { get; }
    /// <summary>This side's SANs (the first URI is its SPIFFE identity, x-forwarded-client-cert's By).</summary>
    public SubjectAltNames SubjectAltNames { get; }

    /// <summary>Loads a PEM chain (leaf first) and its PEM key; a <see cref="ConfigException"/> that says what is wrong otherwise.</summary>
    public static TlsIdentity FromPem(string chainPem, string keyPem, string what)
    {
        var all = new X509Certificate2Collection();
        try
        {
            all.ImportFromPem(chainPem);
        }
        catch (CryptographicException e)
        {
            throw new ConfigException($"{what}: the certificate chain is not valid PEM: {e.Message}");
        }
        if (all.Count == 0)
        {
            throw new ConfigException($"{what}: no certificate in the certificate chain");
        }
        X509Certificate2 leaf;
        try
        {
            leaf = X509Certificate2.CreateFromPem(PemOf(chainPem), keyPem);
        }
        catch (CryptographicException e)
        {
            throw new ConfigException($"{what}: the private key is not valid PEM or does not belong to the certificate: {e.Message}");
        }
        catch (ArgumentException e)
        {
            throw new ConfigException($"{what}: the private key is not valid PEM or does not belong to the certificate: {e.Message}");
        }
        var intermediates = new X509Certificate2Collection();
        for (int i = 1; i < all.Count; i++)
        {
            intermediates.Add(all[i]);
        }
        if (leaf.NotAfter < DateTime.Now)
        {
            Diagnostics.ProxyLog.Write(Diagnostics.LogLevel.Warning, $"{what}: the certificate expired on {leaf.NotAfter:u}");
        }
        return new TlsIdentity(leaf, intermediates);
    }

    /// <summary>The first certificate of a PEM text.</summary>
    private static string PemOf(string chainPem)
    {
        const string end = "-----END CERTIFICATE-----";
        int at = chainPem.IndexOf(end, StringComparison.Ordinal);
        return at < 0 ? chainPem : chainPem[..(at + end.Length)];
    }
}

/// <summary>Trusted roots (Envoy's CertificateValidationContext.trusted_ca), loaded once.</summary>
public sealed class TlsTrust
{
    private TlsTrust(X509Certificate2Collection roots)
    {
        Roots = roots;
    }

    public X509Certificate2Collection Roots { get; }

    public static TlsTrust FromPem(string pem, string what)
    {
        var roots = new X509Certificate2Collection();
        try
        {
            roots.ImportFromPem(pem);
        }
        catch (CryptographicException e)
        {
            throw new ConfigException($"{what}: the trusted CA is not valid PEM: {e.Message}");
        }
        if (roots.Count == 0)
        {
            throw new ConfigException($"{what}: no certificate in the trusted CA");
        }
        return new TlsTrust(roots);
    }

    /// <summary>The chain policy for verifying a peer against these roots alone (no system store, no revocation fetches).</summary>
    internal X509ChainPolicy ChainPolicy()
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(Roots);
        return policy;
    }
}

/// <summary>
/// A secret a TLS context refers to: given inline or by file (filled at load), or by SDS name (filled
/// when the secret arrives, replaced when it rotates). Handshakes read it when they start, so a rotation
/// applies to the next handshake and established connections carry on.
/// </summary>
public sealed class SecretSlot<T>(string name) where T : class
{
    private volatile T? _value;
    private int _version;

    /// <summary>The SDS name ("default", "ROOTCA"), or a description of the inline/file source.</summary>
    public string Name { get; } = name;

    public T? Value => _value;

    /// <summary>Changes each time the value is replaced (contexts rebuild cached options on a change).</summary>
    public int Version => Volatile.Read(ref _version);

    public bool IsReady => _value != null;

    public void Set(T value)
    {
        _value = value;
        Interlocked.Increment(ref _version);
    }
}

public static class SecretSlot
{
    /// <summary>A slot filled at once (a secret given inline or by file).</summary>
    public static SecretSlot<T> Of<T>(string name, T value) where T : class
    {
        var slot = new SecretSlot<T>(name);
        slot.Set(value);
        return slot;
    }
}
