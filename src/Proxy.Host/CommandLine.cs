using System.Diagnostics.CodeAnalysis;

namespace Proxy.Host;

/// <summary>
/// The command line: Envoy's flags where they mean the same (so that Istio's pilot-agent can launch us
/// with Envoy's command line), plus flags for standalone use.
/// </summary>
public sealed class CommandLine
{
    public string? ConfigPath { get; private set; }
    public string? ConfigYaml { get; private set; }
    public string Mode { get; private set; } = "serve";
    public string? Listen { get; private set; }
    public string? Upstream { get; private set; }
    public string UpstreamProtocol { get; private set; } = "h1";

    /// <summary>--downstream-protocol: auto (HTTP/1.1 or h2c by the first octets), h1 or h2 only (Envoy's codec_type).</summary>
    public string DownstreamProtocol { get; private set; } = "auto";
    public int Concurrency { get; private set; } = Environment.ProcessorCount;
    public string LogLevel { get; private set; } = "info";
    public string? ServiceCluster { get; private set; }
    public string? ServiceNode { get; private set; }
    public int DrainTimeSeconds { get; private set; } = 5;
    public int SnapshotSwapsPerSecond { get; private set; }
    /// <summary>--request-headers-timeout-s (standalone; default 30).</summary>
    public double RequestHeadersTimeoutSeconds { get; private set; } = 30;
    /// <summary>--preface-timeout-s (standalone; default 10).</summary>
    public double PrefaceTimeoutSeconds { get; private set; } = 10;
    /// <summary>--idle-timeout-s (standalone; default 300).</summary>
    public double IdleTimeoutSeconds { get; private set; } = 300;
    /// <summary>--buffer-limit-bytes (standalone; default 1 MiB).</summary>
    public int BufferLimitBytes { get; private set; } = 1024 * 1024;
    /// <summary>--max-connections: the cap on downstream connections (0 = none, or the bootstrap's).</summary>
    public long MaxConnections { get; private set; }
    /// <summary>--runtime-api ADDRESS (or LAYOTTO_RUNTIME_API): where the runtime API is served; null = off.</summary>
    public string? RuntimeApi { get; private set; }
    /// <summary>--runtime-api-max-message-bytes (default 16 MiB).</summary>
    public int RuntimeApiMaxMessageBytes { get; private set; } = 16 * 1024 * 1024;
    /// <summary>--log-format: Envoy's (spdlog) log line format; null: "[%Y-%m-%d %T.%e][%l] %v".</summary>
    public string? LogFormat { get; private set; }
    /// <summary>--service-zone: node.locality.zone.</summary>
    public string? ServiceZone { get; private set; }
    /// <summary>--admin-address HOST:PORT: the admin endpoint, instead of (or without) the bootstrap's admin.address.</summary>
    public string? AdminAddress { get; private set; }
    /// <summary>--drain-strategy: gradual (default) or immediate.</summary>
    public string DrainStrategy { get; private set; } = "gradual";
    /// <summary>--tls-cert / --tls-key: PEM files; TLS on the standalone listener (h2 and http/1.1 by ALPN).</summary>
    public string? TlsCert { get; private set; }
    public string? TlsKey { get; private set; }
    /// <summary>--tls-client-ca FILE: clients must present a certificate chained to these roots (mutual TLS).</summary>
    public string? TlsClientCa { get; private set; }
    /// <summary>--upstream-tls: TLS towards the upstream; --upstream-ca verifies it, --upstream-sni names it, --upstream-cert/--upstream-key identify us.</summary>
    public bool UpstreamTls { get; private set; }
    public string? UpstreamCa { get; private set; }
    public string? UpstreamSni { get; private set; }
    public string? UpstreamCert { get; private set; }
    public string? UpstreamKey { get; private set; }
    /// <summary>Flags accepted for compatibility that change nothing here, as given (logged once at debug level).</summary>
    public List<string> Ignored { get; } = [];
    public bool ShowHelp { get; private set; }
    public bool ShowVersion { get; private set; }

