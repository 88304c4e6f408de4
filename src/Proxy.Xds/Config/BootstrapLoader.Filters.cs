using System.Net;
using System.Text;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Http2;

namespace Proxy.Xds.Config;

/// <summary>
/// A listener's connection options and filters: the HTTP connection manager's timeouts and HTTP/2
/// options, its http_filters in order, and the network filters in front of it. Security filters fail
/// closed: RBAC is enforced; an access-control filter we do not implement refuses the listener (unless
/// is_optional), so a policy is never silently dropped. Filters that only observe are skipped, named once.
/// </summary>
public sealed partial class BootstrapLoader
{
    private const string RouterFilter = "envoy.filters.http.router";

    /// <summary>
    /// Filters whose job is to refuse requests. Matched against the filter's name and its typed_config
    /// type, so legacy names (envoy.ext_authz) and v2 types are caught too.
    /// </summary>
    private static readonly string[] s_accessControl =
        ["ext_authz", "jwt_authn", "oauth2", "ext_proc", "basic_auth", "api_key_auth", "credential_injector", "lua", "csrf", "local_ratelimit", "ratelimit", "admission_control"];

    /// <summary>Reads the listener's connection manager into the options its connections are held to.</summary>
    private ListenerOptions ReadListenerOptions(ConfigNode listener, ConfigNode hcm, RbacPolicySet? networkRbac)
    {
        ConfigNode common = hcm["common_http_protocol_options"];
        ConfigNode h2 = hcm["http2_protocol_options"];
        ConfigNode http1 = hcm["http_protocol_options"];
        int bufferLimit = (int)Math.Clamp(Wrapped(listener["per_connection_buffer_limit_bytes"]) ?? Proxy.Core.Transport.SocketConnection.DefaultBufferLimit, 16 * 1024, int.MaxValue / 2);
        var defaults = ListenerOptions.Envoy;
        // max_headers_count: HTTP/1.1 heads (431) and HTTP/2 header blocks (a stream reset) alike, as in Envoy.
        long maxHeaders = Wrapped(common["max_headers_count"]) ?? defaults.MaxHeadersCount;
        if (maxHeaders < 1 || maxHeaders > int.MaxValue)
        {
            throw new ConfigException($"{common.Path}.max_headers_count: must be at least 1 (Envoy's bound), not {maxHeaders}");
        }
        return new ListenerOptions
        {
            // Envoy requires stat_prefix; a configuration without one still gets its stats under "http".
            Stats = Proxy.Core.Diagnostics.HttpConnectionManagerStats.For(hcm["stat_prefix"].String() is { Length: > 0 } prefix ? prefix : "http"),
            BufferLimit = bufferLimit,
            RequestHeadersTimeout = hcm["request_headers_timeout"].Duration() ?? defaults.RequestHeadersTimeout,
            StreamIdleTimeout = hcm["stream_idle_timeout"].Duration() ?? defaults.StreamIdleTimeout,
            RequestTimeout = hcm["request_timeout"].Duration() ?? defaults.RequestTimeout,
            IdleTimeout = common["idle_timeout"].Duration() ?? hcm["idle_timeout"].Duration() ?? defaults.IdleTimeout,
            MaxConnectionDuration = common["max_connection_duration"].Duration() ?? defaults.MaxConnectionDuration,
            MaxHeadersCount = (int)maxHeaders,
            Http2 = h2.Exists || maxHeaders != defaults.MaxHeadersCount ? ReadHttp2Options(h2, (int)maxHeaders) : defaults.Http2,
            HttpRbac = ReadHttpFilters(hcm),
            NetworkRbac = networkRbac,
            Headers = ReadConnectionManagerHeaders(hcm),
            AccessLogs = ReadAccessLogs(hcm),
            WebSocket = ReadUpgrades(hcm["upgrade_configs"]),
            NormalizePath = WrappedBool(hcm["normalize_path"]) ?? false,
            MergeSlashes = hcm["merge_slashes"].Boolean() ?? false,
            EscapedSlashes = ReadEscapedSlashes(hcm["path_with_escaped_slashes_action"]),
            Codec = ReadCodec(hcm["codec_type"]),
            AcceptHttp10 = http1["accept_http_10"].Boolean() ?? false,
            DefaultHostForHttp10 = ReadDefaultHost(http1["default_host_for_http_10"]),
        };
    }

