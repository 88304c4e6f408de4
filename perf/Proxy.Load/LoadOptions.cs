using System.Globalization;
using System.Text;

namespace Proxy.Load;

/// <summary>Which protocol the driver speaks to the target.</summary>
internal enum LoadProtocol : byte
{
    Http1,
    /// <summary>HTTP/2 over cleartext TCP with prior knowledge (h2c), as h2load does.</summary>
    Http2,
}

/// <summary>A command-line mistake: the message is printed with the usage hint, and the exit code is 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>The command line, parsed and checked. Every option has a default; every mistake says which option.</summary>
internal sealed class LoadOptions
{
    public const string Usage = """
        usage: proxy-load --url http://HOST:PORT/PATH [options]

        target
          --url URL              the target (http:// only; the path and query are the request's :path)
          --grpc                 gRPC unary over h2c: POST, content-type application/grpc, te: trailers; the
                                 body is framed as one gRPC message; failure = grpc-status other than 0
          --protocol h1|h2       HTTP/1.1 or h2c (default: h2 with --grpc, else h1)
          --method M             request method (default GET; POST when there is a body or --grpc)
          -H, --header 'N: V'    a request header (repeatable); 'host: NAME' sets the Host / :authority
          --body-size N          a body of N octets ('x'; with --grpc the message payload; default 0)
          --body-file F          the body (or gRPC message payload) from a file

        load model (closed unless --rate is given)
          --connections C        connections (default 16)
          --streams S            closed model: requests in flight per connection (default 1; h1 allows 1)
                                 open model: the most in flight per connection (default 100 on h2, 1 on h1)
          --rate N               open model: N requests per second, sent at their intended times; latency
                                 counts from the intended time (no coordinated omission)
          --ramp-to M            open model: the rate moves linearly from --rate to M over the duration

        duration
          --duration D           measured time, e.g. 3s, 500ms, 2m (default 10s)
          --requests N           stop sending after N measured requests (closed model; whichever comes first)
          --warmup D             load before measuring, not recorded (default 1s; 0s for none)
          --timeout D            how long requests still in flight at the end may take (default 10s)

        report
          --report DIR           writes DIR/report.json, DIR/report.html (SVG plots) and DIR/report.txt
          --max-p99 MS           exit code 1 if p99 latency exceeds MS milliseconds
          --max-error-rate F     exit code 1 if failed/requests exceeds F (0.01 or 1%)
          --threads N            socket event-loop threads (default 1: one core drives the load)
          --quiet                no progress line
          -h, --help             this text

        A request fails when it gets no complete response (reset stream, closed connection, timeout), an
        HTTP status of 400 or above, or (gRPC) a grpc-status other than 0; in the open model also when a
        million requests already wait for a connection (queue). Exit codes: 0 done, 1 a threshold
        was exceeded, 2 bad arguments or the target could not be reached.
        """;

