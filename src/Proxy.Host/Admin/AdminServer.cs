using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Proxy.Core;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Transport;

namespace Proxy.Host.Admin;

/// <summary>What the admin endpoint shows and acts on.</summary>
public sealed class AdminContext
{
    public required ProxyServer Server { get; init; }
    public required ServerLifecycle Lifecycle { get; init; }
    public required CommandLine Options { get; init; }

    /// <summary>The node as sent to the control plane (JSON), for /server_info.</summary>
    public string NodeJson { get; init; } = "{}";

    /// <summary>/config_dump's answer (status and JSON or error text) for resource=, mask=, name_regex= and include_eds; null: not available.</summary>
    public Func<string?, string?, string?, bool, (int Status, string Body)>? ConfigDump { get; init; }

    /// <summary>GET /certs: the certificates and roots held (SDS and static secrets).</summary>
    public Func<string>? Certs { get; init; }

    /// <summary>Drains the listeners (all, or only the inbound ones; gracefully or at once) for /drain_listeners.</summary>
    public required Func<bool, bool, Task> DrainListeners { get; init; }
}

/// <summary>
/// Envoy's admin API on the bootstrap's admin.address (Istio: 127.0.0.1:15000), in Envoy's formats,
/// because pilot-agent, istioctl and Prometheus call it. A small HTTP/1.1 server of its own, off the
/// proxy's event loops: heads up to 16 KiB, keep-alive with a 60 s idle limit, at most 64 connections.
/// Mutating endpoints answer only POST (405 otherwise), as Envoy's do.
/// </summary>
public sealed class AdminServer : IAsyncDisposable
{
    private const int MaxHead = 16 * 1024;
    private const int MaxBody = 64 * 1024;
    private const int MaxConnections = 64;
    private static readonly TimeSpan s_idle = TimeSpan.FromSeconds(60);

    // A request head must be complete this long after its first octet: a client trickling bytes cannot
    // hold one of the few connection slots (pilot-agent's readiness probes need them).
    private static readonly TimeSpan s_headTimeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly AdminContext _context;
    private readonly CancellationTokenSource _stop = new();
    private Task? _accepting;
    private int _connections;

    public AdminServer(IPEndPoint address, AdminContext context)
    {
        _context = context;
        _socket = ListenSocket.Create(address);
        _socket.Bind(address);
        _socket.Listen(64);
        EndPoint = (IPEndPoint)_socket.LocalEndPoint!;
    }

    public IPEndPoint EndPoint { get; }

