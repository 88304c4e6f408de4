using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Proxy.Core.Diagnostics;

/// <summary>
/// Striped cells: each stat has one cell per processor stripe, and a stripe's cells of a group of stats
/// (<see cref="StatBlock"/>) sit on cache lines of their own, so threads on different cores rarely write
/// the same line. Writers add to their processor's cell (an interlocked add, no lock, no allocation); a
/// read sums the cells.
/// </summary>
internal static class Stripes
{
    public const int LineLongs = 8; // 64 bytes

    // At most 8 stripes: a sidecar may see thousands of clusters, and on a big node more stripes would
    // cost memory for little (cores that share a stripe still count right, with interlocked adds).
    public static readonly int Count = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 8));
    public static readonly int Mask = Count - 1;
}

/// <summary>
/// Cells for a group of stats written together (a cluster's, a connection manager's): per stripe, the
/// group's cells side by side, padded to whole cache lines, so a group costs a few lines per stripe rather
/// than a line per stat.
/// </summary>
public sealed class StatBlock
{
    private int _next;

    public StatBlock(int slots)
    {
        Stride = (slots + Stripes.LineLongs - 1) / Stripes.LineLongs * Stripes.LineLongs;
        Cells = new long[Stripes.Count * Stride];
    }

    internal long[] Cells { get; }

    /// <summary>Longs per stripe (a multiple of a cache line).</summary>
    internal int Stride { get; }

    internal int Take(int slots)
    {
        int at = _next;
        if ((_next += slots) > Stride)
        {
            throw new InvalidOperationException("stat block full");
        }
        return at;
    }
}

/// <summary>The processor stripe to write to, looked up once for several stats.</summary>
public readonly struct StatLine
{
    private StatLine(int index) => Index = index;

    internal int Index { get; }

    public static StatLine Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => new(Thread.GetCurrentProcessorId() & Stripes.Mask);
    }
}

/// <summary>Stat kinds, as Envoy names them.</summary>
public enum StatKind : byte
{
    Counter,
    Gauge,
    Histogram,
}

/// <summary>
/// A stat's identity: Envoy's flat name (<c>cluster.NAME.upstream_rq_total</c>) and the Prometheus name
/// and tags Envoy's default tag extraction gives it (<c>envoy_cluster_upstream_rq_total{envoy_cluster_name="NAME"}</c>).
/// </summary>
public abstract class Stat
{
    protected Stat(string name, string promName, string labels)
    {
        Name = name;
        PrometheusName = promName;
        Labels = labels;
    }

    public string Name { get; }

    /// <summary>The scope and its name (cluster, its name) the stat belongs to.</summary>
    public (string Scope, string? ScopeName) Scope { get; internal set; }

    public string PrometheusName { get; }

    /// <summary>The Prometheus labels, rendered (<c>envoy_cluster_name="x"</c>), or empty.</summary>
    public string Labels { get; }

    public abstract StatKind Kind { get; }

    /// <summary>Whether it was ever written (Envoy's "used", for <c>usedonly</c>).</summary>
    public abstract bool Used { get; }
}

/// <summary>A monotonically increasing count (Envoy's counter).</summary>
public sealed class Counter : Stat
{
    private readonly long[] _cells;
    private readonly int _offset;
    private readonly int _stride;
    private long _resetBase;

    internal Counter(string name, string promName, string labels, StatBlock? block)
        : base(name, promName, labels)
    {
        block ??= new StatBlock(1);
        _cells = block.Cells;
        _stride = block.Stride;
        _offset = block.Take(1);
    }

    public override StatKind Kind => StatKind.Counter;

    public override bool Used => Sum() != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Inc() => Interlocked.Increment(ref _cells[((Thread.GetCurrentProcessorId() & Stripes.Mask) * _stride) + _offset]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(long value) => Interlocked.Add(ref _cells[((Thread.GetCurrentProcessorId() & Stripes.Mask) * _stride) + _offset], value);

    /// <summary>Increments the cell of a line the caller already has (<see cref="StatLine.Current"/>, one lookup for several stats).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Inc(StatLine line) => Interlocked.Increment(ref _cells[(line.Index * _stride) + _offset]);

    private long Sum()
    {
        long sum = 0;
        for (int i = _offset; i < _cells.Length; i += _stride)
        {
            sum += Volatile.Read(ref _cells[i]);
        }
        return sum;
    }

    /// <summary>The count since the last <see cref="Reset"/> (admin's reset_counters).</summary>
    public long Value => Sum() - Volatile.Read(ref _resetBase);

    /// <summary>The count since start, what Prometheus is given (a counter it scrapes never goes down).</summary>
    public long Total => Sum();

    public void Reset() => Volatile.Write(ref _resetBase, Sum());
}

/// <summary>A value that goes up and down, or one read from its owner when asked.</summary>
public sealed class Gauge : Stat
{
    private readonly Func<long>? _read;
    private long _value;
    private bool _used;

