using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Proxy.Core.Transport.Tls;
using Proxy.Xds.Secrets;

namespace Proxy.Xds.Admin;

/// <summary>
/// Envoy's <c>GET /certs</c>: per secret held, its roots (<c>ca_cert</c>) or its certificate chain
/// (<c>cert_chain</c>), each certificate with serial number, SANs, validity and days until expiry.
/// </summary>
public static class CertsDump
{
    public static string Render(SecretStore store, DateTime? now = null)
    {
        DateTime at = now ?? DateTime.UtcNow;
        var certificates = new JsonArray();
        foreach (SecretStore.SecretEntry entry in store.Entries.OrderBy(static e => e.Name, StringComparer.Ordinal))
        {
            var item = new JsonObject();
            if (entry.Trust.Value is TlsTrust trust)
            {
                item["ca_cert"] = new JsonArray([.. trust.Roots.Select(c => Describe(c, entry.Name, at))]);
            }
            if (entry.Identity.Value is TlsIdentity identity)
            {
                item["cert_chain"] = new JsonArray([.. identity.Intermediates.Prepend(identity.Certificate).Select(c => Describe(c, entry.Name, at))]);
            }
            if (item.Count > 0)
            {
                certificates.Add((JsonNode)item);
            }
        }
        return new JsonObject { ["certificates"] = certificates }.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    private static JsonObject Describe(X509Certificate2 certificate, string source, DateTime now)
    {
        SubjectAltNames names = SubjectAltNames.Read(certificate);
        var sans = new JsonArray();
        foreach (string uri in names.Uris)
        {
            sans.Add((JsonNode)new JsonObject { ["uri"] = uri });
        }
        foreach (string dns in names.Dns)
        {
            sans.Add((JsonNode)new JsonObject { ["dns"] = dns });
        }
        foreach (string ip in names.IpAddresses)
        {
            sans.Add((JsonNode)new JsonObject { ["ip_address"] = ip });
        }
        return new JsonObject
        {
            ["path"] = $"<sds: {source}>",
            ["serial_number"] = certificate.SerialNumber.ToLowerInvariant(),
            ["subject_alt_names"] = sans,
            ["days_until_expiration"] = ((long)Math.Floor((certificate.NotAfter.ToUniversalTime() - now).TotalDays)).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["valid_from"] = certificate.NotBefore.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture),
            ["expiration_time"] = certificate.NotAfter.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture),
        };
    }
}
