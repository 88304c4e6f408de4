namespace Proxy.Core.Runtime;

/// <summary>
/// The protobuf wire form of the runtime API's messages (Layotto's spec.proto.runtime.v1, field numbers
/// as in proto/spec/proto/runtime/v1/runtime.proto), read and written in place: a request's strings and
/// bytes are slices of the received message, so decoding allocates nothing. Proto3 rules: fields in any
/// order, unknown fields skipped, a repeated singular field's last value wins, an embedded message that
/// appears twice is merged.
/// </summary>
internal static class RuntimeMessages
{
    private const int WireVarint = 0;
    private const int WireFixed64 = 1;
    private const int WireLength = 2;
    private const int WireFixed32 = 5;

    /// <summary>InvokeServiceRequest with its CommonInvokeRequest, Any and HTTPExtension flattened; ranges into the message.</summary>
    public struct InvokeRequest
    {
        public Range Id;
        public Range Method;
        public Range Data;          // CommonInvokeRequest.data.value (the Any's type_url is dropped)
        public Range ContentType;
        public int Verb;            // HTTPExtension.Verb; 0 = NONE
        public Range QueryString;
    }

    /// <summary>SayHelloRequest: service_name, name and data (an Any, kept whole to be echoed).</summary>
    public struct HelloRequest
    {
        public Range ServiceName;
        public Range Name;
        public Range Data;          // the serialized Any
        public bool HasData;
    }

    public static bool TryReadInvoke(ReadOnlySpan<byte> message, out InvokeRequest request)
    {
        request = default;
        int position = 0;
        while (position < message.Length)
        {
            if (!TryReadField(message, ref position, out int number, out int wire, out Range value))
            {
                return false;
            }
            if (wire != WireLength)
            {
                if (number is 1 or 3)
                {
                    return false; // a known field with the wrong wire type
                }
                continue;
            }
            if (number == 1)
            {
                request.Id = value;
            }
            else if (number == 3 && !TryReadCommon(message, value, ref request))
            {
                return false;
            }
        }
        return true;
    }

    private static bool TryReadCommon(ReadOnlySpan<byte> whole, Range range, ref InvokeRequest request)
    {
        var (offset, length) = range.GetOffsetAndLength(whole.Length);
        int position = offset;
        int end = offset + length;
        ReadOnlySpan<byte> message = whole.Slice(0, end);
        while (position < end)
        {
            if (!TryReadField(message, ref position, out int number, out int wire, out Range value))
            {
                return false;
            }
            if (wire != WireLength)
            {
                if (number is >= 1 and <= 4)
                {
                    return false;
                }
                continue;
            }
            switch (number)
            {
                case 1:
                    request.Method = value;
                    break;
                case 2:
                    if (!TryReadAnyValue(message, value, ref request.Data))
                    {
                        return false;
                    }
                    break;
                case 3:
                    request.ContentType = value;
                    break;
                case 4:
                    if (!TryReadExtension(message, value, ref request))
                    {
                        return false;
                    }
                    break;
            }
        }
        return true;
    }

    private static bool TryReadAnyValue(ReadOnlySpan<byte> whole, Range range, ref Range data)
    {
        var (offset, length) = range.GetOffsetAndLength(whole.Length);
        int position = offset;
        int end = offset + length;
        ReadOnlySpan<byte> message = whole.Slice(0, end);
        while (position < end)
        {
            if (!TryReadField(message, ref position, out int number, out int wire, out Range value))
            {
                return false;
            }
            if (number is 1 or 2 && wire != WireLength)
            {
                return false;
            }
            if (number == 2)
            {
                data = value;
            }
        }
        return true;
    }

    private static bool TryReadExtension(ReadOnlySpan<byte> whole, Range range, ref InvokeRequest request)
    {
        var (offset, length) = range.GetOffsetAndLength(whole.Length);
        int position = offset;
        int end = offset + length;
        ReadOnlySpan<byte> message = whole.Slice(0, end);
        while (position < end)
        {
            int start = position;
            if (!TryReadVarint(message, ref position, out ulong tag))
            {
                return false;
            }
            int number = (int)(tag >> 3);
            int wire = (int)(tag & 7);
            if (number == 1 && wire == WireVarint)
            {
                if (!TryReadVarint(message, ref position, out ulong verb))
                {
                    return false;
                }
                request.Verb = (int)verb; // an enum: out-of-range values are kept (and refused by the caller)
                continue;
            }
            position = start;
            if (!TryReadField(message, ref position, out number, out wire, out Range value))
            {
                return false;
            }
            if (number == 2)
            {
                if (wire != WireLength)
                {
                    return false;
                }
                request.QueryString = value;
            }
            else if (number == 1)
            {
                return false;
            }
        }
        return true;
    }

