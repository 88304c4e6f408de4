using System.Net.Security;
using System.Security.Authentication;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Xds.Secrets;

namespace Proxy.Xds.Config;

/// <summary>
/// Transport sockets: envoy.transport_sockets.tls with a DownstreamTlsContext (a filter chain) or an
/// UpstreamTlsContext (a cluster, or one of its transport_socket_matches), v3 and v2 (tls_context);
/// certificates inline, from files, or by SDS name.
/// </summary>
public sealed partial class BootstrapLoader
{
    /// <summary>The named secrets TLS contexts refer to (shared by every load, so SDS slots outlive configuration changes).</summary>
    public SecretStore Secrets { get; init; } = new();

    /// <summary>A filter chain's TLS (its transport_socket, or v2's tls_context); null for plaintext.</summary>
    private TlsServerContext? ReadDownstreamTls(ConfigNode chain)
    {
        ConfigNode config = TlsConfigOf(chain["transport_socket"], chain["tls_context"]);
        if (!config.Exists)
        {
            return null;
        }
        var common = ReadCommonTls(config["common_tls_context"], client: false);
        if (common.Identity == null)
        {
            throw new ConfigException($"{config["common_tls_context"].Path}: a server needs tls_certificates or tls_certificate_sds_secret_configs");
        }
        foreach (string field in new[] { "session_ticket_keys", "session_ticket_keys_sds_secret_config", "require_sni", "ocsp_staple_policy" })
        {
            if (config[field].Exists)
            {
                Warn(config[field], "not honoured");
            }
        }
        return new TlsServerContext
        {
            Identity = common.Identity,
            Trust = common.Trust,
            SubjectAltNames = common.Sans,
            Alpn = common.Alpn,
            Protocols = common.Protocols,
            CipherSuites = common.Ciphers,
            RequireClientCertificate = WrappedBool(config["require_client_certificate"]) ?? false,
            HandshakeTimeout = chain["transport_socket_connect_timeout"].Duration() is { } timeout && timeout > TimeSpan.Zero ? timeout : TimeSpan.FromSeconds(10),
        };
    }

    /// <summary>A cluster's (or a transport_socket_match's) TLS; null for plaintext.</summary>
    private TlsClientContext? ReadUpstreamTls(ConfigNode transportSocket, ConfigNode v2TlsContext = default)
    {
        ConfigNode config = TlsConfigOf(transportSocket, v2TlsContext);
        if (!config.Exists)
        {
            return null;
        }
        var common = ReadCommonTls(config["common_tls_context"], client: true);
        foreach (string field in new[] { "auto_host_sni", "auto_sni_san_validation", "allow_renegotiation" })
        {
            if (config[field].Boolean() == true)
            {
                Warn(config[field], "not honoured");
            }
        }
        string sni = config["sni"].String() ?? "";
        if (sni.Length > 255)
        {
            throw new ConfigException($"{config["sni"].Path}: longer than 255 octets");
        }
        return new TlsClientContext
        {
            Sni = sni,
            Identity = common.Identity,
            Trust = common.Trust,
            SubjectAltNames = common.Sans,
            Alpn = common.Alpn,
            Protocols = common.Protocols,
            CipherSuites = common.Ciphers,
        };
    }

    /// <summary>
    /// The TLS context's fields when <paramref name="socket"/> is envoy.transport_sockets.tls (typed_config,
    /// or v2's config Struct) or <paramref name="v2TlsContext"/> is given; missing for raw_buffer and absence.
    /// Other transport sockets are named as not honoured (plaintext is used).
    /// </summary>
    private ConfigNode TlsConfigOf(ConfigNode socket, ConfigNode v2TlsContext)
    {
        if (v2TlsContext.Exists && !socket.Exists)
        {
            return v2TlsContext;
        }
        if (!socket.Exists)
        {
            return default;
        }
        string name = socket["name"].String() ?? "";
        ConfigNode typed = socket["typed_config"].Exists ? socket["typed_config"] : socket["config"];
        string type = typed["@type"].String() ?? "";
        if (type.EndsWith("TlsContext", StringComparison.Ordinal) || (type.Length == 0 && name is "envoy.transport_sockets.tls" or "tls"))
        {
            return typed;
        }
        if (name is "envoy.transport_sockets.raw_buffer" or "raw_buffer" || type.EndsWith(".RawBuffer", StringComparison.Ordinal))
        {
            return default;
        }
        if (!Dynamic)
        {
            throw new ConfigException($"{socket.Path}: transport socket '{(type.Length > 0 ? type : name)}' is not supported (tls and raw_buffer are)");
        }
        Warn(socket, $"transport socket '{(type.Length > 0 ? type : name)}' is not supported; plaintext is used");
        return default;
    }