    public required Uri Url { get; init; }
    public string Host { get; init; } = "";
    public int Port { get; init; }
    public string Path { get; init; } = "/";
    public string Authority { get; init; } = "";
    public bool Grpc { get; init; }
    public LoadProtocol Protocol { get; init; }
    public string Method { get; init; } = "GET";
    public List<(string Name, string Value)> Headers { get; } = [];
    /// <summary>The octets sent as the body (framed already for gRPC).</summary>
    public byte[] Body { get; init; } = [];
    public int Connections { get; init; } = 16;
    public int Streams { get; init; } = 1;
    public double Rate { get; init; }
    public double RampTo { get; init; }
    public bool OpenModel => Rate > 0;
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(10);
    public long Requests { get; init; }
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);
    public string? ReportDirectory { get; init; }
    public double? MaxP99Ms { get; init; }
    public double? MaxErrorRate { get; init; }
    public bool Quiet { get; init; }
    public int Threads { get; init; } = 1;

    public static LoadOptions Parse(string[] args)
    {
        string? url = null, protocol = null, method = null, bodyFile = null, report = null;
        bool grpc = false, quiet = false;
        long bodySize = 0, requests = 0;
        int connections = 16, threads = 1;
        int? streams = null;
        double rate = 0, rampTo = 0;
        double? maxP99 = null, maxErrorRate = null;
        TimeSpan duration = TimeSpan.FromSeconds(10), warmup = TimeSpan.FromSeconds(1), timeout = TimeSpan.FromSeconds(10);
        var headers = new List<(string, string)>();
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string Value()
            {
                if (i + 1 >= args.Length)
                {
                    throw new UsageException($"{arg} needs a value");
                }
                return args[++i];
            }
            switch (arg)
            {
                case "--url": url = Value(); break;
                case "--grpc": grpc = true; break;
                case "--protocol": protocol = Value(); break;
                case "--method": method = Value(); break;
                case "-H" or "--header":
                {
                    string h = Value();
                    int colon = h.IndexOf(':', 1);
                    string name = colon > 0 ? h[..colon].Trim().ToLowerInvariant() : "";
                    string value = colon > 0 ? h[(colon + 1)..].Trim() : "";
                    // RFC 9110 §5.1 and §5.5: a token for the name; no control characters in the value.
                    if (name.Length == 0 || !name.All(c => c < 127 && (char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c))))
                    {
                        throw new UsageException($"{arg} '{h}': expected 'name: value' with a token for the name");
                    }
                    if (value.Any(c => (c < ' ' && c != '\t') || c == 127))
                    {
                        throw new UsageException($"{arg} '{h}': control characters are not allowed in a field value");
                    }
                    if (name is "content-length" or "transfer-encoding" or "connection" or "te" or "upgrade" or "keep-alive")
                    {
                        throw new UsageException($"{arg} '{h}': the driver frames its own messages ({name} is not taken)");
                    }
                    headers.Add((name, value));
                    break;
                }
                case "--body-size": bodySize = Count(arg, Value(), 0, 64L << 20); break;
                case "--body-file": bodyFile = Value(); break;
                case "--connections" or "-c": connections = (int)Count(arg, Value(), 1, 10_000); break;
                case "--streams" or "-m": streams = (int)Count(arg, Value(), 1, 10_000); break;
                case "--rate": rate = Number(arg, Value(), 0.001, 10_000_000); break;
                case "--ramp-to": rampTo = Number(arg, Value(), 0.001, 10_000_000); break;
                case "--duration" or "-d": duration = Time(arg, Value(), allowZero: false); break;
                case "--requests" or "-n": requests = Count(arg, Value(), 1, long.MaxValue); break;
                case "--warmup": warmup = Time(arg, Value(), allowZero: true); break;
                case "--timeout": timeout = Time(arg, Value(), allowZero: false); break;
                case "--report": report = Value(); break;
                case "--max-p99": maxP99 = Number(arg, Value(), 0, double.MaxValue); break;
                case "--max-error-rate":
                {
                    string v = Value();
                    double f = v.EndsWith('%') ? Number(arg, v[..^1], 0, 100) / 100 : Number(arg, v, 0, 1);
                    maxErrorRate = f;
                    break;
                }
                case "--quiet" or "-q": quiet = true; break;
                case "--threads" or "-t": threads = (int)Count(arg, Value(), 1, 64); break;
                default: throw new UsageException($"unknown option {arg}");
            }
        }
        if (url == null)
        {
            throw new UsageException("--url is required");
        }
        if (!Uri.TryCreate(url, UriKind.Absolute, out Uri? uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"--url '{url}': expected http://HOST:PORT/PATH");
        }
        if (uri.Scheme == "https")
        {
            throw new UsageException($"--url '{url}': https is not supported (the driver speaks cleartext HTTP/1.1 and h2c)");
        }
        LoadProtocol proto = protocol switch
        {
            null => grpc ? LoadProtocol.Http2 : LoadProtocol.Http1,
            "h1" or "http1" or "http/1.1" => LoadProtocol.Http1,
            "h2" or "h2c" or "http2" => LoadProtocol.Http2,
            _ => throw new UsageException($"--protocol '{protocol}': expected h1 or h2"),
        };
        if (grpc && proto != LoadProtocol.Http2)
        {
            throw new UsageException("--grpc needs --protocol h2 (gRPC runs over HTTP/2)");
        }
        if (rampTo > 0 && rate <= 0)
        {
            throw new UsageException("--ramp-to needs --rate (the starting rate)");
        }
        if (rate > 0 && requests > 0)
        {
            throw new UsageException("--requests is for the closed model; the open model runs for --duration");
        }
        if (proto == LoadProtocol.Http1 && streams > 1)
        {
            throw new UsageException("--streams above 1 needs --protocol h2 (HTTP/1.1 has one request in flight per connection)");
        }
        if (bodyFile != null && bodySize > 0)
        {
            throw new UsageException("--body-file and --body-size: give one");
        }
        byte[] payload;
        try
        {
            payload = bodyFile != null ? File.ReadAllBytes(bodyFile) : CreateFiller(bodySize);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--body-file '{bodyFile}': {e.Message}");
        }
        byte[] body = payload;
        if (grpc)
        {
            // One length-prefixed message: compressed flag 0, 4-octet big-endian length.
            body = new byte[5 + payload.Length];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(1), (uint)payload.Length);
            payload.CopyTo(body, 5);
        }
        string m = method ?? (grpc || body.Length > 0 ? "POST" : "GET");
        if (m.Length == 0 || m.Any(c => c <= ' ' || c >= 127))
        {
            throw new UsageException($"--method '{m}': not a method token");
        }
        var options = new LoadOptions
        {
            Url = uri,
            Host = uri.Host,
            Port = uri.Port,
            Path = string.IsNullOrEmpty(uri.PathAndQuery) ? "/" : uri.PathAndQuery,
            // -H 'host: NAME' names the virtual host (HTTP/1.1 Host, HTTP/2 :authority); the URL still says where to connect.
            Authority = headers.LastOrDefault(h => h.Item1 == "host").Item2 is { Length: > 0 } host ? host
                : uri.IsDefaultPort ? uri.Host : $"{uri.Host}:{uri.Port}",
            Grpc = grpc,
            Protocol = proto,
            Method = m,
            Body = body,
            Connections = connections,
            Streams = streams ?? (rate > 0 && proto == LoadProtocol.Http2 ? 100 : 1),
            Rate = rate,
            RampTo = rampTo > 0 ? rampTo : rate,
            Duration = duration,
            Requests = requests,
            Warmup = warmup,
            Timeout = timeout,
            ReportDirectory = report,
            MaxP99Ms = maxP99,
            MaxErrorRate = maxErrorRate,
            Quiet = quiet,
            Threads = threads,
        };
        options.Headers.AddRange(headers.Where(h => h.Item1 != "host"));
        return options;
    }

    private static byte[] CreateFiller(long size)
    {
        var bytes = new byte[size];
        bytes.AsSpan().Fill((byte)'x');
        return bytes;
    }

    private static long Count(string option, string value, long min, long max)
    {
        if (!long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n < min || n > max)
        {
            throw new UsageException($"{option} '{value}': expected a whole number from {min} to {max}");
        }
        return n;
    }

    private static double Number(string option, string value, double min, double max)
    {
        if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double n) || !double.IsFinite(n) || n < min || n > max)
        {
            throw new UsageException($"{option} '{value}': expected a number from {min.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}");
        }
        return n;
    }

    /// <summary>A duration: a number with ms, s, m or h (a bare number is seconds).</summary>
    public static TimeSpan Time(string option, string value, bool allowZero)
    {
        string v = value.Trim();
        (string number, double scale) = v.EndsWith("ms", StringComparison.Ordinal) ? (v[..^2], 0.001)
            : v.EndsWith('s') ? (v[..^1], 1.0)
            : v.EndsWith('m') ? (v[..^1], 60.0)
            : v.EndsWith('h') ? (v[..^1], 3600.0)
            : (v, 1.0);
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double n) || !double.IsFinite(n) || n < 0 || n * scale > 86_400
            || (!allowZero && n == 0))
        {
            throw new UsageException($"{option} '{value}': expected a duration such as 500ms, 3s or 2m");
        }
        return TimeSpan.FromSeconds(n * scale);
    }

    /// <summary>A one-line description of the run for the report's header.</summary>
    public string Describe()
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"{Method} {Url} over {(Protocol == LoadProtocol.Http2 ? "h2c" : "HTTP/1.1")}");
        if (Grpc)
        {
            text.Append(" (gRPC unary)");
        }
        text.Append(CultureInfo.InvariantCulture, $", body {Body.Length} B, {Connections} connections, ");
        if (OpenModel)
        {
            text.Append(RampTo != Rate
                ? string.Create(CultureInfo.InvariantCulture, $"open model ramping {Rate:0.##} -> {RampTo:0.##} req/s")
                : string.Create(CultureInfo.InvariantCulture, $"open model at {Rate:0.##} req/s"));
            text.Append(CultureInfo.InvariantCulture, $" (at most {Streams} in flight per connection)");
        }
        else
        {
            text.Append(CultureInfo.InvariantCulture, $"closed model, {Streams} in flight per connection");
        }
        text.Append(CultureInfo.InvariantCulture, $", {Duration.TotalSeconds:0.###} s measured");
        if (Warmup > TimeSpan.Zero)
        {
            text.Append(CultureInfo.InvariantCulture, $" after {Warmup.TotalSeconds:0.###} s of warm-up");
        }
        return text.ToString();
    }
}
