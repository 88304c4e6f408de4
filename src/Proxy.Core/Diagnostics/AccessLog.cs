using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Proxy.Http2;

namespace Proxy.Core.Diagnostics;

/// <summary>What one finished request gives its access logs (read while the exchange still holds it).</summary>
public readonly ref struct AccessLogRecord
{
    public required DateTime StartTime { get; init; }
    public required HeaderList Request { get; init; }
    public HeaderList? Response { get; init; }
    public required int Status { get; init; }
    public string? Flags { get; init; }
    public required string Protocol { get; init; }
    public long BytesReceived { get; init; }
    public long BytesSent { get; init; }
    public required long DurationMs { get; init; }
    public EndPoint? UpstreamHost { get; init; }
    public string? UpstreamCluster { get; init; }
    public string? RouteName { get; init; }
    public EndPoint? DownstreamRemote { get; init; }
    public EndPoint? DownstreamDirectRemote { get; init; }
    public EndPoint? DownstreamLocal { get; init; }
}

/// <summary>
/// An Envoy format string compiled once: literal text and command operators (%START_TIME%,
/// %REQ(X?Y):N%, %RESP(X)%, %RESPONSE_CODE%, %RESPONSE_FLAGS%, %BYTES_RECEIVED%, %DURATION%,
/// %UPSTREAM_HOST%, ...). An operator we do not know is refused when loading, as Envoy does.
/// </summary>
public sealed class AccessLogFormat
{
    /// <summary>Envoy's default format.</summary>
    public const string EnvoyDefault = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

    private enum Op
    {
        Literal,
        StartTime,
        Request,
        Response,
        Protocol,
        ResponseCode,
        ResponseFlags,
        BytesReceived,
        BytesSent,
        Duration,
        UpstreamHost,
        UpstreamCluster,
        RouteName,
        DownstreamRemoteAddress,
        DownstreamRemoteAddressWithoutPort,
        DownstreamDirectRemoteAddress,
        DownstreamDirectRemoteAddressWithoutPort,
        DownstreamLocalAddress,
        DownstreamLocalAddressWithoutPort,
        Hostname,
        Dash,
    }

    // Header names as octets (REQ/RESP), computed once.
    private sealed record Part(Op Op, string Text, string? Alternative, int MaxLength)
    {
        public byte[] Name { get; } = Encoding.ASCII.GetBytes(Text);
        public byte[]? AlternativeName { get; } = Alternative == null ? null : Encoding.ASCII.GetBytes(Alternative);
    }

    private readonly Part[] _parts;

    private AccessLogFormat(Part[] parts) => _parts = parts;

    /// <summary>Whether the whole format is one numeric operator (a JSON value then is a number, as in Envoy).</summary>
    internal bool IsNumber => _parts.Length == 1 && _parts[0].Op is Op.ResponseCode or Op.BytesReceived or Op.BytesSent or Op.Duration;

    public static AccessLogFormat Parse(string format)
    {
        var parts = new List<Part>();
        var literal = new StringBuilder();
        int i = 0;
        while (i < format.Length)
        {
            if (format[i] != '%')
            {
                literal.Append(format[i++]);
                continue;
            }
            if (i + 1 < format.Length && format[i + 1] == '%')
            {
                literal.Append('%');
                i += 2;
                continue;
            }
            int end = format.IndexOf('%', i + 1);
            if (end < 0)
            {
                throw new Config.ConfigException($"access log format: '%' at {i} opens a command that is never closed");
            }
            // A maximum length may follow the closing '%' of REQ/RESP: %REQ(X):10%.
            string command = format[(i + 1)..end];
            int next = end + 1;
            if (literal.Length > 0)
            {
                parts.Add(new Part(Op.Literal, literal.ToString(), null, 0));
                literal.Clear();
            }
            parts.Add(Operator(command));
            i = next;
        }
        if (literal.Length > 0)
        {
            parts.Add(new Part(Op.Literal, literal.ToString(), null, 0));
        }
        return new AccessLogFormat([.. parts]);
    }

