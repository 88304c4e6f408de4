using System.Diagnostics;
using HdrHistogram;

namespace Proxy.Load;

/// <summary>Why a request failed.</summary>
internal enum Failure : byte
{
    None,
    /// <summary>HTTP status 400 or above, or a grpc-status other than 0.</summary>
    Status,
    /// <summary>The stream was reset (RST_STREAM, or refused by GOAWAY).</summary>
    Reset,
    /// <summary>The connection closed or failed with the request in flight.</summary>
    Connection,
    /// <summary>Still unanswered when the time allowed after the run was over.</summary>
    Timeout,
    /// <summary>The response could not be parsed.</summary>
    Protocol,
    /// <summary>Open model: the queue of requests waiting for a connection was full (the target is far behind the rate).</summary>
    Queue,
}

/// <summary>One second of the measured run.</summary>
/// <summary>One tick of the measured run (a second, or less for the last): counts, and percentiles of what finished in it.</summary>
internal readonly record struct Interval(double Second, double Length, long Completed, long Failed, long Sent, double P50Ms, double P99Ms, double MaxMs)
{
    public double CompletedPerSecond => Length > 0 ? Completed / Length : 0;
    public double FailedPerSecond => Length > 0 ? Failed / Length : 0;
}

/// <summary>
/// What the run measured: latencies in an HdrHistogram (microseconds, three significant digits) fed by
/// every connection through a lock-free <see cref="Recorder"/>, counts by outcome, status and grpc-status,
/// and a per-second timeline. Only requests sent (or, in the open model, intended) while the run is
/// measuring are counted.
/// </summary>
internal sealed class LoadStats
{
    /// <summary>Latencies above an hour are clamped (the histogram's range).</summary>
    private const long HighestMicros = 3_600_000_000L;

    private readonly Recorder _recorder = new(1, HighestMicros, 3, (id, low, high, digits) => new LongHistogram(id, low, high, digits));
    private readonly object _timelineLock = new();
    private HistogramBase? _interval;
    private long _lastCompleted, _lastFailed, _lastSent;
    private long _measureStart;
    private long _lastTick;

    public LongHistogram Total { get; } = new(1, HighestMicros, 3);
    public List<Interval> Timeline { get; } = [];

    public long Sent;
    /// <summary>Open model: requests whose intended time fell in the measured window.</summary>
    public long Intended;
    public long Completed;
    public long Failed;
    public long BytesReceived;
    public long BytesSent;
    public readonly long[] Failures = new long[Enum.GetValues<Failure>().Length];
    /// <summary>HTTP status codes 0–599 (0: none was received).</summary>
    public readonly long[] Statuses = new long[600];
    /// <summary>grpc-status 0–16; 17: the response carried none.</summary>
    public readonly long[] GrpcStatuses = new long[18];

    public void Start(long timestamp)
    {
        _measureStart = timestamp;
        _lastTick = timestamp;
        _recorder.Reset();
    }

    /// <summary>A measured request sent (or intended, in the open model).</summary>
    public void OnSent() => Interlocked.Increment(ref Sent);

    /// <summary>Open model: a measured request's intended time came (it is sent now, or queued).</summary>
    public void OnIntended() => Interlocked.Increment(ref Intended);

    /// <summary>A measured request finished with a response: its latency, status and grpc-status (-1: none).</summary>
    public void OnResponse(long intendedTimestamp, long now, int status, int grpcStatus, bool grpc)
    {
        long micros = Math.Clamp((long)((now - intendedTimestamp) * (1_000_000.0 / Stopwatch.Frequency)), 1, HighestMicros);
        _recorder.RecordValue(micros);
        Interlocked.Increment(ref Statuses[(uint)status < 600 ? status : 0]);
        bool ok = status is >= 100 and < 400;
        if (grpc)
        {
            Interlocked.Increment(ref GrpcStatuses[(uint)grpcStatus <= 16 ? grpcStatus : 17]);
            ok &= grpcStatus == 0;
        }
        if (ok)
        {
            Interlocked.Increment(ref Completed);
        }
        else
        {
            OnFailed(Failure.Status);
        }
    }

    public void OnFailed(Failure why)
    {
        Interlocked.Increment(ref Failed);
        Interlocked.Increment(ref Failures[(int)why]);
    }

    /// <summary>Closes the current second: its percentiles join the timeline and the total.</summary>
    public Interval Tick(long now)
    {
        lock (_timelineLock)
        {
            _interval = _recorder.GetIntervalHistogram(_interval);
            Total.Add(_interval);
            long completed = Volatile.Read(ref Completed), failed = Volatile.Read(ref Failed), sent = Volatile.Read(ref Sent);
            var interval = new Interval(
                (now - _measureStart) / (double)Stopwatch.Frequency, (now - _lastTick) / (double)Stopwatch.Frequency,
                completed - _lastCompleted, failed - _lastFailed, sent - _lastSent,
                Millis(_interval, 50), Millis(_interval, 99), _interval.TotalCount == 0 ? 0 : _interval.GetMaxValue() / 1000.0);
            _lastCompleted = completed;
            _lastFailed = failed;
            _lastSent = sent;
            _lastTick = now;
            if (interval.Length >= 0.05 || interval.Completed + interval.Failed + interval.Sent > 0)
            {
                Timeline.Add(interval); // (not the sliver of time between the last tick and the end)
            }
            return interval;
        }
    }

    public static double Millis(HistogramBase histogram, double percentile) =>
        histogram.TotalCount == 0 ? 0 : histogram.GetValueAtPercentile(percentile) / 1000.0;
}