    /// <summary>http_protocol_options.default_host_for_http_10: an authority (host, host:port), else a config error.</summary>
    private static byte[]? ReadDefaultHost(ConfigNode node)
    {
        if (node.String() is not { Length: > 0 } host)
        {
            return null;
        }
        if (host.Any(c => c > 127) || !Proxy.Core.Http1.Http1Parser.IsValidAuthority(Encoding.ASCII.GetBytes(host)))
        {
            throw new ConfigException($"{node.Path}: '{host}' is not a host[:port]");
        }
        return Encoding.ASCII.GetBytes(host);
    }

    /// <summary>codec_type (by name or number): AUTO, HTTP1, HTTP2; HTTP3 needs a QUIC listener, which is not served.</summary>
    private DownstreamCodec ReadCodec(ConfigNode codec)
    {
        string name = codec.String() ?? "AUTO";
        switch (name)
        {
            case "AUTO" or "0":
                return DownstreamCodec.Auto;
            case "HTTP1" or "1":
                return DownstreamCodec.Http1;
            case "HTTP2" or "2":
                return DownstreamCodec.Http2;
            case "HTTP3" or "3":
                Warn(codec, "HTTP3 (QUIC) is not served: the listener speaks HTTP/1.1 and HTTP/2 over TCP (AUTO)");
                return DownstreamCodec.Auto;
            default:
                throw new ConfigException($"{codec.Path}: '{name}' is not a codec_type (AUTO, HTTP1, HTTP2, HTTP3)");
        }
    }

    /// <summary>path_with_escaped_slashes_action (by name or number; UNESCAPE_AND_REDIRECT is served as UNESCAPE_AND_FORWARD).</summary>
    private EscapedSlashesAction ReadEscapedSlashes(ConfigNode action)
    {
        string name = action.String() ?? "IMPLEMENTATION_SPECIFIC_DEFAULT";
        switch (name)
        {
            case "IMPLEMENTATION_SPECIFIC_DEFAULT" or "0" or "KEEP_UNCHANGED" or "1":
                return EscapedSlashesAction.KeepUnchanged;
            case "REJECT_REQUEST" or "2":
                return EscapedSlashesAction.RejectRequest;
            case "UNESCAPE_AND_FORWARD" or "4":
                return EscapedSlashesAction.UnescapeAndForward;
            case "UNESCAPE_AND_REDIRECT" or "3":
                Warn(action, "UNESCAPE_AND_REDIRECT is served as UNESCAPE_AND_FORWARD (no redirect is sent)");
                return EscapedSlashesAction.UnescapeAndForward;
            default:
                throw new ConfigException($"{action.Path}: '{name}' is not a path_with_escaped_slashes_action");
        }
    }

    /// <summary>The connection manager's upgrade_configs: whether WebSocket upgrades are allowed (the only type served).</summary>
    private bool ReadUpgrades(ConfigNode upgrades)
    {
        bool websocket = false;
        foreach (ConfigNode upgrade in upgrades.Items)
        {
            string type = upgrade["upgrade_type"].String() ?? "";
            bool enabled = WrappedBool(upgrade["enabled"]) ?? true;
            if (string.Equals(type, "websocket", StringComparison.OrdinalIgnoreCase))
            {
                websocket = enabled;
            }
            else if (enabled)
            {
                Warn(upgrade["upgrade_type"], $"upgrade type '{type}' is not served (a CONNECT matches no route; other upgrades go on without their Upgrade header)");
            }
        }
        return websocket;
    }

