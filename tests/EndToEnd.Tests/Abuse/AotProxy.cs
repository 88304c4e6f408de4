using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace EndToEnd.Tests.Abuse;

/// <summary>
/// The proxy as it ships: `dotnet publish -p:PublishAot=true` of src/Proxy.Host (once per test run,
/// shared by every test that asks), started as its own process with the flags a test gives.
/// </summary>
public sealed class AotProxy : IAsyncDisposable
{
    private static readonly Lazy<Task<string>> s_binary = new(PublishAsync);
    private readonly Process _process;
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _log = new();

    private AotProxy(Process process, int port)
    {
        _process = process;
        Port = port;
        process.ErrorDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
        process.OutputDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
    }

    public int Port { get; }
    public int ProcessId => _process.Id;
    public string Log => string.Join('\n', _log);

    /// <summary>The published native binary (published on first use).</summary>
    public static Task<string> BinaryAsync() => s_binary.Value;

    private static async Task<string> PublishAsync()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Layotto.Fast.sln")))
        {
            root = Path.GetDirectoryName(root.TrimEnd(Path.DirectorySeparatorChar)) ?? throw new InvalidOperationException("Layotto.Fast.sln not found above the test binaries");
        }
        string output = Path.Combine(root, "out", "aot-test");
        var (exit, stdout, stderr) = await Processes.RunAsync("dotnet",
            ["publish", Path.Combine(root, "src", "Proxy.Host"), "-c", "Release", "-r", "linux-x64", "-p:PublishAot=true", "-o", output, "--nologo"],
            TimeSpan.FromMinutes(10));
        string binary = Path.Combine(output, "layotto-fast");
        if (exit != 0 || !File.Exists(binary))
        {
            throw new InvalidOperationException($"AOT publish failed ({exit}):\n{stdout}\n{stderr}");
        }
        return binary;
    }

    /// <summary>Starts the binary in standalone mode in front of <paramref name="upstreamPort"/>, with extra flags.</summary>
    public static Task<AotProxy> StartAsync(int upstreamPort, string protocol, params string[] flags) =>
        StartAsync(upstreamPort, protocol, new Dictionary<string, string>(), flags);

    /// <summary>As <see cref="StartAsync(int, string, string[])"/>, with environment variables set for the process.</summary>
    public static async Task<AotProxy> StartAsync(int upstreamPort, string protocol, IReadOnlyDictionary<string, string> environment, params string[] flags)
    {
        string binary = await BinaryAsync();
        int port = FreePort();
        var psi = new ProcessStartInfo(binary) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var (name, value) in environment)
        {
            psi.Environment[name] = value;
        }
        foreach (string a in new[] { "--listen", $"127.0.0.1:{port}", "--upstream", $"127.0.0.1:{upstreamPort}", "--upstream-protocol", protocol, "--concurrency", "1" })
        {
            psi.ArgumentList.Add(a);
        }
        foreach (string f in flags)
        {
            psi.ArgumentList.Add(f);
        }
        var proxy = new AotProxy(Process.Start(psi)!, port);
        for (int i = 0; i < 200; i++)
        {
            try
            {
                using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await probe.ConnectAsync(IPAddress.Loopback, port);
                return proxy;
            }
            catch (SocketException)
            {
                await Task.Delay(25);
            }
        }
        await proxy.DisposeAsync();
        throw new InvalidOperationException("the proxy did not start listening:\n" + proxy.Log);
    }

    /// <summary>Resident set size of the process now, in bytes.</summary>
    public long ResidentBytes()
    {
        foreach (string line in File.ReadLines($"/proc/{_process.Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }

    private static readonly HashSet<int> s_handedOut = [];

    /// <summary>
    /// A loopback port free now and never handed out before in this test run: two tests (or one test's
    /// listener and admin port) asking at once must not get the same one, which the kernel can give twice.
    /// </summary>
    public static int FreePort()
    {
        while (true)
        {
            using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            int port = ((IPEndPoint)socket.LocalEndPoint!).Port;
            lock (s_handedOut)
            {
                if (s_handedOut.Add(port))
                {
                    return port;
                }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
        }
        await _process.WaitForExitAsync();
        _process.Dispose();
    }
}
