using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Proxy.Core.Transport.Tls;

/// <summary>
/// What both sides of Envoy's CommonTlsContext share: this side's certificate, the trust and SAN rules a
/// peer is held to, ALPN, TLS versions and cipher suites. Immutable but for its secrets, which rotate.
/// </summary>
public abstract class TlsContext
{
    /// <summary>This side's certificate (a server always has one; a client only for mutual TLS).</summary>
    public SecretSlot<TlsIdentity>? Identity { get; init; }

    /// <summary>The roots a peer's certificate must chain to; null: the peer's certificate is not verified (Envoy without a validation context).</summary>
    public SecretSlot<TlsTrust>? Trust { get; init; }

    /// <summary>match_typed_subject_alt_names / match_subject_alt_names: the peer needs a SAN that one of them matches (none: any).</summary>
    public SanMatcher[] SubjectAltNames { get; init; } = [];

    /// <summary>alpn_protocols, in preference order.</summary>
    public string[] Alpn { get; init; } = [];

    /// <summary>tls_params' versions; None leaves the choice to the platform's defaults.</summary>
    public SslProtocols Protocols { get; init; } = SslProtocols.None;

    /// <summary>tls_params.cipher_suites for TLS 1.2 and below (TLS 1.3's are always offered); null: the platform's defaults.</summary>
    public TlsCipherSuite[]? CipherSuites { get; init; }

    /// <summary>How long a handshake may take (the filter chain's transport_socket_connect_timeout; Envoy has none, we bound it).</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The secrets every handshake needs are there (else the listener or cluster is still warming).</summary>
    public bool IsReady => (Identity?.IsReady ?? true) && (Trust?.IsReady ?? true);

    /// <summary>What the secrets are called, for warming logs and config dumps.</summary>
    public IEnumerable<string> SecretNames()
    {
        if (Identity != null)
        {
            yield return Identity.Name;
        }
        if (Trust != null)
        {
            yield return Trust.Name;
        }
    }

    private List<SslApplicationProtocol>? _alpn;

    private protected List<SslApplicationProtocol>? AlpnList()
    {
        if (Alpn.Length == 0)
        {
            return null;
        }
        return _alpn ??= [.. Alpn.Select(static p => new SslApplicationProtocol(p))];
    }

    private protected bool SharesAlpn(string[] offered)
    {
        foreach (string protocol in offered)
        {
            if (Array.IndexOf(Alpn, protocol) >= 0)
            {
                return true;
            }
        }
        return false;
    }

    private CipherSuitesPolicy? _ciphers;

    private protected CipherSuitesPolicy? CipherPolicy()
    {
        if (CipherSuites is not { Length: > 0 } suites || OperatingSystem.IsWindows())
        {
            return null;
        }
        return _ciphers ??= new CipherSuitesPolicy(suites.Concat(s_tls13).Distinct());
    }

    private static readonly TlsCipherSuite[] s_tls13 =
        [TlsCipherSuite.TLS_AES_128_GCM_SHA256, TlsCipherSuite.TLS_AES_256_GCM_SHA384, TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256];

    /// <summary>
    /// Checks a peer's certificate: chained to <see cref="Trust"/> (the engine built the chain with our
    /// policy) and a SAN that a matcher accepts. The reason it fails, or null.
    /// </summary>
    private protected string? Verify(X509Certificate? certificate, SslPolicyErrors errors, bool required)
    {
        if (certificate == null)
        {
            return required ? "the peer sent no certificate" : null;
        }
        if (Trust == null)
        {
            return null; // no validation context: any certificate is accepted, as in Envoy
        }
        errors &= ~SslPolicyErrors.RemoteCertificateNameMismatch; // names are checked by SAN matchers, not the SNI
        if ((errors & SslPolicyErrors.RemoteCertificateChainErrors) != 0)
        {
            return $"the peer's certificate ({certificate.Subject}) does not chain to a trusted CA";
        }
        if (errors != SslPolicyErrors.None)
        {
            return $"the peer's certificate was refused: {errors}";
        }
        if (SubjectAltNames.Length > 0)
        {
            var x509 = certificate as X509Certificate2 ?? new X509Certificate2(certificate);
            SubjectAltNames names = Tls.SubjectAltNames.Read(x509);
            foreach (SanMatcher matcher in SubjectAltNames)
            {
                if (matcher.Matches(names))
                {
                    return null;
                }
            }
            string seen = string.Join(", ", names.Uris.Concat(names.Dns).Concat(names.Emails).Concat(names.IpAddresses));
            return $"the peer's certificate SANs [{seen}] match none of [{string.Join(", ", SubjectAltNames.Select(static m => m.ToString()))}]";
        }
        return null;
    }

