using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Proxy.Http2.Tests;

/// <summary>
/// Runs an <see cref="Http2Connection"/> over a real socket for interop tests: a read loop feeding
/// <see cref="Http2Connection.ProcessInput"/>, and the output drained to the socket under the connection's lock.
/// </summary>
internal sealed class SocketHttp2Driver : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly ArrayBufferWriter<byte> _output = new();
    private readonly Task _loop;

    public SocketHttp2Driver(Socket socket, bool isServer, IHttp2ConnectionHandler handler, Http2ConnectionOptions? options = null)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        Connection = new Http2Connection(isServer, handler, _output, options);
        Connection.Start();
        Flush();
        _loop = Task.Run(ReadLoopAsync);
    }

    public Http2Connection Connection { get; }
    public Task Completion => _loop;

    public void Flush()
    {
        byte[]? bytes = null;
        using (Connection.SyncRoot.Enter())
        {
            if (_output.WrittenCount > 0)
            {
                bytes = _output.WrittenSpan.ToArray();
                _output.ResetWrittenCount();
            }
            // Written under the lock so frames keep their order on the wire.
            if (bytes != null)
            {
                try
                {
                    _stream.Write(bytes);
                }
                catch (IOException)
                {
                }
            }
        }
    }

    private async Task ReadLoopAsync()
    {
        PipeReader reader = PipeReader.Create(_stream);
        try
        {
            while (true)
            {
                ReadResult result = await reader.ReadAsync();
                ReadOnlySequence<byte> buffer = result.Buffer;
                bool open = Connection.ProcessInput(ref buffer);
                Flush();
                reader.AdvanceTo(buffer.Start, buffer.End);
                if (!open || result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (IOException)
        {
        }
        finally
        {
            Connection.OnTransportClosed();
            await reader.CompleteAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _socket.Shutdown(SocketShutdown.Both);
        await _stream.DisposeAsync();
        await _loop.WaitAsync(TimeSpan.FromSeconds(10));
    }
}

/// <summary>Runs a Debian nghttp2 tool and captures its output, with a hard time limit.</summary>
internal static class Tool
{
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string file, IEnumerable<string> arguments, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"'{file}' is not installed (apt-get install nghttp2-client nghttp2-server; .ci/run does this)", e);
        }
        using (process)
        {
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                await process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"{file} {string.Join(' ', arguments)} did not finish in {timeout}");
            }
            return (process.ExitCode, await stdout, await stderr);
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public static string Ascii(ReadOnlySpan<byte> bytes) => Encoding.ASCII.GetString(bytes);
}
