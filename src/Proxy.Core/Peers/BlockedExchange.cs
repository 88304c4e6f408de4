using Proxy.Core.Transport;
using Proxy.Http2;

namespace Proxy.Core.Peers;

/// <summary>
/// The one exchange an HTTP/1.1 connection may have waiting for its send queue to drain, and the wake-up
/// when it does (HTTP/1.1 carries one exchange at a time).
/// </summary>
public sealed class BlockedExchange(OwnedLock syncRoot)
{
    private (ExchangeEvents Exchange, int Generation)? _blocked;

    public void Set(ExchangeEvents exchange, int generation)
    {
        using (syncRoot.Enter())
        {
            _blocked = (exchange, generation);
        }
    }

    public void Clear(ExchangeEvents exchange)
    {
        using (syncRoot.Enter())
        {
            if (_blocked is { } b && ReferenceEquals(b.Exchange, exchange))
            {
                _blocked = null;
            }
        }
    }

    /// <summary>Called when the send queue drained: the waiting exchange tries again.</summary>
    public void Wake()
    {
        (ExchangeEvents Exchange, int Generation)? blocked;
        using (syncRoot.Enter())
        {
            blocked = _blocked;
        }
        if (blocked is not { } b)
        {
            return;
        }
        FlushBatch.Begin();
        try
        {
            b.Exchange.OnWritable(b.Generation);
        }
        finally
        {
            FlushBatch.End();
        }
    }
}
