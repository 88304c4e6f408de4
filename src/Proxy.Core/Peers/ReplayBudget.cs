namespace Proxy.Core.Peers;

/// <summary>
/// What one downstream connection's streams together may keep of request bodies for retries: the
/// connection's buffer limit, shared (Envoy budgets buffers per connection, not per stream).
/// </summary>
internal struct ReplayBudget
{
    private long _used;

    public bool TryReserve(int bytes, int limit)
    {
        if (Interlocked.Add(ref _used, bytes) <= limit)
        {
            return true;
        }
        Interlocked.Add(ref _used, -bytes);
        return false;
    }

    public void Release(int bytes) => Interlocked.Add(ref _used, -bytes);
}
