using System.Globalization;
using System.Runtime.CompilerServices;

namespace Proxy.Core.Diagnostics;

public enum LogLevel : byte
{
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

/// <summary>
/// The proxy's log: one line per event on standard error, in Envoy's shape
/// ("[time][level] message"). A disabled level costs one comparison and builds no string (the message is
/// an interpolated-string handler that formats nothing unless the level is on). Lines are queued (at most
/// <see cref="QueueLimit"/>; past it they are dropped and counted) and written by a thread of their own,
/// so no event loop ever waits for the terminal. Lines caused by peers (malformed input, resets) are
/// rate-limited, so a hostile client cannot turn the log into a denial of service.
/// </summary>
public static class ProxyLog
{
    private const int PeerLinesPerSecond = 20;

    /// <summary>Lines waiting to be written at most; more are dropped (and counted in the next line written).</summary>
    public const int QueueLimit = 8192;

    private static readonly object s_lock = new();
    private static long s_windowStart;
    private static int s_windowLines;
    private static long s_suppressed;
    private static readonly System.Threading.Channels.Channel<string> s_lines =
        System.Threading.Channels.Channel.CreateBounded<string>(new System.Threading.Channels.BoundedChannelOptions(QueueLimit) { SingleReader = true, FullMode = System.Threading.Channels.BoundedChannelFullMode.DropWrite });
    private static long s_dropped;
    private static long s_queued;
    private static long s_written;
    private static Thread? s_writer;

    public static LogLevel Level { get; set; } = LogLevel.Info;
    public static TextWriter Output { get; set; } = Console.Error;

    /// <summary>Lines dropped because the queue was full.</summary>
    public static long Dropped => Interlocked.Read(ref s_dropped);

    public static bool IsEnabled(LogLevel level) => level >= Level;

    public static LogLevel Parse(string level) => level switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "info" => LogLevel.Info,
        "warning" or "warn" => LogLevel.Warning,
        "error" => LogLevel.Error,
        "critical" => LogLevel.Critical,
        "off" => LogLevel.Off,
        _ => throw new ArgumentOutOfRangeException(nameof(level), level, "unknown log level"),
    };

    /// <summary>Logs an interpolated message; nothing of it is formatted when <paramref name="level"/> is off.</summary>
    public static void Write(LogLevel level, [InterpolatedStringHandlerArgument("level")] ref LogLineHandler message)
    {
        if (message.Enabled)
        {
            Enqueue(level, message.ToStringAndClear());
        }
    }

    public static void Write(LogLevel level, string message)
    {
        if (IsEnabled(level))
        {
            Enqueue(level, message);
        }
    }

    private static string[]? s_format;

    /// <summary>
    /// Envoy's --log-format (spdlog flags): %Y %m %d %H %M %S %T %D %e (ms) %f (µs) %F (ns) %z, %l / %L
    /// (level), %n (logger: "main"), %v (message), %j (message, JSON-escaped), %t (thread), %P (process),
    /// %g %s %# %! (source: none here), %%; anything else is copied. Null: "[%Y-%m-%d %T.%e][%l] %v".
    /// </summary>
    public static string? Format
    {
        get => s_format == null ? null : string.Concat(s_format);
        set => s_format = value == null ? null : Tokenize(value);
    }

