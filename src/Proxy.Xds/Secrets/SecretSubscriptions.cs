using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Xds.Config;

namespace Proxy.Xds.Secrets;

/// <summary>
/// Fetches what the <see cref="SecretStore"/> is asked for: an <see cref="SdsClient"/> per SDS server
/// (started the first time a name is asked of it), and a watch per file source (path_config_source: a
/// DiscoveryResponse with Secret resources, re-read when it changes). ADS-sourced secrets come with the
/// ADS stream.
/// </summary>
public sealed class SecretSubscriptions : IAsyncDisposable
{
    private readonly SecretStore _store;
    private readonly Func<string, (string Target, TlsClientContext? Tls)> _resolve;
    private readonly Api.Core.Node _node;
    private readonly Dictionary<SecretSource, IAsyncDisposable> _clients = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly object _lock = new();

    /// <param name="resolve">The address and TLS of an SDS cluster by name (a static cluster of the bootstrap).</param>
    public SecretSubscriptions(SecretStore store, Func<string, (string Target, TlsClientContext? Tls)> resolve, Api.Core.Node node)
    {
        _store = store;
        _resolve = resolve;
        _node = node;
        store.Demanded += Start;
        foreach (SecretSource source in store.Sources)
        {
            Start(source);
        }
    }

    /// <summary>The SDS clients running (tests).</summary>
    public IReadOnlyList<SdsClient> Clients
    {
        get
        {
            lock (_lock)
            {
                return [.. _clients.Values.OfType<SdsClient>()];
            }
        }
    }

    private void Start(SecretSource source)
    {
        if (source.Kind is SecretSourceKind.Static or SecretSourceKind.Ads)
        {
            return;
        }
        lock (_lock)
        {
            if (_stop.IsCancellationRequested || _clients.ContainsKey(source))
            {
                return;
            }
            try
            {
                if (source.Kind == SecretSourceKind.Path)
                {
                    _clients[source] = new FileWatch(this, source);
                    return;
                }
                (string target, TlsClientContext? tls) = source.Target.StartsWith("uri:", StringComparison.Ordinal)
                    ? (GoogleGrpcTarget(source.Target["uri:".Length..]), null)
                    : _resolve(source.Target);
                _clients[source] = new SdsClient(_store, source, target, tls, _node);
                ProxyLog.Write(LogLevel.Info, $"sds: secrets from {target} ({(source.V2 ? "v2" : "v3")})");
            }
            catch (ConfigException e)
            {
                ProxyLog.Write(LogLevel.Error, $"sds: cannot fetch secrets from {source}: {e.Message}");
            }
        }
    }

    /// <summary>google_grpc's target_uri: unix:PATH, unix://PATH, or host:port.</summary>
    private static string GoogleGrpcTarget(string uri) =>
        uri.StartsWith("unix://", StringComparison.Ordinal) ? "unix:" + uri["unix://".Length..]
        : uri.StartsWith("unix:", StringComparison.Ordinal) ? uri
        : "http://" + uri;

    /// <summary>A file of secrets (a DiscoveryResponse in YAML or JSON), applied when it appears and whenever it changes.</summary>
    private sealed class FileWatch : IAsyncDisposable
    {
        private readonly SecretSubscriptions _owner;
        private readonly SecretSource _source;
        private readonly Task _loop;
        private string? _applied;

        public FileWatch(SecretSubscriptions owner, SecretSource source)
        {
            _owner = owner;
            _source = source;
            Poll();
            _loop = LoopAsync();
        }

        private async Task LoopAsync()
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
            try
            {
                while (await timer.WaitForNextTickAsync(_owner._stop.Token))
                {
                    Poll();
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        private void Poll()
        {
            string text;
            try
            {
                text = File.ReadAllText(_source.Target);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return; // not there yet (or being replaced): the next poll sees it
            }
            if (text == _applied)
            {
                return;
            }
            _applied = text;
            try
            {
                ConfigNode root = ConfigNode.Parse(text, _source.Target);
                string version = root["version_info"].String() ?? DateTime.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture);
                _owner._store.Apply(_source, [.. root["resources"].Items], version);
            }
            catch (ConfigException e)
            {
                ProxyLog.Write(LogLevel.Warning, $"sds: secrets in {_source.Target} rejected (the previous ones keep serving): {e.Message}");
            }
        }

        public async ValueTask DisposeAsync() => await _loop;
    }

    public async ValueTask DisposeAsync()
    {
        _store.Demanded -= Start;
        List<IAsyncDisposable> clients;
        lock (_lock)
        {
            _stop.Cancel();
            clients = [.. _clients.Values];
            _clients.Clear();
        }
        foreach (IAsyncDisposable client in clients)
        {
            await client.DisposeAsync();
        }
        _stop.Dispose();
    }
}