    internal Gauge(string name, string promName, string labels, Func<long>? read)
        : base(name, promName, labels)
    {
        _read = read;
        _used = read != null;
    }

    public override StatKind Kind => StatKind.Gauge;

    public override bool Used => _used;

    public long Value => _read?.Invoke() ?? Volatile.Read(ref _value);

    public void Set(long value)
    {
        Volatile.Write(ref _value, value);
        _used = true;
    }

    public void Inc()
    {
        Interlocked.Increment(ref _value);
        _used = true;
    }

    public void Dec() => Interlocked.Decrement(ref _value);
}

/// <summary>
/// A latency histogram in milliseconds with Envoy's default bucket bounds, striped like a counter: a
/// record is one bucket increment and one sum add on the recording processor's line.
/// </summary>
public sealed class Histogram : Stat
{
    /// <summary>Envoy's default histogram buckets (ms).</summary>
    public static readonly double[] Bounds = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

    /// <summary>Cells a histogram takes per stripe: Bounds.Length + 1 buckets (the last is +Inf) and the sum in Stopwatch ticks.</summary>
    public static readonly int Slots = Bounds.Length + 2;

    private readonly long[] _cells;
    private readonly int _offset;
    private readonly int _stride;

    internal Histogram(string name, string promName, string labels, StatBlock? block)
        : base(name, promName, labels)
    {
        block ??= new StatBlock(Slots);
        _cells = block.Cells;
        _stride = block.Stride;
        _offset = block.Take(Slots);
    }

    public override StatKind Kind => StatKind.Histogram;

    public override bool Used => Count != 0;

    // The bounds in Stopwatch ticks: a record compares integers and keeps its sum in ticks.
    private static readonly long[] s_boundTicks = [.. Bounds.Select(static ms => (long)(ms * System.Diagnostics.Stopwatch.Frequency / 1000))];

    /// <summary>Records a duration given as <see cref="System.Diagnostics.Stopwatch"/> ticks.</summary>
    public void RecordTicks(long ticks) => RecordTicks(ticks, StatLine.Current);

    /// <summary>As <see cref="RecordTicks(long)"/>, on a line the caller already has.</summary>
    public void RecordTicks(long ticks, StatLine line)
    {
        long[] bounds = s_boundTicks;
        int bucket = 0;
        while (bucket < bounds.Length && ticks > bounds[bucket])
        {
            bucket++;
        }
        int at = (line.Index * _stride) + _offset;
        Interlocked.Increment(ref _cells[at + bucket]);
        Interlocked.Add(ref _cells[at + Bounds.Length + 1], ticks);
    }

    /// <summary>Per-bucket counts (not cumulative; the last is above every bound), summed over stripes.</summary>
    public long[] Buckets()
    {
        var buckets = new long[Bounds.Length + 1];
        for (int s = 0; s < Stripes.Count; s++)
        {
            for (int b = 0; b < buckets.Length; b++)
            {
                buckets[b] += Volatile.Read(ref _cells[(s * _stride) + _offset + b]);
            }
        }
        return buckets;
    }

    public long Count => Buckets().Sum();

    /// <summary>The sum of recorded values, in milliseconds.</summary>
    public double SumMs
    {
        get
        {
            long ticks = 0;
            for (int s = 0; s < Stripes.Count; s++)
            {
                ticks += Volatile.Read(ref _cells[(s * _stride) + _offset + Bounds.Length + 1]);
            }
            return ticks * 1000.0 / System.Diagnostics.Stopwatch.Frequency;
        }
    }

