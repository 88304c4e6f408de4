using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Proxy.Load;

/// <summary>The target could not be reached: the message says where and why (exit code 2).</summary>
internal sealed class TargetException(string message) : Exception(message);

/// <summary>
/// One run: connections, the load model, warm-up, the measured window and the drain after it.
/// Closed model: each connection keeps <see cref="LoadOptions.Streams"/> requests in flight, sending the
/// next as one completes. Open model: a pacer thread computes each request's intended send time from the
/// rate (constant, or ramping linearly), sends it on a connection with room, or queues it when every
/// connection is full; latency always counts from the intended time, so a slow target cannot hide its
/// queueing delay by slowing the driver down (no coordinated omission).
/// </summary>
internal sealed class LoadRun
{
    private enum Phase
    {
        Warmup,
        Measure,
        Drain,
        Done,
    }

    private readonly LoadConnection?[] _connections;
    private readonly IPEndPoint[] _endpoints;
    private readonly Queue<(long Intended, bool Measured)> _backlog = new();
    /// <summary>Open model: the most requests waiting for a connection (16 MB of queue).</summary>
    public const int MaxBacklog = 1_000_000;
    private readonly Action<Interval, LoadRun>? _progress;
    private volatile Phase _phase;
    private long _budget;
    private long _measureStart;
    private long _measureEnd;
    private long _lastFinish;
    private int _next;
    private volatile bool _accounting = true;

    public LoadRun(LoadOptions options, IPEndPoint[] endpoints, Action<Interval, LoadRun>? progress)
    {
        Options = options;
        _endpoints = endpoints;
        _connections = new LoadConnection?[options.Connections];
        _progress = progress;
        _budget = options.Requests > 0 ? options.Requests : long.MaxValue;
    }

    public LoadOptions Options { get; }
    public LoadStats Stats { get; } = new();
    public long MeasuredInFlight;
    public long Reconnects;
    public long ConnectErrors;
    public string? LastConnectError;

    /// <summary>The measured window in seconds (the open model's duration; the closed model's until its last request when --requests ends it).</summary>
    public double MeasuredSeconds { get; private set; }
    public int BacklogPeak { get; private set; }

    public static async Task<IPEndPoint[]> ResolveAsync(LoadOptions options)
    {
        if (IPAddress.TryParse(options.Host.Trim('[', ']'), out IPAddress? literal))
        {
            return [new IPEndPoint(literal, options.Port)];
        }
        try
        {
            IPAddress[] addresses = await Dns.GetHostAddressesAsync(options.Host);
            return [.. addresses.OrderBy(a => a.AddressFamily == AddressFamily.InterNetworkV6).Select(a => new IPEndPoint(a, options.Port))];
        }
        catch (SocketException e)
        {
            throw new TargetException($"cannot resolve {options.Host}: {e.Message}");
        }
    }

