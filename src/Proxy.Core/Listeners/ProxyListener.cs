using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Proxy.Core.Diagnostics;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Listeners;

/// <summary>
/// Accepts connections on one address and serves HTTP/1.1 and HTTP/2 with prior knowledge on the same
/// port, telling them apart by the first octets (the HTTP/2 connection preface, RFC 9113 §3.4). Holds its
/// connections to the listener's limits: the process-wide connection cap, the network RBAC filter, and
/// (through a sweep a few times a second, which costs nothing per request) the head, preface, idle and
/// duration timeouts.
/// </summary>
public sealed class ProxyListener : IAsyncDisposable
{
    /// <summary>How often open connections are checked against their timeouts.</summary>
    public const int SweepMilliseconds = 500;

    private readonly Socket _socket;
    private readonly Func<ListenerConfig?> _config;
    private ListenerConfig _last;
    private readonly CancellationTokenSource _stop = new();
    private Task? _acceptLoop;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Sniffer, byte> _connections = new();

    // tcp_proxy connections (relayed as octets, no Sniffer): closed when the listener is disposed.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Socket, byte> _relayed = new();
    private readonly Timer _sweep;
    private int _sweeping;
    private readonly Func<ListenerConfig> _configSource;
    private ListenerStats? _stats;

    public ProxyListener(ListenerConfig config, Func<ListenerConfig?> current)
        : this(config, current, config.Address, http2: null)
    {
    }

