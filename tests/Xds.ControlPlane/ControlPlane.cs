using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Proxy.Xds;
using Proxy.Xds.Api.Discovery;

namespace Xds.ControlPlane;

/// <summary>
/// A small real xDS control plane: gRPC ADS over h2c (TCP or a unix socket), both State of the World and
/// Delta, both Envoy API v3 and v2 (v2 streams get v2 type URLs on the same bytes, as Istio 1.5 sent).
/// Tests put resources in; every open stream gets what changed, as istiod would push it. Every request
/// the proxy sends is recorded, so ACKs, NACKs, nodes and subscriptions can be asserted.
/// </summary>
public sealed class ControlPlane : IAsyncDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<XdsResourceType, Dictionary<string, (string Version, Any Resource)>> _resources = new()
    {
        [XdsResourceType.Cluster] = new(StringComparer.Ordinal),
        [XdsResourceType.Endpoint] = new(StringComparer.Ordinal),
        [XdsResourceType.Listener] = new(StringComparer.Ordinal),
        [XdsResourceType.Route] = new(StringComparer.Ordinal),
    };
    private readonly List<Action> _streams = [];
    private CancellationTokenSource _closer = new();
    private long _version;
    private long _nonce;
    private WebApplication? _app;

    private ControlPlane(string? unixPath) => UnixPath = unixPath;

    public int Port { get; private set; }
    public string? UnixPath { get; }

    /// <summary>The proxy's address for it: http://127.0.0.1:port or unix:path.</summary>
    public string Target => UnixPath != null ? "unix:" + UnixPath : $"http://127.0.0.1:{Port}";

    /// <summary>Every request received, in order (SotW DiscoveryRequest or DeltaDiscoveryRequest).</summary>
    public ConcurrentQueue<IMessage> Requests { get; } = new();

    public int StreamsOpened;

    /// <summary>Serve over TLS (istiod's 15012): this certificate; clients must present one chained to <see cref="ClientRoot"/>.</summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? ServerCertificate { get; private init; }
    public System.Security.Cryptography.X509Certificates.X509Certificate2? ClientRoot { get; private init; }

    /// <summary>The subject alternative name extension (as text) of the last client certificate accepted over TLS.</summary>
    public string? LastClientSans { get; private set; }

    /// <summary>A control plane on TCP that requires mutual TLS.</summary>
    public static async Task<ControlPlane> StartTlsAsync(System.Security.Cryptography.X509Certificates.X509Certificate2 serverCertificate, System.Security.Cryptography.X509Certificates.X509Certificate2 clientRoot)
    {
        var plane = new ControlPlane(null) { ServerCertificate = serverCertificate, ClientRoot = clientRoot };
        await plane.RestartAsync();
        return plane;
    }

    public static async Task<ControlPlane> StartAsync(string? unixPath = null)
    {
        var plane = new ControlPlane(unixPath);
        await plane.RestartAsync();
        return plane;
    }

    /// <summary>Starts (again) listening, on the same port as before if there was one.</summary>
    public async Task RestartAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddGrpc(o => o.MaxReceiveMessageSize = 64 * 1024 * 1024);
        builder.Services.AddSingleton(this);
        builder.WebHost.ConfigureKestrel(k =>
        {
            if (UnixPath != null)
            {
                File.Delete(UnixPath);
                k.ListenUnixSocket(UnixPath, o => o.Protocols = HttpProtocols.Http2);
            }
            else
            {
                k.Listen(IPAddress.Loopback, Port, o =>
                {
                    o.Protocols = HttpProtocols.Http2;
                    if (ServerCertificate != null)
                    {
                        o.UseHttps(ServerCertificate, https =>
                        {
                            https.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate;
                            https.ClientCertificateValidation = (certificate, _, _) =>
                            {
                                using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
                                chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
                                chain.ChainPolicy.CustomTrustStore.Add(ClientRoot!);
                                chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
                                bool trusted = chain.Build(certificate);
                                if (trusted)
                                {
                                    LastClientSans = certificate.Extensions.OfType<System.Security.Cryptography.X509Certificates.X509SubjectAlternativeNameExtension>()
                                        .Select(static e => e.RawData).Select(static raw => System.Text.Encoding.ASCII.GetString(raw)).FirstOrDefault();
                                }
                                return trusted;
                            };
                        });
                    }
                });
            }
            k.Limits.Http2.MaxStreamsPerConnection = 1000;
        });
        WebApplication app = builder.Build();
        app.MapGrpcService<V3Service>();
        app.MapGrpcService<V2Service>();
        await app.StartAsync();
        if (UnixPath == null)
        {
            Port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        }
        _app = app;
    }

    /// <summary>Kills the control plane: every stream ends at once, as when istiod's pod goes away.</summary>
    public async Task StopAsync()
    {
        WebApplication? app = _app;
        _app = null;
        if (app != null)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            await app.StopAsync(cts.Token);
            await app.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync() => await StopAsync();

    /// <summary>Adds or replaces resources of a type (by name) and pushes the change to every stream.</summary>
    public void Set(XdsResourceType type, params IMessage[] resources)
    {
        lock (_gate)
        {
            string version = (++_version).ToString(System.Globalization.CultureInfo.InvariantCulture);
            foreach (IMessage resource in resources)
            {
                _resources[type][NameOf(resource)] = (version, Any.Pack(resource));
            }
        }
        Notify();
    }

    // Secrets served over ADS (State of the World streams): an SdsSecretConfig with sds_config: ads.
    private readonly Dictionary<string, Proxy.Xds.Api.Tls.Secret> _secrets = new(StringComparer.Ordinal);

    /// <summary>Adds or replaces secrets and pushes them to every stream that asked for them.</summary>
    public void SetSecrets(params Proxy.Xds.Api.Tls.Secret[] secrets)
    {
        lock (_gate)
        {
            _version++;
            foreach (Proxy.Xds.Api.Tls.Secret secret in secrets)
            {
                _secrets[secret.Name] = secret;
            }
        }
        Notify();
    }

    /// <summary>Puts one raw resource (any bytes, any type URL) under a name: for broken-resource tests.</summary>
    public void SetRaw(XdsResourceType type, string name, Any resource)
    {
        lock (_gate)
        {
            _resources[type][name] = ((++_version).ToString(System.Globalization.CultureInfo.InvariantCulture), resource);
        }
        Notify();
    }

    /// <summary>Replaces every resource of a type at once: one push with the new ones and the removals.</summary>
    public void Replace(XdsResourceType type, params IMessage[] resources)
    {
        lock (_gate)
        {
            string version = (++_version).ToString(System.Globalization.CultureInfo.InvariantCulture);
            _resources[type].Clear();
            foreach (IMessage resource in resources)
            {
                _resources[type][NameOf(resource)] = (version, Any.Pack(resource));
            }
        }
        Notify();
    }

    /// <summary>
    /// Ends every open stream gracefully (status OK), as istiod does when a connection reaches its maximum
    /// age (about every 30 minutes): the proxy is expected to reconnect at once, with the versions it holds.
    /// </summary>
    public void CloseStreams()
    {
        CancellationTokenSource closer;
        lock (_gate)
        {
            closer = _closer;
            _closer = new CancellationTokenSource();
        }
        closer.Cancel();
        closer.Dispose();
    }

    public void Remove(XdsResourceType type, params string[] names)
    {
        lock (_gate)
        {
            _version++;
            foreach (string name in names)
            {
                _resources[type].Remove(name);
            }
        }
        Notify();
    }

    private void Notify()
    {
        Action[] streams;
        lock (_gate)
        {
            streams = [.. _streams];
        }
        foreach (Action notify in streams)
        {
            notify();
        }
    }

    public static string NameOf(IMessage resource) => resource switch
    {
        Proxy.Xds.Api.Cluster.Cluster c => c.Name,
        Proxy.Xds.Api.Endpoint.ClusterLoadAssignment a => a.ClusterName,
        Proxy.Xds.Api.Listener.Listener l => l.Name,
        Proxy.Xds.Api.Route.RouteConfiguration r => r.Name,
        _ => throw new ArgumentException($"not a resource: {resource.Descriptor.FullName}"),
    };

    /// <summary>ACKs and NACKs seen for a type (a request carrying a nonce; a NACK also carries error_detail).</summary>
    public (int Acks, int Nacks, string? LastError) Responses(XdsResourceType type)
    {
        int acks = 0, nacks = 0;
        string? error = null;
        foreach (IMessage m in Requests)
        {
            (string url, string nonce, Proxy.Xds.Api.Rpc.Status? detail) = m switch
            {
                DiscoveryRequest r => (r.TypeUrl, r.ResponseNonce, r.ErrorDetail),
                DeltaDiscoveryRequest d => (d.TypeUrl, d.ResponseNonce, d.ErrorDetail),
                _ => ("", "", null),
            };
            if (nonce.Length == 0 || XdsTypes.ResourceType(url) != type)
            {
                continue;
            }
            if (detail != null)
            {
                nacks++;
                error = detail.Message;
            }
            else
            {
                acks++;
            }
        }
        return (acks, nacks, error);
    }

    /// <summary>Waits until <paramref name="condition"/> holds (polling), or fails after <paramref name="timeout"/>.</summary>
    public static async Task WaitForAsync(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        DateTime deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(20));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting for {what}");
            }
            await Task.Delay(1);
        }
    }

    private static string ToV2(string typeUrl) => XdsTypes.ResourceType(typeUrl) is XdsResourceType t ? XdsTypes.TypeUrl(t, v2: true) : typeUrl;

    private Any ForStream(Any resource, bool v2) => v2 ? new Any { TypeUrl = ToV2(resource.TypeUrl), Value = resource.Value } : resource;

    private string NextNonce() => Interlocked.Increment(ref _nonce).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>One State-of-the-World stream: a response per type whenever the version moved or the subscription changed.</summary>
    internal async Task RunSotwAsync(IAsyncStreamReader<DiscoveryRequest> requests, IServerStreamWriter<DiscoveryResponse> responses, bool v2, ServerCallContext context)
    {
        Interlocked.Increment(ref StreamsOpened);
        var events = Channel.CreateUnbounded<DiscoveryRequest?>();
        Action notify = () => events.Writer.TryWrite(null);
        lock (_gate)
        {
            _streams.Add(notify);
        }
        var types = new Dictionary<XdsResourceType, (string Url, HashSet<string>? Names, long Sent)>();
        (string Url, string[] Names, long Sent)? secrets = null;
        using var linked = Linked(context);
        Task reader = PumpAsync(requests, events.Writer, linked.Token);
        try
        {
            await foreach (DiscoveryRequest? request in events.Reader.ReadAllAsync(linked.Token))
            {
                if (request != null && request.TypeUrl is XdsTypes.SecretV3 or XdsTypes.SecretV2)
                {
                    bool changed = secrets == null || !request.ResourceNames.SequenceEqual(secrets.Value.Names);
                    secrets = (request.TypeUrl, [.. request.ResourceNames], changed ? -1 : secrets!.Value.Sent);
                }
                if (secrets is var (secretUrl, secretNames, secretSent))
                {
                    DiscoveryResponse? secretResponse = null;
                    lock (_gate)
                    {
                        if (secretSent != _version)
                        {
                            secretResponse = new DiscoveryResponse { TypeUrl = secretUrl, VersionInfo = _version.ToString(System.Globalization.CultureInfo.InvariantCulture), Nonce = NextNonce() };
                            foreach (string name in secretNames)
                            {
                                if (_secrets.TryGetValue(name, out Proxy.Xds.Api.Tls.Secret? secret))
                                {
                                    secretResponse.Resources.Add(new Any { TypeUrl = secretUrl, Value = secret.ToByteString() });
                                }
                            }
                            secrets = (secretUrl, secretNames, _version);
                        }
                    }
                    if (secretResponse is { Resources.Count: > 0 })
                    {
                        await responses.WriteAsync(secretResponse);
                    }
                }
                if (request != null && XdsTypes.ResourceType(request.TypeUrl) is XdsResourceType asked)
                {
                    HashSet<string>? names = asked is XdsResourceType.Cluster or XdsResourceType.Listener ? null : [.. request.ResourceNames];
                    bool changed = !types.TryGetValue(asked, out var known) || request.ResponseNonce.Length == 0
                        || (names != null && (known.Names == null || !names.SetEquals(known.Names)));
                    types[asked] = (request.TypeUrl, names, changed ? -1 : known.Sent);
                }
                foreach (var (type, (url, names, sent)) in types.ToList())
                {
                    DiscoveryResponse response;
                    lock (_gate)
                    {
                        if (sent == _version)
                        {
                            continue;
                        }
                        response = new DiscoveryResponse { TypeUrl = url, VersionInfo = _version.ToString(System.Globalization.CultureInfo.InvariantCulture), Nonce = NextNonce() };
                        foreach (var (name, (_, resource)) in _resources[type])
                        {
                            if (names == null || names.Contains(name))
                            {
                                response.Resources.Add(ForStream(resource, v2));
                            }
                        }
                        types[type] = (url, names, _version);
                    }
                    await responses.WriteAsync(response);
                }
            }
        }
        catch (OperationCanceledException) when (!context.CancellationToken.IsCancellationRequested)
        {
            // CloseStreams: end the call with status OK.
        }
        finally
        {
            lock (_gate)
            {
                _streams.Remove(notify);
            }
            await reader;
        }
    }

    /// <summary>One Delta stream: per type what changed since what this stream has, and what was removed.</summary>
    internal async Task RunDeltaAsync(IAsyncStreamReader<DeltaDiscoveryRequest> requests, IServerStreamWriter<DeltaDiscoveryResponse> responses, bool v2, ServerCallContext context)
    {
        Interlocked.Increment(ref StreamsOpened);
        var events = Channel.CreateUnbounded<DeltaDiscoveryRequest?>();
        Action notify = () => events.Writer.TryWrite(null);
        lock (_gate)
        {
            _streams.Add(notify);
        }
        var types = new Dictionary<XdsResourceType, DeltaType>();
        using var linked = Linked(context);
        Task reader = PumpAsync(requests, events.Writer, linked.Token);
        try
        {
            await foreach (DeltaDiscoveryRequest? request in events.Reader.ReadAllAsync(linked.Token))
            {
                if (request != null && request.ResponseNonce.Length == 0 && XdsTypes.ResourceType(request.TypeUrl) is XdsResourceType asked)
                {
                    if (!types.TryGetValue(asked, out DeltaType? state))
                    {
                        state = types[asked] = new DeltaType(request.TypeUrl);
                        // Legacy wildcard: the first request of CDS or LDS with no names.
                        state.Wildcard = request.ResourceNamesSubscribe.Count == 0 && asked is XdsResourceType.Cluster or XdsResourceType.Listener;
                        foreach (var (name, version) in request.InitialResourceVersions)
                        {
                            state.Sent[name] = version;
                        }
                    }
                    foreach (string name in request.ResourceNamesSubscribe)
                    {
                        if (name == "*")
                        {
                            state.Wildcard = true;
                        }
                        else
                        {
                            state.Names.Add(name);
                        }
                    }
                    foreach (string name in request.ResourceNamesUnsubscribe)
                    {
                        state.Names.Remove(name);
                        state.Sent.Remove(name);
                    }
                }
                foreach (var (type, state) in types)
                {
                    var response = new DeltaDiscoveryResponse { TypeUrl = state.Url, SystemVersionInfo = _version.ToString(System.Globalization.CultureInfo.InvariantCulture) };
                    lock (_gate)
                    {
                        var resources = _resources[type];
                        foreach (var (name, (version, resource)) in resources)
                        {
                            if ((state.Wildcard || state.Names.Contains(name)) && (!state.Sent.TryGetValue(name, out string? had) || had != version))
                            {
                                response.Resources.Add(new Resource { Name = name, Version = version, Resource_ = ForStream(resource, v2) });
                                state.Sent[name] = version;
                            }
                        }
                        foreach (string name in state.Sent.Keys.Where(n => !resources.ContainsKey(n)).ToList())
                        {
                            response.RemovedResources.Add(name);
                            state.Sent.Remove(name);
                        }
                    }
                    if (response.Resources.Count > 0 || response.RemovedResources.Count > 0)
                    {
                        response.Nonce = NextNonce();
                        await responses.WriteAsync(response);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (!context.CancellationToken.IsCancellationRequested)
        {
            // CloseStreams: end the call with status OK.
        }
        finally
        {
            lock (_gate)
            {
                _streams.Remove(notify);
            }
            await reader;
        }
    }

    private sealed class DeltaType(string url)
    {
        public string Url { get; } = url;
        public bool Wildcard { get; set; }
        public HashSet<string> Names { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, string> Sent { get; } = new(StringComparer.Ordinal);
    }

    private CancellationTokenSource Linked(ServerCallContext context)
    {
        lock (_gate)
        {
            return CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _closer.Token);
        }
    }

    private async Task PumpAsync<T>(IAsyncStreamReader<T> requests, ChannelWriter<T?> events, CancellationToken token) where T : class, IMessage
    {
        try
        {
            while (await requests.MoveNext(token))
            {
                Requests.Enqueue(requests.Current);
                events.TryWrite(requests.Current);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or RpcException or InvalidOperationException)
        {
        }
        finally
        {
            events.TryComplete();
        }
    }

    private sealed class V3Service(ControlPlane plane) : AggregatedDiscoveryService.AggregatedDiscoveryServiceBase
    {
        public override Task StreamAggregatedResources(IAsyncStreamReader<DiscoveryRequest> requestStream, IServerStreamWriter<DiscoveryResponse> responseStream, ServerCallContext context) =>
            plane.RunSotwAsync(requestStream, responseStream, v2: false, context);

        public override Task DeltaAggregatedResources(IAsyncStreamReader<DeltaDiscoveryRequest> requestStream, IServerStreamWriter<DeltaDiscoveryResponse> responseStream, ServerCallContext context) =>
            plane.RunDeltaAsync(requestStream, responseStream, v2: false, context);
    }

    private sealed class V2Service(ControlPlane plane) : Proxy.Xds.Api.DiscoveryV2.AggregatedDiscoveryService.AggregatedDiscoveryServiceBase
    {
        public override Task StreamAggregatedResources(IAsyncStreamReader<DiscoveryRequest> requestStream, IServerStreamWriter<DiscoveryResponse> responseStream, ServerCallContext context) =>
            plane.RunSotwAsync(requestStream, responseStream, v2: true, context);

        public override Task DeltaAggregatedResources(IAsyncStreamReader<DeltaDiscoveryRequest> requestStream, IServerStreamWriter<DeltaDiscoveryResponse> responseStream, ServerCallContext context) =>
            plane.RunDeltaAsync(requestStream, responseStream, v2: true, context);
    }
}
