using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Xds.Mesh;

namespace Proxy.Host;

/// <summary>
/// `layotto-fast mesh --config DIR`: an embedded control plane. It reads the Istio YAML users would
/// apply (every *.yaml / *.yml of DIR), translates it as istiod would for a sidecar, and serves it over
/// ADS (State of the World and Delta) to any number of proxies; a saved change is pushed once the file
/// has been quiet for 30 ms (inotify), or at the latest after two 200 ms polls. A broken file is reported (file, resource, field) and the last good
/// configuration keeps being served.
/// </summary>
public static class Mesh
{
    public const string Usage = """
        Usage: layotto-fast mesh --config DIR [options]

        An embedded control plane: serves the Istio resources in DIR (VirtualService, DestinationRule,
        ServiceEntry, WorkloadEntry of networking.istio.io v1alpha3/v1beta1/v1, and Kubernetes Services)
        to proxies over ADS (Envoy API v3, SotW and Delta), translated as istiod translates them for a
        sidecar. A saved file is taken once it has been quiet for 30 ms (file notifications; the
        directory is also scanned every 200 ms, and a change taken once it held still for a scan),
        including a ConfigMap mount's swap of its "..data" link. A bad file is reported and the last
        good configuration keeps being served.

          --config DIR              the directory of YAML files (required)
          --xds-address ADDRESS     where to serve ADS: HOST:PORT or unix:PATH (default: 127.0.0.1:15010)
          --listen-address IP       the address the sidecars' outbound listeners bind, one per service
                                    port, as with INTERCEPTION_MODE NONE (default: 127.0.0.1)
          --interception none|redirect
                                    none (default): the outbound listeners bind --listen-address:PORT;
                                    redirect: istiod's 0.0.0.0_PORT listeners, not bound, and
                                    virtualOutbound on 0.0.0.0:15001 with PassthroughCluster (iptables)
          --once                    translate, print the resources' names and exit (1 on an error)
          -l, --log-level LEVEL     as for the proxy (default: info)
          -h, --help                this text

        """;

    public static int Run(string[] args)
    {
        string? dir = null;
        string address = "127.0.0.1:15010";
        string listen = "127.0.0.1";
        bool once = false;
        bool bind = true;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? Value() => i + 1 < args.Length ? args[++i] : null;
            switch (arg)
            {
                case "-h":
                case "--help":
                    Console.Out.Write(Usage);
                    return 0;
                case "--config":
                    dir = Value();
                    break;
                case "--xds-address":
                    address = Value() ?? "";
                    break;
                case "--listen-address":
                    listen = Value() ?? "";
                    break;
                case "--interception":
                    string? mode = Value();
                    if (mode is not ("none" or "redirect"))
                    {
                        Console.Error.WriteLine("layotto-fast mesh: --interception takes none or redirect");
                        return 2;
                    }
                    bind = mode == "none";
                    break;
                case "--once":
                    once = true;
                    break;
                case "-l":
                case "--log-level":
                    ProxyLog.Level = ProxyLog.Parse(Value() ?? "info");
                    break;
                default:
                    Console.Error.WriteLine($"layotto-fast mesh: unknown option '{arg}'");
                    return 2;
            }
        }
        if (dir == null || !Directory.Exists(dir))
        {
            Console.Error.WriteLine(dir == null ? "layotto-fast mesh: --config DIR is required" : $"layotto-fast mesh: {dir} is not a directory");
            return 2;
        }
        if (!IPAddress.TryParse(listen, out _))
        {
            Console.Error.WriteLine($"layotto-fast mesh: --listen-address '{listen}' is not an IP address");
            return 2;
        }
        if (!Proxy.Core.Runtime.RuntimeApiServer.TryParseAddress(address, out EndPoint? endPoint, out string? bad))
        {
            Console.Error.WriteLine($"layotto-fast mesh: --xds-address: {bad}");
            return 2;
        }
        var translator = new IstioTranslator { ListenAddress = listen, BindOutboundListeners = bind, VirtualOutbound = !bind };
        if (once)
        {
            try
            {
                foreach (var (type, name, _) in translator.Translate(ReadFiles(dir)))
                {
                    Console.Out.WriteLine($"{type} {name}");
                }
                return 0;
            }
            catch (ConfigException e)
            {
                Console.Error.WriteLine($"layotto-fast mesh: {e.Message}");
                return 1;
            }
        }
        var mesh = new MeshControlPlane(dir, endPoint!, listen, bind, virtualOutbound: !bind);
        try
        {
            mesh.Start(TimeSpan.FromMilliseconds(200));
        }
        catch (System.Net.Sockets.SocketException e)
        {
            Console.Error.WriteLine($"layotto-fast mesh: cannot serve ADS on {address}: {e.Message}");
            return 1;
        }
        ProxyLog.Write(LogLevel.Info, $"mesh: serving {dir} over ADS on {address}");
        using var stop = new ManualResetEventSlim();
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
        using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
        stop.Wait();
        mesh.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
        return 0;
    }

    private static IEnumerable<string> YamlFiles(string dir) =>
        Directory.EnumerateFiles(dir).Where(f => f.EndsWith(".yaml", StringComparison.Ordinal) || f.EndsWith(".yml", StringComparison.Ordinal)).Order(StringComparer.Ordinal);

    private static List<(string, string)> ReadFiles(string dir) => [.. YamlFiles(dir).Select(f => (f, File.ReadAllText(f)))];
}
