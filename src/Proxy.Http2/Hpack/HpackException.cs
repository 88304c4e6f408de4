namespace Proxy.Http2.Hpack;

/// <summary>
/// A field block could not be decoded (RFC 7541 §3.3, §5.2, §6): the connection's compression context is
/// lost, which RFC 9113 §4.3 makes a connection error of type COMPRESSION_ERROR.
/// </summary>
public sealed class HpackException(string message) : Exception(message);
