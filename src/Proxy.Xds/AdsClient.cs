using System.Diagnostics;
using System.Net.Sockets;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Xds.Api.Discovery;
using Proxy.Xds.Config;
using RpcStatus = Proxy.Xds.Api.Rpc.Status;

namespace Proxy.Xds;

/// <summary>What one response did: its type, how many resources, whether it was accepted, and how long it took.</summary>
public readonly record struct XdsUpdate(XdsResourceType Type, int Resources, int Removed, bool Accepted, string? Error, TimeSpan ReceiptToSwap, bool Swapped);

/// <summary>
/// Envoy's aggregated discovery client: one gRPC stream (State of the World or Delta, API v3 or v2) to
/// the control plane, wildcard CDS and LDS, EDS and RDS subscribed by name as CDS and LDS reference them,
/// every response ACKed or NACKed (error_detail names the resource and field; the last good config keeps
/// serving), the snapshot rebuilt and published after each accepted response, and the stream re-opened
/// with exponential back-off and jitter whenever it ends (istiod closes streams every 30 minutes or so),
/// resubscribing with the versions we hold. Traffic is not touched by a reconnect: the snapshot stays.
/// </summary>
public sealed class AdsClient : IAsyncDisposable
{
    /// <summary>The largest response accepted (Grpc.Net.Client's default is 4 MiB; a big mesh pushes more).</summary>
    public const int MaxResponseBytes = XdsChannel.MaxResponseBytes;

    private static readonly XdsResourceType[] s_order = [XdsResourceType.Cluster, XdsResourceType.Endpoint, XdsResourceType.Listener, XdsResourceType.Route];

    private readonly XdsState _state;
    private readonly Func<ProxySnapshot, Task> _publish;
    private readonly AdsBootstrap _config;
    private readonly GrpcChannel _channel;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly Task _loop;
    private readonly Task _warmingLoop;
    private bool _v2;
    private int _warningsLogged;
    private bool _unknownNoted;

    // Per stream: what we asked for, and per type the last accepted version and last nonce (SotW).
    private readonly Dictionary<XdsResourceType, HashSet<string>> _subscribed = [];
    private readonly System.Collections.Concurrent.ConcurrentDictionary<XdsResourceType, string> _acceptedVersion = new();

    // The version of the last accepted response of each type, either protocol (Delta: system_version_info), for /config_dump.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<XdsResourceType, string> _shownVersion = new();
    private readonly Dictionary<XdsResourceType, string> _nonce = [];

    public AdsClient(XdsState state, AdsBootstrap config, Func<ProxySnapshot, Task> publish, TimeSpan? maxBackoff = null)
    {
        _state = state;
        _config = config;
        _publish = publish;
        _v2 = config.V2 ?? false;
        MaxBackoff = maxBackoff ?? TimeSpan.FromSeconds(30);
        _channel = XdsChannel.Create(config.Target, config.Tls);
        _loop = Task.Run(RunAsync);
        state.Secrets.Changed += OnSecretsChanged;
        _warmingLoop = Task.Run(WarmingLoopAsync);
    }

    private readonly SemaphoreSlim _secretsChanged = new(0, 1);

    private void OnSecretsChanged()
    {
        if (_secretsChanged.CurrentCount == 0)
        {
            try
            {
                _secretsChanged.Release();
            }
            catch (SemaphoreFullException)
            {
            }
        }
    }

    public TimeSpan MaxBackoff { get; }

    /// <summary>Streams opened, responses accepted and rejected (for tests and the log).</summary>
    public int Connects { get; private set; }
    public int Accepted { get; private set; }
    public int Rejected { get; private set; }

    /// <summary>
    /// Envoy's initialization: a CDS and an LDS response were accepted and nothing they brought is still
    /// warming. Until then the server is not ready (admin /ready answers 503, server.state INITIALIZING).
    /// </summary>
    public bool Initialized => Volatile.Read(ref _initialized);

    private bool _initialized;
    private bool _clustersReceived;
    private bool _listenersReceived;

    private static readonly Dictionary<XdsResourceType, (Counter Success, Counter Rejected, Counter Attempt)> s_updateStats = new()
    {
        [XdsResourceType.Cluster] = UpdateStats("cluster_manager", "cds"),
        [XdsResourceType.Listener] = UpdateStats("listener_manager", "lds"),
        [XdsResourceType.Route] = UpdateStats("xds", "rds"),
        [XdsResourceType.Endpoint] = UpdateStats("xds", "eds"),
    };

