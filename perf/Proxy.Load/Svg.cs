using System.Globalization;
using System.Text;

namespace Proxy.Load;

/// <summary>Line charts as inline SVG: axes with round ticks, one polyline per series, a legend. No script, no external file.</summary>
internal static class Svg
{
    private const int Width = 900, Height = 300, Left = 64, Right = 16, Top = 16, Bottom = 40;
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <param name="logX">x values are log10(1/(1-p)) of percentiles: ticks are labelled 0, 90, 99, 99.9 …</param>
    public static string Lines(string xLabel, string yLabel, double[] x, (string Name, string Color, double[] Y)[] series, bool logX)
    {
        var s = new StringBuilder();
        s.Append(Inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" role=\"img\" aria-label=\"{yLabel} by {xLabel}\">\n");
        if (x.Length == 0)
        {
            s.Append(Inv, $"<text x=\"{Width / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\">no data</text></svg>\n");
            return s.ToString();
        }
        double xMin = logX ? 0 : Math.Min(0, x.Min()), xMax = Math.Max(x.Max(), xMin + (logX ? 1 : 1e-9));
        double yMax = Math.Max(1e-9, series.SelectMany(v => v.Y).DefaultIfEmpty(0).Max());
        double yStep = NiceStep(yMax / 5);
        yMax = Math.Ceiling(yMax / yStep) * yStep;
        double plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double X(double v) => Left + (v - xMin) / (xMax - xMin) * plotW;
        double Y(double v) => Top + plotH - v / yMax * plotH;

        s.Append(Inv, $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{plotW}\" height=\"{plotH}\" fill=\"none\" stroke=\"#999\"/>\n");
        for (double v = 0; v <= yMax + yStep / 2; v += yStep)
        {
            s.Append(Inv, $"<line x1=\"{Left}\" x2=\"{Left + plotW}\" y1=\"{Y(v):0.#}\" y2=\"{Y(v):0.#}\" stroke=\"#eee\"/>");
            s.Append(Inv, $"<text x=\"{Left - 6}\" y=\"{Y(v) + 4:0.#}\" text-anchor=\"end\">{Label(v)}</text>\n");
        }
        if (logX)
        {
            for (int nines = 0; nines <= Math.Ceiling(xMax); nines++)
            {
                string label = nines == 0 ? "0" : (100 - 100 / Math.Pow(10, nines)).ToString("0.#####", Inv);
                s.Append(Inv, $"<line x1=\"{X(nines):0.#}\" x2=\"{X(nines):0.#}\" y1=\"{Top}\" y2=\"{Top + plotH}\" stroke=\"#eee\"/>");
                s.Append(Inv, $"<text x=\"{X(nines):0.#}\" y=\"{Top + plotH + 16}\" text-anchor=\"middle\">{label}</text>\n");
            }
        }
        else
        {
            double xStep = NiceStep((xMax - xMin) / 8);
            for (double v = Math.Ceiling(xMin / xStep) * xStep; v <= xMax + xStep / 100; v += xStep)
            {
                s.Append(Inv, $"<text x=\"{X(v):0.#}\" y=\"{Top + plotH + 16}\" text-anchor=\"middle\">{Label(v)}</text>\n");
            }
        }
        s.Append(Inv, $"<text x=\"{Left + plotW / 2}\" y=\"{Height - 6}\" text-anchor=\"middle\">{xLabel}</text>\n");
        s.Append(Inv, $"<text x=\"14\" y=\"{Top + plotH / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {Top + plotH / 2})\">{yLabel}</text>\n");
        int legend = 0;
        foreach ((string name, string color, double[] y) in series)
        {
            s.Append(Inv, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"");
            for (int i = 0; i < Math.Min(x.Length, y.Length); i++)
            {
                s.Append(Inv, $"{X(x[i]):0.#},{Y(y[i]):0.#} ");
            }
            s.Append("\"/>\n");
            int lx = Left + 12 + legend * 110;
            s.Append(Inv, $"<line x1=\"{lx}\" x2=\"{lx + 18}\" y1=\"{Top + 12}\" y2=\"{Top + 12}\" stroke=\"{color}\" stroke-width=\"3\"/>");
            s.Append(Inv, $"<text x=\"{lx + 22}\" y=\"{Top + 16}\">{name}</text>\n");
            legend++;
        }
        s.Append("</svg>\n");
        return s.ToString();
    }

    /// <summary>1, 2 or 5 times a power of ten, at least <paramref name="rough"/>.</summary>
    private static double NiceStep(double rough)
    {
        if (rough <= 0 || !double.IsFinite(rough))
        {
            return 1;
        }
        double power = Math.Pow(10, Math.Floor(Math.Log10(rough)));
        double m = rough / power;
        return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * power;
    }

    private static string Label(double v) => Math.Abs(v) >= 1000 ? v.ToString("0", Inv) : v.ToString("0.###", Inv);
}
