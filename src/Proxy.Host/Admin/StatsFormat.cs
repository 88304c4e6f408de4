using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Proxy.Core.Diagnostics;

namespace Proxy.Host.Admin;

/// <summary>The admin endpoint's renderings of the stats, in Envoy's formats: text, JSON and Prometheus.</summary>
public static class StatsFormat
{
    private static readonly double[] s_quantiles = [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1];
    private static readonly string[] s_quantileNames = ["P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5", "P99.9", "P100"];

    /// <summary>The stats to show: all, or those ever written (<c>usedonly</c>), whose name matches <paramref name="filter"/>.</summary>
    public static List<Stat> Select(StatsStore store, bool usedOnly, Regex? filter)
    {
        var selected = new List<Stat>();
        foreach (Stat stat in store.All())
        {
            if ((!usedOnly || stat.Used) && (filter == null || filter.IsMatch(stat.Name)))
            {
                selected.Add(stat);
            }
        }
        return selected;
    }

    private static string Number(double value) => double.IsNaN(value) ? "nan" : value.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>Envoy's <c>/stats</c>: <c>name: value</c> lines, counters and gauges first, then histograms' quantiles.</summary>
    public static string Text(List<Stat> stats)
    {
        var text = new StringBuilder();
        foreach (Stat stat in stats)
        {
            switch (stat)
            {
                case Counter c:
                    text.Append(stat.Name).Append(": ").Append(c.Value.ToString(CultureInfo.InvariantCulture)).Append('\n');
                    break;
                case Gauge g:
                    text.Append(stat.Name).Append(": ").Append(g.Value.ToString(CultureInfo.InvariantCulture)).Append('\n');
                    break;
            }
        }
        foreach (Stat stat in stats)
        {
            if (stat is Histogram h)
            {
                text.Append(stat.Name).Append(": ");
                if (h.Count == 0)
                {
                    text.Append("No recorded values\n");
                    continue;
                }
                for (int i = 0; i < s_quantiles.Length; i++)
                {
                    text.Append(i == 0 ? "" : " ").Append(s_quantileNames[i]).Append("(nan,").Append(Number(h.Quantile(s_quantiles[i]))).Append(')');
                }
                text.Append('\n');
            }
        }
        return text.ToString();
    }

    /// <summary>Envoy's <c>/stats?format=json</c>.</summary>
    public static string Json(List<Stat> stats)
    {
        var json = new StringBuilder("{\"stats\":[");
        bool first = true;
        foreach (Stat stat in stats)
        {
            long? value = stat switch
            {
                Counter c => c.Value,
                Gauge g => g.Value,
                _ => null,
            };
            if (value is long v)
            {
                json.Append(first ? "" : ",").Append("{\"name\":").Append(Quote(stat.Name)).Append(",\"value\":").Append(v.ToString(CultureInfo.InvariantCulture)).Append('}');
                first = false;
            }
        }
        var histograms = stats.OfType<Histogram>().ToList();
        if (histograms.Count > 0)
        {
            json.Append(first ? "" : ",").Append("{\"histograms\":{\"supported_quantiles\":[")
                .Append(string.Join(',', s_quantiles.Select(q => Number(q * 100)))).Append("],\"computed_quantiles\":[");
            for (int i = 0; i < histograms.Count; i++)
            {
                Histogram h = histograms[i];
                json.Append(i == 0 ? "" : ",").Append("{\"name\":").Append(Quote(h.Name)).Append(",\"values\":[");
                for (int q = 0; q < s_quantiles.Length; q++)
                {
                    double value = h.Quantile(s_quantiles[q]);
                    json.Append(q == 0 ? "" : ",").Append("{\"interval\":null,\"cumulative\":").Append(double.IsNaN(value) ? "null" : Number(value)).Append('}');
                }
                json.Append("]}");
            }
            json.Append("]}}");
        }
        return json.Append("]}").ToString();
    }

    /// <summary>
    /// Envoy's <c>/stats/prometheus</c> (text exposition format 0.0.4): one <c># TYPE</c> per metric name,
    /// counters as totals since start, histograms with Envoy's buckets in milliseconds.
    /// </summary>
    public static string Prometheus(List<Stat> stats)
    {
        var text = new StringBuilder();
        foreach (var group in stats.GroupBy(static s => s.PrometheusName).OrderBy(static g => g.Key, StringComparer.Ordinal))
        {
            StatKind kind = group.First().Kind;
            text.Append("# TYPE ").Append(group.Key).Append(' ').Append(kind switch
            {
                StatKind.Counter => "counter",
                StatKind.Gauge => "gauge",
                _ => "histogram",
            }).Append('\n');
            foreach (Stat stat in group)
            {
                switch (stat)
                {
                    case Counter c:
                        Sample(text, group.Key, stat.Labels, null, c.Total.ToString(CultureInfo.InvariantCulture));
                        break;
                    case Gauge g:
                        Sample(text, group.Key, stat.Labels, null, g.Value.ToString(CultureInfo.InvariantCulture));
                        break;
                    case Histogram h:
                        long[] buckets = h.Buckets();
                        long cumulative = 0;
                        for (int b = 0; b < Histogram.Bounds.Length; b++)
                        {
                            cumulative += buckets[b];
                            Sample(text, group.Key + "_bucket", stat.Labels, $"le=\"{Number(Histogram.Bounds[b])}\"", cumulative.ToString(CultureInfo.InvariantCulture));
                        }
                        cumulative += buckets[^1];
                        Sample(text, group.Key + "_bucket", stat.Labels, "le=\"+Inf\"", cumulative.ToString(CultureInfo.InvariantCulture));
                        Sample(text, group.Key + "_sum", stat.Labels, null, Number(h.SumMs));
                        Sample(text, group.Key + "_count", stat.Labels, null, cumulative.ToString(CultureInfo.InvariantCulture));
                        break;
                }
            }
        }
        return text.ToString();
    }

    private static void Sample(StringBuilder text, string name, string labels, string? extra, string value)
    {
        text.Append(name);
        if (labels.Length > 0 || extra != null)
        {
            text.Append('{').Append(labels);
            if (extra != null)
            {
                text.Append(labels.Length > 0 ? "," : "").Append(extra);
            }
            text.Append('}');
        }
        text.Append(' ').Append(value).Append('\n');
    }

    public static string Quote(string value)
    {
        var quoted = new StringBuilder(value.Length + 2).Append('"');
        foreach (char c in value)
        {
            switch (c)
            {
                case '"':
                    quoted.Append("\\\"");
                    break;
                case '\\':
                    quoted.Append("\\\\");
                    break;
                case < ' ':
                    quoted.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    break;
                default:
                    quoted.Append(c);
                    break;
            }
        }
        return quoted.Append('"').ToString();
    }
}
