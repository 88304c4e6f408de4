using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Proxy.Http2.Tests;

/// <summary>Our connection against real HTTP/2 peers from Debian's nghttp2: nghttp as client, nghttpd as server.</summary>
public sealed class NghttpInteropTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>A server handler that answers every request with its method, path and body length, plus a trailer.</summary>
    private sealed class EchoServer : IHttp2ConnectionHandler
    {
        private readonly ConcurrentDictionary<int, (string Method, string Path, long Body)> _requests = new();
        public SocketHttp2Driver? Driver { get; set; }
        public ConcurrentQueue<string> Seen { get; } = new();

        public void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind)
        {
            if (kind == Http2HeaderBlockKind.Request)
            {
                _requests[stream.Id] = ("", "", 0);
            }
        }

        public void OnHeader(Http2Stream stream, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags)
        {
            var r = _requests[stream.Id];
            if (name.SequenceEqual(":method"u8))
            {
                _requests[stream.Id] = r with { Method = Tool.Ascii(value) };
            }
            else if (name.SequenceEqual(":path"u8))
            {
                _requests[stream.Id] = r with { Path = Tool.Ascii(value) };
            }
            Seen.Enqueue(Tool.Ascii(name) + ": " + Tool.Ascii(value));
        }

        public void OnHeadersEnd(Http2Stream stream, bool endStream)
        {
            if (endStream)
            {
                Respond(stream.Id);
            }
        }

        public void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
        {
            var r = _requests[stream.Id];
            _requests[stream.Id] = r with { Body = r.Body + data.Length };
            Driver!.Connection.ConsumeData(stream.Id, (int)data.Length);
            if (endStream)
            {
                Respond(stream.Id);
            }
        }

        private void Respond(int streamId)
        {
            var (method, path, body) = _requests[streamId];
            var headers = new HeaderList();
            headers.Add(":status"u8, "200"u8);
            headers.Add("content-type"u8, "text/plain"u8);
            Driver!.Connection.SendHeaders(streamId, headers, endStream: false);
            byte[] text = Encoding.ASCII.GetBytes($"{method} {path} body={body}\n");
            Assert.Equal(text.Length, Driver.Connection.SendData(streamId, text, endStream: false));
            var trailers = new HeaderList();
            trailers.Add("x-echo-trailer"u8, "done"u8);
            Driver.Connection.SendHeaders(streamId, trailers, endStream: true);
            Driver.Flush();
        }

        public void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote) { }
        public void OnWindowUpdate(int streamId) { }
        public void OnSettings(in Http2Settings peerSettings) { }
        public void OnGoAway(int lastStreamId, Http2ErrorCode errorCode) { }
        public void OnConnectionClosed(Http2ErrorCode errorCode, bool remote, string reason) { }
    }

    private static async Task<(int Port, Task Accept)> ServeOnceAsync(EchoServer server, TcpListener listener)
    {
        await Task.Yield();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Task accept = Task.Run(async () =>
        {
            Socket socket = await listener.AcceptSocketAsync();
            socket.NoDelay = true;
            server.Driver = new SocketHttp2Driver(socket, isServer: true, server);
            await server.Driver.Completion.WaitAsync(Timeout);
        });
        return (port, accept);
    }

    [Fact]
    public async Task Nghttp_GetsResponseWithTrailers_FromOurServer()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = new EchoServer();
        var (port, accept) = await ServeOnceAsync(server, listener);

        var (exit, stdout, stderr) = await Tool.RunAsync("nghttp", ["-v", "-H", "x-custom: hello", $"http://127.0.0.1:{port}/some/path?q=1"], Timeout);

        Assert.True(exit == 0, $"nghttp exited {exit}: {stderr}\n{stdout}");
        Assert.Contains("GET /some/path?q=1 body=0", stdout);
        Assert.Contains(":status: 200", stdout);
        Assert.Contains("x-echo-trailer: done", stdout);
        Assert.Contains("x-custom: hello", server.Seen);
        Assert.DoesNotContain("recv GOAWAY", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("recv RST_STREAM", stdout, StringComparison.Ordinal);
        await accept.WaitAsync(Timeout);
    }

    [Fact]
    public async Task Nghttp_ConcurrentStreamsWithUploads_AreAllAnswered()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = new EchoServer();
        var (port, accept) = await ServeOnceAsync(server, listener);
        string upload = Path.GetTempFileName();
        // 3 MiB upload per request: more than the 1 MiB stream window, so WINDOW_UPDATEs must flow.
        await File.WriteAllBytesAsync(upload, new byte[3 << 20]);
        try
        {
            string[] urls = [.. Enumerable.Range(0, 8).Select(i => $"http://127.0.0.1:{port}/u{i}")];
            var (exit, stdout, stderr) = await Tool.RunAsync("nghttp", ["-n", "-s", "-d", upload, .. urls], Timeout);
            Assert.True(exit == 0, $"nghttp exited {exit}: {stderr}\n{stdout}");
            var paths = server.Seen.Where(s => s.StartsWith(":path: ", StringComparison.Ordinal)).ToList();
            Assert.Equal(8, paths.Count);
            // -s prints one statistics line per completed stream.
            Assert.Equal(8, stdout.Split('\n').Count(l => l.Contains("/u", StringComparison.Ordinal)));
        }
        finally
        {
            File.Delete(upload);
        }
        await accept.WaitAsync(Timeout);
    }

    /// <summary>A client handler that collects one response.</summary>
    private sealed class Collector : IHttp2ConnectionHandler
    {
        public SocketHttp2Driver? Driver { get; set; }
        public MemoryStream Body { get; } = new();
        public List<string> Headers { get; } = [];
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void OnHeadersBegin(Http2Stream stream, Http2HeaderBlockKind kind) { }
        public void OnHeader(Http2Stream stream, int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Proxy.Http2.Hpack.HpackFieldFlags flags) =>
            Headers.Add(Tool.Ascii(name) + ": " + Tool.Ascii(value));
        public void OnHeadersEnd(Http2Stream stream, bool endStream)
        {
            if (endStream)
            {
                Done.TrySetResult();
            }
        }

        public void OnData(Http2Stream stream, in ReadOnlySequence<byte> data, bool endStream)
        {
            foreach (var segment in data)
            {
                Body.Write(segment.Span);
            }
            Driver!.Connection.ConsumeData(stream.Id, (int)data.Length);
            if (endStream)
            {
                Done.TrySetResult();
            }
        }

        public void OnStreamReset(Http2Stream stream, Http2ErrorCode errorCode, bool remote) => Done.TrySetException(new IOException($"reset {errorCode}"));
        public void OnWindowUpdate(int streamId) { }
        public void OnSettings(in Http2Settings peerSettings) { }
        public void OnGoAway(int lastStreamId, Http2ErrorCode errorCode) { }
        public void OnConnectionClosed(Http2ErrorCode errorCode, bool remote, string reason) => Done.TrySetException(new IOException($"closed {errorCode} {reason}"));
    }

    [Fact]
    public async Task OurClient_DownloadsFileFromNghttpd()
    {
        string root = Directory.CreateTempSubdirectory("nghttpd").FullName;
        var content = new byte[5 << 20];
        new Random(7).NextBytes(content);
        await File.WriteAllBytesAsync(Path.Combine(root, "blob.bin"), content);
        int port = Tool.FreePort();
        using var nghttpd = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("nghttpd", $"--no-tls -d {root} {port}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        try
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    await socket.ConnectAsync(IPAddress.Loopback, port);
                    break;
                }
                catch (SocketException) when (attempt < 50 && !nghttpd.HasExited)
                {
                    await Task.Delay(100);
                }
            }
            var collector = new Collector();
            await using var driver = new SocketHttp2Driver(socket, isServer: false, collector);
            collector.Driver = driver;
            var request = new HeaderList();
            request.Add(":method"u8, "GET"u8);
            request.Add(":scheme"u8, "http"u8);
            request.Add(":authority"u8, Encoding.ASCII.GetBytes($"127.0.0.1:{port}"));
            request.Add(":path"u8, "/blob.bin"u8);
            Assert.Equal(1, driver.Connection.OpenStream(request, endStream: true));
            driver.Flush();
            await collector.Done.Task.WaitAsync(Timeout);
            Assert.Contains(":status: 200", collector.Headers);
            Assert.Equal(content, collector.Body.ToArray());
        }
        finally
        {
            nghttpd.Kill(entireProcessTree: true);
            Directory.Delete(root, recursive: true);
        }
    }
}