    public const string Usage = """
        Usage: layotto-fast [options]
               layotto-fast mesh --config DIR [options]   (an embedded control plane: see mesh --help)

        A sidecar L7 proxy for HTTP/1.1, HTTP/2 and gRPC, configured by an Envoy bootstrap or by flags.

        Configuration (Envoy-compatible):
          -c, --config-path FILE        Envoy v3 bootstrap, YAML or JSON
              --config-yaml YAML        bootstrap given inline; with -c, merged over the file (objects by field, lists appended)
              --mode serve|validate|init_only
                                        serve (default); validate: check the configuration and exit;
                                        init_only: load it, bind the listeners, and exit
              --concurrency N           worker event loops (default: number of cores)
          -l, --log-level LEVEL         trace|debug|info|warning|error|critical|off (default: info)
              --log-format FORMAT       Envoy's log line format: %Y %m %d %H %M %S %T %e %f %l %L %n %v %j
                                        %t %P %% (default: "[%Y-%m-%d %T.%e][%l] %v")
              --service-cluster NAME    local cluster name (node.cluster)
              --service-node NAME       local node id (node.id)
              --service-zone ZONE       local zone (node.locality.zone)
              --drain-strategy gradual|immediate
                                        how connections are asked to go while draining (default: gradual)
              --drain-time-s N          seconds to drain connections on shutdown (default: 5)
              --max-connections N       cap on downstream connections over all listeners; past it new
                                        ones are closed at once (default: the bootstrap's overload
                                        global_downstream_max_connections, else none)

        Standalone use (no bootstrap file):
              --listen HOST:PORT        accept HTTP/1.1 and h2c here (WebSocket upgrades pass through to
                                        an h1 upstream)
              --upstream HOST:PORT      forward everything to this endpoint
              --upstream-protocol h1|h2 protocol towards the upstream (default: h1; grpc = h2)
              --downstream-protocol auto|h1|h2
                                        protocols --listen accepts (Envoy's codec_type): auto (default)
                                        tells HTTP/1.1 and h2c apart by the first octets; h1 or h2 take
                                        only that one (with h2 anything but the HTTP/2 preface is a
                                        connection error)
              --tls-cert FILE           PEM certificate chain: serve TLS on --listen (h2 and http/1.1 by
                                        ALPN; TLS 1.2 and 1.3); needs --tls-key
              --tls-key FILE            PEM private key of --tls-cert
              --tls-client-ca FILE      require client certificates chained to these PEM roots (mTLS)
              --upstream-tls            connect to the upstream with TLS (ALPN h2 or http/1.1 as
                                        --upstream-protocol says); without --upstream-ca its certificate
                                        is not verified
              --upstream-ca FILE        PEM roots the upstream's certificate must chain to
              --upstream-sni NAME       server name sent to the upstream (default: none)
              --upstream-cert FILE      PEM client certificate for the upstream (mTLS); needs --upstream-key
              --upstream-key FILE       PEM private key of --upstream-cert
              --swap-snapshots-per-second N
                                        load-test aid: rebuild and publish the routing snapshot N times
                                        a second, to show that swaps under load lose nothing (default: 0)
              --request-headers-timeout-s S
                                        a request head must arrive within S seconds of its first
                                        octet, else 408 and close (default: 30; 0 = none)
              --preface-timeout-s S     an HTTP/2 client must send its preface and first SETTINGS
                                        within S seconds (default: 10; 0 = as for a request head)
              --idle-timeout-s S        close a connection with no request in flight after S seconds
                                        (default: 300; 0 = never)
              --buffer-limit-bytes N    per-connection buffer limit (watermark) both ways (default: 1048576)
        With a bootstrap, the connection manager's own fields apply instead (Envoy's names and defaults).

        Admin endpoint (Envoy's admin API: /ready, /stats, /stats/prometheus, /server_info, /clusters,
        /listeners, /config_dump, /quitquitquit, /drain_listeners, /healthcheck/fail|ok, /logging, ...):
              --admin-address HOST:PORT serve it here (default: the bootstrap's admin.address, else off)

        Runtime API (Layotto's spec.proto.runtime.v1.Runtime: InvokeService, SayHello; h2c gRPC):
              --runtime-api ADDRESS     serve it on HOST:PORT or unix:PATH (unix:@NAME: abstract socket);
                                        default: the LAYOTTO_RUNTIME_API environment variable, else off.
                                        InvokeService calls are routed like HTTP requests to their id
              --runtime-api-max-message-bytes N
                                        largest request or response message (default: 16777216)

        Envoy flags accepted for compatibility (what pilot-agent passes, Istio 1.5 to today) that change
        nothing here: --disable-hot-restart, --allow-unknown-static-fields, --skip-deprecated-logs,
        --enable-core-dump, --log-format-escaped, --local-address-ip-version V, --parent-shutdown-time-s S,
        --file-flush-interval-msec N, --file-flush-min-size-kb N, --component-log-level L,
        --log-format-prefix-with-location N, --base-id N, --restart-epoch N, --max-obj-name-len N,
        --bootstrap-version N, --log-path P. They are noted once at debug level.

          -h, --help                    this text
              --version                 print the version and exit

        """;