    /// <summary>The headers the connection manager and its router write (Envoy's defaults unless the configuration says otherwise).</summary>
    private ConnectionManagerHeaders ReadConnectionManagerHeaders(ConfigNode hcm)
    {
        ConfigNode filters = hcm["http_filters"];
        List<ConfigNode> list = filters.IsMap ? [filters] : [.. filters.Items];
        ConfigNode router = list.FirstOrDefault(static f => f["name"].String() is "envoy.filters.http.router" or "envoy.router"
            || (f["typed_config"]["@type"].String() ?? "").EndsWith(".Router", StringComparison.Ordinal));
        ConfigNode routerConfig = router["typed_config"].Exists ? router["typed_config"] : router["config"];
        string transformation = (hcm["server_header_transformation"].String() ?? "OVERWRITE").ToUpperInvariant();
        ConnectionManagerHeaders d = ConnectionManagerHeaders.Envoy;
        var headers = new ConnectionManagerHeaders
        {
            UseRemoteAddress = WrappedBool(hcm["use_remote_address"]) ?? false,
            ForwardClientCert = (hcm["forward_client_cert_details"].String() ?? "SANITIZE") switch
            {
                "SANITIZE" or "0" => ForwardClientCertDetails.Sanitize,
                "FORWARD_ONLY" or "1" => ForwardClientCertDetails.ForwardOnly,
                "APPEND_FORWARD" or "2" => ForwardClientCertDetails.AppendForward,
                "SANITIZE_SET" or "3" => ForwardClientCertDetails.SanitizeSet,
                "ALWAYS_FORWARD_ONLY" or "4" => ForwardClientCertDetails.AlwaysForwardOnly,
                string other => throw new ConfigException($"{hcm["forward_client_cert_details"].Path}: '{other}' is not SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET or ALWAYS_FORWARD_ONLY"),
            },
            CurrentClientCert = ClientCertFields(hcm["set_current_client_cert_details"]),
            XffNumTrustedHops = (int)Math.Clamp(hcm["xff_num_trusted_hops"].Integer() ?? 0, 0, 64),
            SkipXffAppend = hcm["skip_xff_append"].Boolean() ?? false,
            GenerateRequestId = WrappedBool(hcm["generate_request_id"]) ?? true,
            PreserveExternalRequestId = hcm["preserve_external_request_id"].Boolean() ?? false,
            AlwaysSetRequestIdInResponse = hcm["always_set_request_id_in_response"].Boolean() ?? false,
            Via = hcm["via"].String() is { Length: > 0 } via ? System.Text.Encoding.UTF8.GetBytes(via) : null,
            ServerName = hcm["server_name"].String() is { Length: > 0 } name ? System.Text.Encoding.UTF8.GetBytes(name) : d.ServerName,
            ServerHeader = transformation switch
            {
                "OVERWRITE" or "0" => ServerHeaderTransformation.Overwrite,
                "APPEND_IF_ABSENT" or "1" => ServerHeaderTransformation.AppendIfAbsent,
                "PASS_THROUGH" or "2" => ServerHeaderTransformation.PassThrough,
                _ => throw new ConfigException($"{hcm["server_header_transformation"].Path}: '{transformation}' is not OVERWRITE, APPEND_IF_ABSENT or PASS_THROUGH"),
            },
            UpstreamServiceTime = !(routerConfig["suppress_envoy_headers"].Boolean() ?? false),
        };
        return headers;
    }

    /// <summary>
    /// An access log filter: status_code_filter, duration_filter, response_flag_filter, header_filter,
    /// not_health_check_filter, and_filter, or_filter. Others (runtime, traceable, gRPC status, metadata,
    /// CEL extensions) are named and let every request through: a log too full rather than silently empty.
    /// </summary>
    private Proxy.Core.Diagnostics.AccessLogFilter ReadAccessLogFilter(ConfigNode f)
    {
        if (f["status_code_filter"].Exists)
        {
            var (op, value) = ReadComparison(f["status_code_filter"]["comparison"]);
            return Proxy.Core.Diagnostics.AccessLogFilter.StatusCode(op, value);
        }
        if (f["duration_filter"].Exists)
        {
            var (op, value) = ReadComparison(f["duration_filter"]["comparison"]);
            return Proxy.Core.Diagnostics.AccessLogFilter.Duration(op, value);
        }
        if (f["response_flag_filter"].Exists)
        {
            return Proxy.Core.Diagnostics.AccessLogFilter.ResponseFlags([.. f["response_flag_filter"]["flags"].Items.Select(static n => n.RequiredString())]);
        }
        if (f["header_filter"].Exists)
        {
            return Proxy.Core.Diagnostics.AccessLogFilter.Header(LoadHeaderMatcher(f["header_filter"]["header"]));
        }
        if (f["not_health_check_filter"].Exists)
        {
            return Proxy.Core.Diagnostics.AccessLogFilter.Always;
        }
        if (f["and_filter"].Exists || f["or_filter"].Exists)
        {
            bool and = f["and_filter"].Exists;
            Proxy.Core.Diagnostics.AccessLogFilter[] inner = [.. f[and ? "and_filter" : "or_filter"]["filters"].Items.Select(ReadAccessLogFilter)];
            return and ? Proxy.Core.Diagnostics.AccessLogFilter.All(inner) : Proxy.Core.Diagnostics.AccessLogFilter.Any(inner);
        }
        Warn(f, $"access log filter '{f.Keys.FirstOrDefault()}' is not supported (status_code, duration, response_flag, header, not_health_check, and, or): it lets every request through");
        return Proxy.Core.Diagnostics.AccessLogFilter.Always;
    }

