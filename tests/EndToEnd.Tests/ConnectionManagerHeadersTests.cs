using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Proxy.Core;
using Proxy.Core.Upstream;
using Proxy.Xds.Config;

namespace EndToEnd.Tests;

/// <summary>
/// What operators rely on in the HTTP connection manager, from a bootstrap, over real sockets:
/// x-request-id, x-forwarded-for/-proto, via, the server header, x-envoy-upstream-service-time, and
/// access logs in Envoy's default format and as JSON, written to files.
/// </summary>
public sealed partial class ConnectionManagerHeadersTests(ProxyFixture upstream) : IClassFixture<ProxyFixture>, IAsyncLifetime
{
    private const string Routes = """{ virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: /headers }, route: { cluster: http, timeout: 0s } } ] } ] }""";

    // Istio's virtual hosts ask for x-envoy-attempt-count; a retried request shows its second attempt.
    private const string EdgeRoutes = """
        { virtual_hosts: [ { name: all, domains: ["*"], include_request_attempt_count: true, include_attempt_count_in_response: true, routes: [
          { match: { prefix: /flaky }, route: { cluster: http, timeout: 0s, retry_policy: { retry_on: 5xx, num_retries: 2 } } },
          { match: { prefix: /headers }, route: { cluster: http, timeout: 0s } } ] } ] }
        """;

    private readonly string _textLog = Path.Combine(Path.GetTempPath(), $"access-{Guid.NewGuid():N}.log");
    private readonly string _jsonLog = Path.Combine(Path.GetTempPath(), $"access-{Guid.NewGuid():N}.json");
    private readonly string _errorLog = Path.Combine(Path.GetTempPath(), $"access-{Guid.NewGuid():N}.errors");
    private ProxyServer? _proxy;

    private int SidecarPort => _proxy!.Listeners[0].LocalEndPoint.Port;
    private int EdgePort => _proxy!.Listeners[1].LocalEndPoint.Port;
    private int QuietPort => _proxy!.Listeners[2].LocalEndPoint.Port;
    private int OriginalPort => _proxy!.Listeners[3].LocalEndPoint.Port;

