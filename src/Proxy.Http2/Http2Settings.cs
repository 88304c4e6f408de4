namespace Proxy.Http2;

/// <summary>SETTINGS parameters of RFC 9113 §6.5.2. Unknown identifiers are ignored on receipt.</summary>
public enum Http2SettingsParameter : ushort
{
    HeaderTableSize = 0x1,
    EnablePush = 0x2,
    MaxConcurrentStreams = 0x3,
    InitialWindowSize = 0x4,
    MaxFrameSize = 0x5,
    MaxHeaderListSize = 0x6,
}

/// <summary>One endpoint's settings, with the initial values of RFC 9113 §6.5.2.</summary>
public struct Http2Settings
{
    public const int DefaultHeaderTableSize = 4096;
    public const int DefaultInitialWindowSize = 65_535;
    public const int MinMaxFrameSize = 16_384;
    public const int MaxMaxFrameSize = 16_777_215;
    public const int MaxWindowSize = int.MaxValue;

    public uint HeaderTableSize;
    public bool EnablePush;
    /// <summary>Unlimited until the peer says otherwise (RFC 9113 §6.5.2).</summary>
    public uint MaxConcurrentStreams;
    public int InitialWindowSize;
    public int MaxFrameSize;
    /// <summary>Advisory; unlimited by default.</summary>
    public uint MaxHeaderListSize;

    /// <summary>The values in force before any SETTINGS frame is received.</summary>
    public static Http2Settings Initial => new()
    {
        HeaderTableSize = DefaultHeaderTableSize,
        EnablePush = true,
        MaxConcurrentStreams = uint.MaxValue,
        InitialWindowSize = DefaultInitialWindowSize,
        MaxFrameSize = MinMaxFrameSize,
        MaxHeaderListSize = uint.MaxValue,
    };

    /// <summary>
    /// Applies one received parameter. Throws the connection error RFC 9113 §6.5.2 prescribes for an
    /// invalid value; unknown parameters are ignored.
    /// </summary>
    public void Apply(ushort parameter, uint value, bool receivedByClient)
    {
        switch ((Http2SettingsParameter)parameter)
        {
            case Http2SettingsParameter.HeaderTableSize:
                HeaderTableSize = value;
                break;
            case Http2SettingsParameter.EnablePush:
                // §6.5.2: any value other than 0 or 1 is a PROTOCOL_ERROR; a client MUST treat a server's 1 as one.
                if (value > 1 || (receivedByClient && value == 1))
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"SETTINGS_ENABLE_PUSH={value} is not allowed here");
                }
                EnablePush = value == 1;
                break;
            case Http2SettingsParameter.MaxConcurrentStreams:
                MaxConcurrentStreams = value;
                break;
            case Http2SettingsParameter.InitialWindowSize:
                // §6.5.2: above 2^31-1 MUST be a FLOW_CONTROL_ERROR.
                if (value > MaxWindowSize)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, $"SETTINGS_INITIAL_WINDOW_SIZE={value} exceeds 2^31-1");
                }
                InitialWindowSize = (int)value;
                break;
            case Http2SettingsParameter.MaxFrameSize:
                // §6.5.2: outside [2^14, 2^24-1] MUST be a PROTOCOL_ERROR.
                if (value < MinMaxFrameSize || value > MaxMaxFrameSize)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"SETTINGS_MAX_FRAME_SIZE={value} is outside [16384, 16777215]");
                }
                MaxFrameSize = (int)value;
                break;
            case Http2SettingsParameter.MaxHeaderListSize:
                MaxHeaderListSize = value;
                break;
        }
    }
}