    private static string[] Tokenize(string format)
    {
        var parts = new List<string>();
        var literal = new System.Text.StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] == '%' && i + 1 < format.Length)
            {
                if (literal.Length > 0)
                {
                    parts.Add(literal.ToString());
                    literal.Clear();
                }
                parts.Add(format.Substring(i, 2));
                i++;
            }
            else
            {
                literal.Append(format[i]);
            }
        }
        if (literal.Length > 0)
        {
            parts.Add(literal.ToString());
        }
        return [.. parts];
    }

    private static string Shape(string[] format, LogLevel level, string message)
    {
        DateTime now = DateTime.UtcNow;
        var line = new System.Text.StringBuilder(message.Length + 64);
        foreach (string part in format)
        {
            if (part.Length != 2 || part[0] != '%')
            {
                line.Append(part);
                continue;
            }
            switch (part[1])
            {
                case 'Y': line.Append(now.ToString("yyyy", CultureInfo.InvariantCulture)); break;
                case 'm': line.Append(now.ToString("MM", CultureInfo.InvariantCulture)); break;
                case 'd': line.Append(now.ToString("dd", CultureInfo.InvariantCulture)); break;
                case 'H': line.Append(now.ToString("HH", CultureInfo.InvariantCulture)); break;
                case 'M': line.Append(now.ToString("mm", CultureInfo.InvariantCulture)); break;
                case 'S': line.Append(now.ToString("ss", CultureInfo.InvariantCulture)); break;
                case 'T': line.Append(now.ToString("HH:mm:ss", CultureInfo.InvariantCulture)); break;
                case 'D': line.Append(now.ToString("MM/dd/yy", CultureInfo.InvariantCulture)); break;
                case 'e': line.Append(now.ToString("fff", CultureInfo.InvariantCulture)); break;
                case 'f': line.Append(now.ToString("ffffff", CultureInfo.InvariantCulture)); break;
                case 'F': line.Append(now.ToString("fffffff", CultureInfo.InvariantCulture)).Append("00"); break;
                case 'z': line.Append("+00:00"); break;
                case 'l': line.Append(Name(level)); break;
                case 'L': line.Append(char.ToUpperInvariant(Name(level)[0])); break;
                case 'n': line.Append("main"); break;
                case 'v': line.Append(message); break;
                case 'j': line.Append(System.Text.Json.JsonEncodedText.Encode(message).Value); break;
                case 't': line.Append(Environment.CurrentManagedThreadId.ToString(CultureInfo.InvariantCulture)); break;
                case 'P': line.Append(Environment.ProcessId.ToString(CultureInfo.InvariantCulture)); break;
                case 'g' or 's' or '!': break;
                case '#': line.Append('0'); break;
                case '%': line.Append('%'); break;
                default: line.Append(part); break;
            }
        }
        return line.ToString();
    }

    private static void Enqueue(LogLevel level, string message)
    {
        string line = s_format is { } format ? Shape(format, level, message)
            : string.Create(CultureInfo.InvariantCulture, $"[{DateTime.UtcNow:yyyy-MM-dd HH:mm:ss.fff}][{Name(level)}] {message}");
        if (s_writer == null)
        {
            StartWriter();
        }
        if (s_lines.Writer.TryWrite(line))
        {
            Interlocked.Increment(ref s_queued);
        }
        else
        {
            Interlocked.Increment(ref s_dropped);
        }
    }

    private static void StartWriter()
    {
        lock (s_lock)
        {
            if (s_writer != null)
            {
                return;
            }
            var writer = new Thread(WriteLines) { IsBackground = true, Name = "log writer" };
            writer.Start();
            s_writer = writer;
            AppDomain.CurrentDomain.ProcessExit += static (_, _) => Flush(TimeSpan.FromSeconds(2));
        }
    }

    private static void WriteLines()
    {
        var reader = s_lines.Reader;
        long reported = 0;
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (reader.TryRead(out string? line))
            {
                long dropped = Interlocked.Read(ref s_dropped);
                if (dropped != reported)
                {
                    Output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{DateTime.UtcNow:yyyy-MM-dd HH:mm:ss.fff}][warning] log: {dropped - reported} lines dropped (the log could not keep up)"));
                    reported = dropped;
                }
                Output.WriteLine(line);
                Interlocked.Increment(ref s_written);
            }
            Output.Flush();
        }
    }

    /// <summary>Waits until the queued lines are written (at exit), at most <paramref name="timeout"/>.</summary>
    public static void Flush(TimeSpan timeout)
    {
        var deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (Interlocked.Read(ref s_written) < Interlocked.Read(ref s_queued) && Environment.TickCount64 < deadline && s_writer != null)
        {
            Thread.Sleep(1);
        }
        Thread.Sleep(s_writer != null ? 1 : 0); // the writer's Flush after its last line
    }

    /// <summary>An event caused by a peer: formatted only when it will be written.</summary>
    public static void Peer(LogLevel level, [InterpolatedStringHandlerArgument("level")] ref LogLineHandler message)
    {
        if (message.Enabled)
        {
            Peer(level, message.ToStringAndClear());
        }
    }

    /// <summary>An event caused by a peer (a malformed request, a protocol error): logged, at most a few lines a second.</summary>
    public static void Peer(LogLevel level, string message)
    {
        if (!IsEnabled(level))
        {
            return;
        }
        long now = Environment.TickCount64;
        long suppressed = 0;
        lock (s_lock)
        {
            if (now - s_windowStart >= 1000)
            {
                suppressed = s_suppressed;
                s_suppressed = 0;
                s_windowStart = now;
                s_windowLines = 0;
            }
            if (++s_windowLines > PeerLinesPerSecond)
            {
                s_suppressed++;
                return;
            }
        }
        if (suppressed > 0)
        {
            Write(level, $"({suppressed} similar lines suppressed)");
        }
        Write(level, message);
    }

    private static string Name(LogLevel level) => level switch
    {
        LogLevel.Trace => "trace",
        LogLevel.Debug => "debug",
        LogLevel.Info => "info",
        LogLevel.Warning => "warning",
        LogLevel.Error => "error",
        _ => "critical",
    };
}

/// <summary>
/// The message of a log line as an interpolated string: formatted only when its level is on (the
/// compiler passes the level first; when it is off no part of the message is evaluated into text).
/// </summary>
[InterpolatedStringHandler]
public ref struct LogLineHandler
{
    private DefaultInterpolatedStringHandler _inner;

    public LogLineHandler(int literalLength, int formattedCount, LogLevel level, out bool enabled)
    {
        Enabled = enabled = ProxyLog.IsEnabled(level);
        _inner = enabled ? new DefaultInterpolatedStringHandler(literalLength, formattedCount, CultureInfo.InvariantCulture) : default;
    }

    public bool Enabled { get; }

    public void AppendLiteral(string value) => _inner.AppendLiteral(value);

    public void AppendFormatted<T>(T value) => _inner.AppendFormatted(value);

    public void AppendFormatted<T>(T value, string? format) => _inner.AppendFormatted(value, format);

    public void AppendFormatted<T>(T value, int alignment) => _inner.AppendFormatted(value, alignment);

    public void AppendFormatted(ReadOnlySpan<char> value) => _inner.AppendFormatted(value);

    public void AppendFormatted(string? value) => _inner.AppendFormatted(value);

    public string ToStringAndClear() => _inner.ToStringAndClear();
}