    private static (Proxy.Core.Diagnostics.AccessLogFilter.ComparisonOp, long) ReadComparison(ConfigNode c)
    {
        string op = (c["op"].String() ?? "EQ").ToUpperInvariant();
        // No runtime overrides here: runtime_key is not read, the default value is the value.
        long value = c["value"]["default_value"].Integer() ?? 0;
        return (op switch
        {
            "EQ" or "0" => Proxy.Core.Diagnostics.AccessLogFilter.ComparisonOp.Eq,
            "GE" or "1" => Proxy.Core.Diagnostics.AccessLogFilter.ComparisonOp.Ge,
            "LE" or "2" => Proxy.Core.Diagnostics.AccessLogFilter.ComparisonOp.Le,
            _ => throw new ConfigException($"{c["op"].Path}: '{op}' is not EQ, GE or LE"),
        }, value);
    }

    private static bool? WrappedBool(ConfigNode n) => n.IsMap ? n["value"].Boolean() : n.Boolean();

    private static ClientCertDetails ClientCertFields(ConfigNode details) =>
        (WrappedBool(details["subject"]) == true ? ClientCertDetails.Subject : 0)
        | (details["cert"].Boolean() == true ? ClientCertDetails.Cert : 0)
        | (details["chain"].Boolean() == true ? ClientCertDetails.Chain : 0)
        | (details["dns"].Boolean() == true ? ClientCertDetails.Dns : 0)
        | (details["uri"].Boolean() == true ? ClientCertDetails.Uri : 0);

    /// <summary>
    /// access_log: the file logger (v3 and v2, including /dev/stdout) and the stdout/stderr loggers, with
    /// Envoy's default format, a text format (inline or format) or a JSON format. Filters are not honoured
    /// (named once); other loggers are skipped and named.
    /// </summary>
    private Proxy.Core.Diagnostics.AccessLog[] ReadAccessLogs(ConfigNode hcm)
    {
        var logs = new List<Proxy.Core.Diagnostics.AccessLog>();
        foreach (ConfigNode log in hcm["access_log"].Items)
        {
            string name = log["name"].String() ?? "";
            ConfigNode config = log["typed_config"].Exists ? log["typed_config"] : log["config"];
            string type = config["@type"].String() ?? "";
            string? path = type.EndsWith(".FileAccessLog", StringComparison.Ordinal) || (type.Length == 0 && name is "envoy.access_loggers.file" or "envoy.file_access_log")
                ? config["path"].RequiredString()
                : type.EndsWith(".StdoutAccessLog", StringComparison.Ordinal) || name == "envoy.access_loggers.stdout" ? "/dev/stdout"
                : type.EndsWith(".StderrAccessLog", StringComparison.Ordinal) || name == "envoy.access_loggers.stderr" ? "/dev/stderr"
                : null;
            if (path == null)
            {
                Warn(log, $"access logger '{(name.Length > 0 ? name : type)}' is not implemented; skipped");
                continue;
            }
            Proxy.Core.Diagnostics.AccessLogFilter? filter = log["filter"].Exists && log["filter"].Keys.Any() ? ReadAccessLogFilter(log["filter"]) : null;
            ConfigNode format = config["log_format"];
            ConfigNode json = format["json_format"].Exists ? format["json_format"] : config["json_format"].Exists ? config["json_format"] : config["typed_json_format"];
            try
            {
                if (json.Exists)
                {
                    logs.Add(Proxy.Core.Diagnostics.AccessLog.Json(path, [.. json.Keys.Select(k => (k, json[k].String() ?? json[k].ToJson()?.ToJsonString() ?? ""))], filter));
                    continue;
                }
                string text = format["text_format"].String() ?? format["text_format_source"]["inline_string"].String() ?? config["format"].String()
                    ?? Proxy.Core.Diagnostics.AccessLogFormat.EnvoyDefault;
                logs.Add(Proxy.Core.Diagnostics.AccessLog.Text(path, text, filter));
            }
            catch (ConfigException e)
            {
                throw new ConfigException($"{log.Path}: {e.Message}");
            }
        }
        return [.. logs];
    }