    private (SecretSlot<TlsIdentity>? Identity, SecretSlot<TlsTrust>? Trust, SanMatcher[] Sans, string[] Alpn, SslProtocols Protocols, TlsCipherSuite[]? Ciphers)
        ReadCommonTls(ConfigNode common, bool client)
    {
        SecretSlot<TlsIdentity>? identity = null;
        ConfigNode certificates = common["tls_certificates"];
        if (certificates.Items.Any())
        {
            if (certificates.Items.Skip(1).Any())
            {
                Warn(certificates, "only the first certificate is used (no selection by SNI or key type)");
            }
            ConfigNode first = certificates.Items.First();
            identity = SecretSlot.Of(first.Path, SecretStore.LoadIdentity(first, "tls_certificates"));
        }
        else if (common["tls_certificate_sds_secret_configs"].Items.FirstOrDefault() is { Exists: true } sds)
        {
            if (common["tls_certificate_sds_secret_configs"].Items.Skip(1).Any())
            {
                Warn(common["tls_certificate_sds_secret_configs"], "only the first certificate is used");
            }
            identity = Static(Secrets.Identity(SdsSource(sds), SdsName(sds)), sds);
        }
        foreach (string field in new[] { "tls_certificate_provider_instance", "tls_certificate_certificate_provider", "tls_certificate_certificate_provider_instance", "custom_handshaker", "key_log", "custom_tls_certificate_selector" })
        {
            if (common[field].Exists)
            {
                Warn(common[field], "not honoured");
            }
        }

        // Validation: static, by SDS, or both (combined: the static part's matchers, the SDS part's roots).
        SecretSlot<TlsTrust>? trust = null;
        ConfigNode validation = default;
        if (common["validation_context"].Exists)
        {
            validation = common["validation_context"];
            if (validation["trusted_ca"].Exists)
            {
                trust = SecretSlot.Of(validation.Path, SecretStore.LoadTrust(validation, "validation_context"));
            }
        }
        else if (common["validation_context_sds_secret_config"].Exists)
        {
            ConfigNode sds = common["validation_context_sds_secret_config"];
            trust = Static(Secrets.Trust(SdsSource(sds), SdsName(sds)), sds);
        }
        else if (common["combined_validation_context"].Exists)
        {
            ConfigNode combined = common["combined_validation_context"];
            validation = combined["default_validation_context"];
            ConfigNode sds = combined["validation_context_sds_secret_config"];
            if (!sds.Exists)
            {
                throw new ConfigException($"{combined.Path}: needs validation_context_sds_secret_config");
            }
            trust = Static(Secrets.Trust(SdsSource(sds), SdsName(sds)), sds);
        }
        SanMatcher[] sans = validation.Exists ? ReadSanMatchers(validation) : [];

        ConfigNode parameters = common["tls_params"];
        SslProtocols protocols;
        try
        {
            protocols = TlsContext.ProtocolRange(parameters["tls_minimum_protocol_version"].String(), parameters["tls_maximum_protocol_version"].String(), client);
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{parameters.Path}: {e.Message}");
        }
        if (protocols == SslProtocols.None)
        {
            throw new ConfigException($"{parameters.Path}: the minimum TLS version is above the maximum");
        }
        TlsCipherSuite[]? ciphers = null;
        if (parameters["cipher_suites"].Items.Any())
        {
            (TlsCipherSuite[] known, string[] unknown) = TlsContext.ParseCipherSuites(parameters["cipher_suites"].Items.Select(static n => n.String() ?? ""));
            if (unknown.Length > 0)
            {
                Warn(parameters["cipher_suites"], $"cipher suites not known here: {string.Join(", ", unknown)}");
            }
            if (known.Length == 0)
            {
                throw new ConfigException($"{parameters["cipher_suites"].Path}: none of the cipher suites is known");
            }
            ciphers = known;
        }
        foreach (string field in new[] { "ecdh_curves", "signature_algorithms" })
        {
            if (parameters[field].Items.Any())
            {
                Warn(parameters[field], "not honoured (the platform's defaults are used)");
            }
        }
        string[] alpn = [.. common["alpn_protocols"].Items.Select(static n => n.String() ?? "").Where(static p => p.Length > 0)];
        foreach (string protocol in alpn)
        {
            if (protocol.Length > 255)
            {
                throw new ConfigException($"{common["alpn_protocols"].Path}: a protocol name is longer than 255 octets");
            }
        }
        return (identity, trust, sans, alpn, protocols, ciphers);
    }