    private static readonly HashSet<string> s_takesValue =
    [
        "-c", "--config-path", "--config-yaml", "--mode", "--listen", "--upstream", "--upstream-protocol", "--downstream-protocol", "--concurrency",
        "-l", "--log-level", "--service-cluster", "--service-node", "--drain-time-s", "--swap-snapshots-per-second",
        "--request-headers-timeout-s", "--preface-timeout-s", "--idle-timeout-s", "--buffer-limit-bytes", "--max-connections",
        "--runtime-api", "--runtime-api-max-message-bytes", "--service-zone", "--admin-address", "--drain-strategy", "--log-format",
        "--tls-cert", "--tls-key", "--tls-client-ca", "--upstream-ca", "--upstream-sni", "--upstream-cert", "--upstream-key",
    ];
    private static readonly HashSet<string> s_ignoredFlags =
    [
        "--disable-hot-restart", "--allow-unknown-static-fields", "--skip-deprecated-logs", "--enable-core-dump", "--log-format-escaped",
    ];
    private static readonly HashSet<string> s_ignoredWithValue =
    [
        "--local-address-ip-version", "--parent-shutdown-time-s", "--file-flush-interval-msec", "--file-flush-min-size-kb",
        "--component-log-level", "--base-id", "--restart-epoch", "--log-path", "--max-obj-name-len",
        "--log-format-prefix-with-location", "--bootstrap-version",
    ];

    public static bool TryParse(string[] args, [NotNullWhen(true)] out CommandLine? result, [NotNullWhen(false)] out string? error)
    {
        var c = new CommandLine();
        result = null;
        error = null;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? inline = null;
            int eq = arg.IndexOf('=');
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inline = arg[(eq + 1)..];
                arg = arg[..eq];
            }

            string? value = null;
            if (s_takesValue.Contains(arg) || s_ignoredWithValue.Contains(arg))
            {
                value = inline ?? (i + 1 < args.Length ? args[++i] : null);
                if (value == null)
                {
                    error = $"{arg} needs a value";
                    return false;
                }
            }
            else if (inline != null)
            {
                error = $"{arg} takes no value";
                return false;
            }