    public Task InitializeAsync()
    {
        string accessLogs = $$"""
            access_log:
            - name: envoy.access_loggers.file
              typed_config: { "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: "{{_textLog}}" }
            - name: envoy.access_loggers.file
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                path: "{{_jsonLog}}"
                log_format:
                  json_format:
                    start_time: "%START_TIME%"
                    method: "%REQ(:METHOD)%"
                    path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                    protocol: "%PROTOCOL%"
                    response_code: "%RESPONSE_CODE%"
                    response_flags: "%RESPONSE_FLAGS%"
                    bytes_sent: "%BYTES_SENT%"
                    duration: "%DURATION%"
                    upstream_cluster: "%UPSTREAM_CLUSTER%"
                    request_id: "%REQ(X-REQUEST-ID)%"
                    authority: "%REQ(:AUTHORITY)%"
                    user_agent: "%REQ(USER-AGENT):5%"
            - name: envoy.access_loggers.file
              filter:
                or_filter:
                  filters:
                  - status_code_filter: { comparison: { op: GE, value: { default_value: 400, runtime_key: errors } } }
                  - response_flag_filter: {}
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                path: "{{_errorLog}}"
                log_format: { text_format: "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n" }
            """;
        string bootstrap = $$"""
            static_resources:
              listeners:
            {{BootstrapYaml.Listener("sidecar", Routes, accessLogs)}}
            {{BootstrapYaml.Listener("edge", EdgeRoutes, "use_remote_address: true\nvia: 1.1 layotto\nserver_name: istio-envoy\nalways_set_request_id_in_response: true")}}
            {{BootstrapYaml.Listener("quiet", Routes, "generate_request_id: false\nserver_header_transformation: PASS_THROUGH", routerFields: "suppress_envoy_headers: true")}}
            {{BootstrapYaml.Listener("original", """{ virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: original, timeout: 0s } } ] } ] }""")}}
              clusters:
              - name: original
                type: ORIGINAL_DST
                lb_policy: CLUSTER_PROVIDED
                original_dst_lb_config: { use_http_header: true }
              - name: http
                load_assignment: { cluster_name: http, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream.HttpUpstreamPort}} } } } } ] } ] }
            """;
        var pools = new UpstreamPools();
        _proxy = new ProxyServer(new BootstrapLoader(pools).Load(bootstrap, "headers"), pools);
        _proxy.Start();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_proxy != null)
        {
            await _proxy.DisposeAsync();
        }
        File.Delete(_textLog);
        File.Delete(_jsonLog);
        File.Delete(_errorLog);
    }

    private static async Task<(HttpResponseMessage Response, Dictionary<string, string> Seen)> GetAsync(int port, bool h2 = false, params (string Name, string Value)[] headers)
    {
        using var handler = new SocketsHttpHandler { UseProxy = false };
        using var client = new HttpClient(handler);
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/headers")
        {
            Version = h2 ? HttpVersion.Version20 : HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Headers.UserAgent.ParseAdd("tester/1.0");
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }
        HttpResponseMessage response = await client.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        var seen = body.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(static l => l.Split('=', 2)).Where(static p => p.Length == 2).ToDictionary(static p => p[0], static p => p[1]);
        return (response, seen);
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? string.Join(",", values) : null;

    [Fact]
    public async Task Sidecar_GeneratesRequestIds_SetsForwardedProto_NamesItselfEnvoy_AndTimesTheUpstream()
    {
        var (response, seen) = await GetAsync(SidecarPort);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Matches(Uuid4(), seen["x-request-id"]);
        Assert.Equal("http", seen["x-forwarded-proto"]);
        Assert.False(seen.ContainsKey("x-forwarded-for"));
        Assert.Equal("envoy", Header(response, "server"));
        Assert.Matches(@"^\d+$", Header(response, "x-envoy-upstream-service-time"));
        Assert.Null(Header(response, "x-request-id"));

        // Not an edge: the client's id and forwarded-for are kept as they are.
        (_, seen) = await GetAsync(SidecarPort, h2: true, ("x-request-id", "abc"), ("x-forwarded-for", "10.0.0.1"), ("x-forwarded-proto", "https"));
        Assert.Equal("abc", seen["x-request-id"]);
        Assert.Equal("10.0.0.1", seen["x-forwarded-for"]);
        Assert.Equal("https", seen["x-forwarded-proto"]);
    }

    [Fact]
    public async Task Edge_AppendsThePeerToForwardedFor_ReplacesClientRequestIds_AndAddsVia()
    {
        var (response, seen) = await GetAsync(EdgePort, false, ("x-request-id", "abc"), ("x-forwarded-for", "10.0.0.1"), ("x-forwarded-proto", "https"));
        Assert.Equal("10.0.0.1, 127.0.0.1", seen["x-forwarded-for"]);
        Assert.Equal("http", seen["x-forwarded-proto"]);
        Assert.Matches(Uuid4(), seen["x-request-id"]);
        Assert.Equal(seen["x-request-id"], Header(response, "x-request-id"));
        Assert.Equal("istio-envoy", Header(response, "server"));
        Assert.Equal("1.1 layotto", Header(response, "via"));
        Assert.Equal("1", seen["x-envoy-attempt-count"]);
        Assert.Equal("1", Header(response, "x-envoy-attempt-count"));

        using var client = new HttpClient();
        using HttpResponseMessage retried = await client.GetAsync($"http://127.0.0.1:{EdgePort}/flaky/{Guid.NewGuid():N}");
        Assert.Equal("ok after 2", await retried.Content.ReadAsStringAsync());
        Assert.Equal("2", Header(retried, "x-envoy-attempt-count"));
    }

    [Fact]
    public async Task Quiet_PassesTheUpstreamServerHeader_AndAddsNoIdNorServiceTime()
    {
        var (response, seen) = await GetAsync(QuietPort);
        Assert.False(seen.ContainsKey("x-request-id"));
        Assert.Equal("Kestrel", Header(response, "server"));
        Assert.Null(Header(response, "x-envoy-upstream-service-time"));
    }

    [Fact]
    public async Task OriginalDstCluster_WithUseHttpHeader_GoesWhereTheHeaderSays()
    {
        var (response, seen) = await GetAsync(OriginalPort, false, ("x-envoy-original-dst-host", $"127.0.0.1:{upstream.HttpUpstreamPort}"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"127.0.0.1:{upstream.HttpUpstreamPort}", seen["x-envoy-original-dst-host"]);
        // No header, and the connection was not intercepted (no original destination): nowhere to go.
        (response, _) = await GetAsync(OriginalPort);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        (response, _) = await GetAsync(OriginalPort, false, ("x-envoy-original-dst-host", "not-an-address"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
    }

    [Fact]
    public async Task AccessLogs_InEnvoysDefaultFormat_AndAsJson_OneLinePerRequest()
    {
        var (_, seen) = await GetAsync(SidecarPort);
        await GetAsync(SidecarPort, h2: true);
        using (var client = new HttpClient())
        {
            Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"http://127.0.0.1:{SidecarPort}/nowhere")).StatusCode);
        }
        string[] text = await LinesAsync(_textLog, 3);
        Match first = DefaultFormat().Match(text[0]);
        Assert.True(first.Success, text[0]);
        Assert.Equal("GET /headers HTTP/1.1", first.Groups["request"].Value);
        Assert.Equal("200", first.Groups["status"].Value);
        Assert.Equal("-", first.Groups["flags"].Value);
        Assert.Equal("tester/1.0", first.Groups["ua"].Value);
        Assert.Equal(seen["x-request-id"], first.Groups["id"].Value);
        Assert.Equal($"127.0.0.1:{SidecarPort}", first.Groups["authority"].Value);
        Assert.Equal($"127.0.0.1:{upstream.HttpUpstreamPort}", first.Groups["upstream"].Value);
        Assert.True(long.Parse(first.Groups["sent"].Value, System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.Contains("\"GET /headers HTTP/2\" 200", text[1], StringComparison.Ordinal);
        Match notFound = DefaultFormat().Match(text[2]);
        Assert.Equal("404", notFound.Groups["status"].Value);
        Assert.Equal("NR", notFound.Groups["flags"].Value);
        Assert.Equal("-", notFound.Groups["upstream"].Value);

        string[] json = await LinesAsync(_jsonLog, 3);
        using JsonDocument line = JsonDocument.Parse(json[0]);
        JsonElement root = line.RootElement;
        Assert.Equal(200, root.GetProperty("response_code").GetInt32());
        Assert.Equal("GET", root.GetProperty("method").GetString());
        Assert.Equal("/headers", root.GetProperty("path").GetString());
        Assert.Equal("HTTP/1.1", root.GetProperty("protocol").GetString());
        Assert.Equal("http", root.GetProperty("upstream_cluster").GetString());
        Assert.Equal(seen["x-request-id"], root.GetProperty("request_id").GetString());
        Assert.Equal("teste", root.GetProperty("user_agent").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("response_flags").ValueKind);
        Assert.True(root.GetProperty("bytes_sent").GetInt64() > 0);
        using JsonDocument missing = JsonDocument.Parse(json[2]);
        Assert.Equal("NR", missing.RootElement.GetProperty("response_flags").GetString());

        // The filtered log (status >= 400 or any response flag) has only the failed request.
        Assert.Equal(["404 NR /nowhere"], await LinesAsync(_errorLog, 1));
        await Task.Delay(200);
        Assert.Single(await File.ReadAllLinesAsync(_errorLog));
    }

    private static async Task<string[]> LinesAsync(string path, int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            string[] lines = File.Exists(path) ? await File.ReadAllLinesAsync(path) : [];
            if (lines.Length >= count || DateTime.UtcNow > deadline)
            {
                Assert.True(lines.Length >= count, $"{path}: {lines.Length} lines, wanted {count}");
                return lines;
            }
            await Task.Delay(20);
        }
    }

    [GeneratedRegex("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
    private static partial Regex Uuid4();

    [GeneratedRegex("""^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "(?<request>[^"]*)" (?<status>\d+) (?<flags>\S+) (?<received>\d+) (?<sent>\d+) (?<duration>\d+) (?<service>\S+) "(?<xff>[^"]*)" "(?<ua>[^"]*)" "(?<id>[^"]*)" "(?<authority>[^"]*)" "(?<upstream>[^"]*)"$""")]
    private static partial Regex DefaultFormat();
}