    /// <summary>Maps OpenSSL cipher names (as Envoy's cipher_suites takes them) to .NET's; unknown names are returned to be warned.</summary>
    public static (TlsCipherSuite[] Known, string[] Unknown) ParseCipherSuites(IEnumerable<string> names)
    {
        var known = new List<TlsCipherSuite>();
        var unknown = new List<string>();
        foreach (string entry in names)
        {
            // "[A|B]" is BoringSSL's equal-preference group.
            foreach (string part in entry.Trim('[', ']').Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (s_openSslNames.TryGetValue(part, out TlsCipherSuite suite))
                {
                    known.Add(suite);
                }
                else
                {
                    unknown.Add(part);
                }
            }
        }
        return ([.. known], [.. unknown]);
    }

    private static readonly Dictionary<string, TlsCipherSuite> s_openSslNames = new(StringComparer.Ordinal)
    {
        ["ECDHE-ECDSA-AES128-GCM-SHA256"] = TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ["ECDHE-RSA-AES128-GCM-SHA256"] = TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ["ECDHE-ECDSA-AES256-GCM-SHA384"] = TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ["ECDHE-RSA-AES256-GCM-SHA384"] = TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ["ECDHE-ECDSA-CHACHA20-POLY1305"] = TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ["ECDHE-RSA-CHACHA20-POLY1305"] = TlsCipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ["ECDHE-ECDSA-AES128-SHA"] = TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
        ["ECDHE-RSA-AES128-SHA"] = TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
        ["ECDHE-ECDSA-AES256-SHA"] = TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
        ["ECDHE-RSA-AES256-SHA"] = TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
        ["AES128-GCM-SHA256"] = TlsCipherSuite.TLS_RSA_WITH_AES_128_GCM_SHA256,
        ["AES256-GCM-SHA384"] = TlsCipherSuite.TLS_RSA_WITH_AES_256_GCM_SHA384,
        ["AES128-SHA"] = TlsCipherSuite.TLS_RSA_WITH_AES_128_CBC_SHA,
        ["AES256-SHA"] = TlsCipherSuite.TLS_RSA_WITH_AES_256_CBC_SHA,
        ["TLS_AES_128_GCM_SHA256"] = TlsCipherSuite.TLS_AES_128_GCM_SHA256,
        ["TLS_AES_256_GCM_SHA384"] = TlsCipherSuite.TLS_AES_256_GCM_SHA384,
        ["TLS_CHACHA20_POLY1305_SHA256"] = TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    };

    /// <summary>tls_minimum/maximum_protocol_version (TLS_AUTO, TLSv1_0 … TLSv1_3) as the versions to enable; 1.0 and 1.1 are not offered (the platform has them off).</summary>
    public static SslProtocols ProtocolRange(string? minimum, string? maximum, bool client)
    {
        int min = Version(minimum) ?? 2;
        // Envoy's defaults: a server goes up to 1.3, a client up to 1.2.
        int max = Version(maximum) ?? (client ? 2 : 3);
        SslProtocols protocols = SslProtocols.None;
        if (min <= 2 && max >= 2)
        {
            protocols |= SslProtocols.Tls12;
        }
        if (max >= 3)
        {
            protocols |= SslProtocols.Tls13;
        }
        return protocols;
    }

