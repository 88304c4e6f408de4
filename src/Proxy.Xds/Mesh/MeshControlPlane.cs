using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Xds.Server;

namespace Proxy.Xds.Mesh;

/// <summary>
/// The embedded control plane: a directory of Istio YAML, translated (<see cref="IstioTranslator"/>) and
/// served over ADS (<see cref="AdsServer"/>). Changes are seen two ways: the kernel's file notifications
/// (inotify), taken once the changed files have been quiet for <see cref="QuietPeriod"/>, and a full scan
/// of the directory every poll (names, sizes, write times), taken once it held still for one poll — the
/// safety net for a lost notification or a file system without them. A configuration that does not
/// translate is reported and the last good one keeps being served.
/// </summary>
public sealed class MeshControlPlane : IAsyncDisposable
{
    private readonly string _directory;
    private readonly IstioTranslator _translator;
    private readonly AdsServer _ads;
    private List<(string Path, long Length, long Ticks)>? _taken;
    private List<(string Path, long Length, long Ticks)>? _pending;
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);
    private bool _rescan;
    private Timer? _timer;
    private Timer? _quiet;
    private FileSystemWatcher? _watcher;

    public MeshControlPlane(string directory, EndPoint xdsAddress, string listenAddress = "127.0.0.1", bool bindOutboundListeners = true, bool virtualOutbound = false)
    {
        _directory = directory;
        _translator = new IstioTranslator { ListenAddress = listenAddress, BindOutboundListeners = bindOutboundListeners, VirtualOutbound = virtualOutbound };
        _ads = new AdsServer(xdsAddress);
        _ads.Nacked += message => ProxyLog.Write(LogLevel.Warning, $"mesh: a proxy refused the configuration: {message}");
    }

    public AdsServer Ads => _ads;

    /// <summary>How long notified changes must be quiet before they are read (a file being written is not read half-way).</summary>
    public TimeSpan QuietPeriod { get; init; } = TimeSpan.FromMilliseconds(30);

    /// <summary>The error of the last reload that failed (null once one succeeds).</summary>
    public string? LastError { get; private set; }

    /// <summary>How long the last reload that published took: stat, read, translate, publish (diagnostics and perf/).</summary>
    public TimeSpan LastReloadTime { get; private set; }

    /// <summary>When the last reload that published began (a <see cref="System.Diagnostics.Stopwatch"/> timestamp).</summary>
    public long LastReloadStarted { get; private set; }

    /// <summary>
    /// Reads and serves the directory, then follows it: notifications when <paramref name="watch"/> (and
    /// the platform gives them), and a full scan every <paramref name="pollInterval"/>.
    /// </summary>
    public void Start(TimeSpan pollInterval, bool watch = true)
    {
        Reload();
        _ads.Start();
        if (watch)
        {
            _quiet = new Timer(_ => TakeNotified(), null, Timeout.Infinite, Timeout.Infinite);
            try
            {
                var watcher = new FileSystemWatcher(_directory) { IncludeSubdirectories = false, NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size };
                watcher.Changed += (_, e) => Notified(e.FullPath, null);
                watcher.Created += (_, e) => Notified(e.FullPath, null);
                watcher.Deleted += (_, e) => Notified(e.FullPath, null);
                watcher.Renamed += (_, e) => Notified(e.FullPath, e.OldFullPath);
                watcher.Error += (_, e) => Notified(null, null);
                watcher.EnableRaisingEvents = true;
                _watcher = watcher;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException or ArgumentException)
            {
                // Out of inotify watches, say: the poll still sees every change, only later.
                ProxyLog.Write(LogLevel.Warning, $"mesh: no change notifications for {_directory} ({e.Message}); polling every {pollInterval.TotalMilliseconds:F0} ms");
            }
        }
        _timer = new Timer(_ => Reload(), null, pollInterval, pollInterval);
    }

    /// <summary>A file changed (path null: notifications were lost, scan it all); read once quiet.</summary>
    private void Notified(string? path, string? oldPath)
    {
        lock (_dirty)
        {
            if (path == null || !IsYaml(path) || (oldPath != null && !IsYaml(oldPath)))
            {
                // Lost notifications, or another name (Kubernetes swaps a ConfigMap's files in through
                // a "..data" link): the whole directory is looked at again.
                _rescan = true;
            }
            else
            {
                _dirty.Add(path);
                if (oldPath != null)
                {
                    _dirty.Add(oldPath);
                }
            }
            _quiet?.Change(QuietPeriod, Timeout.InfiniteTimeSpan);
        }
    }

    private void TakeNotified()
    {
        string[] dirty;
        bool rescan;
        lock (_dirty)
        {
            dirty = [.. _dirty];
            rescan = _rescan;
            _dirty.Clear();
            _rescan = false;
        }
        lock (_translator)
        {
            List<(string Path, long Length, long Ticks)> now;
            try
            {
                now = rescan || _taken == null ? Scan() : Restat(_taken, dirty);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Failed($"cannot read {_directory}: {e.Message}");
                return;
            }
            // Quiet for the whole period: taken now, no second look.
            Take(now);
        }
    }

    /// <summary>
    /// Scans the directory and translates and publishes it if it changed and then held still for one
    /// call; returns whether a new version is served.
    /// </summary>
    public bool Reload()
    {
        lock (_translator)
        {
            List<(string Path, long Length, long Ticks)> now;
            try
            {
                now = Scan();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return Failed($"cannot read {_directory}: {e.Message}");
            }
            if (_taken != null && Same(now, _taken))
            {
                _pending = null;
                return false;
            }
            if (_taken != null && (_pending == null || !Same(now, _pending)))
            {
                // Changed since the last look: wait until it holds still for one poll, so that a file
                // being written (an editor truncates, then writes) is not read half-way.
                _pending = now;
                return false;
            }
            return Take(now);
        }
    }

    private bool Take(List<(string Path, long Length, long Ticks)> now)
    {
        if (_taken != null && Same(now, _taken))
        {
            return false;
        }
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        _taken = now;
        _pending = null;
        try
        {
            var files = ReadFiles(now);
            long read = System.Diagnostics.Stopwatch.GetTimestamp();
            var resources = _translator.Translate(files);
            long translated = System.Diagnostics.Stopwatch.GetTimestamp();
            LastError = null;
            bool published = _ads.Publish(resources);
            ProxyLog.Write(LogLevel.Debug, $"mesh: read {System.Diagnostics.Stopwatch.GetElapsedTime(start, read).TotalMilliseconds:F1} ms, translate {System.Diagnostics.Stopwatch.GetElapsedTime(read, translated).TotalMilliseconds:F1} ms, publish {System.Diagnostics.Stopwatch.GetElapsedTime(translated).TotalMilliseconds:F1} ms");
            if (!published)
            {
                return false;
            }
            LastReloadStarted = start;
            LastReloadTime = System.Diagnostics.Stopwatch.GetElapsedTime(start);
            ProxyLog.Write(LogLevel.Info, $"mesh: version {_ads.Version}: {resources.Count(r => r.Type == XdsResourceType.Cluster)} clusters, {resources.Count(r => r.Type == XdsResourceType.Route)} route configurations ({LastReloadTime.TotalMilliseconds:F1} ms)");
            return true;
        }
        catch (Exception e) when (e is ConfigException or IOException or UnauthorizedAccessException)
        {
            return Failed(e.Message);
        }
    }

    private static bool Same(List<(string Path, long Length, long Ticks)> a, List<(string Path, long Length, long Ticks)> b)
    {
        if (a.Count != b.Count)
        {
            return false;
        }
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i].Length != b[i].Length || a[i].Ticks != b[i].Ticks || !string.Equals(a[i].Path, b[i].Path, StringComparison.Ordinal))
            {
                return false;
            }
        }
        return true;
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
            if (IsYaml(f.Name) && Stat(f) is { } stat)
            {
                files.Add((f.FullName, stat.Length, stat.Ticks));
            }
        }
        files.Sort(static (a, b) => string.CompareOrdinal(a.Item1, b.Item1));
        return files;
    }

    /// <summary>The last scan with the named files looked at again (added, changed or gone).</summary>
    private static List<(string Path, long Length, long Ticks)> Restat(List<(string Path, long Length, long Ticks)> taken, string[] paths)
    {
        var files = new Dictionary<string, (long Length, long Ticks)>(taken.Count + paths.Length, StringComparer.Ordinal);
        foreach (var (path, length, ticks) in taken)
        {
            files[path] = (length, ticks);
        }
        foreach (string path in paths)
        {
            var f = new FileInfo(path);
            if (IsYaml(f.Name) && Stat(f) is { } stat)
            {
                files[f.FullName] = stat;
            }
            else
            {
                files.Remove(f.FullName);
            }
        }
        var list = new List<(string, long, long)>(files.Count);
        foreach (var (path, (length, ticks)) in files)
        {
            list.Add((path, length, ticks));
        }
        list.Sort(static (a, b) => string.CompareOrdinal(a.Item1, b.Item1));
        return list;
    }

    /// <summary>
    /// A file's size and write time, a link's those of the file it leads to (a mounted ConfigMap's files
    /// are links whose own times never change); null when it is not, or no longer, a file.
    /// </summary>
    private static (long Length, long Ticks)? Stat(FileInfo file)
    {
        if (file.Exists && (file.Attributes & FileAttributes.ReparsePoint) != 0)
        {
            file = file.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? file;
        }
        return file.Exists ? (file.Length, file.LastWriteTimeUtc.Ticks) : null;
    }

    private static bool IsYaml(string name) => name.EndsWith(".yaml", StringComparison.Ordinal) || name.EndsWith(".yml", StringComparison.Ordinal);

    public async ValueTask DisposeAsync()
    {
        _watcher?.Dispose();
        if (_timer != null)
        {
            await _timer.DisposeAsync();
        }
        if (_quiet != null)
        {
            await _quiet.DisposeAsync();
        }
        await _ads.DisposeAsync();
    }
}
