namespace Proxy.Http2;

/// <summary>Frame types of RFC 9113 §6. Any other value is an extension frame and is ignored (§4.1).</summary>
public enum Http2FrameType : byte
{
    Data = 0x0,
    Headers = 0x1,
    Priority = 0x2,
    RstStream = 0x3,
    Settings = 0x4,
    PushPromise = 0x5,
    Ping = 0x6,
    GoAway = 0x7,
    WindowUpdate = 0x8,
    Continuation = 0x9,
}

/// <summary>Frame flags (RFC 9113 §6). Meaning depends on the frame type; undefined flags are ignored.</summary>
[Flags]
public enum Http2FrameFlags : byte
{
    None = 0,
    EndStream = 0x1,
#pragma warning disable CA1069 // RFC 9113 gives bit 0x1 to END_STREAM on DATA/HEADERS and to ACK on SETTINGS/PING.
    Ack = 0x1,
#pragma warning restore CA1069
    EndHeaders = 0x4,
    Padded = 0x8,
    Priority = 0x20,
}