    private async Task<LoadConnection> ConnectAsync()
    {
        string? error = null;
        foreach (IPEndPoint endpoint in _endpoints)
        {
            var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await socket.ConnectAsync(endpoint, timeout.Token);
                return Options.Protocol == LoadProtocol.Http2
                    ? new Http2LoadConnection(this, socket, Options.Streams)
                    : new Http1LoadConnection(this, socket);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                socket.Dispose();
                error = $"cannot connect to {endpoint}: {(e is OperationCanceledException ? "timed out after 5 s" : e.Message)}";
            }
        }
        throw new TargetException(error ?? $"no address for {Options.Host}");
    }

    /// <summary>Opens every connection; <see cref="TargetException"/> if one cannot be opened.</summary>
    public async Task ConnectAllAsync()
    {
        for (int i = 0; i < _connections.Length; i++)
        {
            _connections[i] = await ConnectAsync();
        }
    }

    /// <summary>Runs the load on the calling thread (a dedicated one: it sleeps between ticks) until the drain is over.</summary>
    public void Run()
    {
        long start = Stopwatch.GetTimestamp();
        _measureStart = start + Ticks(Options.Warmup);
        _measureEnd = _measureStart + Ticks(Options.Duration);
        _phase = Options.Warmup > TimeSpan.Zero ? Phase.Warmup : Phase.Measure;
        if (_phase == Phase.Measure)
        {
            Stats.Start(_measureStart);
        }
        foreach (LoadConnection? connection in _connections)
        {
            connection!.Start();
        }
        Thread? pacer = null;
        if (Options.OpenModel)
        {
            pacer = new Thread(Pace) { IsBackground = true, Name = "pacer", Priority = ThreadPriority.AboveNormal };
            pacer.Start();
        }
        else
        {
            foreach (LoadConnection? connection in _connections)
            {
                Fill(connection!);
                connection!.Flush();
            }
        }

        if (_phase == Phase.Warmup)
        {
            SleepUntil(_measureStart);
            Stats.Start(_measureStart);
            _phase = Phase.Measure;
        }
        // The measured window, a tick per second for the timeline and the progress line.
        long nextTick = _measureStart + Stopwatch.Frequency;
        while (true)
        {
            long now = Stopwatch.GetTimestamp();
            if (now >= _measureEnd || (Options.Requests > 0 && Volatile.Read(ref Stats.Completed) + Volatile.Read(ref Stats.Failed) >= Options.Requests))
            {
                break;
            }
            if (now >= nextTick)
            {
                _progress?.Invoke(Stats.Tick(now), this);
                nextTick += Stopwatch.Frequency;
            }
            Thread.Sleep(Math.Clamp((int)((Math.Min(nextTick, _measureEnd) - now) * 1000 / Stopwatch.Frequency), 1, 50));
        }
        long end = Options.Requests > 0 && !Options.OpenModel ? Math.Min(Stopwatch.GetTimestamp(), _measureEnd) : _measureEnd;
        _phase = Phase.Drain;
        pacer?.Join();

        // Requests sent in the window may finish within --timeout; the rest are counted as timed out.
        long deadline = Stopwatch.GetTimestamp() + Ticks(Options.Timeout);
        while (Stopwatch.GetTimestamp() < deadline && (Interlocked.Read(ref MeasuredInFlight) > 0 || MeasuredBacklog() > 0))
        {
            long now = Stopwatch.GetTimestamp();
            if (now >= nextTick)
            {
                _progress?.Invoke(Stats.Tick(now), this);
                nextTick += Stopwatch.Frequency;
            }
            Thread.Sleep(5);
        }
        if (Options.Requests > 0 && !Options.OpenModel)
        {
            end = Math.Max(end, Math.Min(Volatile.Read(ref _lastFinish), _measureEnd));
        }
        _accounting = false;
        long unanswered = Interlocked.Read(ref MeasuredInFlight) + MeasuredBacklog();
        for (long i = 0; i < unanswered; i++)
        {
            Stats.OnFailed(Failure.Timeout);
        }
        Stats.Tick(Stopwatch.GetTimestamp());
        MeasuredSeconds = Math.Max(1e-3, (end - _measureStart) / (double)Stopwatch.Frequency);
        _phase = Phase.Done;
        foreach (LoadConnection? connection in _connections)
        {
            connection?.Close();
        }
    }

    /// <summary>Whether a finished request is still counted (not after the run has given up on the rest).</summary>
    public bool Accounting => _accounting;

    public static long Ticks(TimeSpan span) => (long)(span.TotalSeconds * Stopwatch.Frequency);

    private static void SleepUntil(long timestamp)
    {
        while (true)
        {
            long left = timestamp - Stopwatch.GetTimestamp();
            if (left <= 0)
            {
                return;
            }
            Thread.Sleep(Math.Max(1, (int)Math.Min(left * 1000 / Stopwatch.Frequency, 50)));
        }
    }

    private int MeasuredBacklog()
    {
        lock (_backlog)
        {
            int n = 0;
            foreach ((long _, bool measured) in _backlog)
            {
                n += measured ? 1 : 0;
            }
            return n;
        }
    }

    /// <summary>Closed model: keeps the connection full while the run sends.</summary>
    private void Fill(LoadConnection connection)
    {
        while (connection.HasRoom)
        {
            Phase phase = _phase;
            if (phase >= Phase.Drain)
            {
                return;
            }
            bool measured = phase == Phase.Measure;
            if (measured && Interlocked.Decrement(ref _budget) < 0)
            {
                return;
            }
            if (!connection.TrySend(connection.Now, measured, flush: false))
            {
                if (measured)
                {
                    Interlocked.Increment(ref _budget);
                }
                return;
            }
        }
    }

    /// <summary>A request on <paramref name="connection"/> finished (called on its receive thread; the caller flushes).</summary>
    public void OnRoom(LoadConnection connection) => OnRoom(connection, recordFinish: true);

    private void OnRoom(LoadConnection connection, bool recordFinish)
    {
        if (recordFinish)
        {
            Volatile.Write(ref _lastFinish, Stopwatch.GetTimestamp());
        }
        if (!Options.OpenModel)
        {
            Fill(connection);
            return;
        }
        // Open model: the oldest queued request goes first.
        while (connection.HasRoom)
        {
            (long Intended, bool Measured) next;
            lock (_backlog)
            {
                if (_backlog.Count == 0 || _phase == Phase.Done)
                {
                    return;
                }
                next = _backlog.Dequeue();
            }
            if (!connection.TrySend(next.Intended, next.Measured, flush: false))
            {
                lock (_backlog)
                {
                    // Back to the front: rare (the connection filled up between the check and the send).
                    var rest = _backlog.ToArray();
                    _backlog.Clear();
                    _backlog.Enqueue(next);
                    foreach (var item in rest)
                    {
                        _backlog.Enqueue(item);
                    }
                }
                return;
            }
        }
    }

    /// <summary>A connection closed: another takes its place while the run still sends.</summary>
    public void OnConnectionClosed(LoadConnection connection)
    {
        if (_phase >= Phase.Done)
        {
            return;
        }
        int index = Array.IndexOf(_connections, connection);
        if (index < 0)
        {
            return;
        }
        _ = ReplaceAsync(index);
    }

    private async Task ReplaceAsync(int index)
    {
        while (_phase < Phase.Done)
        {
            try
            {
                LoadConnection replacement = await ConnectAsync();
                if (_phase >= Phase.Done)
                {
                    replacement.Close();
                    return;
                }
                Interlocked.Increment(ref Reconnects);
                _connections[index] = replacement;
                replacement.Start();
                OnRoom(replacement);
                replacement.Flush();
                return;
            }
            catch (TargetException e)
            {
                Interlocked.Increment(ref ConnectErrors);
                LastConnectError = e.Message;
                await Task.Delay(100);
            }
        }
    }

    /// <summary>The open model's pacer: intended times from the rate, sends at (not after) them, batches per wake-up.</summary>
    private void Pace()
    {
        double r0 = Options.Rate, r1 = Options.RampTo, T = Options.Duration.TotalSeconds;
        double slope = (r1 - r0) / T; // requests/s per second
        long freq = Stopwatch.Frequency;
        long warmupCount = (long)Math.Floor(r0 * Options.Warmup.TotalSeconds);
        long start = _measureStart - Ticks(Options.Warmup);
        var dirty = new List<LoadConnection>();
        long index = 0;
        while (true)
        {
            // The index-th request's intended time: warm-up at the starting rate, then N(t) = r0 t + slope t²/2.
            long due;
            bool measured = index >= warmupCount;
            if (!measured)
            {
                due = start + (long)(index / r0 * freq);
            }
            else
            {
                double j = index - warmupCount;
                double t = Math.Abs(slope) < 1e-9 ? j / r0 : (-r0 + Math.Sqrt(Math.Max(0, r0 * r0 + 2 * slope * j))) / slope;
                if (double.IsNaN(t) || t >= T)
                {
                    break;
                }
                due = _measureStart + (long)(t * freq);
            }
            if (due >= _measureEnd)
            {
                break;
            }
            long now = Stopwatch.GetTimestamp();
            if (due > now)
            {
                FlushAll(dirty);
                long wait = due - now;
                if (wait > freq / 500)
                {
                    Thread.Sleep(1);
                }
                else if (wait > freq / 20_000)
                {
                    Thread.Yield();
                }
                continue;
            }
            Dispatch(due, measured, dirty);
            index++;
        }
        FlushAll(dirty);
    }

    private static void FlushAll(List<LoadConnection> dirty)
    {
        foreach (LoadConnection c in dirty)
        {
            c.Dirty = false;
            c.Flush();
        }
        dirty.Clear();
    }

    /// <summary>Queues the request (first in, first out), then hands queued requests to connections with room.</summary>
    private void Dispatch(long intended, bool measured, List<LoadConnection> dirty)
    {
        if (measured)
        {
            Stats.OnIntended();
        }
        lock (_backlog)
        {
            if (_backlog.Count >= MaxBacklog)
            {
                // A target this far behind: the request is a failure rather than memory without bound.
                if (measured)
                {
                    Stats.OnFailed(Failure.Queue);
                }
                return;
            }
            _backlog.Enqueue((intended, measured));
            BacklogPeak = Math.Max(BacklogPeak, _backlog.Count);
        }
        LoadConnection?[] connections = _connections;
        for (int tried = 0; tried < connections.Length; tried++)
        {
            int i = _next;
            _next = i + 1 == connections.Length ? 0 : i + 1;
            LoadConnection? c = connections[i];
            if (c == null || !c.HasRoom)
            {
                continue;
            }
            OnRoom(c, recordFinish: false);
            if (!c.Dirty)
            {
                c.Dirty = true;
                dirty.Add(c);
            }
            lock (_backlog)
            {
                if (_backlog.Count == 0)
                {
                    return;
                }
            }
        }
    }
}