    private static Part Operator(string command)
    {
        int max = 0;
        int close = command.LastIndexOf(')');
        if (close >= 0 && close + 1 < command.Length && command[close + 1] == ':')
        {
            if (!int.TryParse(command.AsSpan(close + 2), NumberStyles.None, CultureInfo.InvariantCulture, out max))
            {
                throw new Config.ConfigException($"access log format: '%{command}%': bad maximum length");
            }
            command = command[..(close + 1)];
        }
        if ((command.StartsWith("REQ(", StringComparison.Ordinal) || command.StartsWith("RESP(", StringComparison.Ordinal)) && command.EndsWith(')'))
        {
            bool request = command[2] == 'Q';
            string inner = command[(request ? 4 : 5)..^1];
            int question = inner.IndexOf('?');
            string main = (question < 0 ? inner : inner[..question]).ToLowerInvariant();
            string? alternative = question < 0 ? null : inner[(question + 1)..].ToLowerInvariant();
            return new Part(request ? Op.Request : Op.Response, main, alternative, max);
        }
        if (command.StartsWith("START_TIME", StringComparison.Ordinal))
        {
            // START_TIME(...) with a strftime format is shown in Envoy's default form.
            return new Part(Op.StartTime, "", null, 0);
        }
        Op op = command switch
        {
            "PROTOCOL" => Op.Protocol,
            "RESPONSE_CODE" => Op.ResponseCode,
            "RESPONSE_FLAGS" => Op.ResponseFlags,
            "RESPONSE_CODE_DETAILS" => Op.ResponseFlags,
            "BYTES_RECEIVED" => Op.BytesReceived,
            "BYTES_SENT" => Op.BytesSent,
            "DURATION" => Op.Duration,
            "UPSTREAM_HOST" => Op.UpstreamHost,
            "UPSTREAM_CLUSTER" => Op.UpstreamCluster,
            "ROUTE_NAME" => Op.RouteName,
            "DOWNSTREAM_REMOTE_ADDRESS" => Op.DownstreamRemoteAddress,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op.DownstreamRemoteAddressWithoutPort,
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op.DownstreamDirectRemoteAddress,
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Op.DownstreamDirectRemoteAddressWithoutPort,
            "DOWNSTREAM_LOCAL_ADDRESS" => Op.DownstreamLocalAddress,
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op.DownstreamLocalAddressWithoutPort,
            "HOSTNAME" => Op.Hostname,
            // Known to Envoy, not tracked here (TLS, tracing, upstream addresses): "-".
            "UPSTREAM_LOCAL_ADDRESS" or "UPSTREAM_TRANSPORT_FAILURE_REASON" or "REQUESTED_SERVER_NAME" or "CONNECTION_TERMINATION_DETAILS"
                or "UPSTREAM_REQUEST_ATTEMPT_COUNT" or "DOWNSTREAM_PEER_URI_SAN" or "DOWNSTREAM_LOCAL_URI_SAN" or "UPSTREAM_PEER_URI_SAN"
                or "CONNECTION_ID" or "STREAM_ID" or "REQUEST_DURATION" or "RESPONSE_DURATION" or "RESPONSE_TX_DURATION" or "UPSTREAM_WIRE_BYTES_SENT"
                or "UPSTREAM_WIRE_BYTES_RECEIVED" or "DOWNSTREAM_TLS_VERSION" or "DOWNSTREAM_TLS_CIPHER" => Op.Dash,
            _ when command.StartsWith("DYNAMIC_METADATA(", StringComparison.Ordinal) || command.StartsWith("FILTER_STATE(", StringComparison.Ordinal)
                || command.StartsWith("CEL(", StringComparison.Ordinal) || command.StartsWith("TRAILER(", StringComparison.Ordinal)
                || command.StartsWith("ENVIRONMENT(", StringComparison.Ordinal) || command.StartsWith("UPSTREAM_METADATA(", StringComparison.Ordinal) => Op.Dash,
            _ => throw new Config.ConfigException($"access log format: '%{command}%' is not a command operator we know"),
        };
        return new Part(op, "", null, 0);
    }

    public void Append(StringBuilder output, in AccessLogRecord r)
    {
        foreach (Part part in _parts)
        {
            Op op = part.Op;
            int max = part.MaxLength;
            switch (op)
            {
                case Op.Literal:
                    output.Append(part.Text);
                    break;
                case Op.Request:
                case Op.Response:
                    HeaderList? headers = op == Op.Request ? r.Request : r.Response;
                    int index = headers == null ? -1 : headers.IndexOf(part.Name);
                    if (index < 0 && part.AlternativeName != null && headers != null)
                    {
                        index = headers.IndexOf(part.AlternativeName);
                    }
                    if (index < 0)
                    {
                        output.Append('-');
                        break;
                    }
                    string value = Encoding.UTF8.GetString(headers!.Value(index));
                    output.Append(max > 0 && value.Length > max ? value[..max] : value);
                    break;
                default:
                    output.Append(Scalar(op, r));
                    break;
            }
        }
    }

