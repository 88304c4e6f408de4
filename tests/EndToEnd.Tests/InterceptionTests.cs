using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using EndToEnd.Tests.Abuse;

namespace EndToEnd.Tests;

/// <summary>
/// Istio's REDIRECT mode, for real: a network namespace with a service IP, the nat rules Istio's init
/// container writes (every outbound TCP connection to 15001, except the proxy's own, by uid 1337; every
/// inbound one, from a client namespace over a veth pair, to virtualInbound on 15006), the
/// published binary running as uid 1337 with an istiod-shaped bootstrap (virtualOutbound with
/// use_original_dst and its PassthroughCluster, a bind_to_port:false 0.0.0.0_9090 listener routing by
/// header to v1, else v2, and a TCP service's tcp_proxy listener), and
/// plain clients that only know the service's address. Needs root (ip netns, iptables): CI runs as root;
/// without it the test fails and says why.
/// </summary>
[Collection(nameof(BuildsCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed partial class InterceptionTests : IAsyncLifetime
{
    private const string ServiceIp = "10.96.0.10";
    private const string WorkloadIp = "10.96.0.21";
    private const string ExternalIp = "10.96.0.30";

    // The inbound side: the pod's address on a veth pair whose other end is in a client namespace.
    private const string PodIp = "10.97.0.2";
    private const string ClientIp = "10.97.0.1";
    private readonly string _ns = $"lf{Environment.ProcessId % 100000}{Random.Shared.Next(1000)}";
    private readonly string _dir = Directory.CreateTempSubdirectory("interception-").FullName;
    private readonly List<Process> _processes = [];
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _log = new();
    private bool _created;
    private bool _clientCreated;

    private string ClientNs => _ns + "c";

    // What the apps saw: each request's authority and source address.
    private string UpstreamLog => Path.Combine(_dir, "upstream.log");

    private async Task RunAsync(string file, params string[] args)
    {
        var (exit, stdout, stderr) = await Processes.RunAsync(file, args, TimeSpan.FromSeconds(30));
        Assert.True(exit == 0, $"{file} {string.Join(' ', args)}: exit {exit}\n{stdout}\n{stderr}");
    }

    private Task InNamespaceAsync(params string[] args) => RunAsync("ip", ["netns", "exec", _ns, .. args]);

    public async Task InitializeAsync()
    {
        var (_, uid, _) = await Processes.RunAsync("id", ["-u"]);
        Assert.True(uid.Trim() == "0", "this test needs root (ip netns, iptables); CI runs as root");
        foreach (string tool in new[] { "ip", "iptables", "setpriv", "curl", "h2load" })
        {
            var (found, _, _) = await Processes.RunAsync("sh", ["-c", $"command -v {tool}"]);
            Assert.True(found == 0, $"{tool} is missing (.ci/run installs it)");
        }
        await RunAsync("ip", ["netns", "add", _ns]);
        _created = true;
        await RunAsync("ip", ["netns", "add", ClientNs]);
        _clientCreated = true;
        await RunAsync("ip", ["-n", _ns, "link", "set", "lo", "up"]);
        await RunAsync("ip", ["-n", _ns, "addr", "add", $"{ServiceIp}/32", "dev", "lo"]);
        await RunAsync("ip", ["-n", _ns, "addr", "add", $"{WorkloadIp}/32", "dev", "lo"]);
        await RunAsync("ip", ["-n", _ns, "addr", "add", $"{ExternalIp}/32", "dev", "lo"]);
        // Istio's init container (istio-iptables, REDIRECT mode), outbound part.
        await InNamespaceAsync("iptables", "-t", "nat", "-N", "ISTIO_REDIRECT");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001");
        await InNamespaceAsync("iptables", "-t", "nat", "-N", "ISTIO_OUTPUT");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT");
        // A client outside the pod: a veth pair between the pod's namespace and the client's.
        await RunAsync("ip", ["-n", _ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", ClientNs]);
        await RunAsync("ip", ["-n", _ns, "addr", "add", $"{PodIp}/24", "dev", "eth0"]);
        await RunAsync("ip", ["-n", _ns, "link", "set", "eth0", "up"]);
        await RunAsync("ip", ["-n", ClientNs, "link", "set", "lo", "up"]);
        await RunAsync("ip", ["-n", ClientNs, "addr", "add", $"{ClientIp}/24", "dev", "eth0"]);
        await RunAsync("ip", ["-n", ClientNs, "link", "set", "eth0", "up"]);
        // The inbound part of istio-iptables: every inbound TCP connection to 15006, but the agent's and
        // the proxy's own ports; the proxy's connections from 127.0.0.6 to the app are not redirected.
        await InNamespaceAsync("iptables", "-t", "nat", "-N", "ISTIO_INBOUND");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_INBOUND", "-p", "tcp", "--dport", "15021", "-j", "RETURN");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_INBOUND", "-p", "tcp", "--dport", "15090", "-j", "RETURN");
        await InNamespaceAsync("iptables", "-t", "nat", "-N", "ISTIO_IN_REDIRECT");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_IN_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15006");
        await InNamespaceAsync("iptables", "-t", "nat", "-A", "ISTIO_INBOUND", "-p", "tcp", "-j", "ISTIO_IN_REDIRECT");
        await InNamespaceAsync("iptables", "-t", "nat", "-I", "ISTIO_OUTPUT", "1", "-o", "lo", "-s", "127.0.0.6/32", "-j", "RETURN");

        // The binary where uid 1337 can run it (a checkout may sit under a private home).
        string binary = Path.Combine(_dir, "layotto-fast");
        File.Copy(await AotProxy.BinaryAsync(), binary);
        File.SetUnixFileMode(_dir, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(binary, (UnixFileMode)0b111_101_101);

        // The two versions of `server`, on the workload address (not loopback: only the uid rule
        // keeps the proxy's own connections to them from being redirected back to it).
        Start(["ip", "netns", "exec", _ns, binary, "--config-yaml", Upstreams(), "-l", "warning"]);
        string bootstrap = Path.Combine(_dir, "envoy-rev.yaml");
        File.WriteAllText(bootstrap, Sidecar());
        File.SetUnixFileMode(bootstrap, (UnixFileMode)0b110_100_100);
        Start(["ip", "netns", "exec", _ns, "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", binary, "-c", bootstrap, "--drain-time-s", "2", "-l", "info", "--concurrency", "2"]);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            var (exit, body, _) = await Processes.RunAsync("ip", ["netns", "exec", _ns, "curl", "-s", "http://127.0.0.1:15000/ready"]);
            if (exit == 0 && body == "LIVE\n")
            {
                break;
            }
            Assert.True(DateTime.UtcNow < deadline, "the sidecar never became ready:\n" + string.Join('\n', _log));
            Assert.All(_processes, p => Assert.False(p.HasExited, "a process exited:\n" + string.Join('\n', _log)));
            await Task.Delay(50);
        }
    }

    private void Start(string[] command)
    {
        var psi = new ProcessStartInfo(command[0]) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string a in command[1..])
        {
            psi.ArgumentList.Add(a);
        }
        var process = Process.Start(psi)!;
        process.ErrorDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
        process.OutputDataReceived += (_, e) => _log.Enqueue(e.Data ?? "");
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        _processes.Add(process);
    }

    public async Task DisposeAsync()
    {
        foreach (Process p in _processes)
        {
            if (!p.HasExited)
            {
                p.Kill();
            }
            await p.WaitForExitAsync();
            p.Dispose();
        }
        if (_created)
        {
            await Processes.RunAsync("ip", ["netns", "del", _ns]);
        }
        if (_clientCreated)
        {
            await Processes.RunAsync("ip", ["netns", "del", ClientNs]);
        }
        Directory.Delete(_dir, recursive: true);
    }

    private string Upstreams() => """
        static_resources:
          listeners:
        """ + string.Concat(new[] { ("v1", WorkloadIp, 18001), ("v2", WorkloadIp, 18002), ("tcp-service", WorkloadIp, 18003), ("passthrough", ServiceIp, 7777), ("external", ExternalIp, 9090),
            ("inbound-app", PodIp, 8080), ("inbound-other", PodIp, 8082), ("inbound-tcp", PodIp, 8081) }.Select(v => $$"""

          - name: {{v.Item1}}
            address: { socket_address: { address: {{v.Item2}}, port_value: {{v.Item3}} } }
            filter_chains:
            - filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: {{v.Item1}}
                  access_log: [ { name: envoy.access_loggers.file, typed_config: { "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: "{{UpstreamLog}}", log_format: { text_format: "%REQ(:AUTHORITY)% from %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n" } } } ]
                  route_config:
                    virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [ { match: { prefix: "/" }, direct_response: { status: 200, body: { inline_string: {{v.Item1}} } } } ]
                  http_filters: [ { name: envoy.filters.http.router } ]
        """));

    /// <summary>What istiod sends a sidecar for one HTTP service on 9090 with subsets v1 and v2, as a bootstrap.</summary>
    private static string Sidecar() => $$"""
        node: { id: "sidecar~{{WorkloadIp}}~client-1.default~default.svc.cluster.local", cluster: client.default }
        admin: { address: { socket_address: { address: 127.0.0.1, port_value: 15000 } } }
        static_resources:
          clusters:
          - name: "outbound|9090|v1|server.default.svc.cluster.local"
            type: STATIC
            connect_timeout: 1s
            load_assignment: { cluster_name: v1, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: {{WorkloadIp}}, port_value: 18001 } } } } ] } ] }
          - name: "outbound|9090|v2|server.default.svc.cluster.local"
            type: STATIC
            connect_timeout: 1s
            load_assignment: { cluster_name: v2, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: {{WorkloadIp}}, port_value: 18002 } } } } ] } ] }
          - name: "outbound|5000||tcp.default.svc.cluster.local"
            type: STATIC
            connect_timeout: 1s
            load_assignment: { cluster_name: tcp, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: {{WorkloadIp}}, port_value: 18003 } } } } ] } ] }
          - name: PassthroughCluster
            type: ORIGINAL_DST
            lb_policy: CLUSTER_PROVIDED
            connect_timeout: 1s
          - name: BlackHoleCluster
            type: STATIC
            connect_timeout: 1s
          - name: "inbound|8080||"
            type: ORIGINAL_DST
            lb_policy: CLUSTER_PROVIDED
            connect_timeout: 1s
            upstream_bind_config: { source_address: { address: 127.0.0.6, port_value: 0 } }
          - name: InboundPassthroughClusterIpv4
            type: ORIGINAL_DST
            lb_policy: CLUSTER_PROVIDED
            connect_timeout: 1s
            upstream_bind_config: { source_address: { address: 127.0.0.6, port_value: 0 } }
          listeners:
          - name: virtualInbound
            address: { socket_address: { address: 0.0.0.0, port_value: 15006 } }
            traffic_direction: INBOUND
            listener_filters:
            - name: envoy.filters.listener.original_dst
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }
            - name: envoy.filters.listener.tls_inspector
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
            - name: envoy.filters.listener.http_inspector
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }
            listener_filters_timeout: 0s
            continue_on_listener_filters_timeout: true
            filter_chains:
            - name: virtualInbound-blackhole
              filter_chain_match: { destination_port: 15006 }
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: BlackHoleCluster, cluster: BlackHoleCluster }
            - name: virtualInbound-catchall-http
              filter_chain_match: { prefix_ranges: [ { address_prefix: 0.0.0.0, prefix_len: 0 } ], transport_protocol: raw_buffer, application_protocols: [ http/1.1, h2c ] }
              filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: InboundPassthroughClusterIpv4
                  route_config:
                    name: InboundPassthroughClusterIpv4
                    virtual_hosts: [ { name: inbound|http|0, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: InboundPassthroughClusterIpv4, timeout: 0s } } ] } ]
                  http_filters: [ { name: envoy.filters.http.router } ]
            - name: virtualInbound
              filter_chain_match: { prefix_ranges: [ { address_prefix: 0.0.0.0, prefix_len: 0 } ], transport_protocol: raw_buffer }
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: InboundPassthroughClusterIpv4, cluster: InboundPassthroughClusterIpv4 }
            - name: 0.0.0.0_8080
              filter_chain_match: { destination_port: 8080, transport_protocol: raw_buffer }
              filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: inbound_0.0.0.0_8080
                  route_config:
                    name: "inbound|8080||"
                    virtual_hosts: [ { name: inbound|http|8080, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: "inbound|8080||", timeout: 0s } } ] } ]
                  http_filters: [ { name: envoy.filters.http.router } ]
          - name: virtualOutbound
            address: { socket_address: { address: 0.0.0.0, port_value: 15001 } }
            use_original_dst: true
            traffic_direction: OUTBOUND
            filter_chains:
            - name: virtualOutbound-blackhole
              filter_chain_match: { destination_port: 15001 }
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: BlackHoleCluster
                  cluster: BlackHoleCluster
            - name: virtualOutbound-catchall-tcp
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: PassthroughCluster
                  cluster: PassthroughCluster
          - name: {{ServiceIp}}_5000
            address: { socket_address: { address: {{ServiceIp}}, port_value: 5000 } }
            bind_to_port: false
            traffic_direction: OUTBOUND
            filter_chains:
            - filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: "outbound|5000||tcp.default.svc.cluster.local"
                  cluster: "outbound|5000||tcp.default.svc.cluster.local"
          - name: 0.0.0.0_9090
            address: { socket_address: { address: 0.0.0.0, port_value: 9090 } }
            bind_to_port: false
            traffic_direction: OUTBOUND
            listener_filters:
            - name: envoy.filters.listener.tls_inspector
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
            - name: envoy.filters.listener.http_inspector
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }
            listener_filters_timeout: 0s
            continue_on_listener_filters_timeout: true
            default_filter_chain:
              name: PassthroughFilterChain
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: PassthroughCluster
                  cluster: PassthroughCluster
            filter_chains:
            - filter_chain_match: { transport_protocol: raw_buffer, application_protocols: [ http/1.1, h2c ] }
              filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: outbound_0.0.0.0_9090
                  route_config:
                    name: "9090"
                    virtual_hosts:
                    - name: "server.default.svc.cluster.local:9090"
                      domains: [server.default.svc.cluster.local, "server.default.svc.cluster.local:9090", server, "server:9090", {{ServiceIp}}, "{{ServiceIp}}:9090"]
                      routes:
                      - match: { prefix: "/", headers: [ { name: name, string_match: { exact: layotto } } ] }
                        route: { cluster: "outbound|9090|v1|server.default.svc.cluster.local", timeout: 0s }
                      - match: { prefix: "/" }
                        route: { cluster: "outbound|9090|v2|server.default.svc.cluster.local", timeout: 0s }
                    - name: allow_any
                      domains: ["*"]
                      routes: [ { match: { prefix: "/" }, route: { cluster: PassthroughCluster, timeout: 0s } } ]
                  http_filters: [ { name: envoy.filters.http.router } ]
        """;

    private async Task<(int Exit, string Body)> CurlAsync(params string[] args)
    {
        var (exit, stdout, _) = await Processes.RunAsync("ip", ["netns", "exec", _ns, "curl", "-s", "--max-time", "5", .. args]);
        return (exit, stdout);
    }

    private async Task<(int Exit, string Body)> FromOutsideAsync(params string[] args)
    {
        var (exit, stdout, _) = await Processes.RunAsync("ip", ["netns", "exec", ClientNs, "curl", "-s", "--max-time", "5", .. args]);
        return (exit, stdout);
    }

    [Fact]
    public async Task InterceptedConnections_AreRoutedByTheListenerOfTheirOriginalDestination()
    {
        Assert.Equal((0, "v1"), await CurlAsync("-H", "name: layotto", $"http://{ServiceIp}:9090/hello"));
        Assert.Equal((0, "v2"), await CurlAsync($"http://{ServiceIp}:9090/hello"));
        Assert.Equal((0, "v1"), await CurlAsync("--http2-prior-knowledge", "-H", "name: layotto", $"http://{ServiceIp}:9090/hello"));
        Assert.Equal((0, "v2"), await CurlAsync("-H", "Host: server", $"http://{ServiceIp}:9090/hello"));

        // Under load, HTTP/2 and HTTP/1.1: every request answered by the right version.
        var (exit, output, error) = await Processes.RunAsync("ip", ["netns", "exec", _ns, "h2load", "-n", "4000", "-c", "4", "-m", "8", "-H", "name: layotto", $"http://{ServiceIp}:9090/hello"], TimeSpan.FromSeconds(60));
        Assert.True(exit == 0, output + error);
        Assert.Contains("4000 succeeded, 0 failed, 0 errored", output, StringComparison.Ordinal);
        Assert.Contains("status codes: 4000 2xx", output, StringComparison.Ordinal);
        (exit, output, error) = await Processes.RunAsync("ip", ["netns", "exec", _ns, "h2load", "--h1", "-n", "2000", "-c", "4", $"http://{ServiceIp}:9090/hello"], TimeSpan.FromSeconds(60));
        Assert.True(exit == 0, output + error);
        Assert.Contains("2000 succeeded, 0 failed, 0 errored", output, StringComparison.Ordinal);

        // The stats agree: the connection manager of 0.0.0.0_9090 served them, v1 and v2 split as sent.
        var (_, stats) = await CurlAsync("http://127.0.0.1:15000/stats?filter=upstream_rq_total|downstream_rq_total");
        Assert.Contains("http.outbound_0.0.0.0_9090.downstream_rq_total: 6004\n", stats, StringComparison.Ordinal);
        Assert.Contains("cluster.outbound|9090|v1|server.default.svc.cluster.local.upstream_rq_total: 4002\n", stats, StringComparison.Ordinal);
        Assert.Contains("cluster.outbound|9090|v2|server.default.svc.cluster.local.upstream_rq_total: 2002\n", stats, StringComparison.Ordinal);

        // A TCP service (its 10.96.0.10_5000 listener is tcp_proxy to its cluster), and a destination no
        // listener knows: virtualOutbound's own chain passes it through to where it was going.
        Assert.Equal((0, "tcp-service"), await CurlAsync($"http://{ServiceIp}:5000/"));
        Assert.Equal((0, "passthrough"), await CurlAsync($"http://{ServiceIp}:7777/"));
        // HTTP to a host the mesh does not know, on a port it has a listener for: Istio's allow_any
        // virtual host sends it to PassthroughCluster, i.e. to where the connection was going.
        Assert.Equal((0, "external"), await CurlAsync($"http://{ExternalIp}:9090/"));
        Assert.Equal((0, "external"), await CurlAsync("--http2-prior-knowledge", $"http://{ExternalIp}:9090/"));
        // Not HTTP, on that port: http_inspector finds no HTTP, so the listener's default chain relays the
        // octets to where they were going (the server there answers them, here with a 400).
        var (_, raw, _) = await Processes.RunAsync("ip", ["netns", "exec", _ns, "sh", "-c", $"printf 'HELLO THERE\\r\\n\\r\\n' | curl -s --max-time 3 telnet://{ExternalIp}:9090"]);
        Assert.StartsWith("HTTP/1.1 400", raw, StringComparison.Ordinal);
        (_, stats) = await CurlAsync("http://127.0.0.1:15000/stats?filter=upstream_cx_total");
        Assert.Matches(PassedThrough(), stats);
        Assert.Contains("cluster.outbound|5000||tcp.default.svc.cluster.local.upstream_cx_total: 1\n", stats, StringComparison.Ordinal);

        // Inbound, from another namespace: redirected to virtualInbound (15006), which picks the chain by
        // the original destination and what the first octets say. The port's own chain routes to its
        // inbound cluster; another port's HTTP goes through the HTTP catch-all, anything else through the
        // TCP one; both pass through to the original destination, from 127.0.0.6.
        Assert.Equal((0, "inbound-app"), await FromOutsideAsync($"http://{PodIp}:8080/"));
        Assert.Equal((0, "inbound-app"), await FromOutsideAsync("--http2-prior-knowledge", $"http://{PodIp}:8080/"));
        Assert.Equal((0, "inbound-other"), await FromOutsideAsync($"http://{PodIp}:8082/"));
        (_, raw, _) = await Processes.RunAsync("ip", ["netns", "exec", ClientNs, "sh", "-c", $"printf 'HELLO THERE\\r\\n\\r\\n' | curl -s --max-time 3 telnet://{PodIp}:8081"]);
        Assert.StartsWith("HTTP/1.1 400", raw, StringComparison.Ordinal);
        (_, stats) = await CurlAsync("http://127.0.0.1:15000/stats?filter=(inbound|Inbound)");
        Assert.Contains("http.inbound_0.0.0.0_8080.downstream_rq_total: 2\n", stats, StringComparison.Ordinal);
        Assert.Contains("http.InboundPassthroughClusterIpv4.downstream_rq_total: 1\n", stats, StringComparison.Ordinal);
        Assert.Contains("cluster.InboundPassthroughClusterIpv4.upstream_cx_total: 2\n", stats, StringComparison.Ordinal);
        // The app saw the proxy's inbound connections come from 127.0.0.6 (upstream_bind_config), the
        // client's address staying with the proxy.
        string seen = "";
        for (var until = DateTime.UtcNow.AddSeconds(5); DateTime.UtcNow < until && !seen.Contains($"{PodIp}:8082 ", StringComparison.Ordinal); await Task.Delay(20))
        {
            seen = File.Exists(UpstreamLog) ? await File.ReadAllTextAsync(UpstreamLog) : "";
        }
        Assert.Contains($"{PodIp}:8080 from 127.0.0.6\n", seen, StringComparison.Ordinal);
        Assert.Contains($"{PodIp}:8082 from 127.0.0.6\n", seen, StringComparison.Ordinal);

        // pilot-agent's stop: SIGTERM → drained, exit 0.
        Process sidecar = _processes[1];
        await RunAsync("kill", "-TERM", sidecar.Id.ToString(CultureInfo.InvariantCulture));
        await sidecar.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(0, sidecar.ExitCode);
    }

    // Two TCP relays, and the HTTP requests' connection(s): two requests one after the other usually share one.
    [GeneratedRegex(@"cluster\.PassthroughCluster\.upstream_cx_total: [34]\n")]
    private static partial Regex PassedThrough();
}
