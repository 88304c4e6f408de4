using System.Buffers;
using Proxy.Core.Peers;
using Proxy.Http2;

namespace Proxy.Core.Forwarding;

/// <summary>The "downstream" of a shadow (mirrored) request: it takes every response octet and keeps none.</summary>
internal sealed class NullPeer : IExchangePeer
{
    public static readonly NullPeer Instance = new();

    public bool SendHeaders(int streamId, HeaderList headers, bool endStream) => true;
    public int SendData(int streamId, in ReadOnlySequence<byte> data, bool endStream) => (int)data.Length;
    public void Reset(int streamId, Http2ErrorCode errorCode) { }
    public void Consume(int streamId, int bytes) { }
    public void AddBlocked(ExchangeEvents exchange, int generation) { }
    public void RemoveBlocked(ExchangeEvents exchange) { }
    public void ScheduleFlush() { }
    public System.Net.EndPoint? RemoteEndPoint => null;
}
