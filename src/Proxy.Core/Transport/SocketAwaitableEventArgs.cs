using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace Proxy.Core.Transport;

/// <summary>
/// A reusable <see cref="SocketAsyncEventArgs"/> that can be awaited without allocating. The result is
/// the byte count, or a negative <see cref="SocketError"/> value: a reset peer is a value, not a throw.
/// Execution context does not flow (server code; nothing ambient to carry).
/// </summary>
internal sealed class SocketAwaitableEventArgs : SocketAsyncEventArgs, IValueTaskSource<int>
{
    private ManualResetValueTaskSourceCore<int> _source;

    public SocketAwaitableEventArgs() : base(unsafeSuppressExecutionContextFlow: true)
    {
        // Complete on the socket engine's thread: with inline completions that thread is the event loop.
        _source.RunContinuationsAsynchronously = false;
    }

    public static bool IsError(int result) => result < 0;
    public static SocketError ErrorOf(int result) => (SocketError)(-result);

    public ValueTask<int> ReceiveAsync(Socket socket, Memory<byte> buffer)
    {
        _source.Reset();
        _throwOnError = false;
        SetBuffer(buffer);
        return socket.ReceiveAsync(this) ? new ValueTask<int>(this, _source.Version) : new ValueTask<int>(Result());
    }

    private bool _throwOnError;

    /// <summary>
    /// A receive for a <see cref="System.IO.Stream"/> reader (the TLS engine): the byte count, or an
    /// <see cref="IOException"/> for a socket error (allocated only then).
    /// </summary>
    public ValueTask<int> ReceiveOrThrowAsync(Socket socket, Memory<byte> buffer)
    {
        _source.Reset();
        _throwOnError = true;
        SetBuffer(buffer);
        if (socket.ReceiveAsync(this))
        {
            return new ValueTask<int>(this, _source.Version);
        }
        _throwOnError = false;
        return SocketError == SocketError.Success ? new ValueTask<int>(BytesTransferred) : ValueTask.FromException<int>(Failure(SocketError));
    }

    private static IOException Failure(SocketError error) => new("the connection failed", new SocketException((int)error));

    public ValueTask<int> SendAsync(Socket socket, ReadOnlyMemory<byte> buffer)
    {
        _source.Reset();
        _throwOnError = false;
        SetBuffer(System.Runtime.InteropServices.MemoryMarshal.AsMemory(buffer));
        return socket.SendAsync(this) ? new ValueTask<int>(this, _source.Version) : new ValueTask<int>(Result());
    }

    public ValueTask<int> ConnectAsync(Socket socket, System.Net.EndPoint endPoint)
    {
        _source.Reset();
        _throwOnError = false;
        SetBuffer(Memory<byte>.Empty);
        RemoteEndPoint = endPoint;
        return socket.ConnectAsync(this) ? new ValueTask<int>(this, _source.Version) : new ValueTask<int>(Result());
    }

    private int Result() => SocketError == SocketError.Success ? BytesTransferred : -(int)SocketError;

    protected override void OnCompleted(SocketAsyncEventArgs e)
    {
        if (_throwOnError)
        {
            _throwOnError = false;
            if (SocketError != SocketError.Success)
            {
                _source.SetException(Failure(SocketError));
                return;
            }
        }
        _source.SetResult(Result());
    }

    int IValueTaskSource<int>.GetResult(short token) => _source.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _source.GetStatus(token);
    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _source.OnCompleted(continuation, state, token, flags);
}