    public static bool TryReadHello(ReadOnlySpan<byte> message, out HelloRequest request)
    {
        request = default;
        int position = 0;
        while (position < message.Length)
        {
            if (!TryReadField(message, ref position, out int number, out int wire, out Range value))
            {
                return false;
            }
            if (number is >= 1 and <= 3 && wire != WireLength)
            {
                return false;
            }
            switch (number)
            {
                case 1:
                    request.ServiceName = value;
                    break;
                case 2:
                    request.Name = value;
                    break;
                case 3:
                    // Merging two occurrences of an Any is rare enough to keep the last one whole.
                    request.Data = value;
                    request.HasData = true;
                    break;
            }
        }
        return true;
    }

    /// <summary>Reads one field: its number, wire type and, for every type, the range of its payload.</summary>
    private static bool TryReadField(ReadOnlySpan<byte> message, ref int position, out int number, out int wire, out Range value)
    {
        value = default;
        number = 0;
        wire = 0;
        if (!TryReadVarint(message, ref position, out ulong tag) || tag >> 3 is 0 or > 536_870_911)
        {
            return false;
        }
        number = (int)(tag >> 3);
        wire = (int)(tag & 7);
        int start = position;
        switch (wire)
        {
            case WireVarint:
                if (!TryReadVarint(message, ref position, out _))
                {
                    return false;
                }
                break;
            case WireFixed64:
                position += 8;
                break;
            case WireFixed32:
                position += 4;
                break;
            case WireLength:
                if (!TryReadVarint(message, ref position, out ulong length) || length > (ulong)(message.Length - position))
                {
                    return false;
                }
                start = position;
                position += (int)length;
                break;
            default:
                return false; // groups (3, 4) are not proto3, and 6, 7 do not exist
        }
        if (position > message.Length)
        {
            return false;
        }
        value = new Range(start, position);
        return true;
    }

    private static bool TryReadVarint(ReadOnlySpan<byte> message, ref int position, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (position >= message.Length)
            {
                return false;
            }
            byte b = message[position++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }
        return false;
    }

    // ---- writing -------------------------------------------------------------------------------

    public static int VarintSize(int value)
    {
        uint v = (uint)value;
        int size = 1;
        while (v >= 0x80)
        {
            v >>= 7;
            size++;
        }
        return size;
    }

    public static int WriteVarint(Span<byte> destination, int value)
    {
        uint v = (uint)value;
        int i = 0;
        while (v >= 0x80)
        {
            destination[i++] = (byte)(v | 0x80);
            v >>= 7;
        }
        destination[i++] = (byte)v;
        return i;
    }

    /// <summary>The size of a length-delimited field (tag, length, payload) with a one-octet tag.</summary>
    public static int FieldSize(int payloadLength) => 1 + VarintSize(payloadLength) + payloadLength;

    /// <summary>Writes a length-delimited field with a one-octet tag (field numbers 1..15).</summary>
    public static int WriteField(Span<byte> destination, int number, ReadOnlySpan<byte> payload)
    {
        int n = WriteFieldHeader(destination, number, payload.Length);
        payload.CopyTo(destination.Slice(n));
        return n + payload.Length;
    }

    public static int WriteFieldHeader(Span<byte> destination, int number, int payloadLength)
    {
        destination[0] = (byte)((number << 3) | WireLength);
        return 1 + WriteVarint(destination.Slice(1), payloadLength);
    }

    /// <summary>The gRPC length-prefixed message header: not compressed, then the length big-endian.</summary>
    public static void WriteGrpcPrefix(Span<byte> destination, int messageLength)
    {
        destination[0] = 0;
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(destination.Slice(1), messageLength);
    }
}