    private static string Scalar(Op op, in AccessLogRecord r) => op switch
    {
        Op.StartTime => r.StartTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture),
        Op.Protocol => r.Protocol,
        Op.ResponseCode => r.Status.ToString(CultureInfo.InvariantCulture),
        Op.ResponseFlags => r.Flags ?? "-",
        Op.BytesReceived => r.BytesReceived.ToString(CultureInfo.InvariantCulture),
        Op.BytesSent => r.BytesSent.ToString(CultureInfo.InvariantCulture),
        Op.Duration => r.DurationMs.ToString(CultureInfo.InvariantCulture),
        Op.UpstreamHost => r.UpstreamHost?.ToString() ?? "-",
        Op.UpstreamCluster => r.UpstreamCluster ?? "-",
        Op.RouteName => string.IsNullOrEmpty(r.RouteName) ? "-" : r.RouteName,
        Op.DownstreamRemoteAddress => r.DownstreamRemote?.ToString() ?? "-",
        Op.DownstreamRemoteAddressWithoutPort => (r.DownstreamRemote as IPEndPoint)?.Address.ToString() ?? "-",
        Op.DownstreamDirectRemoteAddress => r.DownstreamDirectRemote?.ToString() ?? "-",
        Op.DownstreamDirectRemoteAddressWithoutPort => (r.DownstreamDirectRemote as IPEndPoint)?.Address.ToString() ?? "-",
        Op.DownstreamLocalAddress => r.DownstreamLocal?.ToString() ?? "-",
        Op.DownstreamLocalAddressWithoutPort => (r.DownstreamLocal as IPEndPoint)?.Address.ToString() ?? "-",
        Op.Hostname => Environment.MachineName,
        _ => "-",
    };
}

/// <summary>
/// Envoy's access log filters: which finished requests a log writes. Status code and duration
/// comparisons (EQ, GE, LE), response flags (any, or any of a list), a request header matcher,
/// not_health_check (every request: this proxy answers no health checks itself), and/or of others.
/// </summary>
public abstract class AccessLogFilter
{
    public abstract bool Passes(in AccessLogRecord record);

    public static AccessLogFilter StatusCode(ComparisonOp op, long value) => new Comparison(op, value, static (in AccessLogRecord r) => r.Status);

    public static AccessLogFilter Duration(ComparisonOp op, long value) => new Comparison(op, value, static (in AccessLogRecord r) => r.DurationMs);

    public static AccessLogFilter Always { get; } = new Constant(true);

    public static AccessLogFilter ResponseFlags(string[] flags) => new Flags(flags);

    public static AccessLogFilter Header(Config.HeaderMatcher matcher) => new HeaderMatch(matcher);

    public static AccessLogFilter All(AccessLogFilter[] filters) => new Combined(filters, all: true);

    public static AccessLogFilter Any(AccessLogFilter[] filters) => new Combined(filters, all: false);

    public enum ComparisonOp
    {
        Eq,
        Ge,
        Le,
    }

    private delegate long Read(in AccessLogRecord record);

    private sealed class Comparison(ComparisonOp op, long value, Read read) : AccessLogFilter
    {
        public override bool Passes(in AccessLogRecord record)
        {
            long actual = read(record);
            return op switch
            {
                ComparisonOp.Eq => actual == value,
                ComparisonOp.Ge => actual >= value,
                _ => actual <= value,
            };
        }
    }

    private sealed class Constant(bool result) : AccessLogFilter
    {
        public override bool Passes(in AccessLogRecord record) => result;
    }

    private sealed class Flags(string[] flags) : AccessLogFilter
    {
        public override bool Passes(in AccessLogRecord record) =>
            record.Flags is { } set && (flags.Length == 0 || Array.IndexOf(flags, set) >= 0);
    }

    private sealed class HeaderMatch(Config.HeaderMatcher matcher) : AccessLogFilter
    {
        public override bool Passes(in AccessLogRecord record) => matcher.Matches(record.Request);
    }

    private sealed class Combined(AccessLogFilter[] filters, bool all) : AccessLogFilter
    {
        public override bool Passes(in AccessLogRecord record)
        {
            foreach (AccessLogFilter filter in filters)
            {
                if (filter.Passes(record) != all)
                {
                    return !all;
                }
            }
            return all;
        }
    }
}

/// <summary>
/// One access log of a connection manager: where (a file, /dev/stdout, /dev/stderr) and how (a text
/// format, or JSON whose values are formats). Lines are formatted when the request finishes and handed
/// to the file's writer thread through a bounded queue: when the queue is full the line is dropped and
/// counted (access_log_file.write_dropped), never waited for.
/// </summary>
public sealed class AccessLog
{
    private readonly AccessLogFormat? _text;
    private readonly (string Key, AccessLogFormat Value)[]? _json;
    private readonly AccessLogFile _file;
    private readonly AccessLogFilter? _filter;

