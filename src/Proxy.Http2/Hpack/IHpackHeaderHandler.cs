namespace Proxy.Http2.Hpack;

/// <summary>Receives decoded header fields. The spans are only valid during the call.</summary>
public interface IHpackHeaderHandler
{
    /// <param name="staticIndex">The static-table index the name came from (RFC 7541 Appendix A), or 0.</param>
    /// <param name="neverIndexed">The field came as "literal never indexed" (RFC 7541 §6.2.3); an intermediary re-encodes it the same way.</param>
    void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, bool neverIndexed);
}
