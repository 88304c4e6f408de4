namespace Proxy.Http2.Hpack;

/// <summary>What the decoder knows about a field beyond its octets.</summary>
[Flags]
public enum HpackFieldFlags : byte
{
    None = 0,

    /// <summary>The field came as "literal never indexed" (RFC 7541 §6.2.3); an intermediary re-encodes it the same way.</summary>
    NeverIndexed = 1,

    /// <summary>Name and value are the static-table entry the field's static index names (an indexed field, RFC 7541 §6.1).</summary>
    StaticEntry = 2,

    /// <summary>
    /// Name and value are a table entry's octets that were already found free of what RFC 9113 §8.2.1
    /// forbids in names and values (every static entry; a dynamic entry checked when it was inserted), so
    /// they need not be scanned again.
    /// </summary>
    Checked = 4,
}

/// <summary>Receives decoded header fields. The spans are only valid during the call.</summary>
public interface IHpackHeaderHandler
{
    /// <param name="staticIndex">The static-table index the name came from (RFC 7541 Appendix A), or 0.</param>
    /// <param name="flags">Never-indexed, a whole static entry, or octets already checked.</param>
    void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HpackFieldFlags flags);
}
