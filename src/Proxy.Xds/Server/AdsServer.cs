using System.Globalization;
using System.Net;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Proxy.Core.Grpc;
using Proxy.Xds.Api.Discovery;

namespace Proxy.Xds.Server;

/// <summary>
/// An ADS server (Envoy API v3, State of the World and Delta) on our own gRPC server: it serves the
/// resources it is given to any number of proxies, and pushes to every open stream what changed when
/// <see cref="Publish"/> is called. A resource's version is a hash of its bytes, so an unchanged
/// resource is never sent again on a Delta stream.
/// </summary>
public sealed class AdsServer : IAsyncDisposable
{
    private const string SotwPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
    private const string DeltaPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

    private readonly object _gate = new();
    private Dictionary<XdsResourceType, Dictionary<string, (string Version, Any Resource)>> _resources = Empty();
    // The names that changed (added, changed, removed) from the version before _version to it, per type.
    private Dictionary<XdsResourceType, List<string>> _changed = [];
    private readonly List<Action> _streams = [];
    private readonly GrpcServer _server;
    private long _version;
    private long _nonce;
    private Dictionary<IMessage, (string Version, Any Resource)> _packed = new(ReferenceEqualityComparer.Instance);

    public AdsServer(EndPoint address)
    {
        _server = new GrpcServer(address, OnCall);
    }

    public EndPoint EndPoint => _server.EndPoint;

    /// <summary>The version of the configuration now served (moves on every change).</summary>
    public long Version => Interlocked.Read(ref _version);

    /// <summary>Streams open now.</summary>
    public int Streams
    {
        get
        {
            lock (_gate)
            {
                return _streams.Count;
            }
        }
    }

    /// <summary>Requests that NACKed a response (error_detail set), with their message; for diagnostics.</summary>
    public event Action<string>? Nacked;

    public void Start() => _server.Start();

    private static Dictionary<XdsResourceType, Dictionary<string, (string Version, Any Resource)>> Empty() => new()
    {
        [XdsResourceType.Cluster] = new(StringComparer.Ordinal),
        [XdsResourceType.Endpoint] = new(StringComparer.Ordinal),
        [XdsResourceType.Listener] = new(StringComparer.Ordinal),
        [XdsResourceType.Route] = new(StringComparer.Ordinal),
    };