    /// <summary>
    /// A listener on <paramref name="bind"/> (an IP address, or a unix socket) whose HTTP/2 connections are
    /// served by <paramref name="http2"/> (the runtime API) instead of being forwarded.
    /// </summary>
    internal ProxyListener(ListenerConfig config, Func<ListenerConfig?> current, EndPoint bind, Http2Factory? http2)
    {
        _last = config;
        _config = current;
        _http2 = http2;
        if (bind is UnixDomainSocketEndPoint)
        {
            _socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        }
        else
        {
            _socket = ListenSocket.Create((IPEndPoint)bind);
        }
        try
        {
            _socket.Bind(bind);
        }
        catch
        {
            _socket.Dispose();
            throw;
        }
        BoundEndPoint = _socket.LocalEndPoint ?? bind;
        _stats = _http2 == null ? new ListenerStats(ListenerStats.AddressName(config.Address.Port == 0 ? BoundEndPoint : config.Address)) : null;
        _configSource = () => Config;
        _sweep = new Timer(static state => ((ProxyListener)state!).Sweep(), this, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>For a use_original_dst listener: the unbound listener a connection's original destination names.</summary>
    public Func<IPEndPoint, ListenerConfig?>? Dispatch { get; init; }

    /// <summary>An unbound listener by name in the current snapshot (a dispatched connection follows its updates).</summary>
    public Func<string, ListenerConfig?>? FindUnbound { get; init; }

    /// <summary>The current snapshot (a tcp_proxy connection picks its cluster from it).</summary>
    public Func<ProxySnapshot>? Snapshot { get; init; }

    /// <summary>Makes the HTTP/2 side of a connection (the listener's sniffer picks HTTP/2 or HTTP/1.1).</summary>
    internal delegate Http2Downstream Http2Factory(SocketConnection connection, Func<ListenerConfig> config, ListenerOptions options);

    private readonly Http2Factory? _http2;

    /// <summary>The address bound: an IP end point, or a unix socket.</summary>
    public EndPoint BoundEndPoint { get; }

    /// <summary>The IP address and port bound (for an IP listener).</summary>
    public IPEndPoint LocalEndPoint => BoundEndPoint as IPEndPoint ?? throw new InvalidOperationException($"listener {BoundEndPoint} is not on an IP address");

    /// <summary>Connections open on this listener now.</summary>
    public int ConnectionCount => _connections.Count + _relayed.Count;

    public void Start()
    {
        _socket.Listen(4096);
        IReadOnlyList<EventLoop> loops = EventLoop.All;
        if (loops.Count > 0)
        {
            // Accepted on the loops, not on the platform's socket engine (one thread less woken per
            // connection): a pending connection wakes one loop, which takes one connection per wake-up (the
            // rest wait in the kernel's backlog, as nginx's default has it) and deals it to a loop.
            _socket.Blocking = false;
            _acceptors = new LoopAcceptor[loops.Count];
            for (int i = 0; i < loops.Count; i++)
            {
                _acceptors[i] = new LoopAcceptor(this, loops[i]);
                _acceptors[i].Arm();
            }
        }
        else
        {
            _acceptLoop = AcceptLoopAsync();
        }
        _sweep.Change(SweepMilliseconds, SweepMilliseconds);
    }

    private LoopAcceptor[]? _acceptors;

    private void StopAcceptors()
    {
        if (_acceptors is { } acceptors)
        {
            foreach (LoopAcceptor acceptor in acceptors)
            {
                acceptor.Disarm();
            }
        }
    }

    /// <summary>The listening socket as one loop's epoll sees it: a wake-up accepts one connection on that loop.</summary>
    private sealed class LoopAcceptor(ProxyListener listener, EventLoop loop) : ILoopSocket
    {
        private readonly Lock _gate = new(); // Arm (a timer's thread), Disarm (the listener's) and the loop's pause
        private int _backoff;
        private bool _warned;
        private bool _stopped;

        public ulong LoopToken { get; set; }

        public void Arm()
        {
            lock (_gate)
            {
                if (!_stopped && LoopToken == 0)
                {
                    loop.RegisterListener((int)listener._socket.SafeHandle.DangerousGetHandle(), this);
                }
            }
        }

        public void Disarm()
        {
            lock (_gate)
            {
                _stopped = true;
                Pause();
            }
        }

        private void Pause()
        {
            if (LoopToken != 0)
            {
                loop.Unregister(LoopToken, (int)listener._socket.SafeHandle.DangerousGetHandle());
                LoopToken = 0;
            }
        }

        public void OnEvents(uint events)
        {
            Socket accepted;
            try
            {
                accepted = listener._socket.Accept();
                _backoff = 0;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                // EMFILE/ENFILE: the connection stays queued, and a level-triggered registration would
                // report it again at once: this loop stops listening for a while.
                if (!_warned)
                {
                    ProxyLog.Write(LogLevel.Error, $"listener {listener.BoundEndPoint}: cannot accept: {e.SocketErrorCode} (out of file descriptors?); backing off");
                    _warned = true;
                }
                _backoff = Math.Min(Math.Max(_backoff * 2, 10), 1000);
                lock (_gate)
                {
                    Pause();
                }
                _ = Task.Delay(_backoff).ContinueWith(static (_, state) => ((LoopAcceptor)state!).Arm(), this, TaskScheduler.Default);
                return;
            }
            catch (SocketException)
            {
                return; // another loop took it (EAGAIN), or it was reset before it was accepted
            }
            catch (ObjectDisposedException)
            {
                return; // the listener closed
            }
            listener.OnAccepted(accepted);
        }
    }

    /// <summary>The listener's configuration now (a listener being drained keeps its last one).</summary>
    /// <summary>The listener's name (its configuration's).</summary>
    public string Name => _last.Name;

    internal ListenerConfig Config
    {
        get
        {
            ListenerConfig? current = _config();
            if (current != null && !ReferenceEquals(current, _last))
            {
                _last = current;
            }
            return current ?? _last;
        }
    }

    private async Task AcceptLoopAsync()
    {
        int backoff = 0;
        bool warned = false;
        while (!_stop.IsCancellationRequested)
        {
            Socket accepted;
            try
            {
                accepted = await _socket.AcceptAsync(_stop.Token);
                backoff = 0;
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                // EMFILE/ENFILE: the pending connection stays queued; retrying at once would spin a core.
                if (!warned)
                {
                    ProxyLog.Write(LogLevel.Error, $"listener {BoundEndPoint}: cannot accept: {e.SocketErrorCode} (out of file descriptors?); backing off");
                    warned = true;
                }
                backoff = Math.Min(Math.Max(backoff * 2, 10), 1000);
                try
                {
                    await Task.Delay(backoff, _stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            catch (SocketException)
            {
                continue; // a connection reset before accept completed: keep accepting
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            OnAccepted(accepted);
        }
    }

    /// <summary>Takes an accepted connection: the connection cap, the original destination, the filter chain, then serving.</summary>
    private void OnAccepted(Socket accepted)
    {
        if (!DownstreamLimits.TryOpen())
        {
            _stats?.DownstreamCxOverflow.Inc();
            // Over the process-wide cap: close at once (the client sees a reset), counted.
            accepted.LingerState = new LingerOption(true, 0);
            accepted.Dispose();
            return;
        }
        ListenerConfig config = Config;
        Func<ListenerConfig> source = _configSource;
        IPEndPoint? destination = config.UseOriginalDst || config.RestoresOriginalDestination ? OriginalDestination.Get(accepted) : null;
        if (destination != null && destination.Equals(accepted.LocalEndPoint))
        {
            destination = null; // not redirected (a connection made to this port itself): never passed through back to us
        }
        if (destination != null && config.UseOriginalDst && Dispatch?.Invoke(destination) is { } target)
        {
            // Istio's virtualOutbound: the connection belongs to the listener of its original
            // destination (0.0.0.0_9090 for 10.96.0.10:9090), and follows that listener's updates.
            string name = target.Name;
            Func<string, ListenerConfig?> find = FindUnbound!;
            source = () => find(name) ?? target;
            config = target;
        }
        if (config.HasFilterChains)
        {
            if (config.Inspects)
            {
                // tls_inspector / http_inspector: the chain is chosen once the first octets are seen.
                _ = InspectThenServeAsync(accepted, config, source, destination);
                return;
            }
            if (!ChooseChain(accepted, ref config, ref source, destination, new ConnectionInspector.Verdict(true, "raw_buffer", null, [])))
            {
                return;
            }
        }
        Serve(accepted, config, source, destination, null);
    }

    private async Task InspectThenServeAsync(Socket accepted, ListenerConfig config, Func<ListenerConfig> source, IPEndPoint? destination)
    {
        ConnectionInspector.Verdict? verdict;
        try
        {
            verdict = await ConnectionInspector.InspectAsync(accepted, config.TlsInspector, config.HttpInspector,
                config.ListenerFiltersTimeout > TimeSpan.Zero ? config.ListenerFiltersTimeout : s_inspectionCap, config.ContinueOnListenerFiltersTimeout, _stop.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            verdict = null;
        }
        catch (Exception e)
        {
            // A bug of ours on hostile octets must still close the connection and free its slot.
            ProxyLog.Write(LogLevel.Error, $"listener {BoundEndPoint}: inspecting a connection failed: {e.GetType().Name}: {e.Message}");
            verdict = null;
        }
        if (verdict is not { } seen)
        {
            DownstreamLimits.Closed();
            accepted.Dispose();
            return;
        }
        if (ChooseChain(accepted, ref config, ref source, destination, seen))
        {
            Serve(accepted, config, source, destination, seen.TransportProtocol == "tls" ? seen.ApplicationProtocols : null);
        }
    }

    // listener_filters_timeout 0 (Istio's) means no limit; a client that never sends is still let go after this long.
    private static readonly TimeSpan s_inspectionCap = TimeSpan.FromHours(1);

    /// <summary>
    /// Picks the filter chain for a connection; false (connection closed and counted as
    /// no_filter_chain_match) when none matches and there is no default chain.
    /// </summary>
    private bool ChooseChain(Socket accepted, ref ListenerConfig config, ref Func<ListenerConfig> source, IPEndPoint? destination, ConnectionInspector.Verdict seen)
    {
        IPEndPoint? local = destination ?? accepted.LocalEndPoint as IPEndPoint;
        IPEndPoint? remote;
        try
        {
            remote = accepted.RemoteEndPoint as IPEndPoint;
        }
        catch (SocketException)
        {
            remote = null;
        }
        FilterChain? chain = FilterChainSelector.Select(config.FilterChains, config.DefaultFilterChain,
            new ConnectionFacts(local, remote, seen.TransportProtocol, seen.ServerName, seen.ApplicationProtocols));
        if (chain == null)
        {
            _stats?.NoFilterChainMatch.Inc();
            DownstreamLimits.Closed();
            accepted.Dispose();
            return false;
        }
        ListenerConfig top = config;
        Func<ListenerConfig> listener = source;
        bool isDefault = ReferenceEquals(chain, config.DefaultFilterChain);
        int index = Array.IndexOf(config.FilterChains, chain);
        int occurrence = 0; // Istio names several chains alike (virtualInbound-catchall-http: mTLS and plaintext)
        for (int i = 0; i < index; i++)
        {
            if (config.FilterChains[i].Name == chain.Name)
            {
                occurrence++;
            }
        }
        // The connection follows its listener's updates through the same chain (by name, else position).
        source = () =>
        {
            ListenerConfig now = listener();
            if (ReferenceEquals(now, top))
            {
                return chain.Serving;
            }
            return SameChain(now, chain, isDefault, index, occurrence)?.Serving ?? chain.Serving;
        };
        config = chain.Serving;
        return true;
    }

    /// <summary>A chain's counterpart in a newer version of its listener: the default chain, else by name, else by position (asked per request: no allocation).</summary>
    private static FilterChain? SameChain(ListenerConfig now, FilterChain chain, bool isDefault, int index, int occurrence)
    {
        if (isDefault)
        {
            return now.DefaultFilterChain;
        }
        FilterChain[] chains = now.FilterChains;
        if (chain.Name.Length == 0)
        {
            return index < chains.Length ? chains[index] : null;
        }
        for (int i = 0; i < chains.Length; i++)
        {
            if (chains[i].Name == chain.Name && occurrence-- == 0)
            {
                return chains[i];
            }
        }
        return null;
    }

    /// <summary>Serves an accepted connection by a listener (or chain): network RBAC, then tcp_proxy or HTTP.</summary>
    /// <param name="offeredAlpn">The ALPN list of the client's ClientHello when tls_inspector saw it (null: not looked at).</param>
    private void Serve(Socket accepted, ListenerConfig config, Func<ListenerConfig> source, IPEndPoint? destination, string[]? offeredAlpn)
    {
        ListenerOptions options = config.Options;
        if (config.Tls is { } tls)
        {
            if (!tls.IsReady)
            {
                // Its certificate has not come (SDS): a warming chain serves nothing yet.
                ProxyLog.Peer(LogLevel.Debug, $"listener {config.Name}: TLS secret(s) {string.Join(", ", tls.SecretNames())} not ready; connection closed");
                DownstreamLimits.Closed();
                accepted.Dispose();
                return;
            }
            if (!config.ServesHttp)
            {
                if (config.TcpProxy is { } relay && Snapshot != null)
                {
                    Relay(accepted, destination, relay, options, tls, offeredAlpn);
                    return;
                }
            }
            else
            {
                ServeHttp(accepted, options, source, destination, tls, offeredAlpn);
                return;
            }
        }
        if (options.NetworkRbac is { } rbac && !rbac.AllowsConnection(accepted, null))
        {
            DownstreamLimits.Denied();
            DownstreamLimits.Closed();
            accepted.Dispose();
            return;
        }
        if (!config.ServesHttp)
        {
            if (config.TcpProxy is { } tcp && Snapshot != null)
            {
                // tcp_proxy: relayed as octets (virtualOutbound's PassthroughCluster, or a TCP service's listener).
                Relay(accepted, destination, tcp, options, null, null);
                return;
            }
            // No listener for its destination and no chain of our own to serve it: closed, counted
            // as Envoy's no_filter_chain_match.
            _stats?.NoFilterChainMatch.Inc();
            DownstreamLimits.Closed();
            accepted.Dispose();
            return;
        }
        ServeHttp(accepted, options, source, destination, null, null);
    }

    private void Relay(Socket accepted, IPEndPoint? destination, TcpProxyConfig tcp, ListenerOptions options, Transport.Tls.TlsServerContext? tls, string[]? offeredAlpn)
    {
        Opened(options);
        _relayed.TryAdd(accepted, 0);
        _ = TcpProxySession.RunAsync(accepted, destination, tcp, Snapshot!(), () =>
        {
            _relayed.TryRemove(accepted, out _);
            DownstreamLimits.Closed();
            Closed(options);
        }, tls, offeredAlpn, options.NetworkRbac, _stop.Token);
    }

    private void ServeHttp(Socket accepted, ListenerOptions options, Func<ListenerConfig> source, IPEndPoint? destination, Transport.Tls.TlsServerContext? tls, string[]? offeredAlpn)
    {
        // On one of our event loops, round robin (whichever loop accepted it: a burst of connections wakes
        // one loop); with TLS, SslStream reads and writes through the loop's edges.
        var connection = new SocketConnection(accepted, loop: EventLoop.Next(), tlsOnLoop: tls != null) { BufferLimit = options.BufferLimit };
        var sniffer = new Sniffer(this, connection, options, source) { OriginalDestination = destination };
        Opened(options);
        _connections.TryAdd(sniffer, 0);
        _ = tls == null ? connection.RunAsync(sniffer) : HandshakeThenRunAsync(connection, sniffer, tls, offeredAlpn, options);
    }

    /// <summary>Terminates TLS, checks network RBAC against the peer's identity, then serves HTTP on the plaintext.</summary>
    private async Task HandshakeThenRunAsync(SocketConnection connection, Sniffer sniffer, Transport.Tls.TlsServerContext tls, string[]? offeredAlpn, ListenerOptions options)
    {
        string? error;
        try
        {
            // The timeout sweep ends a handshake that takes longer than the context allows.
            sniffer.HandshakeDeadline = Environment.TickCount64 + (long)tls.HandshakeTimeout.TotalMilliseconds;
            error = await connection.AcceptTlsAsync(tls, offeredAlpn, _stop.Token, timedByCaller: true);
            sniffer.HandshakeDeadline = 0;
        }
        catch (Exception e)
        {
            error = $"{e.GetType().Name}: {e.Message}"; // never leave the connection's slot behind
            connection.Close();
        }
        if (error != null)
        {
            _stats?.SslConnectionError.Inc();
            ProxyLog.Peer(LogLevel.Debug, $"listener {BoundEndPoint}: TLS from {connection.RemoteAddress} refused: {error}");
            connection.Close(); // the sniffer's OnClosed gives back the slot (RunAsync never runs)
            sniffer.OnClosed();
            return;
        }
        _stats?.SslHandshake.Inc();
        if (options.NetworkRbac is { } rbac && !rbac.AllowsConnection(connection.Socket, connection.Tls))
        {
            DownstreamLimits.Denied();
            connection.Close();
            sniffer.OnClosed();
            return;
        }
        if (options.Codec == DownstreamCodec.Auto)
        {
            // ALPN settled the protocol (as Envoy's AUTO codec takes it): h2 is HTTP/2 only, so a bad
            // preface is a connection error and not an HTTP/1.1 request; http/1.1 is HTTP/1.1 only.
            sniffer.Codec = connection.Tls?.NegotiatedProtocol switch
            {
                "h2" => DownstreamCodec.Http2,
                "http/1.1" => DownstreamCodec.Http1,
                _ => DownstreamCodec.Auto,
            };
        }
        await connection.RunAsync(sniffer);
    }

    private void Opened(ListenerOptions options)
    {
        if (_stats != null)
        {
            _stats.DownstreamCxTotal.Inc();
            _stats.DownstreamCxActive.Inc();
        }
        if (options.Stats is { } hcm)
        {
            hcm.DownstreamCxTotal.Inc();
            hcm.DownstreamCxActive.Inc();
        }
    }

    private void Closed(ListenerOptions options)
    {
        _stats?.DownstreamCxActive.Dec();
        options.Stats?.DownstreamCxActive.Dec();
    }

    /// <summary>Checks every connection against its timeouts; runs on a timer, never on the request path.</summary>
    private Action[] _sweepOnLoop = [];

    private void SweepOn(EventLoop? loop) => SweepOn(loop, Environment.TickCount64);

    /// <summary>Checks the timeouts of the connections <paramref name="loop"/> runs (null: those on no loop).</summary>
    private void SweepOn(EventLoop? loop, long now)
    {
        // The dictionary's enumerator takes no lock and copies nothing (Keys would do both).
        foreach (var (sniffer, _) in _connections)
        {
            if (sniffer.Loop == loop)
            {
                sniffer.CheckTimeouts(now);
            }
        }
    }

    private void Sweep()
    {
        if (Interlocked.Exchange(ref _sweeping, 1) != 0)
        {
            return; // the previous sweep is still running
        }
        try
        {
            long now = Environment.TickCount64;
            // Connections on an event loop are checked by their loop (their state is its own: another thread
            // would pay a process-wide barrier per connection); the rest here.
            IReadOnlyList<EventLoop> loops = EventLoop.Started;
            if (_sweepOnLoop.Length != loops.Count)
            {
                _sweepOnLoop = [.. loops.Select(loop => (Action)(() => SweepOn(loop)))];
            }
            for (int i = 0; i < loops.Count; i++)
            {
                loops[i].Post(_sweepOnLoop[i]);
            }
            SweepOn(null, now);
        }
        catch (Exception e)
        {
            ProxyLog.Write(LogLevel.Error, $"listener {BoundEndPoint}: timeout sweep failed: {e.Message}");
        }
        finally
        {
            Volatile.Write(ref _sweeping, 0);
        }
    }

    /// <summary>
    /// Stops accepting and asks every open connection to finish: HTTP/2 clients get GOAWAY(NO_ERROR) and
    /// may complete their streams; HTTP/1.1 connections close after their current response.
    /// </summary>
    private volatile bool _drainClose;
    private long _drainStartedAt;
    private long _drainSpreadMs;

    /// <summary>
    /// A graceful drain (admin /drain_listeners?graceful): the listener keeps accepting, but its
    /// connections are told to go (GOAWAY, connection: close), so clients move off without a failed
    /// request; <see cref="StopAcceptingAndDrainAsync"/> ends it. With a <paramref name="spread"/>
    /// (Envoy's gradual drain strategy) the open connections are told one by one, evenly over that
    /// time, and a new connection is told with a chance that grows from 0 to 1 over it, so clients do
    /// not all reconnect at once; without one (immediate) all are told at once.
    /// </summary>
    public void StartGracefulDrain(TimeSpan spread = default)
    {
        _drainSpreadMs = (long)spread.TotalMilliseconds;
        _drainStartedAt = Environment.TickCount64;
        _drainClose = true;
        List<Sniffer> open = [.. _connections.Keys];
        if (_drainSpreadMs <= 0)
        {
            foreach (Sniffer sniffer in open)
            {
                sniffer.DrainGracefully();
            }
            return;
        }
        _ = SpreadDrainAsync(open, _drainStartedAt, _drainSpreadMs);
    }

    private async Task SpreadDrainAsync(List<Sniffer> open, long startedAt, long spreadMs)
    {
        Random.Shared.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(open));
        for (int i = 0; i < open.Count; i++)
        {
            long due = startedAt + (spreadMs * (i + 1) / open.Count);
            long wait = due - Environment.TickCount64;
            if (wait > 0)
            {
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(wait), _stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
                {
                    return; // stopped: the rest are drained by StopAcceptingAndDrainAsync
                }
            }
            open[i].DrainGracefully();
        }
    }

    /// <summary>Whether a connection that starts now is told to go at once (see <see cref="StartGracefulDrain"/>).</summary>
    private bool DrainsNewConnection()
    {
        if (!_drainClose)
        {
            return false;
        }
        long spread = _drainSpreadMs;
        return spread <= 0 || Random.Shared.NextDouble() * spread < Environment.TickCount64 - _drainStartedAt;
    }

    public async Task StopAcceptingAndDrainAsync()
    {
        await _stop.CancelAsync();
        StopAcceptors();
        _socket.Dispose();
        foreach (Sniffer sniffer in _connections.Keys)
        {
            sniffer.Drain();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        StopAcceptors();
        _socket.Dispose();
        if (_acceptLoop != null)
        {
            await _acceptLoop;
        }
        await _sweep.DisposeAsync();
        foreach (Socket relayed in _relayed.Keys)
        {
            relayed.Dispose(); // its session ends (both sides closed) and removes it
        }
        _stop.Dispose();
    }

    /// <summary>Picks the protocol from the first octets, then hands the connection over.</summary>
    private sealed class Sniffer(ProxyListener listener, SocketConnection connection, ListenerOptions options, Func<ListenerConfig> source) : IConnectionProtocol
    {
        public IPEndPoint? OriginalDestination { get; init; }

        /// <summary>Which protocols the connection may speak: the listener's codec_type, or what ALPN chose.</summary>
        public DownstreamCodec Codec { get; set; } = options.Codec;

        private IDownstreamProtocol? _chosen;
        private readonly long _acceptedAt = Environment.TickCount64;
        private long _firstByteAt;
        private bool _draining;

        public InputStatus OnInput(ref ReadOnlySequence<byte> buffer)
        {
            if (_chosen != null)
            {
                return _chosen.OnInput(ref buffer);
            }
            bool h2 = Codec == DownstreamCodec.Http2;
            if (Codec == DownstreamCodec.Auto)
            {
                ReadOnlySpan<byte> preface = Http2FrameWriter.ClientPreface;
                int n = (int)Math.Min(buffer.Length, preface.Length);
                Span<byte> head = stackalloc byte[preface.Length];
                buffer.Slice(0, n).CopyTo(head);
                int same = head.Slice(0, n).CommonPrefixLength(preface.Slice(0, n));
                if (same == n && n < preface.Length)
                {
                    if (_firstByteAt == 0)
                    {
                        _firstByteAt = Environment.TickCount64;
                    }
                    return InputStatus.Continue; // could still be the preface: wait for more
                }
                // "PRI * HTTP/2.0" is no HTTP/1.1 request (RFC 9113 §3.4: the preface is chosen so): a client that
                // began it and then went wrong gets the HTTP/2 connection error for an invalid preface.
                h2 = same == preface.Length || same >= "PRI * HTTP/2.0\r\n".Length;
            }
            if (h2)
            {
                Http2Downstream down = listener._http2?.Invoke(connection, source, options)
                    ?? new Http2Downstream(connection, source, options);
                down.OriginalDestination = OriginalDestination;
                _chosen = down;
                down.Start();
                if (listener.DrainsNewConnection())
                {
                    down.DrainWhenSettled(); // a new connection during a graceful drain is told to go too
                }
                return down.OnInput(ref buffer);
            }
            var h1 = new Http1Downstream(connection, source, options) { OriginalDestination = OriginalDestination };
            _chosen = h1;
            if (listener.DrainsNewConnection())
            {
                h1.DrainGracefully();
            }
            return h1.OnInput(ref buffer);
        }

        public bool OnInputEnded() => _chosen?.OnInputEnded() ?? false;

        public void OnClosed()
        {
            listener._connections.TryRemove(this, out _);
            DownstreamLimits.Closed();
            listener.Closed(options);
            _chosen?.OnClosed();
        }

        /// <summary>The event loop the connection runs on (null: the platform's engine).</summary>
        public EventLoop? Loop => connection.Loop;

        /// <summary>While TLS is being negotiated: when the handshake must be done by (Environment.TickCount64; 0: not handshaking).</summary>
        public long HandshakeDeadline { get; set; }

        public void CheckTimeouts(long now)
        {
            if (connection.IsClosed)
            {
                return;
            }
            if (HandshakeDeadline != 0 && now >= HandshakeDeadline)
            {
                DownstreamLimits.TimedOut();
                connection.Close(); // the handshake fails and the connection is let go
                return;
            }
            TimeSpan maxDuration = options.MaxConnectionDuration;
            if (maxDuration > TimeSpan.Zero && !_draining && now - _acceptedAt >= (long)maxDuration.TotalMilliseconds)
            {
                Drain(); // max_connection_duration: drain, as Envoy does
            }
            if (_chosen != null)
            {
                _chosen.CheckTimeouts(now);
                return;
            }
            // Nothing chosen yet: silent (idle) or a partial preface (as slow as a request head may be).
            long limit = _firstByteAt == 0 ? (long)options.IdleTimeout.TotalMilliseconds : options.HeadTimeoutMs(preface: true);
            long since = _firstByteAt == 0 ? _acceptedAt : _firstByteAt;
            if (limit > 0 && now - since >= limit)
            {
                DownstreamLimits.TimedOut();
                connection.Close();
            }
        }

        public void DrainGracefully() => _chosen?.DrainGracefully(); // not chosen yet: HTTP/1.1 picks it up when chosen

        public void Drain()
        {
            _draining = true;
            if (_chosen != null)
            {
                _chosen.Drain();
            }
            else
            {
                connection.Close(); // not even a request yet
            }
        }
    }
}
