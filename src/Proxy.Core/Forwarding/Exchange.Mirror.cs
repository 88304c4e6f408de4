using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

public sealed partial class Exchange
{
    private Exchange? _shadow;
    private int _shadowGeneration;
    private bool _isShadow;

    /// <summary>Under the primary's lock, once its request headers are final: starts the mirrored copy.</summary>
    private void StartMirror(MirrorPolicy mirror, TimeSpan routeTimeout)
    {
        if (!mirror.Pick())
        {
            return;
        }
        UpstreamEndpoint? endpoint = mirror.Cluster.PickEndpoint();
        if (endpoint == null)
        {
            return;
        }
        Exchange shadow = Rent(NullPeer.Instance, 0, out int generation);
        UpstreamPool pool;
        using (shadow._lock.Enter())
        {
            shadow._isShadow = true;
            shadow._isGrpc = _isGrpc;
            shadow._isHead = _isHead;
            shadow._request = RequestComplete ? RequestPhase.Received : RequestPhase.Receiving;
            HeaderList copy = shadow.RequestHeaders;
            copy.Clear();
            Span<byte> shadowed = stackalloc byte[300];
            for (int i = 0; i < RequestHeaders.Count; i++)
            {
                ReadOnlySpan<byte> name = RequestHeaders.Name(i);
                if (name.SequenceEqual(":authority"u8) || (name.SequenceEqual("host"u8) && _authorityIndex == i))
                {
                    // Envoy's shadow host: the authority with "-shadow" appended (before any port).
                    ReadOnlySpan<byte> authority = RequestHeaders.Value(i);
                    if (authority.Length > shadowed.Length - 7)
                    {
                        copy.Add(name, authority, RequestHeaders.Indexing(i));
                        continue;
                    }
                    int colon = authority.LastIndexOf((byte)':');
                    int hostLength = colon > 0 && authority.LastIndexOf((byte)']') < colon ? colon : authority.Length;
                    authority.Slice(0, hostLength).CopyTo(shadowed);
                    "-shadow"u8.CopyTo(shadowed.Slice(hostLength));
                    authority.Slice(hostLength).CopyTo(shadowed.Slice(hostLength + 7));
                    copy.Add(name, shadowed.Slice(0, authority.Length + 7), RequestHeaders.Indexing(i));
                }
                else
                {
                    copy.Add(name, RequestHeaders.Value(i), RequestHeaders.Indexing(i));
                }
            }
            shadow._cluster = mirror.Cluster;
            shadow._endpoint = endpoint;
            shadow._pool = pool = endpoint.Pool;
            pool.RequestStarted();
            // A shadow never outlives the route's timeout (or a minute when the route has none).
            shadow.ArmDeadline(routeTimeout > TimeSpan.Zero ? routeTimeout : TimeSpan.FromMinutes(1), TimeSpan.Zero);
        }
        _shadow = shadow;
        _shadowGeneration = generation;
        Soon(static state => state.pool.Acquire(state.shadow, state.generation << 8, state.timeout),
            (pool, shadow, generation, timeout: mirror.Cluster.ConnectTimeout));
    }

    /// <summary>Under the primary's lock: request trailers go to the shadow as a copy.</summary>
    private void MirrorTrailers()
    {
        Exchange shadow = _shadow!;
        using (shadow._lock.Enter())
        {
            if (_shadowGeneration != shadow._generation || shadow._finished)
            {
                return;
            }
            shadow.RequestTrailers.Clear();
            for (int i = 0; i < RequestTrailers.Count; i++)
            {
                shadow.RequestTrailers.Add(RequestTrailers.Name(i), RequestTrailers.Value(i));
            }
        }
        // The copy is in place: swapping the list with itself keeps it.
        HeaderList trailers = shadow.RequestTrailers;
        shadow.OnRequestTrailers(_shadowGeneration, ref trailers);
    }
}