    private static Http2ConnectionOptions ReadHttp2Options(ConfigNode h2, int maxHeaders)
    {
        Http2ConnectionOptions d = ListenerOptions.Envoy.Http2;
        long streams = Wrapped(h2["max_concurrent_streams"]) ?? d.MaxConcurrentStreams;
        long streamWindow = Wrapped(h2["initial_stream_window_size"]) ?? d.InitialStreamWindowSize;
        long connectionWindow = Wrapped(h2["initial_connection_window_size"]) ?? d.ConnectionWindowSize;
        long empty = Wrapped(h2["max_consecutive_inbound_frames_with_empty_payload"]) ?? d.MaxConsecutiveEmptyFrames;
        long priority = Wrapped(h2["max_inbound_priority_frames_per_stream"]) ?? d.MaxPriorityFramesPerStream;
        if (streams < 1 || streamWindow < 65535 || connectionWindow < 65535 || streamWindow > int.MaxValue || connectionWindow > int.MaxValue)
        {
            throw new ConfigException($"{h2.Path}: max_concurrent_streams must be at least 1 and windows within [65535, 2^31-1]");
        }
        return new Http2ConnectionOptions
        {
            MaxConcurrentStreams = (int)Math.Min(streams, int.MaxValue),
            InitialStreamWindowSize = (int)streamWindow,
            ConnectionWindowSize = (int)connectionWindow,
            MaxConsecutiveEmptyFrames = (int)Math.Min(empty, int.MaxValue),
            MaxPriorityFramesPerStream = (int)Math.Min(priority, int.MaxValue),
            MaxHeaderFields = maxHeaders,
        };
    }

    /// <summary>
    /// http_filters in order: RBAC filters are collected, the router must come last, access-control
    /// filters we lack refuse the listener, observers are skipped with a warning.
    /// </summary>
    private RbacPolicySet[] ReadHttpFilters(ConfigNode hcm)
    {
        var rbac = new List<RbacPolicySet>();
        ConfigNode filters = hcm["http_filters"];
        // Istio 1.5 writes a single object where a list belongs; Items reads either.
        List<ConfigNode> list = filters.IsMap ? [filters] : [.. filters.Items];
        for (int i = 0; i < list.Count; i++)
        {
            ConfigNode filter = list[i];
            string name = filter["name"].String() ?? "";
            ConfigNode config = filter["typed_config"].Exists ? filter["typed_config"] : filter["config"];
            string type = config["@type"].String() ?? "";
            string id = name.Length > 0 ? name : type;
            bool optional = filter["is_optional"].Boolean() ?? false;
            if (filter["disabled"].Boolean() == true)
            {
                // Disabled by default and enabled per route, which we do not support: an access-control
                // filter would then guard no route at all, so it is refused rather than skipped.
                if (!optional && (IsAccessControl(name, type) || type.Contains(".rbac.", StringComparison.Ordinal) || name == "envoy.filters.http.rbac"))
                {
                    throw new ConfigException($"{filter.Path}: access-control filter '{id}' is disabled here and enabled per route, which is not supported; refusing the listener");
                }
                Warn(filter, $"HTTP filter '{id}' is disabled by default (per-route enabling is not supported); skipped");
                continue;
            }
            if (name is RouterFilter or "envoy.router" || type.EndsWith(".router.v3.Router", StringComparison.Ordinal) || type.EndsWith(".router.v2.Router", StringComparison.Ordinal))
            {
                if (i != list.Count - 1)
                {
                    throw new ConfigException($"{filter.Path}: {RouterFilter} must be the last HTTP filter");
                }
                continue;
            }
            if (type.Contains(".rbac.", StringComparison.Ordinal) || name is "envoy.filters.http.rbac" or "envoy.rbac")
            {
                if (config["rules"].Exists)
                {
                    rbac.Add(LoadRbac(config["rules"]));
                }
                // shadow_rules only record what would happen: not enforced (Envoy's semantics).
                continue;
            }
            if (name is "envoy.filters.http.fault" or "envoy.fault" or "envoy.filters.http.cors" or "envoy.cors")
            {
                continue; // honoured through the routes' per-filter configuration
            }
            if (IsAccessControl(name, type) || (name == "istio_authn" && config["policy"]["origins"].Exists))
            {
                if (optional)
                {
                    Warn(filter, $"optional access-control filter '{id}' is not implemented; skipped (is_optional)");
                    continue;
                }
                throw new ConfigException($"{filter.Path}: HTTP filter '{id}' enforces access control and is not implemented; refusing the listener rather than letting every request through");
            }
            Warn(filter, $"HTTP filter '{id}' is not implemented (it only observes or transforms); skipped");
        }
        if (list.Count > 0 && !list.Any(static f => (f["name"].String() ?? "") is RouterFilter or "envoy.router"
                                                   || (f["typed_config"]["@type"].String() ?? "").EndsWith("Router", StringComparison.Ordinal)))
        {
            throw new ConfigException($"{filters.Path}: no {RouterFilter}: the connection manager would answer nothing");
        }
        return [.. rbac];
    }