    private static int? Version(string? name) => name switch
    {
        null or "" or "TLS_AUTO" or "0" => null,
        "TLSv1_0" or "1" or "TLSv1_1" or "2" or "TLSv1_2" or "3" => 2,
        "TLSv1_3" or "4" => 3,
        _ => throw new Config.ConfigException($"'{name}' is not a TLS version (TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3)"),
    };
}

/// <summary>Envoy's DownstreamTlsContext: how a filter chain's connections are terminated.</summary>
public sealed class TlsServerContext : TlsContext
{
    /// <summary>require_client_certificate: a client without a certificate is refused (mutual TLS).</summary>
    public bool RequireClientCertificate { get; init; }

    /// <summary>Whether a client certificate is asked for: required, or verified when given (a validation context exists).</summary>
    public bool RequestsClientCertificate => RequireClientCertificate || Trust != null;

    /// <summary>The options for one handshake; the failure reason, if verification refuses the client, goes to <paramref name="session"/>.</summary>
    internal SslServerAuthenticationOptions Options(TlsSession session, string[] offeredAlpn)
    {
        TlsIdentity identity = Identity?.Value ?? throw new InvalidOperationException("the server certificate has not arrived");
        var options = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = identity.Context,
            // No protocol in common (Istio's client offers istio-peer-exchange, istio-h2…): no ALPN, as in Envoy.
            ApplicationProtocols = SharesAlpn(offeredAlpn) ? AlpnList() : null,
            EnabledSslProtocols = Protocols,
            CipherSuitesPolicy = CipherPolicy(),
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            AllowTlsResume = true,
            ClientCertificateRequired = RequestsClientCertificate,
        };
        if (RequestsClientCertificate)
        {
            options.CertificateChainPolicy = Trust?.Value?.ChainPolicy();
            options.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                session.VerifyError = Verify(certificate, errors, RequireClientCertificate);
                return session.VerifyError == null;
            };
        }
        return options;
    }
}

/// <summary>Envoy's UpstreamTlsContext: how a cluster's connections are made.</summary>
public sealed class TlsClientContext : TlsContext
{
    /// <summary>sni: the server name sent (none when empty).</summary>
    public string Sni { get; init; } = "";

    /// <summary>Identifies the context's settings, so connections are pooled per context.</summary>
    public string Key => _key ??= $"tls:{Sni}|{string.Join(",", Alpn)}|{Identity?.Name}|{Trust?.Name}|{string.Join(",", SubjectAltNames.Select(static m => m.ToString()))}|{Protocols}";
    private string? _key;

    /// <summary>
    /// Verifies a server outside a handshake we run ourselves (the control-plane channel): the chain is
    /// built against <see cref="TlsContext.Trust"/> alone, then SANs matched. Null when accepted, else why not.
    /// </summary>
    public string? VerifyServer(X509Certificate? certificate)
    {
        if (certificate == null)
        {
            return "the server sent no certificate";
        }
        SslPolicyErrors errors = SslPolicyErrors.None;
        if (Trust?.Value is { } trust)
        {
            using var x509 = new X509Certificate2(certificate);
            using var chain = new X509Chain { ChainPolicy = trust.ChainPolicy() };
            if (!chain.Build(x509))
            {
                errors = SslPolicyErrors.RemoteCertificateChainErrors;
            }
        }
        return Verify(certificate, errors, required: true);
    }

    internal SslClientAuthenticationOptions Options(TlsSession session)
    {
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = Sni,
            ApplicationProtocols = AlpnList(),
            EnabledSslProtocols = Protocols,
            CipherSuitesPolicy = CipherPolicy(),
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            AllowTlsResume = true,
            ClientCertificateContext = Identity?.Value?.Context,
            CertificateChainPolicy = Trust?.Value?.ChainPolicy(),
            RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                session.VerifyError = Verify(certificate, errors, required: true);
                return session.VerifyError == null;
            },
        };
        return options;
    }
}