    /// <summary>match_typed_subject_alt_names, else match_subject_alt_names, else v2's verify_subject_alt_name (exact).</summary>
    private SanMatcher[] ReadSanMatchers(ConfigNode validation)
    {
        foreach (string field in new[] { "verify_certificate_hash", "verify_certificate_spki", "crl", "custom_validator_config" })
        {
            if (validation[field].Exists)
            {
                Warn(validation[field], "not honoured");
            }
        }
        if (validation["trust_chain_verification"].String() is "ACCEPT_UNTRUSTED" or "1")
        {
            Warn(validation["trust_chain_verification"], "not honoured: untrusted peers are refused");
        }
        if (validation["allow_expired_certificate"].Boolean() == true)
        {
            Warn(validation["allow_expired_certificate"], "not honoured: expired certificates are refused");
        }
        if (validation["match_typed_subject_alt_names"].Items.Any())
        {
            return [.. validation["match_typed_subject_alt_names"].Items.Select(m =>
            {
                string type = m["san_type"].String() ?? "";
                SanType san = type switch
                {
                    "DNS" or "2" => SanType.Dns,
                    "URI" or "3" => SanType.Uri,
                    "EMAIL" or "1" => SanType.Email,
                    "IP_ADDRESS" or "4" => SanType.IpAddress,
                    _ => throw new ConfigException($"{m["san_type"].Path}: '{type}' is not DNS, URI, EMAIL or IP_ADDRESS"),
                };
                return new SanMatcher(san, LoadStringMatcher(m["matcher"]));
            })];
        }
        if (validation["match_subject_alt_names"].Items.Any())
        {
            return [.. validation["match_subject_alt_names"].Items.Select(m => new SanMatcher(SanType.Any, LoadStringMatcher(m)))];
        }
        return [.. validation["verify_subject_alt_name"].Items.Select(static n => new SanMatcher(SanType.Any, new StringMatcher(StringMatchKind.Exact, n.String() ?? "")))];
    }

    /// <summary>A secret named without sds_config must be one of the bootstrap's static secrets (Envoy refuses the configuration otherwise).</summary>
    private static SecretSlot<T> Static<T>(SecretSlot<T> slot, ConfigNode sds) where T : class
    {
        if (!sds["sds_config"].Exists && !slot.IsReady)
        {
            throw new ConfigException($"{sds.Path}: no static secret '{slot.Name}' of this kind (static_resources.secrets)");
        }
        return slot;
    }

    private static string SdsName(ConfigNode sds) => sds["name"].String() is { Length: > 0 } name ? name : throw new ConfigException($"{sds["name"].Path}: a secret needs a name");

    /// <summary>An SdsSecretConfig's source: none (a static secret of the bootstrap), ADS, an SDS cluster over gRPC, or a file.</summary>
    private SecretSource SdsSource(ConfigNode sds)
    {
        ConfigNode config = sds["sds_config"];
        if (!config.Exists)
        {
            return SecretSource.Static;
        }
        if (config["ads"].Exists)
        {
            return new SecretSource(SecretSourceKind.Ads, "");
        }
        if ((config["path_config_source"]["path"].String() ?? config["path"].String()) is string path)
        {
            return new SecretSource(SecretSourceKind.Path, path);
        }
        ConfigNode api = config["api_config_source"];
        if (api.Exists)
        {
            string apiType = api["api_type"].String() ?? "GRPC";
            if (apiType is not ("GRPC" or "2"))
            {
                throw new ConfigException($"{api["api_type"].Path}: SDS is served over GRPC here, not {apiType}");
            }
            ConfigNode service = api["grpc_services"].Items.FirstOrDefault();
            bool v2 = (api["transport_api_version"].String() ?? "AUTO") is "AUTO" or "V2" or "0" or "1";
            if (service["envoy_grpc"]["cluster_name"].String() is { Length: > 0 } cluster)
            {
                return new SecretSource(SecretSourceKind.Grpc, cluster, v2);
            }
            if (service["google_grpc"]["target_uri"].String() is { Length: > 0 } uri)
            {
                return new SecretSource(SecretSourceKind.Grpc, "uri:" + uri, v2);
            }
            throw new ConfigException($"{api["grpc_services"].Path}: needs envoy_grpc.cluster_name or google_grpc.target_uri");
        }
        throw new ConfigException($"{config.Path}: SDS needs ads, api_config_source or path_config_source");
    }
}