    /// <summary>Replaces the whole served configuration; streams get what changed. Returns whether anything did.</summary>
    public bool Publish(IEnumerable<(XdsResourceType Type, string Name, IMessage Resource)> resources)
    {
        var next = Empty();
        var packedNow = new Dictionary<IMessage, (string, Any)>(ReferenceEqualityComparer.Instance);
        foreach (var (type, name, resource) in resources)
        {
            // The same object as in the last publish (a translator that reuses what did not change):
            // not serialized and hashed again.
            if (!_packed.TryGetValue(resource, out var entry))
            {
                Any packed = resource is Api.Route.RouteConfiguration routes && routes.VirtualHosts.Count > 16 ? PackRoutes(routes) : Any.Pack(resource);
                entry = (Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(packed.Value.Span)).Substring(0, 16), packed);
            }
            packedNow[resource] = entry;
            next[type][name] = entry;
        }
        _packed = packedNow;
        Action[] notify;
        lock (_gate)
        {
            var changes = new Dictionary<XdsResourceType, List<string>>();
            bool changed = false;
            foreach (var (type, map) in next)
            {
                var old = _resources[type];
                var names = changes[type] = [];
                foreach (var (name, (version, _)) in map)
                {
                    if (!old.TryGetValue(name, out var had) || had.Version != version)
                    {
                        names.Add(name);
                    }
                }
                foreach (string name in old.Keys)
                {
                    if (!map.ContainsKey(name))
                    {
                        names.Add(name);
                    }
                }
                changed |= names.Count > 0;
            }
            if (!changed)
            {
                return false;
            }
            _resources = next;
            _changed = changes;
            _version++;
            notify = [.. _streams];
        }
        foreach (Action a in notify)
        {
            a();
        }
        return true;
    }

    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<Api.Route.VirtualHost, byte[]> _hostBytes = [];

    /// <summary>
    /// A large route configuration, encoded from its virtual hosts' cached encodings: a one-route change
    /// re-encodes one virtual host, not a thousand (fields may come in any order on the wire).
    /// </summary>
    private Any PackRoutes(Api.Route.RouteConfiguration routes)
    {
        var shell = new Api.Route.RouteConfiguration();
        shell.MergeFrom(routes);
        shell.VirtualHosts.Clear();
        var hosts = new byte[routes.VirtualHosts.Count][];
        int size = shell.CalculateSize();
        for (int i = 0; i < hosts.Length; i++)
        {
            hosts[i] = _hostBytes.GetValue(routes.VirtualHosts[i], static h => h.ToByteArray());
            size += 1 + CodedOutputStream.ComputeLengthSize(hosts[i].Length) + hosts[i].Length;
        }
        // Encoded once into an array of the exact size, which the Any then wraps (never changed after).
        byte[] encoded = new byte[size];
        var output = new CodedOutputStream(encoded);
        shell.WriteTo(output);
        foreach (byte[] host in hosts)
        {
            output.WriteTag(Api.Route.RouteConfiguration.VirtualHostsFieldNumber, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(UnsafeByteOperations.UnsafeWrap(host)); // length, then the encoded host
        }
        output.Flush();
        output.CheckNoSpaceLeft();
        return new Any { TypeUrl = "type.googleapis.com/" + Api.Route.RouteConfiguration.Descriptor.FullName, Value = UnsafeByteOperations.UnsafeWrap(encoded) };
    }

    private bool OnCall(GrpcServerStream stream)
    {
        if (stream.Path == SotwPath)
        {
            _ = RunSotwAsync(stream);
            return true;
        }
        if (stream.Path == DeltaPath)
        {
            _ = RunDeltaAsync(stream);
            return true;
        }
        return false;
    }

    /// <summary>Encodes a response straight into a pooled buffer the stream sends from (a route configuration is large; no copies).</summary>
    private static bool Send(GrpcServerStream stream, IMessage response)
    {
        int size = response.CalculateSize();
        byte[] framed = System.Buffers.ArrayPool<byte>.Shared.Rent(5 + size);
        response.WriteTo(framed.AsSpan(5, size));
        return stream.SendFramed(framed, size);
    }

    private string NextNonce() => Interlocked.Increment(ref _nonce).ToString(CultureInfo.InvariantCulture);

    /// <summary>Reads the stream's requests into one queue with change notifications (null), until it ends.</summary>
    private async Task PumpAsync<T>(GrpcServerStream stream, System.Threading.Channels.ChannelWriter<T?> events, MessageParser<T> parser) where T : class, IMessage<T>
    {
        try
        {
            await foreach (byte[] message in stream.Requests.ReadAllAsync(stream.Aborted))
            {
                T request;
                try
                {
                    request = parser.ParseFrom(message);
                }
                catch (InvalidProtocolBufferException)
                {
                    stream.Finish(Core.Forwarding.GrpcStatus.Internal, "cannot decode the request");
                    break;
                }
                events.TryWrite(request);
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            events.TryComplete();
        }
    }

    private async Task RunSotwAsync(GrpcServerStream stream)
    {
        var events = System.Threading.Channels.Channel.CreateUnbounded<DiscoveryRequest?>();
        Action notify = () => events.Writer.TryWrite(null);
        lock (_gate)
        {
            _streams.Add(notify);
        }
        var types = new Dictionary<XdsResourceType, (string Url, HashSet<string>? Names, long Sent)>();
        Task reader = PumpAsync(stream, events.Writer, DiscoveryRequest.Parser);
        try
        {
            await foreach (DiscoveryRequest? request in events.Reader.ReadAllAsync())
            {
                if (request != null && XdsTypes.ResourceType(request.TypeUrl) is XdsResourceType asked)
                {
                    if (request.ErrorDetail != null)
                    {
                        Nacked?.Invoke($"{request.TypeUrl} version {request.VersionInfo}: {request.ErrorDetail.Message}");
                    }
                    // CDS and LDS are wildcard; RDS and EDS name what they want.
                    HashSet<string>? names = asked is XdsResourceType.Cluster or XdsResourceType.Listener && request.ResourceNames.Count == 0 ? null : [.. request.ResourceNames];
                    bool changed = !types.TryGetValue(asked, out var known) || request.ResponseNonce.Length == 0
                        || (names == null) != (known.Names == null) || (names != null && !names.SetEquals(known.Names!));
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
                        response = new DiscoveryResponse { TypeUrl = url, VersionInfo = _version.ToString(CultureInfo.InvariantCulture), Nonce = NextNonce() };
                        foreach (var (name, (_, resource)) in _resources[type])
                        {
                            if (names == null || names.Contains(name))
                            {
                                response.Resources.Add(resource);
                            }
                        }
                        types[type] = (url, names, _version);
                    }
                    if (!Send(stream, response))
                    {
                        return;
                    }
                }
            }
            stream.Finish(Core.Forwarding.GrpcStatus.Ok);
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

        /// <summary>The version last compared against in full or by its changes; -1: compare in full next time.</summary>
        public long Compared { get; set; } = -1;
    }

    private async Task RunDeltaAsync(GrpcServerStream stream)
    {
        var events = System.Threading.Channels.Channel.CreateUnbounded<DeltaDiscoveryRequest?>();
        Action notify = () => events.Writer.TryWrite(null);
        lock (_gate)
        {
            _streams.Add(notify);
        }
        var types = new Dictionary<XdsResourceType, DeltaType>();
        Task reader = PumpAsync(stream, events.Writer, DeltaDiscoveryRequest.Parser);
        try
        {
            await foreach (DeltaDiscoveryRequest? request in events.Reader.ReadAllAsync())
            {
                if (request != null && request.ErrorDetail != null)
                {
                    Nacked?.Invoke($"{request.TypeUrl}: {request.ErrorDetail.Message}");
                }
                if (request != null && XdsTypes.ResourceType(request.TypeUrl) is XdsResourceType asked)
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
                    if (request.ResourceNamesSubscribe.Count > 0 || request.ResourceNamesUnsubscribe.Count > 0)
                    {
                        state.Compared = -1;
                    }
                }
                foreach (var (type, state) in types)
                {
                    var response = new DeltaDiscoveryResponse { TypeUrl = state.Url };
                    Dictionary<string, (string Version, Any Resource)> resources;
                    List<string>? changed;
                    long version;
                    lock (_gate)
                    {
                        // A publication is never changed once served: compared outside the lock.
                        resources = _resources[type];
                        version = _version;
                        changed = state.Compared == version - 1 ? _changed[type] : null;
                    }
                    if (state.Compared == version)
                    {
                        continue;
                    }
                    response.SystemVersionInfo = version.ToString(CultureInfo.InvariantCulture);
                    // One version behind (the usual push): only the names that changed are looked at.
                    foreach (string name in changed ?? (IEnumerable<string>)resources.Keys)
                    {
                        if (resources.TryGetValue(name, out var entry))
                        {
                            if ((state.Wildcard || state.Names.Contains(name)) && (!state.Sent.TryGetValue(name, out string? had) || had != entry.Version))
                            {
                                response.Resources.Add(new Resource { Name = name, Version = entry.Version, Resource_ = entry.Resource });
                                state.Sent[name] = entry.Version;
                            }
                        }
                        else if (state.Sent.Remove(name))
                        {
                            response.RemovedResources.Add(name);
                        }
                    }
                    if (changed == null)
                    {
                        foreach (string name in state.Sent.Keys.Where(n => !resources.ContainsKey(n)).ToList())
                        {
                            response.RemovedResources.Add(name);
                            state.Sent.Remove(name);
                        }
                    }
                    state.Compared = version;
                    if (response.Resources.Count > 0 || response.RemovedResources.Count > 0)
                    {
                        response.Nonce = NextNonce();
                        if (!Send(stream, response))
                        {
                            return;
                        }
                    }
                }
            }
            stream.Finish(Core.Forwarding.GrpcStatus.Ok);
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

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();
}
