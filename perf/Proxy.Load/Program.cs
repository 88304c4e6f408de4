using System.Globalization;
using Proxy.Load;
using Spectre.Console;

// proxy-load: drives a target over HTTP/1.1 or h2c (gRPC unary too) with a closed or open model and
// writes a report. Usage: LoadOptions.Usage, or --help.
LoadOptions options;
try
{
    if (args.Length == 0 || args.Contains("--help") || args.Contains("-h"))
    {
        Console.WriteLine(LoadOptions.Usage);
        return args.Length == 0 ? 2 : 0;
    }
    options = LoadOptions.Parse(args);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"proxy-load: {e.Message}");
    Console.Error.WriteLine("run with --help for the options");
    return 2;
}

// Progress goes to standard error (standard output carries the summary): a live line on a terminal,
// a line per second otherwise.
IAnsiConsole progress = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
bool live = !options.Quiet && !Console.IsErrorRedirected;
void Progress(Interval i, LoadRun run)
{
    if (options.Quiet)
    {
        return;
    }
    string line = string.Create(CultureInfo.InvariantCulture,
        $"{i.Second,6:0.0}s  {i.Completed,8} ok  {i.Failed,6} failed  p50 {i.P50Ms,8:0.###} ms  p99 {i.P99Ms,8:0.###} ms  max {i.MaxMs,8:0.###} ms  in flight {Interlocked.Read(ref run.MeasuredInFlight)}");
    if (live)
    {
        Console.Error.Write("\r" + line + "\u001b[K");
    }
    else
    {
        Console.Error.WriteLine(line);
    }
}

// Each socket engine thread runs the receive loops of its connections inline (no thread-pool hop per
// read), as the proxy does; read by the runtime at the first socket operation, which comes after this.
Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT", options.Threads.ToString(CultureInfo.InvariantCulture));

var started = DateTimeOffset.UtcNow;
LoadRun loadRun;
try
{
    // The main thread drives the run (it sleeps between ticks): no thread-pool thread is held.
    var endpoints = LoadRun.ResolveAsync(options).GetAwaiter().GetResult();
    loadRun = new LoadRun(options, endpoints, Progress);
    if (!options.Quiet)
    {
        progress.MarkupLine($"[grey]{Markup.Escape(options.Describe())}[/]");
    }
    loadRun.ConnectAllAsync().GetAwaiter().GetResult();
    loadRun.Run();
}
catch (TargetException e)
{
    Console.Error.WriteLine($"proxy-load: {e.Message}");
    return 2;
}
if (live)
{
    Console.Error.WriteLine();
}

var report = new LoadReport(loadRun) { StartedAt = started };
string text = report.Text();
Console.Write(text);
if (options.ReportDirectory is string dir)
{
    try
    {
        Directory.CreateDirectory(dir);
        using (FileStream json = File.Create(Path.Combine(dir, "report.json")))
        {
            report.WriteJson(json);
        }
        File.WriteAllText(Path.Combine(dir, "report.html"), report.Html());
        File.WriteAllText(Path.Combine(dir, "report.txt"), text);
        Console.WriteLine($"report     {Path.Combine(dir, "report.html")}, report.json, report.txt");
    }
    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
    {
        Console.Error.WriteLine($"proxy-load: cannot write the report to {dir}: {e.Message}");
        return 2;
    }
}
List<string> violations = report.Violations();
foreach (string v in violations)
{
    Console.WriteLine($"THRESHOLD  {v}");
}
return violations.Count == 0 ? 0 : 1;
