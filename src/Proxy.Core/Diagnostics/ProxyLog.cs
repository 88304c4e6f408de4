using System.Globalization;

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
/// ("[time][level] message"). A disabled level costs one comparison. Lines caused by peers (malformed
/// input, resets) are rate-limited, so a hostile client cannot turn the log into a denial of service.
/// </summary>
public static class ProxyLog
{
    private const int PeerLinesPerSecond = 20;
    private static readonly object s_lock = new();
    private static long s_windowStart;
    private static int s_windowLines;
    private static long s_suppressed;

    public static LogLevel Level { get; set; } = LogLevel.Info;
    public static TextWriter Output { get; set; } = Console.Error;

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

    public static void Write(LogLevel level, string message)
    {
        if (!IsEnabled(level))
        {
            return;
        }
        string line = string.Create(CultureInfo.InvariantCulture, $"[{DateTime.UtcNow:yyyy-MM-dd HH:mm:ss.fff}][{Name(level)}] {message}");
        lock (s_lock)
        {
            Output.WriteLine(line);
            Output.Flush();
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
