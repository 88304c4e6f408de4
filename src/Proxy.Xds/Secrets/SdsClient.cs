using System.Threading.Channels;
using Grpc.Core;
using Grpc.Net.Client;
using Proxy.Core.Config;
using Proxy.Core.Diagnostics;
using Proxy.Core.Routing;
using Proxy.Core.Transport.Tls;
using Proxy.Xds.Api.Discovery;
using Proxy.Xds.Config;
using PbSecret = Proxy.Xds.Api.Tls.Secret;
using RpcStatus = Proxy.Xds.Api.Rpc.Status;

namespace Proxy.Xds.Secrets;

/// <summary>
/// Envoy's SDS client for one SDS server (pilot-agent's on its unix socket, or any cluster): a State of
/// the World SecretDiscoveryService stream (v3, or v2 for Istio 1.5's node agent) asking for every secret
/// name the configuration uses from it, each response ACKed, or NACKed when a certificate or key does not
/// load (the secrets held keep serving), a new request when a new name is needed, and the stream
/// re-opened with back-off whenever it ends.
/// </summary>
public sealed class SdsClient : IAsyncDisposable
{
    private readonly SecretStore _store;
    private readonly SecretSource _source;
    private readonly Api.Core.Node _node;
    private readonly GrpcChannel _channel;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private Channel<DiscoveryRequest>? _requests;
    private string _version = "";
    private string _nonce = "";

    public SdsClient(SecretStore store, SecretSource source, string target, TlsClientContext? tls, Api.Core.Node node)
    {
        _store = store;
        _source = source;
        _node = node;
        Target = target;
        _channel = XdsChannel.Create(target, tls);
        store.Demanded += OnDemanded;
        _loop = Task.Run(RunAsync);
    }

    public string Target { get; }

    /// <summary>Responses applied and refused (tests and the log).</summary>
    public int Accepted { get; private set; }
    public int Rejected { get; private set; }

    private void OnDemanded(SecretSource source)
    {
        if (source == _source)
        {
            _requests?.Writer.TryWrite(Request()); // the whole list, with the version we hold
        }
    }

    private DiscoveryRequest Request(RpcStatus? error = null)
    {
        var request = new DiscoveryRequest
        {
            Node = _node,
            TypeUrl = _source.V2 ? XdsTypes.SecretV2 : XdsTypes.SecretV3,
            VersionInfo = _version,
            ResponseNonce = _nonce,
            ErrorDetail = error,
        };
        request.ResourceNames.AddRange(_store.Names(_source));
        return request;
    }

    private async Task RunAsync()
    {
        int failures = 0;
        while (!_stop.IsCancellationRequested)
        {
            bool received = false;
            try
            {
                received = await StreamAsync();
            }
            catch (Exception e) when (_stop.IsCancellationRequested && e is OperationCanceledException or RpcException or IOException or ObjectDisposedException)
            {
                break;
            }
            catch (RpcException e)
            {
                ProxyLog.Write(LogLevel.Warning, $"sds: stream to {Target} ended: {e.StatusCode} {e.Status.Detail}");
            }
            catch (Exception e) when (e is IOException or HttpRequestException or InvalidOperationException or OperationCanceledException)
            {
                ProxyLog.Write(LogLevel.Warning, $"sds: stream to {Target} failed: {e.Message}");
            }
            catch (Exception e)
            {
                ProxyLog.Write(LogLevel.Critical, $"sds: stream to {Target} failed unexpectedly: {e}");
            }
            failures = received ? 0 : failures + 1;
            double ceiling = Math.Min(30_000, 250 * Math.Pow(2, Math.Min(failures, 16)));
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(ceiling / 2 + Random.Shared.NextDouble() * ceiling / 2), _stop.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    private async Task<bool> StreamAsync()
    {
        using var call = _source.V2
            ? new Api.DiscoveryV2.SecretDiscoveryService.SecretDiscoveryServiceClient(_channel).StreamSecrets(cancellationToken: _stop.Token)
            : new Api.Secret.SecretDiscoveryService.SecretDiscoveryServiceClient(_channel).StreamSecrets(cancellationToken: _stop.Token);
        var requests = Channel.CreateUnbounded<DiscoveryRequest>(new UnboundedChannelOptions { SingleReader = true });
        _nonce = "";
        _requests = requests;
        requests.Writer.TryWrite(Request());
        Task writer = WriteAsync(call.RequestStream, requests.Reader);
        bool received = false;
        try
        {
            while (await call.ResponseStream.MoveNext(_stop.Token))
            {
                received = true;
                DiscoveryResponse response = call.ResponseStream.Current;
                _nonce = response.Nonce;
                RpcStatus? error = null;
                try
                {
                    var protos = new List<PbSecret>(response.Resources.Count);
                    foreach (Google.Protobuf.WellKnownTypes.Any any in response.Resources)
                    {
                        if (XdsTypes.Find(any.TypeUrl) != PbSecret.Descriptor)
                        {
                            throw new ConfigException($"SDS response of type {any.TypeUrl} (a Secret was expected)");
                        }
                        protos.Add(PbSecret.Parser.ParseFrom(any.Value));
                    }
                    _store.Apply(_source, [.. protos.Select(p => ConfigNode.FromMessage(p, $"Secret '{p.Name}'"))], response.VersionInfo, protos);
                    _version = response.VersionInfo;
                    Accepted++;
                }
                catch (Exception e) when (e is ConfigException or Google.Protobuf.InvalidProtocolBufferException)
                {
                    Rejected++;
                    ProxyLog.Write(LogLevel.Warning, $"sds: update from {Target} rejected: {e.Message}");
                    error = new RpcStatus { Code = (int)StatusCode.InvalidArgument, Message = e.Message };
                }
                requests.Writer.TryWrite(Request(error));
            }
        }
        finally
        {
            requests.Writer.TryComplete();
            _requests = null;
            try
            {
                await writer;
            }
            catch (Exception e) when (e is RpcException or IOException or InvalidOperationException or OperationCanceledException)
            {
            }
        }
        return received;
    }

    private async Task WriteAsync(IClientStreamWriter<DiscoveryRequest> stream, ChannelReader<DiscoveryRequest> requests)
    {
        await foreach (DiscoveryRequest request in requests.ReadAllAsync(_stop.Token))
        {
            await stream.WriteAsync(request);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _store.Demanded -= OnDemanded;
        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }
        _channel.Dispose();
        _stop.Dispose();
    }
}
