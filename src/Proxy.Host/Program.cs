using System.Reflection;

namespace Proxy.Host;

public static class Program
{
    public static int Main(string[] args)
    {
        if (!CommandLine.TryParse(args, out CommandLine? options, out string? error))
        {
            Console.Error.WriteLine($"layotto-fast: {error}");
            Console.Error.WriteLine("Try 'layotto-fast --help'.");
            return 2;
        }
        if (options.ShowHelp)
        {
            Console.Out.Write(CommandLine.Usage);
            return 0;
        }
        if (options.ShowVersion)
        {
            Console.Out.WriteLine($"layotto-fast {Version} (.NET {Environment.Version}, {(System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported ? "JIT" : "Native AOT")})");
            return 0;
        }
        Console.Error.WriteLine("layotto-fast: nothing to serve: give -c FILE or --listen and --upstream (see --help)");
        return 2;
    }

    public static string Version =>
        typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";
}