    private AccessLog(AccessLogFile file, AccessLogFormat? text, (string, AccessLogFormat)[]? json, AccessLogFilter? filter)
    {
        _file = file;
        _text = text;
        _json = json;
        _filter = filter;
    }

    public static AccessLog Text(string path, string format, AccessLogFilter? filter = null) => new(AccessLogFile.For(path), AccessLogFormat.Parse(format), null, filter);

    /// <summary>A JSON line per request: each key's value is a format (a lone numeric operator gives a number).</summary>
    public static AccessLog Json(string path, IReadOnlyList<(string Key, string Format)> fields, AccessLogFilter? filter = null) =>
        new(AccessLogFile.For(path), null, [.. fields.Select(static f => (f.Key, AccessLogFormat.Parse(f.Format)))], filter);

    public void Write(in AccessLogRecord record)
    {
        if (_filter != null && !_filter.Passes(record))
        {
            return;
        }
        var line = new StringBuilder(256);
        if (_text != null)
        {
            _text.Append(line, record);
        }
        else
        {
            var field = new StringBuilder(64);
            using var buffer = new MemoryStream();
            using (var writer = new Utf8JsonWriter(buffer))
            {
                writer.WriteStartObject();
                foreach (var (key, format) in _json!)
                {
                    field.Clear();
                    format.Append(field, record);
                    string value = field.ToString();
                    if (format.IsNumber && long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long number))
                    {
                        writer.WriteNumber(key, number);
                    }
                    else if (value == "-")
                    {
                        writer.WriteNull(key);
                    }
                    else
                    {
                        writer.WriteString(key, value);
                    }
                }
                writer.WriteEndObject();
            }
            line.Append(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length)).Append('\n');
        }
        _file.Enqueue(line.ToString());
    }
}

/// <summary>One log file's writer thread and bounded queue (shared by every log that names the path).</summary>
internal sealed class AccessLogFile
{
    private const int QueueLines = 16 * 1024;
    private static readonly Dictionary<string, AccessLogFile> s_files = new(StringComparer.Ordinal);
    private static readonly Counter s_dropped = StatsStore.Default.Counter("access_log_file", null, "write_dropped");
    private static readonly Counter s_failed = StatsStore.Default.Counter("access_log_file", null, "write_failed");
    private static readonly Counter s_written = StatsStore.Default.Counter("access_log_file", null, "write_completed");

    private readonly Channel<string> _lines = Channel.CreateBounded<string>(new BoundedChannelOptions(QueueLines)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private AccessLogFile(string path)
    {
        var thread = new Thread(() => Run(path)) { IsBackground = true, Name = "access-log" };
        thread.Start();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Flush(TimeSpan.FromSeconds(1));
    }

    public static AccessLogFile For(string path)
    {
        lock (s_files)
        {
            if (!s_files.TryGetValue(path, out AccessLogFile? file))
            {
                s_files[path] = file = new AccessLogFile(path);
            }
            return file;
        }
    }

    private int _pending;

    public void Enqueue(string line)
    {
        Interlocked.Increment(ref _pending);
        if (!_lines.Writer.TryWrite(line))
        {
            Interlocked.Decrement(ref _pending);
            s_dropped.Inc();
        }
    }

    private void Flush(TimeSpan limit)
    {
        long until = Environment.TickCount64 + (long)limit.TotalMilliseconds;
        while (Volatile.Read(ref _pending) > 0 && Environment.TickCount64 < until)
        {
            Thread.Sleep(5);
        }
    }

    private void Run(string path)
    {
        Stream? stream = null;
        try
        {
            stream = path switch
            {
                "/dev/stdout" => Console.OpenStandardOutput(),
                "/dev/stderr" => Console.OpenStandardError(),
                _ => new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None),
            };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            ProxyLog.Write(LogLevel.Error, $"access log {path}: cannot open: {e.Message}");
        }
        var batch = new MemoryStream(64 * 1024);
        ChannelReader<string> reader = _lines.Reader;
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            batch.SetLength(0);
            int lines = 0;
            while (batch.Length < 256 * 1024 && reader.TryRead(out string? line))
            {
                byte[] bytes = Encoding.UTF8.GetBytes(line);
                batch.Write(bytes);
                lines++;
            }
            try
            {
                stream?.Write(batch.GetBuffer(), 0, (int)batch.Length);
                stream?.Flush();
                s_written.Inc();
            }
            catch (IOException)
            {
                s_failed.Inc();
            }
            Interlocked.Add(ref _pending, -lines);
        }
    }
}
