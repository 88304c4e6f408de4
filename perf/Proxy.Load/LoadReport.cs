using System.Globalization;
using System.Text;
using System.Text.Json;
using HdrHistogram;

namespace Proxy.Load;

/// <summary>The run's results: a text summary, report.json for scripts, and one self-contained HTML page with SVG plots.</summary>
internal sealed class LoadReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    private readonly LoadRun _run;
    private readonly LoadOptions _o;
    private readonly LoadStats _s;

    public LoadReport(LoadRun run)
    {
        _run = run;
        _o = run.Options;
        _s = run.Stats;
        Requests = _s.Completed + _s.Failed;
        Rps = Requests / run.MeasuredSeconds;
        ErrorRate = Requests == 0 ? 0 : (double)_s.Failed / Requests;
        P99Ms = LoadStats.Millis(_s.Total, 99);
    }

    public long Requests { get; }
    public double Rps { get; }
    public double ErrorRate { get; }
    public double P99Ms { get; }
    public DateTimeOffset StartedAt { get; init; } = DateTimeOffset.UtcNow;

    private double P(double percentile) => LoadStats.Millis(_s.Total, percentile);
    private double MaxMs => _s.Total.TotalCount == 0 ? 0 : _s.Total.GetMaxValue() / 1000.0;

    /// <summary>Threshold verdicts: empty when every given threshold holds.</summary>
    public List<string> Violations()
    {
        var violations = new List<string>();
        if (_o.MaxP99Ms is double maxP99 && P99Ms > maxP99)
        {
            violations.Add(string.Create(Inv, $"p99 {P99Ms:0.###} ms exceeds --max-p99 {maxP99:0.###} ms"));
        }
        if (_o.MaxErrorRate is double maxRate && ErrorRate > maxRate)
        {
            violations.Add(string.Create(Inv, $"error rate {ErrorRate:P3} ({_s.Failed} of {Requests}) exceeds --max-error-rate {maxRate:P3}"));
        }
        if (Requests == 0)
        {
            violations.Add("no request finished in the measured window");
        }
        return violations;
    }

    public string Text()
    {
        var t = new StringBuilder();
        t.AppendLine(_o.Describe());
        t.AppendLine(Inv, $"requests   {Requests} in {_run.MeasuredSeconds:0.###} s = {Rps:0.0} req/s; succeeded {_s.Completed}, failed {_s.Failed} ({ErrorRate:P2})");
        if (_o.OpenModel)
        {
            double requested = (_o.Rate + _o.RampTo) / 2;
            t.AppendLine(Inv, $"rate       requested {requested:0.0} req/s on average, intended {_s.Intended}, sent {_s.Sent}; largest queue {_run.BacklogPeak}");
        }
        t.AppendLine(Inv, $"latency    p50 {P(50):0.###} ms  p90 {P(90):0.###} ms  p99 {P(99):0.###} ms  p99.9 {P(99.9):0.###} ms  max {MaxMs:0.###} ms{(_o.OpenModel ? " (from the intended send time)" : "")}");
        t.Append("status    ");
        for (int code = 0; code < _s.Statuses.Length; code++)
        {
            if (_s.Statuses[code] > 0)
            {
                t.Append(Inv, $" {code}: {_s.Statuses[code]}");
            }
        }
        t.AppendLine();
        if (_o.Grpc)
        {
            t.Append("grpc-status");
            for (int code = 0; code < _s.GrpcStatuses.Length; code++)
            {
                if (_s.GrpcStatuses[code] > 0)
                {
                    t.Append(Inv, $" {(code == 17 ? "none" : code.ToString(Inv))}: {_s.GrpcStatuses[code]}");
                }
            }
            t.AppendLine();
        }
        if (_s.Failed > 0)
        {
            t.Append("failures  ");
            foreach (Failure why in Enum.GetValues<Failure>())
            {
                if (_s.Failures[(int)why] > 0)
                {
                    t.Append(Inv, $" {why.ToString().ToLowerInvariant()}: {_s.Failures[(int)why]}");
                }
            }
            t.AppendLine();
        }
        t.AppendLine(Inv, $"bytes      sent {_s.BytesSent}, received {_s.BytesReceived} (bodies)");
        if (_run.Reconnects > 0 || _run.ConnectErrors > 0)
        {
            t.AppendLine(Inv, $"connections reopened {_run.Reconnects}; connect errors {_run.ConnectErrors}{(_run.LastConnectError is { } e ? " (last: " + e + ")" : "")}");
        }
        return t.ToString();
    }

    public void WriteJson(Stream stream)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("target", _o.Url.ToString());
        w.WriteString("description", _o.Describe());
        w.WriteString("started_at", StartedAt.ToString("O", Inv));
        w.WriteString("protocol", _o.Protocol == LoadProtocol.Http2 ? "h2c" : "http/1.1");
        w.WriteBoolean("grpc", _o.Grpc);
        w.WriteString("model", _o.OpenModel ? "open" : "closed");
        w.WriteNumber("connections", _o.Connections);
        w.WriteNumber("streams", _o.Streams);
        if (_o.OpenModel)
        {
            w.WriteNumber("rate", _o.Rate);
            w.WriteNumber("ramp_to", _o.RampTo);
            w.WriteNumber("intended", _s.Intended);
            w.WriteNumber("backlog_peak", _run.BacklogPeak);
        }
        w.WriteNumber("duration_s", Math.Round(_run.MeasuredSeconds, 6));
        w.WriteNumber("requests", Requests);
        w.WriteNumber("succeeded", _s.Completed);
        w.WriteNumber("failed", _s.Failed);
        w.WriteNumber("rps", Math.Round(Rps, 3));
        w.WriteNumber("error_rate", Math.Round(ErrorRate, 6));
        w.WriteStartObject("latency_ms");
        w.WriteNumber("p50", P(50));
        w.WriteNumber("p90", P(90));
        w.WriteNumber("p99", P(99));
        w.WriteNumber("p999", P(99.9));
        w.WriteNumber("max", MaxMs);
        w.WriteNumber("mean", _s.Total.TotalCount == 0 ? 0 : Math.Round(_s.Total.GetMean() / 1000.0, 3));
        w.WriteEndObject();
        w.WriteStartObject("status");
        for (int code = 0; code < _s.Statuses.Length; code++)
        {
            if (_s.Statuses[code] > 0)
            {
                w.WriteNumber(code.ToString(Inv), _s.Statuses[code]);
            }
        }
        w.WriteEndObject();
        if (_o.Grpc)
        {
            w.WriteStartObject("grpc_status");
            for (int code = 0; code < _s.GrpcStatuses.Length; code++)
            {
                if (_s.GrpcStatuses[code] > 0)
                {
                    w.WriteNumber(code == 17 ? "none" : code.ToString(Inv), _s.GrpcStatuses[code]);
                }
            }
            w.WriteEndObject();
        }
        w.WriteStartObject("failures");
        foreach (Failure why in Enum.GetValues<Failure>())
        {
            if (why != Failure.None)
            {
                w.WriteNumber(why.ToString().ToLowerInvariant(), _s.Failures[(int)why]);
            }
        }
        w.WriteEndObject();
        w.WriteStartObject("bytes");
        w.WriteNumber("sent", _s.BytesSent);
        w.WriteNumber("received", _s.BytesReceived);
        w.WriteEndObject();
        w.WriteNumber("reconnects", _run.Reconnects);
        w.WriteStartArray("timeline");
        foreach (Interval i in _s.Timeline)
        {
            w.WriteStartObject();
            w.WriteNumber("t_s", Math.Round(i.Second, 3));
            w.WriteNumber("length_s", Math.Round(i.Length, 3));
            w.WriteNumber("completed", i.Completed);
            w.WriteNumber("failed", i.Failed);
            w.WriteNumber("sent", i.Sent);
            w.WriteNumber("p50_ms", i.P50Ms);
            w.WriteNumber("p99_ms", i.P99Ms);
            w.WriteNumber("max_ms", i.MaxMs);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("percentiles");
        foreach ((double percentile, double ms) in Percentiles())
        {
            w.WriteStartObject();
            w.WriteNumber("percentile", percentile);
            w.WriteNumber("ms", ms);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        JsonThresholds(w);
        w.WriteEndObject();
    }

    private void JsonThresholds(Utf8JsonWriter w)
    {
        w.WriteStartObject("thresholds");
        if (_o.MaxP99Ms is double p99)
        {
            w.WriteNumber("max_p99_ms", p99);
        }
        if (_o.MaxErrorRate is double rate)
        {
            w.WriteNumber("max_error_rate", rate);
        }
        w.WriteStartArray("violations");
        foreach (string v in Violations())
        {
            w.WriteStringValue(v);
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>The latency distribution at percentiles 0, 50, 75, 87.5, … (halving the tail each step), up to the maximum.</summary>
    public List<(double Percentile, double Ms)> Percentiles()
    {
        var points = new List<(double, double)>();
        LongHistogram h = _s.Total;
        if (h.TotalCount == 0)
        {
            return points;
        }
        for (double tail = 100; tail >= 0.001; tail /= 2)
        {
            double percentile = 100 - tail;
            points.Add((Math.Round(percentile, 4), h.GetValueAtPercentile(percentile) / 1000.0));
        }
        points.Add((100, h.GetMaxValue() / 1000.0));
        return points;
    }

    public string Html()
    {
        var h = new StringBuilder();
        string title = $"proxy-load: {Escape(_o.Url.ToString())}";
        h.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>").Append(title).Append("</title>\n<style>")
            .Append("body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}h1{font-size:20px}h2{font-size:16px;margin-top:28px}")
            .Append("table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}th{text-align:left}")
            .Append("pre{background:#f6f6f6;padding:10px;overflow:auto}.bad{color:#b00020}.ok{color:#0a7d32}svg text{font:11px sans-serif;fill:#444}")
            .Append("</style></head><body>\n");
        h.Append("<h1>").Append(title).Append("</h1>\n<p>").Append(Escape(_o.Describe())).Append("</p>\n");
        List<string> violations = Violations();
        h.Append(violations.Count == 0
            ? "<p class=\"ok\">All thresholds held.</p>\n"
            : "<p class=\"bad\">" + string.Join("<br>", violations.Select(Escape)) + "</p>\n");
        h.Append("<table><tr><th>requests</th><th>rps</th><th>failed</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr><tr>")
            .Append(Inv, $"<td>{Requests}</td><td>{Rps:0.0}</td><td>{_s.Failed}</td><td>{P(50):0.###} ms</td><td>{P(90):0.###} ms</td><td>{P(99):0.###} ms</td><td>{P(99.9):0.###} ms</td><td>{MaxMs:0.###} ms</td>")
            .Append("</tr></table>\n");

        var times = _s.Timeline.Select(i => i.Second).ToArray();
        h.Append("<h2>Latency over time</h2>\n");
        h.Append(Svg.Lines("seconds", "ms", times,
            [("p50", "#1f77b4", _s.Timeline.Select(i => i.P50Ms).ToArray()),
             ("p99", "#ff7f0e", _s.Timeline.Select(i => i.P99Ms).ToArray()),
             ("max", "#d62728", _s.Timeline.Select(i => i.MaxMs).ToArray())], logX: false));
        h.Append("<h2>Latency by percentile</h2>\n");
        List<(double Percentile, double Ms)> percentiles = Percentiles();
        // x: the percentile on a log scale of 1/(1-p): 0, 90, 99, 99.9 … evenly spaced.
        double[] x = percentiles.Select(p => Math.Log10(1 / Math.Max(1e-6, 1 - p.Percentile / 100))).ToArray();
        h.Append(Svg.Lines("percentile", "ms", x, [("latency", "#1f77b4", percentiles.Select(p => p.Ms).ToArray())], logX: true));
        h.Append("<h2>Throughput over time</h2>\n");
        h.Append(Svg.Lines("seconds", "requests/s", times,
            [("completed", "#2ca02c", _s.Timeline.Select(i => i.CompletedPerSecond).ToArray()),
             ("failed", "#d62728", _s.Timeline.Select(i => i.FailedPerSecond).ToArray())], logX: false));
        h.Append("<h2>Summary</h2>\n<pre>").Append(Escape(Text())).Append("</pre>\n</body></html>\n");
        return h.ToString();
    }

    private static string Escape(string s) => System.Net.WebUtility.HtmlEncode(s);
}
