namespace Proxy.Http2;

/// <summary>Local limits of one connection; the advertised ones go out in the first SETTINGS frame.</summary>
public sealed record Http2ConnectionOptions
{
    /// <summary>SETTINGS_MAX_CONCURRENT_STREAMS we advertise (Envoy's default is 2147483647; 100 is the RFC's recommended floor and nghttp2's default).</summary>
    public int MaxConcurrentStreams { get; init; } = 100;

    /// <summary>SETTINGS_INITIAL_WINDOW_SIZE we advertise: how much one stream may send before we consume it. At least 65535.</summary>
    public int InitialStreamWindowSize { get; init; } = 1 << 20;

    /// <summary>Our connection-level receive window, raised by WINDOW_UPDATE at start. At least 65535.</summary>
    public int ConnectionWindowSize { get; init; } = 4 << 20;

    /// <summary>SETTINGS_MAX_FRAME_SIZE we advertise and enforce.</summary>
    public int MaxFrameSize { get; init; } = Http2Settings.MinMaxFrameSize;

    /// <summary>SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce on decoded header blocks (Envoy: 60 KiB).</summary>
    public int MaxHeaderListSize { get; init; } = 64 * 1024;

    /// <summary>
    /// Fields in one header block (Envoy's max_headers_count, default 100): a block with more makes its
    /// message malformed, so the stream is reset (PROTOCOL_ERROR) as Envoy resets it.
    /// </summary>
    public int MaxHeaderFields { get; init; } = 100;

    /// <summary>SETTINGS_HEADER_TABLE_SIZE we advertise: the peer's encoder may use this much of our memory.</summary>
    public int HeaderTableSize { get; init; } = Http2Settings.DefaultHeaderTableSize;

    /// <summary>The most our encoder keeps in its dynamic table, whatever the peer allows.</summary>
    public int EncoderTableSizeLimit { get; init; } = Http2Settings.DefaultHeaderTableSize;

    /// <summary>
    /// Rapid reset (CVE-2023-44487): streams the peer resets before we answered them ("premature" resets).
    /// More than this many in the recent window (twice as many streams, decayed by half as it fills) is
    /// abuse: GOAWAY(ENHANCE_YOUR_CALM). Envoy closes when more than half of its recent streams were reset
    /// prematurely; 0 turns the check off.
    /// </summary>
    public int MaxPrematureResets { get; init; } = 100;

    /// <summary>
    /// Envoy's max_consecutive_inbound_frames_with_empty_payload: DATA, HEADERS and CONTINUATION frames with
    /// no payload and no END_STREAM / END_HEADERS cost work and carry nothing; more than this many in a row
    /// is a flood (ENHANCE_YOUR_CALM).
    /// </summary>
    public int MaxConsecutiveEmptyFrames { get; init; } = 1;

    /// <summary>Envoy's max_inbound_priority_frames_per_stream: PRIORITY frames allowed per stream opened (plus one stream's worth).</summary>
    public int MaxPriorityFramesPerStream { get; init; } = 100;

    /// <summary>SETTINGS frames (not ACKs) a peer may send: this many, plus one per stream it opened.</summary>
    public int MaxSettingsFrames { get; init; } = 100;

    public static Http2ConnectionOptions Default { get; } = new();

    internal void Validate()
    {
        if (InitialStreamWindowSize < Http2Settings.DefaultInitialWindowSize || ConnectionWindowSize < Http2Settings.DefaultInitialWindowSize)
        {
            throw new ArgumentOutOfRangeException(nameof(InitialStreamWindowSize), "windows must be at least 65535 (RFC 9113 §6.9.2)");
        }
        if (MaxFrameSize < Http2Settings.MinMaxFrameSize || MaxFrameSize > Http2Settings.MaxMaxFrameSize)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxFrameSize), "must be within [16384, 16777215] (RFC 9113 §6.5.2)");
        }
        if (MaxConcurrentStreams < 1 || MaxHeaderListSize < 1024 || HeaderTableSize < 0 || EncoderTableSizeLimit < 0 || MaxHeaderFields < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxConcurrentStreams), "limits must be positive");
        }
    }
}
