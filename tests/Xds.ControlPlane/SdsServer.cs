using System.Collections.Concurrent;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Proxy.Xds;
using Proxy.Xds.Api.Discovery;
using PbSecret = Proxy.Xds.Api.Tls.Secret;

namespace Xds.ControlPlane;

/// <summary>
/// An SDS server as pilot-agent runs one: SecretDiscoveryService (v3 and v2) on a unix socket, answering
/// each stream with the secrets it names, pushing a new version to every stream when a secret changes
/// (rotation), and recording ACKs and NACKs.
/// </summary>
public sealed class SdsServer : IAsyncDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<string, PbSecret> _secrets = new(StringComparer.Ordinal);
    private readonly List<Stream> _streams = [];
    private WebApplication? _app;
    private int _version;

    private SdsServer(string path)
    {
        UnixPath = path;
    }

    public string UnixPath { get; }

    /// <summary>Every request received (names asked, versions ACKed, error_detail of NACKs).</summary>
    public ConcurrentQueue<DiscoveryRequest> Requests { get; } = new();

    public static async Task<SdsServer> StartAsync(string path)
    {
        var server = new SdsServer(path);
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(server);
        builder.WebHost.ConfigureKestrel(k =>
        {
            File.Delete(path);
            k.ListenUnixSocket(path, o => o.Protocols = HttpProtocols.Http2);
        });
        WebApplication app = builder.Build();
        app.MapGrpcService<V3>();
        app.MapGrpcService<V2>();
        await app.StartAsync();
        server._app = app;
        return server;
    }

    /// <summary>Adds or replaces secrets and pushes them to every stream that asked for them.</summary>
    public void Set(params PbSecret[] secrets)
    {
        List<Stream> streams;
        lock (_gate)
        {
            foreach (PbSecret secret in secrets)
            {
                _secrets[secret.Name] = secret;
            }
            _version++;
            streams = [.. _streams];
        }
        foreach (Stream stream in streams)
        {
            stream.Push();
        }
    }

    public int Nacks => Requests.Count(static r => r.ErrorDetail != null);

    public int Acks(string version) => Requests.Count(r => r.ErrorDetail == null && r.VersionInfo == version && r.ResponseNonce.Length > 0);

    public string Version
    {
        get
        {
            lock (_gate)
            {
                return _version.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
        }
    }

    private sealed class Stream(SdsServer server, IServerStreamWriter<DiscoveryResponse> writer, bool v2)
    {
        private readonly SemaphoreSlim _write = new(1, 1);
        private string[] _names = [];
        private int _nonce;

        public void Names(IEnumerable<string> names)
        {
            _names = [.. names];
        }

        public void Push() => _ = SendAsync();

        public async Task SendAsync()
        {
            DiscoveryResponse response;
            lock (server._gate)
            {
                response = new DiscoveryResponse
                {
                    VersionInfo = server._version.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    TypeUrl = v2 ? XdsTypes.SecretV2 : XdsTypes.SecretV3,
                    Nonce = (++_nonce).ToString(System.Globalization.CultureInfo.InvariantCulture),
                };
                foreach (string name in _names)
                {
                    if (server._secrets.TryGetValue(name, out PbSecret? secret))
                    {
                        response.Resources.Add(new Any { TypeUrl = response.TypeUrl, Value = secret.ToByteString() });
                    }
                }
            }
            if (response.Resources.Count == 0)
            {
                return;
            }
            await _write.WaitAsync();
            try
            {
                await writer.WriteAsync(response);
            }
            catch (InvalidOperationException)
            {
            }
            finally
            {
                _write.Release();
            }
        }
    }

    private async Task ServeAsync(IAsyncStreamReader<DiscoveryRequest> requests, IServerStreamWriter<DiscoveryResponse> responses, ServerCallContext context, bool v2)
    {
        var stream = new Stream(this, responses, v2);
        lock (_gate)
        {
            _streams.Add(stream);
        }
        try
        {
            string[] asked = [];
            while (await requests.MoveNext(context.CancellationToken))
            {
                DiscoveryRequest request = requests.Current;
                Requests.Enqueue(request);
                // A new list of names (or the first request) gets an answer; an ACK or NACK does not.
                if (!request.ResourceNames.SequenceEqual(asked))
                {
                    asked = [.. request.ResourceNames];
                    stream.Names(asked);
                    await stream.SendAsync();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (IOException)
        {
        }
        finally
        {
            lock (_gate)
            {
                _streams.Remove(stream);
            }
        }
    }

    private sealed class V3(SdsServer server) : Proxy.Xds.Api.Secret.SecretDiscoveryService.SecretDiscoveryServiceBase
    {
        public override Task StreamSecrets(IAsyncStreamReader<DiscoveryRequest> requestStream, IServerStreamWriter<DiscoveryResponse> responseStream, ServerCallContext context) =>
            server.ServeAsync(requestStream, responseStream, context, v2: false);
    }

    private sealed class V2(SdsServer server) : Proxy.Xds.Api.DiscoveryV2.SecretDiscoveryService.SecretDiscoveryServiceBase
    {
        public override Task StreamSecrets(IAsyncStreamReader<DiscoveryRequest> requestStream, IServerStreamWriter<DiscoveryResponse> responseStream, ServerCallContext context) =>
            server.ServeAsync(requestStream, responseStream, context, v2: true);
    }

    public async ValueTask DisposeAsync()
    {
        if (_app != null)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            await _app.StopAsync(cts.Token);
            await _app.DisposeAsync();
        }
    }
}
