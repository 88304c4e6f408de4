using System.Collections;
using System.Globalization;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;

namespace Proxy.Xds.Admin;

/// <summary>
/// A decoded protobuf message as proto3 JSON with the proto field names (Envoy's admin output), built
/// from the descriptors. Unlike Google.Protobuf's JsonFormatter it does not give up on an <c>Any</c>
/// whose type we do not model: that one is written as <c>{"@type": url, "value": base64}</c>, so the
/// bytes the control plane sent are still there (istioctl reads such dumps leniently). Fields our proto
/// subset does not declare are not shown.
/// </summary>
public static class ProtoJson
{
    private static readonly JsonFormatter s_wellKnown = new(JsonFormatter.Settings.Default);

    public static JsonNode ToJson(IMessage message)
    {
        if (IsWellKnown(message.Descriptor))
        {
            return JsonNode.Parse(s_wellKnown.Format(message))!;
        }
        if (message is Any any)
        {
            return AnyJson(any.TypeUrl, any.Value);
        }
        var result = new JsonObject();
        foreach (FieldDescriptor field in message.Descriptor.Fields.InFieldNumberOrder())
        {
            if (FieldJson(message, field) is JsonNode value)
            {
                result[field.Name] = value;
            }
        }
        return result;
    }

    /// <summary>A message packed as an Any: <c>{"@type": url, ...its fields}</c>.</summary>
    public static JsonObject Packed(IMessage message, string typeUrl)
    {
        var result = new JsonObject { ["@type"] = typeUrl };
        JsonNode body = ToJson(message);
        if (body is JsonObject fields && !IsWellKnown(message.Descriptor))
        {
            foreach (var (name, value) in fields.ToList())
            {
                fields.Remove(name);
                result[name] = value;
            }
        }
        else
        {
            result["value"] = body;
        }
        return result;
    }

    public static JsonObject AnyJson(string typeUrl, ByteString value)
    {
        int slash = typeUrl.LastIndexOf('/');
        string name = slash < 0 ? typeUrl : typeUrl[(slash + 1)..];
        MessageDescriptor? descriptor = XdsTypes.Find(typeUrl) ?? WellKnown(name) ?? ShownOnly(name);
        if (value.IsEmpty)
        {
            // An empty message reads the same in every type: nothing lost.
            return new JsonObject { ["@type"] = typeUrl };
        }
        if (descriptor != null)
        {
            try
            {
                return Packed(descriptor.Parser.ParseFrom(value), typeUrl);
            }
            catch (InvalidProtocolBufferException)
            {
                // Shown as bytes below.
            }
        }
        return new JsonObject { ["@type"] = typeUrl, ["value"] = value.ToBase64() };
    }

    private static JsonNode? FieldJson(IMessage message, FieldDescriptor field)
    {
        object? value = field.Accessor.GetValue(message);
        if (field.IsMap)
        {
            var map = (IDictionary)value!;
            if (map.Count == 0)
            {
                return null;
            }
            var result = new JsonObject();
            FieldDescriptor valueField = field.MessageType.FindFieldByNumber(2);
            foreach (DictionaryEntry entry in map)
            {
                string key = entry.Key is bool b ? (b ? "true" : "false") : Convert.ToString(entry.Key, CultureInfo.InvariantCulture)!;
                result[key] = ValueJson(valueField, entry.Value);
            }
            return result;
        }
        if (field.IsRepeated)
        {
            var list = (IList)value!;
            if (list.Count == 0)
            {
                return null;
            }
            var result = new JsonArray();
            foreach (object? item in list)
            {
                result.Add(ValueJson(field, item));
            }
            return result;
        }
        if (field.HasPresence ? !field.Accessor.HasValue(message) : IsDefault(field, value))
        {
            return null;
        }
        return ValueJson(field, value);
    }

