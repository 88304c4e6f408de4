using System.Net;
using System.Net.Sockets;
using Proxy.Core.Listeners;
using Proxy.Core.Routing;
using Proxy.Core.Transport;

namespace Proxy.Core.Runtime;

/// <summary>How the runtime API is served: its limits and defaults.</summary>
public sealed class RuntimeApiOptions
{
    /// <summary>The largest request or response message (16 MiB by default).</summary>
    public int MaxMessageBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>
    /// The most message octets one connection's calls may hold at once (requests being received and
    /// responses being collected); a call past it fails with RESOURCE_EXHAUSTED. Default: four messages.
    /// </summary>
    public long ConnectionBudgetBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>A call's timeout when neither its deadline nor rpc_request_timeout says less (Layotto's 3,000 ms).</summary>
    public int DefaultTimeoutMs { get; init; } = 3000;

    /// <summary>SayHello's greeting (Layotto's helloworld component answers what its config says; its demos say "greetings").</summary>
    public string Greeting { get; init; } = "greetings";

    /// <summary>The connection's limits and timeouts (HTTP/2 settings, idle and preface timeouts).</summary>
    public ListenerOptions Listener { get; init; } = ListenerOptions.Standalone;
}

/// <summary>Counters of the runtime API (the admin endpoint and tests read them).</summary>
public static class RuntimeApiStats
{
    private static readonly long[] s_byStatus = new long[17];
    private static long s_calls;

    /// <summary>Calls answered, whatever their status.</summary>
    public static long Calls => Volatile.Read(ref s_calls);

    /// <summary>Calls answered with gRPC status <paramref name="status"/> (0..16).</summary>
    public static long WithStatus(int status) => (uint)status < s_byStatus.Length ? Volatile.Read(ref s_byStatus[status]) : 0;

    internal static void Answered(int status)
    {
        Interlocked.Increment(ref s_calls);
        if ((uint)status < s_byStatus.Length)
        {
            Interlocked.Increment(ref s_byStatus[status]);
        }
    }
}

/// <summary>
/// Layotto's gRPC runtime API (spec.proto.runtime.v1.Runtime) served on our own HTTP/2 codec and
/// transport, h2c, on a TCP address or a unix socket. InvokeService calls become requests that go through
/// the current snapshot's routes, clusters and pools like any other traffic.
/// </summary>
public sealed class RuntimeApiServer : IAsyncDisposable
{
    private readonly ProxyListener _listener;
    private readonly string? _socketPath;

    public RuntimeApiServer(EndPoint address, SnapshotHolder snapshots, RuntimeApiOptions? options = null)
    {
        Options = options ?? new RuntimeApiOptions();
        Snapshots = snapshots;
        if (address is UnixDomainSocketEndPoint unix)
        {
            string path = unix.ToString();
            if (path.Length > 0 && path[0] != '\0' && path[0] != '@')
            {
                _socketPath = path;
                RemoveStaleSocket(path);
            }
        }
        // HTTP/1.1 clients reach a listener with no routes: 404.
        var config = new ListenerConfig("runtime-api", new IPEndPoint(IPAddress.Loopback, 0), new RouteConfiguration("runtime-api", []))
        {
            Options = Options.Listener,
        };
        _listener = new ProxyListener(config, () => config, address,
            (connection, listenerConfig, listenerOptions) => new RuntimeApiConnection(connection, listenerConfig, listenerOptions, this));
    }

    public RuntimeApiOptions Options { get; }
    internal SnapshotHolder Snapshots { get; }

    /// <summary>The address served (for a TCP port 0, the port chosen).</summary>
    public EndPoint EndPoint => _listener.BoundEndPoint;

    public void Start() => _listener.Start();

    /// <summary>Parses "HOST:PORT", "[V6]:PORT" or "unix:PATH" ("unix:@NAME" for the abstract namespace).</summary>
    public static bool TryParseAddress(string text, out EndPoint? address, out string? error)
    {
        address = null;
        error = null;
        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = text[5..];
            if (path.Length == 0)
            {
                error = "unix: needs a socket path";
                return false;
            }
            address = new UnixDomainSocketEndPoint(path[0] == '@' ? "\0" + path[1..] : path);
            return true;
        }
        if (IPEndPoint.TryParse(text, out IPEndPoint? ip) && ip.Port > 0 && text.Contains(':', StringComparison.Ordinal))
        {
            address = ip;
            return true;
        }
        error = $"'{text}' is not HOST:PORT (an IP address and a port) or unix:PATH";
        return false;
    }

    /// <summary>A socket file left by a process that is gone would make bind fail: remove it (only a socket).</summary>
    private static void RemoveStaleSocket(string path)
    {
        try
        {
            // A socket shows as an empty file; connecting to it is refused when nobody listens.
            if (File.Exists(path) && new FileInfo(path).Length == 0)
            {
                using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    probe.Connect(new UnixDomainSocketEndPoint(path));
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
                {
                    File.Delete(path); // nobody listens on it
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SocketException)
        {
            // Bind reports what is wrong.
        }
    }

    public async Task StopAcceptingAndDrainAsync() => await _listener.StopAcceptingAndDrainAsync();

    public async ValueTask DisposeAsync()
    {
        await _listener.DisposeAsync();
        if (_socketPath != null)
        {
            try
            {
                File.Delete(_socketPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
    }
}
