using Proxy.Core;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;

namespace Proxy.Host.Bootstrap;

/// <summary>
/// Re-reads a configuration whose files changed (the bootstrap and its filesystem subscriptions) and
/// applies it. A file is compared by size and modification time once per period, which also sees the
/// atomic rename Envoy's docs recommend. A configuration that fails to load is reported and the running
/// one keeps serving, as a NACK would leave it.
/// </summary>
public sealed class FileConfigWatcher : IAsyncDisposable
{
    private readonly ProxyServer _server;
    private readonly Func<(ProxySnapshot Snapshot, IReadOnlyList<string> Files)> _load;
    private readonly PeriodicTimer _timer;
    private readonly Task _loop;
    private string _fingerprint;
    private IReadOnlyList<string> _files;

    public FileConfigWatcher(ProxyServer server, IReadOnlyList<string> files, Func<(ProxySnapshot, IReadOnlyList<string>)> load, TimeSpan period)
    {
        _server = server;
        _load = load;
        _files = files;
        _fingerprint = Fingerprint(files);
        _timer = new PeriodicTimer(period);
        _loop = LoopAsync();
    }

    /// <summary>How many times a changed configuration was applied, and rejected.</summary>
    public int Applied { get; private set; }
    public int Rejected { get; private set; }

    private async Task LoopAsync()
    {
        while (await _timer.WaitForNextTickAsync())
        {
            string fingerprint = Fingerprint(_files);
            if (fingerprint == _fingerprint)
            {
                continue;
            }
            _fingerprint = fingerprint;
            try
            {
                var (snapshot, files) = _load();
                await _server.ApplyAsync(snapshot);
                _files = files;
                _fingerprint = Fingerprint(files);
                Applied++;
                ProxyLog.Write(LogLevel.Info, $"configuration reloaded: {snapshot.Listeners.Count} listeners, {snapshot.Clusters.Count} clusters");
            }
            catch (ConfigException e)
            {
                Rejected++;
                ProxyLog.Write(LogLevel.Error, $"configuration change rejected, the previous one keeps serving: {e.Message}");
            }
        }
    }

    private static string Fingerprint(IReadOnlyList<string> files)
    {
        var text = new System.Text.StringBuilder();
        foreach (string file in files)
        {
            var info = new FileInfo(file);
            text.Append(file).Append('|').Append(info.Exists ? info.Length : -1).Append('|').Append(info.Exists ? info.LastWriteTimeUtc.Ticks : 0).Append(';');
        }
        return text.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        _timer.Dispose();
        await _loop;
    }
}