    private static bool IsDefault(FieldDescriptor field, object? value) => value switch
    {
        null => true,
        string s => s.Length == 0,
        ByteString bytes => bytes.IsEmpty,
        bool b => !b,
        double d => d == 0 && !double.IsNegative(d),
        float f => f == 0 && !float.IsNegative(f),
        IMessage => false,
        _ => field.FieldType == FieldType.Enum ? Convert.ToInt32(value, CultureInfo.InvariantCulture) == 0 : Convert.ToDecimal(value, CultureInfo.InvariantCulture) == 0,
    };

    private static JsonNode? ValueJson(FieldDescriptor field, object? value)
    {
        switch (field.FieldType)
        {
            case FieldType.Message:
            case FieldType.Group:
                // A wrapper field (UInt32Value, ...) reads as its primitive: written as the value it wraps.
                return value switch
                {
                    IMessage m => ToJson(m),
                    null => null,
                    _ => ValueJson(field.MessageType.FindFieldByNumber(1), value),
                };
            case FieldType.Enum:
                int number = Convert.ToInt32(value, CultureInfo.InvariantCulture);
                return field.EnumType.FindValueByNumber(number) is { } named ? JsonValue.Create(named.Name) : JsonValue.Create(number);
            case FieldType.Int64:
            case FieldType.SInt64:
            case FieldType.SFixed64:
            case FieldType.UInt64:
            case FieldType.Fixed64:
                // proto3 JSON writes 64-bit integers as strings.
                return JsonValue.Create(Convert.ToString(value, CultureInfo.InvariantCulture));
            case FieldType.Bytes:
                return JsonValue.Create(((ByteString)value!).ToBase64());
            case FieldType.Double:
                double d = (double)value!;
                return double.IsFinite(d) ? JsonValue.Create(d) : JsonValue.Create(double.IsNaN(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
            case FieldType.Float:
                float f = (float)value!;
                return float.IsFinite(f) ? JsonValue.Create(f) : JsonValue.Create(float.IsNaN(f) ? "NaN" : f > 0 ? "Infinity" : "-Infinity");
            case FieldType.Bool:
                return JsonValue.Create((bool)value!);
            case FieldType.String:
                return JsonValue.Create((string)value!);
            case FieldType.UInt32:
            case FieldType.Fixed32:
                return JsonValue.Create(Convert.ToUInt32(value, CultureInfo.InvariantCulture));
            default:
                return JsonValue.Create(Convert.ToInt32(value, CultureInfo.InvariantCulture));
        }
    }

    private static bool IsWellKnown(MessageDescriptor descriptor) =>
        descriptor.File.Package == "google.protobuf" && descriptor.FullName != Any.Descriptor.FullName;

    /// <summary>Types we do not act on but show in full, because control planes send them in every listener.</summary>
    private static MessageDescriptor? ShownOnly(string fullName) => fullName switch
    {
        "udpa.type.v1.TypedStruct" => Api.Udpa.TypedStruct.Descriptor,
        "xds.type.v3.TypedStruct" => Api.XdsType.TypedStruct.Descriptor,
        "envoy.tcp.metadataexchange.config.MetadataExchange" => Api.MetadataExchange.MetadataExchange.Descriptor,
        _ => null,
    };

    private static MessageDescriptor? WellKnown(string fullName) => fullName switch
    {
        "google.protobuf.Struct" => Struct.Descriptor,
        "google.protobuf.Value" => Value.Descriptor,
        "google.protobuf.ListValue" => ListValue.Descriptor,
        "google.protobuf.Duration" => Duration.Descriptor,
        "google.protobuf.Timestamp" => Timestamp.Descriptor,
        "google.protobuf.Empty" => Empty.Descriptor,
        "google.protobuf.StringValue" => StringValue.Descriptor,
        "google.protobuf.BoolValue" => BoolValue.Descriptor,
        "google.protobuf.UInt32Value" => UInt32Value.Descriptor,
        "google.protobuf.UInt64Value" => UInt64Value.Descriptor,
        "google.protobuf.Int32Value" => Int32Value.Descriptor,
        "google.protobuf.Int64Value" => Int64Value.Descriptor,
        "google.protobuf.DoubleValue" => DoubleValue.Descriptor,
        "google.protobuf.BytesValue" => BytesValue.Descriptor,
        _ => null,
    };
}
