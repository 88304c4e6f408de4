using System.Collections.Concurrent;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Xds.Config;
using PbSecret = Proxy.Xds.Api.Tls.Secret;

namespace Proxy.Xds.Secrets;

/// <summary>Where a secret comes from: the bootstrap's static secrets, an SDS server (a cluster), ADS, or a file.</summary>
public readonly record struct SecretSource(SecretSourceKind Kind, string Target, bool V2 = false)
{
    public static readonly SecretSource Static = new(SecretSourceKind.Static, "");

    public override string ToString() => Kind switch
    {
        SecretSourceKind.Static => "static secrets",
        SecretSourceKind.Grpc => $"SDS cluster '{Target}'",
        SecretSourceKind.Ads => "ADS",
        _ => $"file '{Target}'",
    };
}

public enum SecretSourceKind : byte
{
    Static,
    Grpc,
    Ads,
    Path,
}

/// <summary>
/// Every named secret the TLS contexts refer to, per source: the slots handshakes read, filled when the
/// secret arrives and replaced when it rotates (a handshake started after the change uses the new one;
/// established connections carry on). A response with a certificate or key that does not load is refused
/// whole (NACK) and the secrets already held keep serving.
/// </summary>
public sealed class SecretStore
{
    private readonly ConcurrentDictionary<(SecretSource Source, string Name), SecretEntry> _entries = new();

    /// <summary>One named secret of one source: its slots (a TLS certificate, a validation context), version and time.</summary>
    public sealed class SecretEntry(SecretSource source, string name)
    {
        public SecretSource Source { get; } = source;
        public string Name { get; } = name;
        public SecretSlot<TlsIdentity> Identity { get; } = new(name);
        public SecretSlot<TlsTrust> Trust { get; } = new(name);
        public string Version { get; set; } = "";
        public DateTime Updated { get; set; }
        /// <summary>The resource as it came (for /config_dump; keys are redacted there).</summary>
        public PbSecret? Proto { get; set; }
        public bool IsReady => Proto != null;
    }

    /// <summary>Raised when a source asks for a name it did not ask for before (a client then sends a new request).</summary>
    public event Action<SecretSource>? Demanded;

    /// <summary>Raised after secrets were applied (warming listeners and clusters can go live).</summary>
    public event Action? Changed;

    public SecretSlot<TlsIdentity> Identity(SecretSource source, string name) => Entry(source, name).Identity;

    public SecretSlot<TlsTrust> Trust(SecretSource source, string name) => Entry(source, name).Trust;

    private SecretEntry Entry(SecretSource source, string name)
    {
        bool added = false;
        SecretEntry entry = _entries.GetOrAdd((source, name), key =>
        {
            added = true;
            return new SecretEntry(key.Source, key.Name);
        });
        if (added && source.Kind != SecretSourceKind.Static)
        {
            Demanded?.Invoke(source);
        }
        return entry;
    }

    /// <summary>The names asked of a source (what an SDS request lists).</summary>
    public IReadOnlyList<string> Names(SecretSource source) =>
        [.. _entries.Keys.Where(k => k.Source == source).Select(static k => k.Name).Order(StringComparer.Ordinal)];

    /// <summary>Every source something asked of (clients to start).</summary>
    public IReadOnlyList<SecretSource> Sources => [.. _entries.Keys.Select(static k => k.Source).Distinct()];

    public IReadOnlyCollection<SecretEntry> Entries => [.. _entries.Values];

    /// <summary>
    /// Applies secrets from <paramref name="source"/> (an SDS response, a file, the bootstrap). All are
    /// loaded first: one that does not load refuses the whole update (a <see cref="ConfigException"/>
    /// that says which and why) and nothing changes.
    /// </summary>
    public void Apply(SecretSource source, IReadOnlyList<ConfigNode> secrets, string version, IReadOnlyList<PbSecret>? protos = null)
    {
        var loaded = new List<(string Name, int Index, TlsIdentity? Identity, TlsTrust? Trust)>(secrets.Count);
        for (int i = 0; i < secrets.Count; i++)
        {
            ConfigNode secret = secrets[i];
            string name = secret["name"].String() ?? "";
            string what = $"secret '{name}' from {source}";
            if (name.Length == 0)
            {
                throw new ConfigException($"{secret.Path}: a secret from {source} has no name");
            }
            if (secret["tls_certificate"].Exists)
            {
                loaded.Add((name, i, LoadIdentity(secret["tls_certificate"], what), null));
            }
            else if (secret["validation_context"].Exists)
            {
                loaded.Add((name, i, null, LoadTrust(secret["validation_context"], what)));
            }
            else
            {
                ProxyLog.Write(LogLevel.Warning, $"{what}: only tls_certificate and validation_context secrets are used; ignored");
            }
        }
        DateTime now = DateTime.UtcNow;
        foreach (var (name, index, identity, trust) in loaded)
        {
            SecretEntry entry = _entries.GetOrAdd((source, name), static key => new SecretEntry(key.Source, key.Name));
            if (identity != null)
            {
                entry.Identity.Set(identity);
            }
            if (trust != null)
            {
                entry.Trust.Set(trust);
            }
            entry.Proto = protos?[index] ?? new PbSecret { Name = name };
            entry.Version = version;
            entry.Updated = now;
            ProxyLog.Write(LogLevel.Info, $"sds: secret '{name}' from {source} applied (version {version}{(identity != null ? $"; certificate {identity.Certificate.Subject}, valid until {identity.Certificate.NotAfter:u}" : "")})");
        }
        if (loaded.Count > 0)
        {
            Changed?.Invoke();
        }
    }

    /// <summary>A TlsCertificate (PEM chain and key, by file, inline or environment variable).</summary>
    public static TlsIdentity LoadIdentity(ConfigNode certificate, string what)
    {
        if (certificate["pkcs12"].Exists || certificate["password"].Exists || certificate["private_key_provider"].Exists)
        {
            throw new ConfigException($"{certificate.Path}: pkcs12, private key providers and password-protected keys are not supported (PEM certificate_chain and private_key are)");
        }
        string chain = ReadDataSource(certificate["certificate_chain"]);
        string key = ReadDataSource(certificate["private_key"]);
        return TlsIdentity.FromPem(chain, key, $"{what} ({certificate.Path})");
    }

    /// <summary>A CertificateValidationContext's trusted_ca.</summary>
    public static TlsTrust LoadTrust(ConfigNode validation, string what) =>
        TlsTrust.FromPem(ReadDataSource(validation["trusted_ca"]), $"{what} ({validation.Path})");

    /// <summary>An Envoy DataSource as text (inline_bytes are the file's octets, base64 in JSON and YAML).</summary>
    public static string ReadDataSource(ConfigNode source)
    {
        if (source["inline_bytes"].String() is string base64)
        {
            try
            {
                return System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(base64));
            }
            catch (FormatException)
            {
                throw new ConfigException($"{source["inline_bytes"].Path}: not base64");
            }
        }
        if (source["inline_string"].String() is string text)
        {
            return text;
        }
        if (source["environment_variable"].String() is string variable)
        {
            return Environment.GetEnvironmentVariable(variable)
                ?? throw new ConfigException($"{source["environment_variable"].Path}: environment variable '{variable}' is not set");
        }
        if (source["filename"].String() is string file)
        {
            try
            {
                return File.ReadAllText(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                throw new ConfigException($"{source["filename"].Path}: cannot read '{file}': {e.Message}");
            }
        }
        throw new ConfigException($"{source.Path}: missing (filename, inline_bytes, inline_string or environment_variable)");
    }
}
