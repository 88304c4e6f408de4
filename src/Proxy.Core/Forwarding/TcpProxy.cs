using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Transport;

namespace Proxy.Core.Forwarding;

/// <summary>One proxied TCP connection: both directions pumped until both are done, bounded buffers, idle timeout; TLS terminated or originated where the chain or the endpoint says.</summary>
internal static class TcpProxySession
{
    private const int BufferSize = 16 * 1024;

    public static async Task RunAsync(Socket downstream, IPEndPoint? originalDestination, TcpProxyConfig config, ProxySnapshot snapshot, Action onClosed,
        Transport.Tls.TlsServerContext? tls = null, string[]? offeredAlpn = null, RbacPolicySet? rbac = null, CancellationToken stop = default)
    {
        Socket? upstream = null;
        ClusterState? reserved = null;
        Transport.Tls.TlsSession? downTls = null, upTls = null;
        try
        {
            if (tls != null)
            {
                downstream.Blocking = false; // TLS sends are non-blocking; what the kernel does not take is sent asynchronously
                (downTls, string? refused) = await Transport.Tls.TlsSession.AcceptAsync(downstream, tls, offeredAlpn, stop);
                if (downTls == null)
                {
                    ProxyLog.Peer(LogLevel.Debug, $"tcp_proxy {config.StatPrefix}: TLS refused: {refused}");
                    return;
                }
            }
            if (rbac != null && !rbac.AllowsConnection(downstream, downTls))
            {
                Transport.DownstreamLimits.Denied();
                return;
            }
            string clusterName = config.PickCluster();
            EndPoint? target = null;
            Transport.Tls.TlsClientContext? upstreamTls = null;
            TimeSpan connectTimeout = TimeSpan.FromSeconds(5);
            if (snapshot.Clusters.TryGetValue(clusterName, out Cluster? cluster))
            {
                // The cluster's max_connections bounds relayed connections as it bounds pooled ones.
                if (!cluster.State.TryReserveConnection())
                {
                    cluster.State.Stats.UpstreamCxOverflow.Inc();
                    ProxyLog.Peer(LogLevel.Debug, $"tcp_proxy {config.StatPrefix}: cluster '{clusterName}' is at max_connections; closed");
                    return;
                }
                reserved = cluster.State;
                connectTimeout = cluster.ConnectTimeout;
                if (cluster.UsesOriginalDestination)
                {
                    target = cluster.OriginalDestinationOf(originalDestination, null);
                    upstreamTls = cluster.Tls;
                }
                else if (cluster.PickEndpoint() is { } endpoint)
                {
                    target = endpoint.Address;
                    upstreamTls = endpoint.Tls;
                }
            }
            if (target == null)
            {
                ProxyLog.Peer(LogLevel.Debug, $"tcp_proxy {config.StatPrefix}: no endpoint in cluster '{clusterName}' for a connection; closed");
                return;
            }
            (upstream, string? error) = await Upstream.UpstreamConnector.ConnectAsync(target, connectTimeout, cluster?.Bind);
            if (upstream != null && upstreamTls != null)
            {
                upstream.Blocking = false;
                (upTls, error) = await Transport.Tls.TlsSession.ConnectAsync(upstream, upstreamTls, connectTimeout);
                if (upTls == null)
                {
                    upstream.Dispose();
                    upstream = null;
                }
            }
            if (upstream == null)
            {
                cluster?.State.Stats.UpstreamCxConnectFail.Inc();
                ProxyLog.Peer(LogLevel.Debug, $"tcp_proxy {config.StatPrefix}: cannot connect to {target}: {error}");
                return;
            }
            using var idle = new CancellationTokenSource();
            long lastActivity = Environment.TickCount64;
            Task watchdog = WatchIdleAsync(config.IdleTimeout, () => Volatile.Read(ref lastActivity), idle);
            var down = new Side(downstream, downTls);
            var up = new Side(upstream, upTls);
            Task toUpstream = PumpAsync(down, up, () => Volatile.Write(ref lastActivity, Environment.TickCount64), idle.Token);
            Task toDownstream = PumpAsync(up, down, () => Volatile.Write(ref lastActivity, Environment.TickCount64), idle.Token);
            await Task.WhenAll(toUpstream, toDownstream);
            await idle.CancelAsync();
            await watchdog;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            upstream?.Dispose();
            downstream.Dispose();
            upTls?.Dispose();
            downTls?.Dispose();
            reserved?.ReleaseConnection();
            onClosed();
        }
    }

    /// <summary>One end of the relay: a socket, with TLS on it or not.</summary>
    private sealed class Side(Socket socket, Transport.Tls.TlsSession? tls)
    {
        public Socket Socket => socket;

        public ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancel) =>
            tls != null ? tls.ReadAsync(buffer) : socket.ReceiveAsync(buffer, SocketFlags.None, cancel);

        public async ValueTask WriteAsync(byte[] buffer, int count, CancellationToken cancel)
        {
            if (tls == null)
            {
                await socket.SendAsync(buffer.AsMemory(0, count), SocketFlags.None, cancel);
                return;
            }
            if (!tls.Write(buffer, count))
            {
                throw new IOException("TLS write failed");
            }
            await DrainAsync(cancel);
        }

        private async ValueTask DrainAsync(CancellationToken cancel)
        {
            while (tls!.HasBacklog)
            {
                int sent = await socket.SendAsync(tls.Backlog, SocketFlags.None, cancel);
                if (sent <= 0)
                {
                    throw new IOException("connection closed");
                }
                tls.BacklogSent(sent);
            }
        }

        /// <summary>Ends the sending direction (TLS: close_notify first).</summary>
        public async ValueTask ShutdownSendAsync(CancellationToken cancel)
        {
            if (tls != null)
            {
                await tls.ShutdownAsync();
                await DrainAsync(cancel);
            }
            socket.Shutdown(SocketShutdown.Send);
        }

        public void Dispose() => socket.Dispose();
    }

    /// <summary>Copies until the source ends, then ends the destination's sending side (half-close).</summary>
    private static async Task PumpAsync(Side from, Side to, Action active, CancellationToken cancel)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            while (true)
            {
                int n = await from.ReadAsync(buffer.AsMemory(0, BufferSize), cancel);
                if (n == 0)
                {
                    await to.ShutdownSendAsync(cancel);
                    return;
                }
                active();
                await to.WriteAsync(buffer, n, cancel);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or IOException or InvalidOperationException or System.Security.Authentication.AuthenticationException)
        {
            // One side reset or timed out: both go.
            from.Dispose();
            to.Dispose();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static async Task WatchIdleAsync(TimeSpan timeout, Func<long> lastActivity, CancellationTokenSource idle)
    {
        if (timeout <= TimeSpan.Zero)
        {
            return;
        }
        long limit = (long)timeout.TotalMilliseconds;
        try
        {
            while (true)
            {
                long wait = lastActivity() + limit - Environment.TickCount64;
                if (wait <= 0)
                {
                    await idle.CancelAsync();
                    return;
                }
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(wait, 60_000)), idle.Token);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
