namespace Proxy.Core.Transport.Tls;

/// <summary>set_current_client_cert_details: the fields of this hop's element besides By and Hash.</summary>
[Flags]
public enum ClientCertDetails : byte
{
    None = 0,
    Subject = 1,
    Cert = 2,
    Chain = 4,
    Dns = 8,
    Uri = 16,
}