    private static bool IsAccessControl(string name, string type)
    {
        foreach (string word in s_accessControl)
        {
            if (name.Contains(word, StringComparison.Ordinal) || type.Contains(word, StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// A network filter in front of the connection manager: network RBAC is enforced per connection;
    /// access-control filters we lack refuse the listener; others are named and skipped.
    /// </summary>
    private RbacPolicySet? ReadNetworkFilter(ConfigNode filter, string name, string type, ConfigNode config, RbacPolicySet? current)
    {
        if (type.Contains(".rbac.", StringComparison.Ordinal) || name is "envoy.filters.network.rbac" or "envoy.filters.network.rbac")
        {
            if (!config["rules"].Exists)
            {
                return current; // shadow rules only
            }
            if (current != null)
            {
                throw new ConfigException($"{filter.Path}: more than one network RBAC filter on one chain is not supported");
            }
            return LoadRbac(config["rules"]);
        }
        if (IsAccessControl(name, type))
        {
            throw new ConfigException($"{filter.Path}: network filter '{(name.Length > 0 ? name : type)}' enforces access control and is not implemented; refusing the listener");
        }
        Warn(filter, $"network filter '{(name.Length > 0 ? name : type)}' is not honoured yet");
        return current;
    }

    /// <summary>envoy.config.rbac.v3.RBAC: the action and its named policies.</summary>
    private static RbacPolicySet LoadRbac(ConfigNode rules)
    {
        string actionName = (rules["action"].String() ?? "ALLOW").ToUpperInvariant();
        RbacAction action = actionName switch
        {
            "ALLOW" or "0" => RbacAction.Allow,
            "DENY" or "1" => RbacAction.Deny,
            "LOG" or "2" => RbacAction.Log,
            _ => throw new ConfigException($"{rules["action"].Path}: unknown RBAC action '{actionName}'"),
        };
        var policies = new List<RbacPolicy>();
        ConfigNode map = rules["policies"];
        foreach (string key in map.Keys.OrderBy(static k => k, StringComparer.Ordinal))
        {
            ConfigNode policy = map[key];
            if (policy["condition"].Exists || policy["checked_condition"].Exists)
            {
                throw new ConfigException($"{policy.Path}: RBAC conditions (CEL) are not supported");
            }
            RbacRule[] permissions = [.. policy["permissions"].Items.Select(p => Permission(p, action, negated: false))];
            RbacRule[] principals = [.. policy["principals"].Items.Select(p => Principal(p, action, negated: false))];
            policies.Add(new RbacPolicy(key, permissions, principals));
        }
        return new RbacPolicySet(action, policies);
    }

    /// <summary>
    /// A rule we cannot evaluate (metadata, SNI, filter state, a field this build does not know) fails
    /// closed: in an ALLOW policy it never matches, in a DENY policy it always does (inverted under a not).
    /// </summary>
    private static RbacRule Unsupported(RbacAction action, bool negated) =>
        (action == RbacAction.Deny) != negated ? RbacRule.AnyRule : RbacRule.NeverRule;

    private static RbacRule Permission(ConfigNode p, RbacAction action, bool negated)
    {
        if (p["any"].Boolean() == true)
        {
            return RbacRule.AnyRule;
        }
        if (p["and_rules"].Exists)
        {
            return RbacRule.And([.. p["and_rules"]["rules"].Items.Select(r => Permission(r, action, negated))]);
        }
        if (p["or_rules"].Exists)
        {
            return RbacRule.Or([.. p["or_rules"]["rules"].Items.Select(r => Permission(r, action, negated))]);
        }
        if (p["not_rule"].Exists)
        {
            return RbacRule.Not(Permission(p["not_rule"], action, !negated));
        }
        if (p["header"].Exists)
        {
            return RbacRule.ForHeader(LoadHeaderMatcher(p["header"]));
        }
        if (p["url_path"].Exists)
        {
            return RbacRule.ForUrlPath(LoadStringMatcher(p["url_path"]["path"]));
        }
        if (p["destination_ip"].Exists)
        {
            return RbacRule.ForDestinationIp(Cidr(p["destination_ip"]));
        }
        if (p["destination_port"].Integer() is long port and > 0)
        {
            return RbacRule.ForDestinationPort((int)port);
        }
        if (p["destination_port_range"].Exists)
        {
            ConfigNode range = p["destination_port_range"];
            return RbacRule.ForDestinationPortRange((int)(range["start"].Integer() ?? 0), (int)(range["end"].Integer() ?? 0));
        }
        return Unsupported(action, negated);
    }

    private static RbacRule Principal(ConfigNode p, RbacAction action, bool negated)
    {
        if (p["any"].Boolean() == true)
        {
            return RbacRule.AnyRule;
        }
        if (p["and_ids"].Exists)
        {
            return RbacRule.And([.. p["and_ids"]["ids"].Items.Select(r => Principal(r, action, negated))]);
        }
        if (p["or_ids"].Exists)
        {
            return RbacRule.Or([.. p["or_ids"]["ids"].Items.Select(r => Principal(r, action, negated))]);
        }
        if (p["not_id"].Exists)
        {
            return RbacRule.Not(Principal(p["not_id"], action, !negated));
        }
        if (p["authenticated"].Exists)
        {
            ConfigNode name = p["authenticated"]["principal_name"];
            return RbacRule.ForAuthenticated(name.Exists ? LoadStringMatcher(name) : null);
        }
        if (p["direct_remote_ip"].Exists)
        {
            return RbacRule.ForDirectRemoteIp(Cidr(p["direct_remote_ip"]));
        }
        if (p["source_ip"].Exists)
        {
            return RbacRule.ForDirectRemoteIp(Cidr(p["source_ip"]));
        }
        if (p["remote_ip"].Exists)
        {
            return RbacRule.ForRemoteIp(Cidr(p["remote_ip"]));
        }
        if (p["header"].Exists)
        {
            return RbacRule.ForHeader(LoadHeaderMatcher(p["header"]));
        }
        if (p["url_path"].Exists)
        {
            return RbacRule.ForUrlPath(LoadStringMatcher(p["url_path"]["path"]));
        }
        return Unsupported(action, negated);
    }

    private static CidrRange Cidr(ConfigNode c)
    {
        string prefix = c["address_prefix"].RequiredString();
        if (!IPAddress.TryParse(prefix, out IPAddress? address))
        {
            throw new ConfigException($"{c["address_prefix"].Path}: '{prefix}' is not an IP address");
        }
        long length = Wrapped(c["prefix_len"]) ?? (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
        try
        {
            return new CidrRange(address, (int)length);
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{c.Path}: {e.Message}");
        }
    }
}
