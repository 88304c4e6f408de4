using System.Formats.Asn1;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Proxy.Core.Config;

namespace Proxy.Core.Transport.Tls;

/// <summary>The subject alternative names Envoy matches on: DNS, URI (SPIFFE identities), email and IP.</summary>
public sealed class SubjectAltNames
{
    public static readonly SubjectAltNames None = new([], [], [], []);

    private SubjectAltNames(string[] dns, string[] uris, string[] emails, string[] ips)
    {
        Dns = dns;
        Uris = uris;
        Emails = emails;
        IpAddresses = ips;
    }

    public string[] Dns { get; }
    public string[] Uris { get; }
    public string[] Emails { get; }
    public string[] IpAddresses { get; }

    /// <summary>The identity Envoy gives a peer: its first URI SAN, else its first DNS SAN (RBAC's authenticated principal_name).</summary>
    public string? Principal => Uris.Length > 0 ? Uris[0] : Dns.Length > 0 ? Dns[0] : null;

    /// <summary>The SANs of a certificate; none when it has no (readable) extension.</summary>
    public static SubjectAltNames Read(X509Certificate2 certificate)
    {
        foreach (X509Extension extension in certificate.Extensions)
        {
            if (extension.Oid?.Value == "2.5.29.17")
            {
                try
                {
                    return Parse(extension.RawData);
                }
                catch (Exception e) when (e is AsnContentException or CryptographicException or ArgumentException)
                {
                    return None;
                }
            }
        }
        return None;
    }

    private static SubjectAltNames Parse(byte[] der)
    {
        List<string> dns = [], uris = [], emails = [], ips = [];
        var reader = new AsnReader(der, AsnEncodingRules.DER);
        AsnReader names = reader.ReadSequence();
        while (names.HasData)
        {
            Asn1Tag tag = names.PeekTag();
            if (tag.TagClass != TagClass.ContextSpecific)
            {
                names.ReadEncodedValue();
                continue;
            }
            switch (tag.TagValue)
            {
                case 1:
                    emails.Add(names.ReadCharacterString(UniversalTagNumber.IA5String, tag));
                    break;
                case 2:
                    dns.Add(names.ReadCharacterString(UniversalTagNumber.IA5String, tag));
                    break;
                case 6:
                    uris.Add(names.ReadCharacterString(UniversalTagNumber.IA5String, tag));
                    break;
                case 7:
                    byte[] address = names.ReadOctetString(tag);
                    if (address.Length is 4 or 16)
                    {
                        ips.Add(new IPAddress(address).ToString());
                    }
                    break;
                default:
                    names.ReadEncodedValue();
                    break;
            }
        }
        return new SubjectAltNames([.. dns], [.. uris], [.. emails], [.. ips]);
    }
}

/// <summary>Which SANs a matcher looks at (Envoy's SubjectAltNameMatcher.san_type; Any for the deprecated match_subject_alt_names).</summary>
public enum SanType : byte
{
    Any,
    Dns,
    Uri,
    Email,
    IpAddress,
}

/// <summary>One SAN matcher of a validation context: a peer passes when any of its SANs of the type matches.</summary>
public sealed class SanMatcher(SanType type, StringMatcher matcher)
{
    public SanType Type { get; } = type;
    public StringMatcher Matcher { get; } = matcher;

    public bool Matches(SubjectAltNames names) => Type switch
    {
        SanType.Dns => Any(names.Dns, dnsWildcard: true),
        SanType.Uri => Any(names.Uris),
        SanType.Email => Any(names.Emails),
        SanType.IpAddress => Any(names.IpAddresses),
        _ => Any(names.Dns, dnsWildcard: true) || Any(names.Uris) || Any(names.Emails) || Any(names.IpAddresses),
    };

    private bool Any(string[] values, bool dnsWildcard = false)
    {
        foreach (string value in values)
        {
            if (Matcher.Matches(System.Text.Encoding.UTF8.GetBytes(value)))
            {
                return true;
            }
            // Envoy: an exact DNS matcher also accepts a certificate's wildcard name that covers it.
            if (dnsWildcard && Matcher.Kind == StringMatchKind.Exact && value.StartsWith("*.", StringComparison.Ordinal))
            {
                int dot = Matcher.Value.IndexOf('.', StringComparison.Ordinal);
                if (dot > 0 && string.Equals(Matcher.Value[dot..], value[1..], StringComparison.OrdinalIgnoreCase))
                {
                    return true;
                }
            }
        }
        return false;
    }

    public override string ToString() => $"{Type} {Matcher.Kind} '{Matcher.Value}'";
}