    public void Start() => _accepting = AcceptAsync();

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _socket.AcceptAsync(_stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            if (Interlocked.Increment(ref _connections) > MaxConnections)
            {
                Interlocked.Decrement(ref _connections);
                client.Dispose();
                continue;
            }
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        try
        {
            client.NoDelay = true;
            using var stream = new NetworkStream(client, ownsSocket: true);
            var buffer = new byte[MaxHead];
            int have = 0;
            while (!_stop.IsCancellationRequested)
            {
                int headEnd;
                long headStarted = have > 0 ? Environment.TickCount64 : 0;
                while ((headEnd = buffer.AsSpan(0, have).IndexOf("\r\n\r\n"u8)) < 0)
                {
                    if (have == buffer.Length)
                    {
                        await WriteAsync(stream, 431, "text/plain", "request head too large\n", close: true);
                        return;
                    }
                    using var idle = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                    idle.CancelAfter(headStarted == 0 ? s_idle : TimeSpan.FromMilliseconds(Math.Max(1, s_headTimeout.TotalMilliseconds - (Environment.TickCount64 - headStarted))));
                    int n = await stream.ReadAsync(buffer.AsMemory(have), idle.Token);
                    if (n == 0)
                    {
                        return;
                    }
                    if (headStarted == 0)
                    {
                        headStarted = Environment.TickCount64;
                    }
                    have += n;
                }
                if (!TryParseHead(Encoding.Latin1.GetString(buffer, 0, headEnd), out string method, out string target, out long contentLength, out bool close))
                {
                    await WriteAsync(stream, 400, "text/plain", "bad request\n", close: true);
                    return;
                }
                int consumed = headEnd + 4;
                if (contentLength > MaxBody)
                {
                    await WriteAsync(stream, 413, "text/plain", "request body too large\n", close: true);
                    return;
                }
                // The body (admin takes its arguments in the query) is read and set aside.
                long skip = contentLength;
                int inBuffer = (int)Math.Min(skip, have - consumed);
                consumed += inBuffer;
                skip -= inBuffer;
                var scratch = new byte[4096];
                while (skip > 0)
                {
                    int n = await stream.ReadAsync(scratch.AsMemory(0, (int)Math.Min(scratch.Length, skip)), _stop.Token);
                    if (n == 0)
                    {
                        return;
                    }
                    skip -= n;
                }
                Buffer.BlockCopy(buffer, consumed, buffer, 0, have - consumed);
                have -= consumed;
                var (status, type, body, after) = Handle(method, target);
                await WriteAsync(stream, status, type, body, close, head: method == "HEAD");
                after?.Invoke();
                if (close)
                {
                    return;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away or idled out.
        }
        finally
        {
            Interlocked.Decrement(ref _connections);
        }
    }

    private static bool TryParseHead(string head, out string method, out string target, out long contentLength, out bool close)
    {
        method = target = "";
        contentLength = 0;
        close = false;
        string[] lines = head.Split("\r\n");
        string[] request = lines[0].Split(' ');
        if (request.Length != 3 || !request[2].StartsWith("HTTP/1.", StringComparison.Ordinal) || request[1].Length == 0)
        {
            return false;
        }
        method = request[0];
        target = request[1];
        close = request[2] == "HTTP/1.0";
        for (int i = 1; i < lines.Length; i++)
        {
            int colon = lines[i].IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                return false;
            }
            string name = lines[i][..colon].Trim();
            string value = lines[i][(colon + 1)..].Trim();
            if (name.Equals("content-length", StringComparison.OrdinalIgnoreCase))
            {
                if (!long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out contentLength))
                {
                    return false;
                }
            }
            else if (name.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase))
            {
                return false; // no chunked bodies here
            }
            else if (name.Equals("connection", StringComparison.OrdinalIgnoreCase))
            {
                close = value.Contains("close", StringComparison.OrdinalIgnoreCase) || (close && !value.Contains("keep-alive", StringComparison.OrdinalIgnoreCase));
            }
        }
        return true;
    }

    private static async Task WriteAsync(NetworkStream stream, int status, string type, string body, bool close, bool head = false)
    {
        byte[] content = Encoding.UTF8.GetBytes(body);
        string reason = status switch
        {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        string response = $"HTTP/1.1 {status} {reason}\r\ncontent-type: {type}\r\ncontent-length: {content.Length}\r\ncache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n{(close ? "connection: close\r\n" : "")}\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(response));
        if (!head)
        {
            await stream.WriteAsync(content);
        }
    }

    private static readonly (string Path, bool Mutates, string Help)[] s_endpoints =
    [
        ("/", false, "this list"),
        ("/help", false, "this list"),
        ("/ready", false, "LIVE (200) once initialized, else the server state (503)"),
        ("/server_info", false, "version, state, uptime, command line options and node (JSON)"),
        ("/stats", false, "stats: usedonly, filter=REGEX, format=json|prometheus"),
        ("/stats/prometheus", false, "stats in Prometheus' text format: usedonly, filter=REGEX"),
        ("/clusters", false, "upstream clusters and their endpoints: format=json"),
        ("/listeners", false, "listeners and their addresses: format=json"),
        ("/config_dump", false, "the configuration (envoy.admin.v3 dump types): resource=, mask=, name_regex=, include_eds"),
        ("/memory", false, "memory use (JSON)"),
        ("/certs", false, "print certs on machine"),
        ("/quitquitquit", true, "drain and exit"),
        ("/healthcheck/fail", true, "fail health checks (and /ready with it)"),
        ("/healthcheck/ok", true, "pass health checks again"),
        ("/logging", true, "level=trace|debug|info|warning|error|critical|off"),
        ("/reset_counters", true, "counters back to zero (Prometheus keeps totals)"),
        ("/drain_listeners", true, "drain listeners: inboundonly (listeners named *inbound*), graceful (keep accepting for the drain time while telling clients to go, then exit unless skip_exit)"),
    ];

    /// <summary>Answers one request: status, content type, body, and what to do once it is sent.</summary>
    public (int Status, string Type, string Body, Action? After) Handle(string method, string target)
    {
        int q = target.IndexOf('?', StringComparison.Ordinal);
        string path = q < 0 ? target : target[..q];
        Dictionary<string, string> query = ParseQuery(q < 0 ? "" : target[(q + 1)..]);
        var endpoint = Array.Find(s_endpoints, e => e.Path == path);
        if (endpoint.Path == null)
        {
            return (404, "text/plain", $"invalid path. admin commands are:\n{Help()}", null);
        }
        if (endpoint.Mutates && method != "POST")
        {
            return (405, "text/plain", "This endpoint should be requested with POST\n", null);
        }
        if (!endpoint.Mutates && method is not ("GET" or "HEAD"))
        {
            return (405, "text/plain", "This endpoint should be requested with GET\n", null);
        }
        ServerLifecycle life = _context.Lifecycle;
        switch (path)
        {
            case "/":
            case "/help":
                return (200, "text/plain", $"admin commands are:\n{Help()}", null);
            case "/ready":
                ServerState state = life.State;
                return state == ServerState.Live && !life.HealthCheckFailed ? (200, "text/plain", "LIVE\n", null) : (503, "text/plain", ServerLifecycle.Name(state) + "\n", null);
            case "/server_info":
                return (200, "application/json", ServerInfo(), null);
            case "/stats":
                return Stats(query);
            case "/stats/prometheus":
                return Stats(new Dictionary<string, string>(query) { ["format"] = "prometheus" });
            case "/clusters":
                return (200, query.GetValueOrDefault("format") == "json" ? "application/json" : "text/plain", Clusters(query.GetValueOrDefault("format") == "json"), null);
            case "/listeners":
                return (200, query.GetValueOrDefault("format") == "json" ? "application/json" : "text/plain", Listeners(query.GetValueOrDefault("format") == "json"), null);
            case "/config_dump":
                if (_context.ConfigDump == null)
                {
                    return (503, "text/plain", "no configuration to dump\n", null);
                }
                var (dumpStatus, dump) = _context.ConfigDump(query.GetValueOrDefault("resource"), query.GetValueOrDefault("mask"), query.GetValueOrDefault("name_regex"), query.ContainsKey("include_eds"));
                return (dumpStatus, dumpStatus == 200 ? "application/json" : "text/plain", dump, null);
            case "/memory":
                var info = GC.GetGCMemoryInfo();
                return (200, "application/json", $"{{\"allocated\":\"{GC.GetTotalMemory(false)}\",\"heap_size\":\"{info.HeapSizeBytes}\",\"total_physical_bytes\":\"{Environment.WorkingSet}\",\"total_thread_cache\":\"0\",\"pageheap_unmapped\":\"0\",\"pageheap_free\":\"0\"}}\n", null);
            case "/certs":
                return (200, "application/json", _context.Certs?.Invoke() ?? "{\"certificates\":[]}\n", null);
            case "/quitquitquit":
                return (200, "text/plain", "OK\n", life.RequestStop);
            case "/healthcheck/fail":
                life.HealthCheckFailed = true;
                return (200, "text/plain", "OK\n", null);
            case "/healthcheck/ok":
                life.HealthCheckFailed = false;
                return (200, "text/plain", "OK\n", null);
            case "/logging":
                return Logging(query);
            case "/reset_counters":
                StatsStore.Default.ResetCounters();
                return (200, "text/plain", "OK\n", null);
            case "/drain_listeners":
                bool inboundOnly = query.ContainsKey("inboundonly");
                bool graceful = query.ContainsKey("graceful");
                bool exit = graceful && !query.ContainsKey("skip_exit");
                // Draining from this answer on: a /ready right after the OK already says DRAINING.
                _context.Lifecycle.StartDraining();
                return (200, "text/plain", "OK\n", () => _ = DrainAsync(inboundOnly, graceful, exit));
            default:
                return (404, "text/plain", "invalid path\n", null);
        }
    }

    private async Task DrainAsync(bool inboundOnly, bool graceful, bool exit)
    {
        await _context.DrainListeners(inboundOnly, graceful);
        if (exit)
        {
            _context.Lifecycle.RequestStop();
        }
    }

    private static string Help() => string.Concat(s_endpoints.Where(e => e.Path != "/").Select(e => $"  {e.Path}: {e.Help}{(e.Mutates ? " (POST)" : "")}\n"));

    private static Dictionary<string, string> ParseQuery(string query)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=', StringComparison.Ordinal);
            string name = Uri.UnescapeDataString((eq < 0 ? pair : pair[..eq]).Replace('+', ' '));
            string value = eq < 0 ? "" : Uri.UnescapeDataString(pair[(eq + 1)..].Replace('+', ' '));
            values[name] = value;
        }
        return values;
    }

    private static (int, string, string, Action?) Stats(Dictionary<string, string> query)
    {
        Regex? filter = null;
        if (query.TryGetValue("filter", out string? pattern) && pattern.Length > 0)
        {
            try
            {
                filter = new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(100));
            }
            catch (ArgumentException e)
            {
                return (400, "text/plain", $"Invalid regex: {e.Message}\n", null);
            }
        }
        List<Stat> stats;
        try
        {
            stats = StatsFormat.Select(StatsStore.Default, query.ContainsKey("usedonly"), filter);
        }
        catch (RegexMatchTimeoutException)
        {
            return (400, "text/plain", "Invalid regex: too slow\n", null);
        }
        return query.GetValueOrDefault("format") switch
        {
            "json" => (200, "application/json", StatsFormat.Json(stats), null),
            "prometheus" => (200, "text/plain; version=0.0.4", StatsFormat.Prometheus(stats), null),
            null or "" or "text" => (200, "text/plain", StatsFormat.Text(stats), null),
            string other => (400, "text/plain", $"usage: /stats?format=json|prometheus|text (not '{other}')\n", null),
        };
    }

    private static (int, string, string, Action?) Logging(Dictionary<string, string> query)
    {
        if (query.TryGetValue("level", out string? level))
        {
            try
            {
                ProxyLog.Level = ProxyLog.Parse(level);
            }
            catch (ArgumentOutOfRangeException)
            {
                return (400, "text/plain", $"unknown level '{level}': trace, debug, info, warning, error, critical, off\n", null);
            }
        }
        return (200, "text/plain", $"active loggers:\n  proxy: {ProxyLog.Level.ToString().ToLowerInvariant()}\n", null);
    }

    private string ServerInfo()
    {
        ServerLifecycle life = _context.Lifecycle;
        CommandLine o = _context.Options;
        long uptime = (long)(DateTime.UtcNow - life.StartedAt).TotalSeconds;
        var json = new StringBuilder("{");
        json.Append("\"version\":").Append(StatsFormat.Quote($"layotto-fast/{Program.Version}/Clean/RELEASE/BoringSSL"));
        json.Append(",\"state\":").Append(StatsFormat.Quote(ServerLifecycle.Name(life.State)));
        json.Append(",\"hot_restart_version\":\"disabled\"");
        json.Append(",\"command_line_options\":{");
        json.Append("\"base_id\":\"0\",\"concurrency\":").Append(o.Concurrency.ToString(CultureInfo.InvariantCulture));
        json.Append(",\"config_path\":").Append(StatsFormat.Quote(o.ConfigPath ?? ""));
        json.Append(",\"config_yaml\":").Append(StatsFormat.Quote(o.ConfigYaml ?? ""));
        json.Append(",\"log_level\":").Append(StatsFormat.Quote(o.LogLevel));
        json.Append(",\"service_cluster\":").Append(StatsFormat.Quote(o.ServiceCluster ?? ""));
        json.Append(",\"service_node\":").Append(StatsFormat.Quote(o.ServiceNode ?? ""));
        json.Append(",\"drain_time\":").Append(StatsFormat.Quote($"{o.DrainTimeSeconds}s"));
        json.Append(",\"mode\":").Append(StatsFormat.Quote(o.Mode == "validate" ? "Validate" : "Serve"));
        json.Append("},\"node\":").Append(_context.NodeJson);
        json.Append(",\"uptime_current_epoch\":").Append(StatsFormat.Quote($"{uptime}s"));
        json.Append(",\"uptime_all_epochs\":").Append(StatsFormat.Quote($"{uptime}s"));
        return json.Append("}\n").ToString();
    }

    private string Clusters(bool json)
    {
        var clusters = _context.Server.Snapshots.Current.Clusters.Values.OrderBy(static c => c.Name, StringComparer.Ordinal).ToList();
        var text = new StringBuilder();
        if (json)
        {
            text.Append("{\"cluster_statuses\":[");
            for (int i = 0; i < clusters.Count; i++)
            {
                Cluster c = clusters[i];
                text.Append(i == 0 ? "" : ",").Append("{\"name\":").Append(StatsFormat.Quote(c.Name)).Append(",\"added_via_api\":true,\"host_statuses\":[");
                for (int e = 0; e < c.Endpoints.Length; e++)
                {
                    UpstreamEndpoint endpoint = c.Endpoints[e];
                    var (address, port) = Split(endpoint.Address);
                    text.Append(e == 0 ? "" : ",").Append("{\"address\":{\"socket_address\":{\"address\":").Append(StatsFormat.Quote(address)).Append(",\"port_value\":").Append(port.ToString(CultureInfo.InvariantCulture))
                        .Append("}},\"health_status\":{\"eds_health_status\":").Append(StatsFormat.Quote(Health(endpoint))).Append(endpoint.State.IsEjected ? ",\"failed_outlier_check\":true" : "")
                        .Append("},\"weight\":").Append(endpoint.Weight.ToString(CultureInfo.InvariantCulture)).Append(",\"priority\":").Append(endpoint.Priority.ToString(CultureInfo.InvariantCulture)).Append('}');
                }
                text.Append("]}");
            }
            return text.Append("]}\n").ToString();
        }
        foreach (Cluster c in clusters)
        {
            CircuitBreakers breakers = c.CircuitBreakers ?? new CircuitBreakers();
            text.Append(c.Name).Append("::observability_name::").Append(c.Name).Append('\n');
            text.Append(c.Name).Append("::default_priority::max_connections::").Append(breakers.MaxConnections.ToString(CultureInfo.InvariantCulture)).Append('\n');
            text.Append(c.Name).Append("::default_priority::max_pending_requests::").Append(breakers.MaxPendingRequests.ToString(CultureInfo.InvariantCulture)).Append('\n');
            text.Append(c.Name).Append("::default_priority::max_requests::").Append(breakers.MaxRequests.ToString(CultureInfo.InvariantCulture)).Append('\n');
            text.Append(c.Name).Append("::default_priority::max_retries::").Append(breakers.MaxRetries.ToString(CultureInfo.InvariantCulture)).Append('\n');
            text.Append(c.Name).Append("::added_via_api::true\n");
            foreach (UpstreamEndpoint endpoint in c.Endpoints)
            {
                string prefix = $"{c.Name}::{endpoint.Address}::";
                text.Append(prefix).Append("cx_active::").Append(endpoint.State.OpenConnections.ToString(CultureInfo.InvariantCulture)).Append('\n');
                text.Append(prefix).Append("rq_active::").Append(endpoint.State.ActiveRequests.ToString(CultureInfo.InvariantCulture)).Append('\n');
                text.Append(prefix).Append("health_flags::").Append(endpoint.State.IsEjected ? "/failed_outlier_check" : Health(endpoint) == "UNHEALTHY" ? "/failed_eds_health" : "healthy").Append('\n');
                text.Append(prefix).Append("weight::").Append(endpoint.Weight.ToString(CultureInfo.InvariantCulture)).Append('\n');
                text.Append(prefix).Append("priority::").Append(endpoint.Priority.ToString(CultureInfo.InvariantCulture)).Append('\n');
            }
        }
        return text.ToString();
    }

    private static string Health(UpstreamEndpoint endpoint) => endpoint.Health switch
    {
        EndpointHealth.Healthy => "HEALTHY",
        EndpointHealth.Unhealthy => "UNHEALTHY",
        EndpointHealth.Draining => "DRAINING",
        EndpointHealth.Timeout => "TIMEOUT",
        EndpointHealth.Degraded => "DEGRADED",
        _ => "UNKNOWN",
    };

    private static (string Address, int Port) Split(EndPoint endPoint) => endPoint switch
    {
        IPEndPoint ip => (ip.Address.ToString(), ip.Port),
        DnsEndPoint dns => (dns.Host, dns.Port),
        _ => (endPoint.ToString() ?? "", 0),
    };

    private string Listeners(bool json)
    {
        ProxySnapshot snapshot = _context.Server.Snapshots.Current;
        var text = new StringBuilder(json ? "{\"listener_statuses\":[" : "");
        for (int i = 0; i < snapshot.Listeners.Count; i++)
        {
            ListenerConfig l = snapshot.Listeners[i];
            if (json)
            {
                text.Append(i == 0 ? "" : ",").Append("{\"name\":").Append(StatsFormat.Quote(l.Name)).Append(",\"local_address\":{\"socket_address\":{\"address\":")
                    .Append(StatsFormat.Quote(l.Address.Address.ToString())).Append(",\"port_value\":").Append(l.Address.Port.ToString(CultureInfo.InvariantCulture)).Append("}}}");
            }
            else
            {
                text.Append(l.Name).Append("::").Append(l.Address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{l.Address.Address}]:{l.Address.Port}" : l.Address.ToString()).Append('\n');
            }
        }
        return json ? text.Append("]}\n").ToString() : text.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _socket.Dispose();
        if (_accepting != null)
        {
            await _accepting;
        }
        _stop.Dispose();
    }
}
