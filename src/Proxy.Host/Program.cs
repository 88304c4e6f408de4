using System.Reflection;
using Proxy.Core;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Host;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "mesh")
        {
            return Mesh.Run(args[1..]);
        }
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
        try
        {
            return Serve(options);
        }
        catch (ConfigException e)
        {
            Console.Error.WriteLine($"layotto-fast: configuration error: {e.Message}");
            return 1;
        }
    }

    private static int Serve(CommandLine options)
    {
        // One event loop per --concurrency: the socket engines run our continuations inline, so a
        // connection's work stays on its engine's thread (no thread-pool hop per read). Read by the
        // runtime at the first socket operation, which comes after this.
        Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
        Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT", options.Concurrency.ToString(System.Globalization.CultureInfo.InvariantCulture));
        // Plaintext connections run on event loops of our own, as many (LAYOTTO_SOCKET_ENGINE=dotnet: the engine's).
        Proxy.Core.Transport.EventLoop.Configure(options.Concurrency);

        ProxyLog.Level = ProxyLog.Parse(options.LogLevel);
        ProxyLog.Format = options.LogFormat;
        foreach (string ignored in options.Ignored)
        {
            ProxyLog.Write(LogLevel.Debug, $"command line: {ignored}: accepted for Envoy compatibility; no effect here");
        }
        var pools = new UpstreamPools();
        System.Net.IPEndPoint? adminAddress = options.AdminAddress != null ? System.Net.IPEndPoint.Parse(options.AdminAddress) : null;
        ProxySnapshot snapshot;
        IReadOnlyList<string> watched = [];
        Proxy.Xds.Config.AdsBootstrap? ads = null;
        Proxy.Xds.Api.Core.Node? node = null;
        Proxy.Xds.Config.ConfigNode bootstrap = default;
        (Proxy.Core.Transport.Tls.TlsServerContext? Server, Proxy.Core.Transport.Tls.TlsClientContext? Upstream) standaloneTls = default;
        if (options.Listen != null && options.Upstream != null)
        {
            standaloneTls = (Standalone.ServerTls(options), Standalone.UpstreamTls(options));
            snapshot = Standalone.Build(options.Listen, options.Upstream, options.UpstreamProtocol, pools, Standalone.Options(options), standaloneTls.Server, standaloneTls.Upstream);
        }
        else if (options.Listen != null || options.Upstream != null)
        {
            throw new ConfigException("--listen and --upstream go together");
        }
        else if (options.ConfigPath != null || options.ConfigYaml != null)
        {
            System.Net.IPEndPoint? fromBootstrap;
            (snapshot, watched, ads, fromBootstrap, node, bootstrap) = LoadBootstrap(options, pools, logWarnings: true);
            adminAddress ??= fromBootstrap;
        }
        else
        {
            Console.Error.WriteLine("layotto-fast: nothing to serve: give -c FILE or --listen and --upstream (see --help)");
            return 2;
        }
        if (options.Mode == "validate")
        {
            Console.Out.WriteLine("configuration OK");
            return 0;
        }

        if (options.MaxConnections > 0)
        {
            Proxy.Core.Transport.DownstreamLimits.MaxConnections = options.MaxConnections;
        }
        // Secrets named by SDS are fetched before the listeners open (Envoy's init: a listener or cluster
        // that needs a secret waits for it), within the usual initial fetch timeout.
        Proxy.Xds.Secrets.SecretSubscriptions? secrets = s_grpcTarget != null && (ads?.Node ?? node) is { } sdsNode && options.Mode == "serve"
            ? new Proxy.Xds.Secrets.SecretSubscriptions(s_secrets, name => s_grpcTarget(name), sdsNode)
            : null;
        if (secrets != null)
        {
            WaitForSecrets(snapshot, TimeSpan.FromSeconds(15));
        }
        var server = new ProxyServer(snapshot, pools);
        try
        {
            server.Start();
        }
        catch (System.Net.Sockets.SocketException e)
        {
            Console.Error.WriteLine($"layotto-fast: cannot listen: {e.Message}");
            return 1;
        }
        foreach (var listener in server.Listeners)
        {
            ProxyLog.Write(LogLevel.Info, $"listening on {listener.LocalEndPoint}");
        }
        if (options.Mode == "init_only")
        {
            // Envoy's init_only: everything loaded and bound, then exit.
            server.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
            Console.Out.WriteLine("initialized");
            return 0;
        }
        Proxy.Core.Runtime.RuntimeApiServer? runtime = null;
        if (options.RuntimeApi != null)
        {
            if (!Proxy.Core.Runtime.RuntimeApiServer.TryParseAddress(options.RuntimeApi, out System.Net.EndPoint? address, out string? bad))
            {
                throw new ConfigException($"--runtime-api: {bad}"); // checked by the command line already
            }
            try
            {
                runtime = new Proxy.Core.Runtime.RuntimeApiServer(address!, server.Snapshots, new Proxy.Core.Runtime.RuntimeApiOptions
                {
                    MaxMessageBytes = options.RuntimeApiMaxMessageBytes,
                    ConnectionBudgetBytes = Math.Max(64L * 1024 * 1024, 4L * options.RuntimeApiMaxMessageBytes),
                });
                runtime.Start();
            }
            catch (System.Net.Sockets.SocketException e)
            {
                Console.Error.WriteLine($"layotto-fast: cannot serve the runtime API on {options.RuntimeApi}: {e.Message}");
                server.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(1));
                return 1;
            }
            ProxyLog.Write(LogLevel.Info, $"runtime API (spec.proto.runtime.v1.Runtime) on {options.RuntimeApi}");
        }
        using Timer? swapper = options.SnapshotSwapsPerSecond > 0 && options.Listen != null && options.Upstream != null
            ? StartSwapping(server, options, standaloneTls)
            : null;
        Proxy.Host.Bootstrap.FileConfigWatcher? watcher = watched.Count > 0
            ? new Proxy.Host.Bootstrap.FileConfigWatcher(server, watched, () => { var (s, f, _, _, _, _) = LoadBootstrap(options, pools, logWarnings: false); return (s, f); }, TimeSpan.FromSeconds(1))
            : null;
        Proxy.Xds.AdsClient? xds = null;
        if (ads != null)
        {
            ApplyNodeFlags(ads.Node, options);
            var state = new Proxy.Xds.XdsState(pools, [.. snapshot.Clusters.Values], snapshot.Listeners, secrets: s_secrets);
            xds = new Proxy.Xds.AdsClient(state, ads, server.ApplyAsync);
            ProxyLog.Write(LogLevel.Info, $"xds: {(ads.Delta ? "delta" : "state-of-the-world")} ADS to {ads.Target} as node '{ads.Node.Id}'");
        }
        if (node != null)
        {
            ApplyNodeFlags(node, options);
        }

        using var lifecycle = new Admin.ServerLifecycle(server, xds != null ? () => xds.Initialized : null, options.Concurrency);
        Admin.AdminServer? admin = null;
        if (adminAddress != null)
        {
            try
            {
                admin = new Admin.AdminServer(adminAddress, new Admin.AdminContext
                {
                    Server = server,
                    Lifecycle = lifecycle,
                    Options = options,
                    NodeJson = (ads?.Node ?? node) is { } shown ? new Google.Protobuf.JsonFormatter(Google.Protobuf.JsonFormatter.Settings.Default.WithPreserveProtoFieldNames(true)).Format(shown) : "{}",
                    ConfigDump = ConfigDumper(bootstrap, ads?.Node ?? node, xds),
                    Certs = () => Proxy.Xds.Admin.CertsDump.Render(s_secrets),
                    DrainListeners = (inboundOnly, graceful) =>
                    {
                        Func<string, bool>? which = inboundOnly ? static name => name.Contains("inbound", StringComparison.OrdinalIgnoreCase) : null;
                        return graceful ? server.DrainGracefullyAsync(which, TimeSpan.FromSeconds(options.DrainTimeSeconds), options.DrainStrategy == "gradual") : server.DrainListenersAsync(which);
                    },
                });
                admin.Start();
                ProxyLog.Write(LogLevel.Info, $"admin endpoint on {admin.EndPoint}");
            }
            catch (System.Net.Sockets.SocketException e)
            {
                Console.Error.WriteLine($"layotto-fast: cannot serve the admin endpoint on {adminAddress}: {e.Message}");
                xds?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
                server.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(1));
                return 1;
            }
        }
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; lifecycle.RequestStop(); });
        using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; lifecycle.RequestStop(); });
        lifecycle.WaitForStop();
        lifecycle.StartDraining();
        ProxyLog.Write(LogLevel.Info, $"draining for up to {options.DrainTimeSeconds} s ({Proxy.Core.Forwarding.Exchange.ActiveCount} requests in flight)");
        watcher?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
        xds?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
        secrets?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
        runtime?.StopAcceptingAndDrainAsync().Wait(TimeSpan.FromSeconds(1));
        server.DrainAsync(TimeSpan.FromSeconds(options.DrainTimeSeconds)).Wait();
        runtime?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(1));
        admin?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(1));
        server.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(1));
        return 0;
    }

    /// <summary>/config_dump: the bootstrap as loaded and, under ADS, what the client holds (waiting at most 2 s for an update in progress).</summary>
    private static Func<string?, string?, string?, bool, (int, string)> ConfigDumper(Proxy.Xds.Config.ConfigNode bootstrap, Proxy.Xds.Api.Core.Node? node, Proxy.Xds.AdsClient? xds)
    {
        var source = new Proxy.Xds.Admin.ConfigDumpSource
        {
            Bootstrap = bootstrap,
            Node = node,
            Loaded = DateTime.UtcNow,
            Dynamic = xds != null ? () => xds.Dump(TimeSpan.FromSeconds(2)) : null,
            Secrets = s_secrets,
        };
        return (resource, mask, nameRegex, includeEds) => Proxy.Xds.Admin.ConfigDump.Render(source, resource, mask, nameRegex, includeEds);
    }

    /// <summary>Envoy's --service-node, --service-cluster and --service-zone override the bootstrap's node.id, node.cluster and node.locality.zone.</summary>
    private static void ApplyNodeFlags(Proxy.Xds.Api.Core.Node node, CommandLine options)
    {
        node.Id = options.ServiceNode ?? node.Id;
        node.Cluster = options.ServiceCluster ?? node.Cluster;
        if (options.ServiceZone != null)
        {
            node.Locality ??= new Proxy.Xds.Api.Core.Locality();
            node.Locality.Zone = options.ServiceZone;
        }
    }

    /// <summary>--swap-snapshots-per-second: a fresh snapshot (same pools, so connections survive) published on a timer.</summary>
    private static Timer StartSwapping(ProxyServer server, CommandLine options, (Proxy.Core.Transport.Tls.TlsServerContext? Server, Proxy.Core.Transport.Tls.TlsClientContext? Upstream) standaloneTls)
    {
        long swaps = 0;
        var period = TimeSpan.FromSeconds(1.0 / options.SnapshotSwapsPerSecond);
        return new Timer(_ =>
        {
            ProxySnapshot next = Standalone.Build(options.Listen!, options.Upstream!, options.UpstreamProtocol, server.Pools, Standalone.Options(options), standaloneTls.Server, standaloneTls.Upstream);
            server.Snapshots.Publish(next);
            if (++swaps % (options.SnapshotSwapsPerSecond * 10) == 0)
            {
                ProxyLog.Write(LogLevel.Info, $"{swaps} snapshot swaps");
            }
        }, null, period, period);
    }

    /// <summary>The bootstrap and the files its filesystem subscriptions name; the list is what to watch for changes.</summary>
    private static (ProxySnapshot Snapshot, IReadOnlyList<string> Files, Proxy.Xds.Config.AdsBootstrap? Ads, System.Net.IPEndPoint? Admin, Proxy.Xds.Api.Core.Node? Node, Proxy.Xds.Config.ConfigNode Root) LoadBootstrap(CommandLine options, UpstreamPools pools, bool logWarnings)
    {
        // Envoy's --config-yaml alone is the bootstrap; with -c it is merged over the file.
        string text = options.ConfigYaml != null && options.ConfigPath != null
            ? Proxy.Xds.Config.ConfigNode.Merge(ReadConfig(options.ConfigPath), options.ConfigPath, options.ConfigYaml, "--config-yaml")
            : options.ConfigYaml ?? ReadConfig(options.ConfigPath!);
        var loader = new Proxy.Xds.Config.BootstrapLoader(pools) { Secrets = s_secrets };
        ProxySnapshot snapshot = loader.Load(text, options.ConfigPath ?? "--config-yaml");
        s_grpcTarget = name => loader.GrpcTarget(loader.Root["static_resources"], name, loader.Root["static_resources"]);
        if (options.MaxConnections == 0 && loader.MaxDownstreamConnections is long max)
        {
            Proxy.Core.Transport.DownstreamLimits.MaxConnections = max;
        }
        if (logWarnings)
        {
            foreach (string warning in loader.Warnings)
            {
                ProxyLog.Write(LogLevel.Warning, $"config: {warning}");
            }
        }
        List<string> files = [.. loader.WatchedFiles];
        if (files.Count > 0 && options.ConfigPath != null)
        {
            files.Add(options.ConfigPath);
        }
        return (snapshot, files, loader.Ads, loader.AdminAddress, loader.Node, loader.Root);
    }

    /// <summary>Waits (bounded) until every TLS context of the static configuration has its secrets.</summary>
    private static void WaitForSecrets(ProxySnapshot snapshot, TimeSpan limit)
    {
        var contexts = new List<Proxy.Core.Transport.Tls.TlsContext>();
        foreach (ListenerConfig listener in snapshot.Listeners.Concat(snapshot.UnboundListeners))
        {
            contexts.AddRange(listener.FilterChains.Append(listener.DefaultFilterChain).Select(static c => c?.Serving.Tls).Append(listener.Tls).OfType<Proxy.Core.Transport.Tls.TlsContext>());
        }
        foreach (Cluster cluster in snapshot.Clusters.Values)
        {
            contexts.AddRange(cluster.Endpoints.Select(static e => e.Tls).Append(cluster.Tls).OfType<Proxy.Core.Transport.Tls.TlsContext>());
        }
        long deadline = Environment.TickCount64 + (long)limit.TotalMilliseconds;
        while (contexts.Any(static c => !c.IsReady))
        {
            if (Environment.TickCount64 > deadline)
            {
                string missing = string.Join(", ", contexts.Where(static c => !c.IsReady).SelectMany(static c => c.SecretNames()).Distinct());
                ProxyLog.Write(LogLevel.Warning, $"sds: secrets {missing} did not arrive within {limit.TotalSeconds:0} s; TLS that needs them fails until they do");
                return;
            }
            Thread.Sleep(20);
        }
    }

    /// <summary>The process's named secrets: SDS slots outlive bootstrap reloads and xDS updates.</summary>
    private static readonly Proxy.Xds.Secrets.SecretStore s_secrets = new();

    /// <summary>An SDS cluster's address and TLS, from the bootstrap last loaded.</summary>
    private static Func<string, (string, Proxy.Core.Transport.Tls.TlsClientContext?)>? s_grpcTarget;

    private static string ReadConfig(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read {path}: {e.Message}");
        }
    }

    public static string Version =>
        typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";
}
