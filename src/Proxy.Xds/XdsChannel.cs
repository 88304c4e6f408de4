using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;
using Proxy.Core.Transport.Tls;

namespace Proxy.Xds;

/// <summary>
/// The gRPC channel to a control plane or SDS server: http://host:port, unix:PATH (Istio's agent
/// sockets), or https://host:port with the xDS cluster's own UpstreamTlsContext (Istio 1.5 reached
/// istiod on 15011/15012 with mutual TLS): its certificate is read per connection, so a rotated one is
/// used on the next reconnect, and the server is verified against the context's roots and SAN matchers.
/// </summary>
public static class XdsChannel
{
    /// <summary>The largest response accepted (Grpc.Net.Client's default is 4 MiB; a big mesh pushes more).</summary>
    public const int MaxResponseBytes = 128 * 1024 * 1024;

    public static GrpcChannel Create(string target, TlsClientContext? tls = null)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = false,
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            ConnectTimeout = TimeSpan.FromSeconds(5),
            // A mesh's route configuration is hundreds of kilobytes: with the default 64 KiB stream
            // window every push would wait for several window updates (Envoy opens 256 MiB for xDS).
            InitialHttp2StreamWindowSize = 4 * 1024 * 1024,
        };
        string address = target;
        if (target.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = target["unix:".Length..];
            handler.ConnectCallback = async (_, token) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), token);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
            address = tls != null ? "https://xds.local" : "http://xds.local";
        }
        else if (tls != null && address.StartsWith("http://", StringComparison.Ordinal))
        {
            address = "https://" + address["http://".Length..];
        }
        if (tls != null)
        {
            handler.SslOptions = new SslClientAuthenticationOptions
            {
                TargetHost = tls.Sni.Length > 0 ? tls.Sni : null,
                ApplicationProtocols = [SslApplicationProtocol.Http2],
                EnabledSslProtocols = tls.Protocols,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                LocalCertificateSelectionCallback = (_, _, _, _, _) => tls.Identity?.Value?.Certificate!,
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    string? refused = tls.VerifyServer(certificate);
                    if (refused != null)
                    {
                        Proxy.Core.Diagnostics.ProxyLog.Write(Proxy.Core.Diagnostics.LogLevel.Warning, $"xds: TLS to {target} refused: {refused}");
                    }
                    return refused == null;
                },
            };
        }
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            MaxReceiveMessageSize = MaxResponseBytes,
            MaxSendMessageSize = 16 * 1024 * 1024,
        });
    }
}