            switch (arg)
            {
                case "-h":
                case "--help":
                    c.ShowHelp = true;
                    break;
                case "--version":
                    c.ShowVersion = true;
                    break;
                case "-c":
                case "--config-path":
                    c.ConfigPath = value;
                    break;
                case "--config-yaml":
                    c.ConfigYaml = value;
                    break;
                case "--mode":
                    c.Mode = value!;
                    if (c.Mode is not ("serve" or "validate" or "init_only"))
                    {
                        error = $"--mode must be serve, validate or init_only, not '{c.Mode}'";
                        return false;
                    }
                    break;
                case "--service-zone":
                    c.ServiceZone = value;
                    break;
                case "--log-format":
                    c.LogFormat = value;
                    break;
                case "--admin-address":
                    if (!System.Net.IPEndPoint.TryParse(value!, out System.Net.IPEndPoint? admin) || admin.Port == 0 && !value!.EndsWith(":0", StringComparison.Ordinal))
                    {
                        error = $"--admin-address takes HOST:PORT with an IP address, not '{value}'";
                        return false;
                    }
                    c.AdminAddress = value;
                    break;
                case "--drain-strategy":
                    if (value is not ("gradual" or "immediate"))
                    {
                        error = $"--drain-strategy must be gradual or immediate, not '{value}'";
                        return false;
                    }
                    c.DrainStrategy = value;
                    break;
                case "--listen":
                    c.Listen = value;
                    break;
                case "--tls-cert":
                    c.TlsCert = value;
                    break;
                case "--tls-key":
                    c.TlsKey = value;
                    break;
                case "--tls-client-ca":
                    c.TlsClientCa = value;
                    break;
                case "--upstream-tls":
                    c.UpstreamTls = true;
                    break;
                case "--upstream-ca":
                    c.UpstreamCa = value;
                    c.UpstreamTls = true;
                    break;
                case "--upstream-sni":
                    c.UpstreamSni = value;
                    c.UpstreamTls = true;
                    break;
                case "--upstream-cert":
                    c.UpstreamCert = value;
                    c.UpstreamTls = true;
                    break;
                case "--upstream-key":
                    c.UpstreamKey = value;
                    c.UpstreamTls = true;
                    break;
                case "--upstream":
                    c.Upstream = value;
                    break;
                case "--upstream-protocol":
                    c.UpstreamProtocol = value!;
                    if (c.UpstreamProtocol is not ("h1" or "h2" or "grpc"))
                    {
                        error = $"--upstream-protocol must be h1 or h2 (grpc = h2), not '{c.UpstreamProtocol}'";
                        return false;
                    }
                    break;
                case "--downstream-protocol":
                    c.DownstreamProtocol = value!;
                    if (c.DownstreamProtocol is not ("auto" or "h1" or "h2"))
                    {
                        error = $"--downstream-protocol must be auto, h1 or h2, not '{c.DownstreamProtocol}'";
                        return false;
                    }
                    break;
                case "--concurrency":
                    if (!int.TryParse(value, out int n) || n < 0 || n > 1024)
                    {
                        error = "--concurrency takes a number from 0 to 1024 (0 = number of cores)";
                        return false;
                    }
                    c.Concurrency = n == 0 ? Environment.ProcessorCount : n;
                    break;
                case "-l":
                case "--log-level":
                    c.LogLevel = value!;
                    if (c.LogLevel is not ("trace" or "debug" or "info" or "warning" or "warn" or "error" or "critical" or "off"))
                    {
                        error = $"unknown log level '{c.LogLevel}'";
                        return false;
                    }
                    break;
                case "--swap-snapshots-per-second":
                    if (!int.TryParse(value, out int swaps) || swaps < 0 || swaps > 1000)
                    {
                        error = "--swap-snapshots-per-second takes a number from 0 to 1000";
                        return false;
                    }
                    c.SnapshotSwapsPerSecond = swaps;
                    break;
                case "--service-cluster":
                    c.ServiceCluster = value;
                    break;
                case "--service-node":
                    c.ServiceNode = value;
                    break;
                case "--drain-time-s":
                    if (!int.TryParse(value, out int drain) || drain < 0)
                    {
                        error = "--drain-time-s takes a number of seconds";
                        return false;
                    }
                    c.DrainTimeSeconds = drain;
                    break;
                case "--request-headers-timeout-s":
                case "--preface-timeout-s":
                case "--idle-timeout-s":
                    if (!double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double seconds)
                        || seconds < 0 || seconds > 86400 * 365 || double.IsNaN(seconds))
                    {
                        error = $"{arg} takes a number of seconds (0 = none)";
                        return false;
                    }
                    if (arg == "--request-headers-timeout-s")
                    {
                        c.RequestHeadersTimeoutSeconds = seconds;
                    }
                    else if (arg == "--preface-timeout-s")
                    {
                        c.PrefaceTimeoutSeconds = seconds;
                    }
                    else
                    {
                        c.IdleTimeoutSeconds = seconds;
                    }
                    break;
                case "--buffer-limit-bytes":
                    if (!int.TryParse(value, out int limit) || limit < 16 * 1024)
                    {
                        error = "--buffer-limit-bytes takes a number of bytes, at least 16384";
                        return false;
                    }
                    c.BufferLimitBytes = limit;
                    break;
                case "--max-connections":
                    if (!long.TryParse(value, out long max) || max < 0)
                    {
                        error = "--max-connections takes a number (0 = no cap)";
                        return false;
                    }
                    c.MaxConnections = max;
                    break;
                case "--runtime-api":
                    if (!Proxy.Core.Runtime.RuntimeApiServer.TryParseAddress(value!, out _, out string? bad))
                    {
                        error = $"--runtime-api: {bad}";
                        return false;
                    }
                    c.RuntimeApi = value;
                    break;
                case "--runtime-api-max-message-bytes":
                    if (!int.TryParse(value, out int messageLimit) || messageLimit < 1024)
                    {
                        error = "--runtime-api-max-message-bytes takes a number of bytes, at least 1024";
                        return false;
                    }
                    c.RuntimeApiMaxMessageBytes = messageLimit;
                    break;
                default:
                    if (s_ignoredFlags.Contains(arg) || s_ignoredWithValue.Contains(arg))
                    {
                        c.Ignored.Add(value == null ? arg : $"{arg} {value}");
                        break;
                    }
                    error = $"unknown option '{args[i]}'";
                    return false;
            }
        }
        if (c.RuntimeApi == null && Environment.GetEnvironmentVariable("LAYOTTO_RUNTIME_API") is { Length: > 0 } fromEnvironment)
        {
            // Set by a pod annotation under pilot-agent, which launches us with Envoy's command line.
            if (!Proxy.Core.Runtime.RuntimeApiServer.TryParseAddress(fromEnvironment, out _, out string? bad))
            {
                error = $"LAYOTTO_RUNTIME_API: {bad}";
                return false;
            }
            c.RuntimeApi = fromEnvironment;
        }
        result = c;
        return true;
    }
}