    /// <summary>An estimate of the q-quantile (0..1) from the buckets (linear within a bucket); NaN when empty.</summary>
    public double Quantile(double q)
    {
        long[] buckets = Buckets();
        long total = buckets.Sum();
        if (total == 0)
        {
            return double.NaN;
        }
        double rank = q * total;
        long seen = 0;
        for (int b = 0; b < buckets.Length; b++)
        {
            if (buckets[b] > 0 && seen + buckets[b] >= rank)
            {
                double low = b == 0 ? 0 : Bounds[b - 1];
                double high = b < Bounds.Length ? Bounds[b] : Bounds[^1];
                return low + ((high - low) * Math.Clamp((rank - seen) / buckets[b], 0, 1));
            }
            seen += buckets[b];
        }
        return Bounds[^1];
    }
}

/// <summary>
/// The proxy's stats, by Envoy's names. Stats are created once (a cluster's when the cluster is first
/// seen, a listener's when it is first started) and kept across configuration pushes, so counts carry on
/// when a route or cluster is replaced; the hot path holds direct references and never looks a name up.
/// </summary>
public sealed class StatsStore
{
    private readonly ConcurrentDictionary<string, Stat> _stats = new(StringComparer.Ordinal);

    /// <summary>The process's store (what the admin endpoint shows).</summary>
    public static StatsStore Default { get; } = new();

    /// <summary>
    /// A counter named <c>{scope}.{scopeName}.{stat}</c> (scopeName may be null for server-wide stats);
    /// <paramref name="tag"/> names the Prometheus label for scopeName, as Envoy's tag extraction would.
    /// </summary>
    public Counter Counter(string scope, string? scopeName, string stat, string? tag = null, StatBlock? block = null) =>
        (Counter)_stats.GetOrAdd(Flat(scope, scopeName, stat), static (name, a) => Make(StatKind.Counter, a.scope, a.scopeName, a.stat, a.tag, null, a.block, name), (scope, scopeName, stat, tag, block));

    public Gauge Gauge(string scope, string? scopeName, string stat, string? tag = null, Func<long>? read = null) =>
        (Gauge)_stats.GetOrAdd(Flat(scope, scopeName, stat), static (name, a) => Make(StatKind.Gauge, a.scope, a.scopeName, a.stat, a.tag, a.read, null, name), (scope, scopeName, stat, tag, read));

    public Histogram Histogram(string scope, string? scopeName, string stat, string? tag = null, StatBlock? block = null) =>
        (Histogram)_stats.GetOrAdd(Flat(scope, scopeName, stat), static (name, a) => Make(StatKind.Histogram, a.scope, a.scopeName, a.stat, a.tag, null, a.block, name), (scope, scopeName, stat, tag, block));

    /// <summary>Every stat, in name order.</summary>
    public List<Stat> All()
    {
        var all = new List<Stat>(_stats.Values);
        all.Sort(static (a, b) => string.CompareOrdinal(a.Name, b.Name));
        return all;
    }

    /// <summary>Forgets every stat of one scope (a cluster no configuration has any more): Envoy drops a removed cluster's stats too.</summary>
    public int RemoveScope(string scope, string scopeName)
    {
        int removed = 0;
        foreach (var (name, stat) in _stats)
        {
            if (stat.Scope.Scope == scope && stat.Scope.ScopeName == scopeName && _stats.TryRemove(new KeyValuePair<string, Stat>(name, stat)))
            {
                removed++;
            }
        }
        return removed;
    }

        public void ResetCounters()
    {
        foreach (Stat stat in _stats.Values)
        {
            (stat as Counter)?.Reset();
        }
    }

    private static string Flat(string scope, string? scopeName, string stat) =>
        scopeName == null ? $"{scope}.{stat}" : $"{scope}.{scopeName}.{stat}";

    private static Stat Make(StatKind kind, string scope, string? scopeName, string stat, string? tag, Func<long>? read, StatBlock? block, string name)
    {
        // Envoy's default tag extraction: the scope name becomes a label, and a response-code class in
        // the last segment (upstream_rq_2xx) becomes envoy_response_code_class with "_xx" in the name.
        string promStat = stat;
        var labels = new List<string>();
        if (scopeName != null && tag != null)
        {
            labels.Add($"{tag}=\"{Escape(scopeName)}\"");
        }
        int dot = promStat.LastIndexOf('.');
        string last = promStat[(dot + 1)..];
        if (last.Length > 4 && last.EndsWith("xx", StringComparison.Ordinal) && last[^3] is >= '1' and <= '5' && last[^4] == '_')
        {
            labels.Insert(0, $"envoy_response_code_class=\"{last[^3]}\"");
            promStat = promStat[..(promStat.Length - 3)] + "xx";
        }
        string prefix = scopeName != null && tag == null ? $"{scope}.{scopeName}.{promStat}" : $"{scope}.{promStat}";
        string promName = "envoy_" + Sanitize(prefix);
        string rendered = string.Join(',', labels);
        Stat made = kind switch
        {
            StatKind.Counter => new Counter(name, promName, rendered, block),
            StatKind.Gauge => new Gauge(name, promName, rendered, read),
            _ => new Histogram(name, promName, rendered, block),
        };
        made.Scope = (scope, scopeName);
        return made;
    }