    private static (Counter, Counter, Counter) UpdateStats(string scope, string name) =>
        (StatsStore.Default.Counter(scope, name, "update_success"), StatsStore.Default.Counter(scope, name, "update_rejected"), StatsStore.Default.Counter(scope, name, "update_attempt"));

    private void CheckInitialized()
    {
        if (!_initialized && _clustersReceived && _listenersReceived && !_state.Warming)
        {
            Volatile.Write(ref _initialized, true);
            ProxyLog.Write(LogLevel.Info, "xds: initial clusters and listeners applied; initialized");
        }
    }

    /// <summary>Raised after each response has been handled (after the ACK or NACK was sent).</summary>
    public event Action<XdsUpdate>? Updated;

    private async Task RunAsync()
    {
        int failures = 0;
        while (!_stop.IsCancellationRequested)
        {
            _streamReceived = false;
            try
            {
                Connects++;
                await (_config.Delta ? RunDeltaAsync() : RunSotwAsync());
                ProxyLog.Write(LogLevel.Info, "xds: the control plane closed the stream; reconnecting");
            }
            catch (Exception e) when (_stop.IsCancellationRequested && e is OperationCanceledException or RpcException or IOException or ObjectDisposedException)
            {
                break;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented && _config.V2 == null && !_v2)
            {
                // A control plane that predates v3 (Istio 1.5): speak v2 from now on.
                _v2 = true;
                ProxyLog.Write(LogLevel.Info, "xds: the control plane does not serve API v3; using v2");
                continue;
            }
            catch (RpcException e) when (!_stop.IsCancellationRequested)
            {
                ProxyLog.Write(LogLevel.Warning, $"xds: stream to {_config.Target} ended: {e.StatusCode} {e.Status.Detail}");
            }
            catch (Exception e) when (e is IOException or HttpRequestException or InvalidOperationException or ObjectDisposedException && !_stop.IsCancellationRequested)
            {
                ProxyLog.Write(LogLevel.Warning, $"xds: stream to {_config.Target} failed: {e.Message}");
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                // Never stop following the control plane: report, back off, reconnect.
                ProxyLog.Write(LogLevel.Critical, $"xds: stream to {_config.Target} failed unexpectedly: {e}");
            }
            // A stream that worked for a while starts the back-off over; one that never answered grows it.
            failures = _streamReceived ? 0 : failures + 1;
            try
            {
                await Task.Delay(Backoff(failures), _stop.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    /// <summary>Exponential back-off from 250 ms to <see cref="MaxBackoff"/>, with full jitter on its upper half.</summary>
    private TimeSpan Backoff(int failures)
    {
        double ceiling = Math.Min(MaxBackoff.TotalMilliseconds, 250 * Math.Pow(2, Math.Min(failures, 16)));
        return TimeSpan.FromMilliseconds(ceiling / 2 + Random.Shared.NextDouble() * ceiling / 2);
    }

    private bool _streamReceived;

    private async Task RunSotwAsync()
    {
        using var call = _v2
            ? new Api.DiscoveryV2.AggregatedDiscoveryService.AggregatedDiscoveryServiceClient(_channel).StreamAggregatedResources(cancellationToken: _stop.Token)
            : new AggregatedDiscoveryService.AggregatedDiscoveryServiceClient(_channel).StreamAggregatedResources(cancellationToken: _stop.Token);
        bool first = true;
        _nonce.Clear();
        _subscribed.Clear();
        Task Send(XdsResourceType type, string? nonce, RpcStatus? error)
        {
            var request = new DiscoveryRequest
            {
                TypeUrl = XdsTypes.TypeUrl(type, _v2),
                VersionInfo = _acceptedVersion.GetValueOrDefault(type, ""),
                ResponseNonce = nonce ?? "",
                ErrorDetail = error,
            };
            if (first || !_config.SetNodeOnFirstMessageOnly)
            {
                request.Node = _config.Node;
                first = false;
            }
            if (type is XdsResourceType.Endpoint or XdsResourceType.Route)
            {
                request.ResourceNames.AddRange(_subscribed.GetValueOrDefault(type) ?? []);
            }
            return call.RequestStream.WriteAsync(request);
        }

        // Secrets (sds_config: ads) by name, with the version held.
        string secretNonce = "";
        Task SendSecrets(RpcStatus? error)
        {
            var request = new DiscoveryRequest { TypeUrl = SecretTypeUrl, VersionInfo = _secretVersion, ResponseNonce = secretNonce, ErrorDetail = error };
            if (first || !_config.SetNodeOnFirstMessageOnly)
            {
                request.Node = _config.Node;
                first = false;
            }
            request.ResourceNames.AddRange(_secretNames);
            return call.RequestStream.WriteAsync(request);
        }

        // Wildcard CDS and LDS first; EDS and RDS follow the names those give (and what we already hold).
        foreach (XdsResourceType type in s_order)
        {
            if (Wanted(type))
            {
                _subscribed[type] = Subscription(type);
                if (type is XdsResourceType.Cluster or XdsResourceType.Listener || _subscribed[type].Count > 0)
                {
                    await Send(type, null, null);
                }
            }
        }
        _secretNames = [.. _state.Secrets.Names(s_adsSecrets)];
        if (_secretNames.Length > 0)
        {
            await SendSecrets(null);
        }
        while (await call.ResponseStream.MoveNext(_stop.Token))
        {
            _streamReceived = true;
            DiscoveryResponse response = call.ResponseStream.Current;
            long start = Stopwatch.GetTimestamp();
            if (response.TypeUrl is XdsTypes.SecretV3 or XdsTypes.SecretV2)
            {
                secretNonce = response.Nonce;
                string? refused = ApplySecrets(response.Resources, response.VersionInfo);
                await SendSecrets(refused == null ? null : new RpcStatus { Code = (int)StatusCode.InvalidArgument, Message = refused });
                continue;
            }
            if (XdsTypes.ResourceType(response.TypeUrl) is not XdsResourceType type)
            {
                NoteUnknownType(response.TypeUrl);
                continue;
            }
            _nonce[type] = response.Nonce;
            var resources = new List<XdsResource>(response.Resources.Count);
            string? error = null;
            try
            {
                foreach (Google.Protobuf.WellKnownTypes.Any any in response.Resources)
                {
                    resources.Add(Decode(type, any, response.VersionInfo));
                }
            }
            catch (ConfigException e)
            {
                error = e.Message;
            }
            IReadOnlyCollection<string> removed = [];
            if (error == null && type is XdsResourceType.Cluster or XdsResourceType.Listener)
            {
                // State of the World: CDS and LDS responses are complete; what they leave out is gone.
                var names = resources.Select(static r => r.Name).ToHashSet(StringComparer.Ordinal);
                removed = await Locked(() => _state.Names(type).Where(n => !names.Contains(n)).ToArray());
            }
            XdsUpdate update = error == null ? await ApplyAsync(type, resources, removed, start) : Rejection(type, resources.Count, error, start);
            if (update.Accepted)
            {
                _acceptedVersion[type] = response.VersionInfo;
                _shownVersion[type] = response.VersionInfo;
            }
            await Send(type, response.Nonce, update.Accepted ? null : new RpcStatus { Code = (int)StatusCode.Internal, Message = update.Error });
            Updated?.Invoke(update);
            // A changed list is sent as a new request with the whole list.
            foreach (var (follow, _, _) in await FollowAsync())
            {
                await Send(follow, _nonce.GetValueOrDefault(follow), null);
            }
            if (SecretNamesChanged(out _))
            {
                await SendSecrets(null);
            }
        }
    }

    // ADS-sourced secrets (an SdsSecretConfig whose sds_config is ads): the names asked, the version held.
    private static readonly Secrets.SecretSource s_adsSecrets = new(Secrets.SecretSourceKind.Ads, "");
    private string[] _secretNames = [];
    private string _secretVersion = "";

    private string SecretTypeUrl => _v2 ? XdsTypes.SecretV2 : XdsTypes.SecretV3;

    /// <summary>Whether the secret names the configuration asks of ADS changed since last sent (they are then taken as sent).</summary>
    private bool SecretNamesChanged(out string[] before)
    {
        before = _secretNames;
        string[] now = [.. _state.Secrets.Names(s_adsSecrets)];
        if (now.SequenceEqual(before))
        {
            return false;
        }
        _secretNames = now;
        return true;
    }

    /// <summary>Applies Secret resources from the ADS stream; the reason they were refused, or null.</summary>
    private string? ApplySecrets(IEnumerable<Google.Protobuf.WellKnownTypes.Any> resources, string version)
    {
        try
        {
            var protos = new List<Api.Tls.Secret>();
            foreach (Google.Protobuf.WellKnownTypes.Any any in resources)
            {
                protos.Add(Api.Tls.Secret.Parser.ParseFrom(any.Value));
            }
            _state.Secrets.Apply(s_adsSecrets, [.. protos.Select(static p => ConfigNode.FromMessage(p, $"Secret '{p.Name}'"))], version, protos);
            if (version.Length > 0)
            {
                _secretVersion = version;
            }
            return null;
        }
        catch (Exception e) when (e is ConfigException or InvalidProtocolBufferException)
        {
            ProxyLog.Write(LogLevel.Warning, $"xds: secrets rejected: {e.Message}");
            return e.Message;
        }
    }

    private async Task RunDeltaAsync()
    {
        using var call = _v2
            ? new Api.DiscoveryV2.AggregatedDiscoveryService.AggregatedDiscoveryServiceClient(_channel).DeltaAggregatedResources(cancellationToken: _stop.Token)
            : new AggregatedDiscoveryService.AggregatedDiscoveryServiceClient(_channel).DeltaAggregatedResources(cancellationToken: _stop.Token);
        bool first = true;
        _subscribed.Clear();
        Task Send(DeltaDiscoveryRequest request)
        {
            if (first || !_config.SetNodeOnFirstMessageOnly)
            {
                request.Node = _config.Node;
                first = false;
            }
            return call.RequestStream.WriteAsync(request);
        }

        foreach (XdsResourceType type in s_order)
        {
            if (!Wanted(type))
            {
                continue;
            }
            HashSet<string> names = Subscription(type);
            _subscribed[type] = names;
            if (type is XdsResourceType.Endpoint or XdsResourceType.Route && names.Count == 0)
            {
                continue;
            }
            var request = new DeltaDiscoveryRequest { TypeUrl = XdsTypes.TypeUrl(type, _v2) };
            // Wildcard CDS and LDS: an empty subscription list on the first request of the stream.
            if (type is XdsResourceType.Endpoint or XdsResourceType.Route)
            {
                request.ResourceNamesSubscribe.AddRange(names);
            }
            foreach (var (name, version) in await Locked(() => _state.Versions(type)))
            {
                if (type is XdsResourceType.Cluster or XdsResourceType.Listener || names.Contains(name))
                {
                    request.InitialResourceVersions[name] = version;
                }
            }
            await Send(request);
        }
        _secretNames = [.. _state.Secrets.Names(s_adsSecrets)];
        if (_secretNames.Length > 0)
        {
            var secrets = new DeltaDiscoveryRequest { TypeUrl = SecretTypeUrl };
            secrets.ResourceNamesSubscribe.AddRange(_secretNames);
            await Send(secrets);
        }
        while (await call.ResponseStream.MoveNext(_stop.Token))
        {
            _streamReceived = true;
            DeltaDiscoveryResponse response = call.ResponseStream.Current;
            long start = Stopwatch.GetTimestamp();
            if (response.TypeUrl is XdsTypes.SecretV3 or XdsTypes.SecretV2)
            {
                string? refused = ApplySecrets(response.Resources.Where(static r => r.Resource_ != null).Select(static r => r.Resource_), response.SystemVersionInfo);
                var secretAck = new DeltaDiscoveryRequest { TypeUrl = response.TypeUrl, ResponseNonce = response.Nonce };
                if (refused != null)
                {
                    secretAck.ErrorDetail = new RpcStatus { Code = (int)StatusCode.InvalidArgument, Message = refused };
                }
                await Send(secretAck);
                continue;
            }
            if (XdsTypes.ResourceType(response.TypeUrl) is not XdsResourceType type)
            {
                NoteUnknownType(response.TypeUrl);
                await Send(new DeltaDiscoveryRequest { TypeUrl = response.TypeUrl, ResponseNonce = response.Nonce });
                continue;
            }
            var resources = new List<XdsResource>(response.Resources.Count);
            string? error = null;
            try
            {
                foreach (Resource resource in response.Resources)
                {
                    if (resource.Resource_ == null)
                    {
                        continue;
                    }
                    XdsResource decoded = Decode(type, resource.Resource_, resource.Version);
                    if (resource.Name.Length > 0 && resource.Name != decoded.Name)
                    {
                        throw new ConfigException($"resource '{resource.Name}' holds a {type} named '{decoded.Name}'");
                    }
                    resources.Add(decoded);
                }
            }
            catch (ConfigException e)
            {
                error = e.Message;
            }
            XdsUpdate update = error == null ? await ApplyAsync(type, resources, response.RemovedResources, start) : Rejection(type, resources.Count, error, start);
            var ack = new DeltaDiscoveryRequest { TypeUrl = response.TypeUrl, ResponseNonce = response.Nonce };
            if (update.Accepted && response.SystemVersionInfo.Length > 0)
            {
                _shownVersion[type] = response.SystemVersionInfo;
            }
            if (!update.Accepted)
            {
                ack.ErrorDetail = new RpcStatus { Code = (int)StatusCode.Internal, Message = update.Error };
            }
            await Send(ack);
            Updated?.Invoke(update);
            foreach (var (follow, now, before) in await FollowAsync())
            {
                // A changed subscription goes as its own nonce-less request.
                var change = new DeltaDiscoveryRequest { TypeUrl = XdsTypes.TypeUrl(follow, _v2) };
                change.ResourceNamesSubscribe.AddRange(now.Where(n => !before.Contains(n)));
                change.ResourceNamesUnsubscribe.AddRange(before.Where(n => !now.Contains(n)));
                await Send(change);
            }
            if (SecretNamesChanged(out string[] secretsBefore))
            {
                var change = new DeltaDiscoveryRequest { TypeUrl = SecretTypeUrl };
                change.ResourceNamesSubscribe.AddRange(_secretNames.Except(secretsBefore));
                change.ResourceNamesUnsubscribe.AddRange(secretsBefore.Except(_secretNames));
                await Send(change);
            }
        }
    }

    /// <summary>
    /// EDS and RDS follow what CDS and LDS reference: the types whose name list changed since it was last
    /// sent (now taken as sent), with the names before; resources no longer referenced are dropped.
    /// </summary>
    private async Task<List<(XdsResourceType Type, HashSet<string> Now, HashSet<string> Before)>> FollowAsync()
    {
        var changed = new List<(XdsResourceType, HashSet<string>, HashSet<string>)>(2);
        foreach (XdsResourceType follow in new[] { XdsResourceType.Endpoint, XdsResourceType.Route })
        {
            HashSet<string> now = Subscription(follow);
            HashSet<string> before = _subscribed.GetValueOrDefault(follow) ?? [];
            if (!Wanted(follow) || now.SetEquals(before))
            {
                continue;
            }
            _subscribed[follow] = now;
            await Forget(follow, before.Where(n => !now.Contains(n)));
            changed.Add((follow, now, before));
        }
        return changed;
    }

    /// <summary>
    /// The resources held and the version of the last response accepted for each type (/config_dump);
    /// null when the state is busy for longer than <paramref name="wait"/>.
    /// </summary>
    public (XdsDump Resources, IReadOnlyDictionary<XdsResourceType, string> Versions)? Dump(TimeSpan wait)
    {
        if (!_lock.Wait(wait))
        {
            return null;
        }
        try
        {
            return (_state.Dump(), new Dictionary<XdsResourceType, string>(_shownVersion));
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Reads the state under the lock (the warming timer may be building a snapshot).</summary>
    private async Task<T> Locked<T>(Func<T> read)
    {
        await _lock.WaitAsync();
        try
        {
            return read();
        }
        finally
        {
            _lock.Release();
        }
    }

    private async Task Forget(XdsResourceType type, IEnumerable<string> names)
    {
        await _lock.WaitAsync();
        try
        {
            _state.Forget(type, [.. names]);
        }
        finally
        {
            _lock.Release();
        }
    }

    private bool Wanted(XdsResourceType type) => type switch
    {
        XdsResourceType.Cluster or XdsResourceType.Endpoint => _config.Clusters,
        _ => _config.Listeners,
    };

    private HashSet<string> Subscription(XdsResourceType type) => type switch
    {
        XdsResourceType.Endpoint => _state.EndpointNames as HashSet<string> ?? [.. _state.EndpointNames],
        XdsResourceType.Route => _state.RouteNames as HashSet<string> ?? [.. _state.RouteNames],
        _ => [],
    };

    private void NoteUnknownType(string typeUrl)
    {
        if (!_unknownNoted)
        {
            _unknownNoted = true;
            ProxyLog.Write(LogLevel.Warning, $"xds: resources of type {typeUrl} are not used here; ignored");
        }
    }

    private static XdsResource Decode(XdsResourceType type, Google.Protobuf.WellKnownTypes.Any any, string version)
    {
        if (XdsTypes.ResourceType(any.TypeUrl) != type)
        {
            throw new ConfigException($"a {type} response holds a resource of type '{any.TypeUrl}'");
        }
        if (type == XdsResourceType.Route)
        {
            // Split, not decoded: only the virtual hosts that changed will be.
            var (shell, hosts) = RouteConfigurationParts.Split(any.Value.Memory);
            return shell.Name.Length > 0 ? new XdsResource(shell.Name, version, shell, hosts) : throw new ConfigException($"a {type} resource has no name");
        }
        IMessage message = XdsTypes.TryUnpack(any.TypeUrl, any.Value, out string? error)
            ?? throw new ConfigException($"a {type} resource does not decode: {error}");
        string name = message switch
        {
            Api.Cluster.Cluster c => c.Name,
            Api.Endpoint.ClusterLoadAssignment a => a.ClusterName,
            Api.Listener.Listener l => l.Name,
            Api.Route.RouteConfiguration r => r.Name,
            _ => "",
        };
        if (name.Length == 0)
        {
            throw new ConfigException($"a {type} resource has no name");
        }
        return new XdsResource(name, version, message);
    }

    private XdsUpdate Rejection(XdsResourceType type, int count, string error, long start)
    {
        Rejected++;
        if (s_updateStats.TryGetValue(type, out var stats))
        {
            stats.Attempt.Inc();
            stats.Rejected.Inc();
        }
        ProxyLog.Write(LogLevel.Error, $"xds: {type} update rejected (NACK), the previous configuration keeps serving: {error}");
        return new XdsUpdate(type, count, 0, false, error, Stopwatch.GetElapsedTime(start), false);
    }

    private async Task<XdsUpdate> ApplyAsync(XdsResourceType type, List<XdsResource> resources, IReadOnlyCollection<string> removed, long start)
    {
        await _lock.WaitAsync();
        try
        {
            ProxySnapshot? snapshot;
            try
            {
                _state.Apply(type, resources, removed);
                snapshot = _state.Build();
            }
            catch (ConfigException e)
            {
                return Rejection(type, resources.Count, e.Message, start);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A bug of ours, not a bad resource: still refuse the update rather than stop following.
                ProxyLog.Write(LogLevel.Critical, $"xds: {type} update failed: {e}");
                return Rejection(type, resources.Count, $"internal error: {e.GetType().Name}: {e.Message}", start);
            }
            TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
            if (snapshot != null)
            {
                await _publish(snapshot);
                elapsed = Stopwatch.GetElapsedTime(start);
            }
            Accepted++;
            if (s_updateStats.TryGetValue(type, out var stats))
            {
                stats.Attempt.Inc();
                stats.Success.Inc();
            }
            _clustersReceived |= type == XdsResourceType.Cluster;
            _listenersReceived |= type == XdsResourceType.Listener;
            CheckInitialized();
            LogNewWarnings();
            ProxyLog.Write(LogLevel.Debug, $"xds: {type} update applied: {resources.Count} resources, {removed.Count} removed, {elapsed.TotalMilliseconds:F1} ms to {(snapshot != null ? "swap" : "no change")}");
            return new XdsUpdate(type, resources.Count, removed.Count, true, null, elapsed, snapshot != null);
        }
        finally
        {
            _lock.Release();
        }
    }

    private void LogNewWarnings()
    {
        IReadOnlyList<string> warnings = _state.Warnings;
        for (; _warningsLogged < warnings.Count; _warningsLogged++)
        {
            ProxyLog.Write(LogLevel.Warning, $"xds: {warnings[_warningsLogged]}");
        }
    }

    /// <summary>Once a second while something warms: initial_fetch_timeout may have passed.</summary>
    private async Task WarmingLoopAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                // A second, or at once when a secret a warming listener or cluster waits for arrives.
                await _secretsChanged.WaitAsync(TimeSpan.FromSeconds(1), _stop.Token);
                await _lock.WaitAsync(_stop.Token);
                try
                {
                    if (_state.Warming && _state.Build() is ProxySnapshot snapshot)
                    {
                        await _publish(snapshot);
                    }
                    CheckInitialized();
                }
                catch (ConfigException e)
                {
                    ProxyLog.Write(LogLevel.Error, $"xds: {e.Message}");
                }
                finally
                {
                    _lock.Release();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _state.Secrets.Changed -= OnSecretsChanged;
        await _stop.CancelAsync();
        try
        {
            await Task.WhenAll(_loop, _warmingLoop);
        }
        catch (OperationCanceledException)
        {
        }
        _channel.Dispose();
        _stop.Dispose();
        _lock.Dispose();
        _secretsChanged.Dispose();
    }
}
