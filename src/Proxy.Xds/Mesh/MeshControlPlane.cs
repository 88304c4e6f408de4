using System.Net;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Xds.Server;

namespace Proxy.Xds.Mesh;

/// <summary>
/// The embedded control plane: a directory of Istio YAML, translated (<see cref="IstioTranslator"/>) and
/// served over ADS (<see cref="AdsServer"/>). <see cref="Reload"/> re-reads the directory when a file
/// changed (names, sizes, write times) and then held still for one poll; a configuration that does not
/// translate is reported and the last good one keeps being served.
/// </summary>
public sealed class MeshControlPlane : IAsyncDisposable
{
    private readonly string _directory;
    private readonly IstioTranslator _translator;
    private readonly AdsServer _ads;
    private string? _signature;
    private string? _pending;
    private Timer? _timer;

    public MeshControlPlane(string directory, EndPoint xdsAddress, string listenAddress = "127.0.0.1", bool bindOutboundListeners = true)
    {
        _directory = directory;
        _translator = new IstioTranslator { ListenAddress = listenAddress, BindOutboundListeners = bindOutboundListeners };
        _ads = new AdsServer(xdsAddress);
        _ads.Nacked += message => ProxyLog.Write(LogLevel.Warning, $"mesh: a proxy refused the configuration: {message}");
    }

    public AdsServer Ads => _ads;

    /// <summary>The error of the last reload that failed (null once one succeeds).</summary>
    public string? LastError { get; private set; }

    /// <summary>Reads and serves the directory, then checks it for changes every <paramref name="pollInterval"/>.</summary>
    public void Start(TimeSpan pollInterval)
    {
        Reload();
        _ads.Start();
        _timer = new Timer(_ => Reload(), null, pollInterval, pollInterval);
    }

    /// <summary>Translates and publishes the directory if it changed; returns whether a new version is served.</summary>
    public bool Reload()
    {
        lock (_translator)
        {
            string now;
            List<(string Path, long Length, long Ticks)> scan;
            try
            {
                scan = Scan();
                now = string.Join('|', scan.Select(f => $"{f.Path}:{f.Length}:{f.Ticks}"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return Failed($"cannot read {_directory}: {e.Message}");
            }
            if (now == _signature)
            {
                return false;
            }
            if (_signature != null && now != _pending)
            {
                // Changed since the last look: wait until it holds still for one poll, so that a file
                // being written (an editor truncates, then writes) is not read half-way.
                _pending = now;
                return false;
            }
            _signature = now;
            try
            {
                var resources = _translator.Translate(ReadFiles(scan));
                LastError = null;
                if (!_ads.Publish(resources))
                {
                    return false;
                }
                ProxyLog.Write(LogLevel.Info, $"mesh: version {_ads.Version}: {resources.Count(r => r.Type == XdsResourceType.Cluster)} clusters, {resources.Count(r => r.Type == XdsResourceType.Route)} route configurations");
                return true;
            }
            catch (Exception e) when (e is ConfigException or IOException or UnauthorizedAccessException)
            {
                return Failed(e.Message);
            }
        }
    }

    private bool Failed(string message)
    {
        LastError = message;
        ProxyLog.Write(LogLevel.Error, $"mesh: {message}; still serving version {_ads.Version}");
        return false;
    }

    /// <summary>The files' texts; one whose size and write time did not change is not read again.</summary>
    private List<(string, string)> ReadFiles(List<(string Path, long Length, long Ticks)> scan)
    {
        var texts = new Dictionary<string, (long Length, long Ticks, string Text)>(StringComparer.Ordinal);
        var files = new List<(string, string)>(scan.Count);
        foreach (var (path, length, ticks) in scan)
        {
            string text = _texts.TryGetValue(path, out var known) && known.Length == length && known.Ticks == ticks ? known.Text : File.ReadAllText(path);
            texts[path] = (length, ticks, text);
            files.Add((path, text));
        }
        _texts = texts;
        return files;
    }

    private Dictionary<string, (long Length, long Ticks, string Text)> _texts = new(StringComparer.Ordinal);

    /// <summary>The YAML files with their sizes and write times, in name order.</summary>
    private List<(string Path, long Length, long Ticks)> Scan()
    {
        var files = new List<(string, long, long)>();
        foreach (FileInfo f in new DirectoryInfo(_directory).EnumerateFiles())
        {
            if (f.Name.EndsWith(".yaml", StringComparison.Ordinal) || f.Name.EndsWith(".yml", StringComparison.Ordinal))
            {
                files.Add((f.FullName, f.Length, f.LastWriteTimeUtc.Ticks));
            }
        }
        files.Sort(static (a, b) => string.CompareOrdinal(a.Item1, b.Item1));
        return files;
    }

    public async ValueTask DisposeAsync()
    {
        if (_timer != null)
        {
            await _timer.DisposeAsync();
        }
        await _ads.DisposeAsync();
    }
}