    private static string Sanitize(string name)
    {
        var chars = name.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            if (!char.IsAsciiLetterOrDigit(chars[i]) && chars[i] != '_')
            {
                chars[i] = '_';
            }
        }
        return new string(chars);
    }

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}

/// <summary>An HTTP connection manager's stats (<c>http.STAT_PREFIX.*</c>), shared by every listener with that prefix.</summary>
public sealed class HttpConnectionManagerStats
{
    private const string Tag = "envoy_http_conn_manager_prefix";

    private HttpConnectionManagerStats(StatsStore store, string prefix)
    {
        Prefix = prefix;
        var block = new StatBlock(7 + Histogram.Slots);
        DownstreamRqTotal = store.Counter("http", prefix, "downstream_rq_total", Tag, block);
        DownstreamRqClass = [.. Enumerable.Range(1, 5).Select(c => store.Counter("http", prefix, $"downstream_rq_{c}xx", Tag, block))];
        DownstreamRqTime = store.Histogram("http", prefix, "downstream_rq_time", Tag, block);
        DownstreamCxTotal = store.Counter("http", prefix, "downstream_cx_total", Tag, block);
        DownstreamCxActive = store.Gauge("http", prefix, "downstream_cx_active", Tag);
    }

    private static readonly ConcurrentDictionary<string, HttpConnectionManagerStats> s_byPrefix = new(StringComparer.Ordinal);

    /// <summary>The stats of <paramref name="prefix"/> (the connection manager's stat_prefix), the same object every time.</summary>
    public static HttpConnectionManagerStats For(string prefix) => s_byPrefix.GetOrAdd(prefix, static p => new HttpConnectionManagerStats(StatsStore.Default, p));

    public string Prefix { get; }
    public Counter DownstreamRqTotal { get; }

    /// <summary>downstream_rq_1xx … downstream_rq_5xx, by index class - 1.</summary>
    public Counter[] DownstreamRqClass { get; }

    public Histogram DownstreamRqTime { get; }
    public Counter DownstreamCxTotal { get; }
    public Gauge DownstreamCxActive { get; }
}

/// <summary>A listener's stats (<c>listener.ADDRESS.*</c>, ADDRESS as Envoy writes it: <c>0.0.0.0_15001</c>).</summary>
public sealed class ListenerStats
{
    private const string Tag = "envoy_listener_address";

    public ListenerStats(string address)
    {
        StatsStore store = StatsStore.Default;
        DownstreamCxTotal = store.Counter("listener", address, "downstream_cx_total", Tag);
        DownstreamCxActive = store.Gauge("listener", address, "downstream_cx_active", Tag);
        DownstreamCxOverflow = store.Counter("listener", address, "downstream_cx_overflow", Tag);
        NoFilterChainMatch = store.Counter("listener", address, "no_filter_chain_match", Tag);
        SslHandshake = store.Counter("listener", address, "ssl.handshake", Tag);
        SslConnectionError = store.Counter("listener", address, "ssl.connection_error", Tag);
    }

    /// <summary>Envoy's stat name of a listening address: <c>IP_PORT</c> (IPv6 as <c>[::]_PORT</c>).</summary>
    public static string AddressName(System.Net.EndPoint endPoint) => endPoint switch
    {
        System.Net.IPEndPoint ip when ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 => $"[{ip.Address}]_{ip.Port}",
        System.Net.IPEndPoint ip => $"{ip.Address}_{ip.Port}",
        _ => endPoint.ToString() ?? "unknown",
    };

    public Counter DownstreamCxTotal { get; }
    public Gauge DownstreamCxActive { get; }
    public Counter DownstreamCxOverflow { get; }
    public Counter NoFilterChainMatch { get; }
    /// <summary>TLS handshakes completed / failed (Envoy's ssl.handshake and ssl.connection_error).</summary>
    public Counter SslHandshake { get; }
    public Counter SslConnectionError { get; }
}
