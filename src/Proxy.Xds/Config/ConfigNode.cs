using System.Collections;
using System.Collections.Frozen;
using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;
using Proxy.Core.Config;
using Proxy.Core.Routing;
using YamlDotNet.RepresentationModel;

namespace Proxy.Xds.Config;

/// <summary>
/// A node of an Envoy configuration that knows its own path, so every error names the field exactly
/// (static_resources.clusters[2].connect_timeout). One loader reads two kinds of documents through it:
/// YAML or JSON text (a bootstrap, a filesystem subscription; field names in Envoy's snake_case or in
/// proto3 JSON's lowerCamelCase) and decoded protobuf messages (xDS resources), whose fields are looked up
/// by their proto names, with an <c>Any</c> opened when its type is one of ours and a <c>Struct</c> read like
/// JSON. In a message, a proto3 field without presence that holds its default value reads as absent,
/// which is what Envoy makes of it too.
/// </summary>
public readonly struct ConfigNode
{
    // A YamlNode, or a protobuf view: IMessage, AnyView, Struct, IDictionary (map field), IList
    // (repeated field, ListValue's values), or a scalar (string, bool, a number, ByteString).
    private readonly object? _node;
    private readonly NodePath? _path;

    private ConfigNode(object? node, NodePath? path)
    {
        _node = node;
        _path = path;
    }

    public ConfigNode(YamlNode? node, string path) : this(node, NodePath.Root(path))
    {
    }

    /// <summary>A decoded protobuf message; <paramref name="origin"/> starts every path (e.g. "Cluster 'x'").</summary>
    public static ConfigNode FromMessage(IMessage message, string origin) => new(message, NodePath.Root(origin));

    /// <summary>The field path, built only when asked for (an error or a warning).</summary>
    public string Path => _path?.ToString() ?? "";

    /// <summary>The path with list indices left out: the same field of every element reads the same.</summary>
    public string GenericPath => _path?.ToString(generic: true) ?? "";

    public bool Exists => _node switch
    {
        null => false,
        YamlScalarNode s => !(s.Style == YamlDotNet.Core.ScalarStyle.Plain && s.Value is "null" or "~" or ""),
        _ => true,
    };

    public static ConfigNode Parse(string text, string origin)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new ConfigException($"{origin}: not valid YAML or JSON at line {e.Start.Line}, column {e.Start.Column}: {e.Message}");
        }
        if (stream.Documents.Count == 0)
        {
            throw new ConfigException($"{origin}: empty document");
        }
        return new ConfigNode(stream.Documents[0].RootNode, "");
    }

    /// <summary>
    /// Envoy's --config-yaml over -c: the overlay merged into the base as protobuf merges messages —
    /// mappings field by field (recursively), lists appended, scalars replaced — as YAML text again.
    /// </summary>
    public static string Merge(string baseText, string baseOrigin, string overlayText, string overlayOrigin)
    {
        YamlNode target = Parse(baseText, baseOrigin)._node as YamlNode ?? new YamlMappingNode();
        YamlNode overlay = Parse(overlayText, overlayOrigin)._node as YamlNode ?? new YamlMappingNode();
        if (target is not YamlMappingNode root || overlay is not YamlMappingNode top)
        {
            throw new ConfigException($"{overlayOrigin}: both the bootstrap and --config-yaml must be objects");
        }
        MergeInto(root, top);
        var stream = new YamlStream(new YamlDocument(root));
        using var writer = new StringWriter(CultureInfo.InvariantCulture);
        stream.Save(writer, assignAnchors: false);
        return writer.ToString();

        static void MergeInto(YamlMappingNode into, YamlMappingNode from)
        {
            foreach (var (key, value) in from.Children)
            {
                if (!into.Children.TryGetValue(key, out YamlNode? existing))
                {
                    into.Children[key] = value;
                }
                else if (existing is YamlMappingNode a && value is YamlMappingNode b)
                {
                    MergeInto(a, b);
                }
                else if (existing is YamlSequenceNode list && value is YamlSequenceNode more)
                {
                    foreach (YamlNode item in more.Children)
                    {
                        list.Add(item);
                    }
                }
                else
                {
                    into.Children[key] = value;
                }
            }
        }
    }

    public ConfigNode this[string field]
    {
        get
        {
            NodePath path = new(_path, field, -1);
            // The common case first: a decoded message (not a Struct), without the interface checks below.
            if (_node is IBufferMessage decoded && _node is not Struct)
            {
                return new ConfigNode(MessageField((IMessage)decoded, field), path);
            }
            switch (_node)
            {
                case YamlMappingNode map:
                    string camel = ToCamel(field);
                    foreach (var (key, value) in map.Children)
                    {
                        if (key is YamlScalarNode k && (k.Value == field || k.Value == camel))
                        {
                            return new ConfigNode(value, path);
                        }
                    }
                    return new ConfigNode(null, path);
                case AnyView any:
                    if (field == "@type")
                    {
                        return new ConfigNode(any.TypeUrl, path);
                    }
                    return any.Message == null ? new ConfigNode(null, path) : new ConfigNode(MessageField(any.Message, field), path);
                case Struct s:
                    return new ConfigNode(s.Fields.TryGetValue(field, out Value? v) ? Unwrap(v) : null, path);
                case IDictionary dictionary:
                    return new ConfigNode(dictionary.Contains(field) ? Wrap(dictionary[field]) : null, path);
                case IMessage message:
                    return new ConfigNode(MessageField(message, field), path);
                case null:
                    return new ConfigNode(null, path);
                default:
                    if (Exists)
                    {
                        throw new ConfigException($"{Path}: expected an object");
                    }
                    return new ConfigNode(null, path);
            }
        }
    }

    /// <summary>An object (as opposed to a scalar or a list): a wrapper type such as UInt32Value may come either way.</summary>
    public bool IsMap => _node is YamlMappingNode or IMessage or AnyView or IDictionary;

    public IEnumerable<string> Keys
    {
        get
        {
            switch (_node)
            {
                case YamlMappingNode map:
                    return map.Children.Keys.OfType<YamlScalarNode>().Select(static k => k.Value ?? "");
                case Struct s:
                    return s.Fields.Keys;
                case IDictionary dictionary:
                    return dictionary.Keys.Cast<object>().Select(static k => Convert.ToString(k, CultureInfo.InvariantCulture) ?? "");
                case AnyView any:
                    return any.Message == null ? ["@type"] : SetFields(any.Message).Prepend("@type");
                case IMessage message:
                    return SetFields(message);
                default:
                    return [];
            }
        }
    }

    public IEnumerable<ConfigNode> Items
    {
        get
        {
            if (!Exists)
            {
                yield break;
            }
            if (_node is YamlSequenceNode sequence)
            {
                int i = 0;
                foreach (YamlNode item in sequence.Children)
                {
                    yield return new ConfigNode(item, new NodePath(_path, null, i++));
                }
                yield break;
            }
            if (_node is IList list)
            {
                for (int i = 0; i < list.Count; i++)
                {
                    yield return new ConfigNode(Wrap(list[i]), new NodePath(_path, null, i));
                }
                yield break;
            }
            throw new ConfigException($"{Path}: expected a list");
        }
    }

    public string? String()
    {
        switch (_node)
        {
            case null:
                return null;
            case YamlScalarNode scalar:
                return Exists ? scalar.Value : null;
            case string s:
                return s;
            case bool b:
                return b ? "true" : "false";
            case ByteString bytes:
                return bytes.ToBase64();
            case IFormattable number:
                return number.ToString(null, CultureInfo.InvariantCulture);
            default:
                if (!Exists)
                {
                    return null;
                }
                throw new ConfigException($"{Path}: expected a string");
        }
    }

    public string RequiredString() => String() is { Length: > 0 } s ? s : throw new ConfigException($"{Path}: required");

    public long? Integer()
    {
        switch (_node)
        {
            case int or uint or long:
                return Convert.ToInt64(_node, CultureInfo.InvariantCulture);
            case ulong u:
                return u > long.MaxValue ? throw new ConfigException($"{Path}: {u} is out of range") : (long)u;
            case double d:
                return d == Math.Floor(d) && Math.Abs(d) < 9e15 ? (long)d : throw new ConfigException($"{Path}: '{d}' is not an integer");
        }
        string? s = String();
        if (s == null)
        {
            return null;
        }
        return long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) ? v : throw new ConfigException($"{Path}: '{s}' is not an integer");
    }

    public bool? Boolean()
    {
        if (_node is bool b)
        {
            return b;
        }
        string? s = String();
        return s switch
        {
            null => null,
            "true" or "True" => true,
            "false" or "False" => false,
            _ => throw new ConfigException($"{Path}: '{s}' is not a boolean"),
        };
    }

    /// <summary>A protobuf Duration in its JSON form ("5s", "0.250s"), or the object form {seconds, nanos}.</summary>
    public TimeSpan? Duration()
    {
        if (!Exists)
        {
            return null;
        }
        if (_node is Google.Protobuf.WellKnownTypes.Duration d)
        {
            if (d.Seconds < 0 || d.Nanos < 0 || d.Seconds >= 315_576_000_000)
            {
                throw new ConfigException($"{Path}: {d.Seconds}s {d.Nanos}ns is not a valid duration");
            }
            return TimeSpan.FromSeconds(d.Seconds) + TimeSpan.FromTicks(d.Nanos / 100);
        }
        if (IsMap)
        {
            long seconds = this["seconds"].Integer() ?? 0;
            long nanos = this["nanos"].Integer() ?? 0;
            return TimeSpan.FromSeconds(seconds) + TimeSpan.FromTicks(nanos / 100);
        }
        string s = String()!;
        if (s.EndsWith('s') && double.TryParse(s.AsSpan(0, s.Length - 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && value >= 0 && value < 315_576_000_000)
        {
            return TimeSpan.FromSeconds(value);
        }
        throw new ConfigException($"{Path}: '{s}' is not a duration such as \"5s\" or \"0.25s\"");
    }

    /// <summary>
    /// This object as a protobuf Struct (a node's metadata): JSON strings stay strings; unquoted YAML
    /// scalars that read as numbers or booleans become those.
    /// </summary>
    public Struct ToStruct()
    {
        var result = new Struct();
        foreach (string key in Keys)
        {
            result.Fields[key] = this[key].ToValue();
        }
        return result;
    }

    private Value ToValue()
    {
        if (IsMap)
        {
            return Value.ForStruct(ToStruct());
        }
        if (_node is YamlSequenceNode)
        {
            return Value.ForList([.. Items.Select(static i => i.ToValue())]);
        }
        if (_node is YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain } plain)
        {
            if (plain.Value is "true" or "false")
            {
                return Value.ForBool(plain.Value == "true");
            }
            if (double.TryParse(plain.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double number))
            {
                return Value.ForNumber(number);
            }
            if (!Exists)
            {
                return Value.ForNull();
            }
        }
        return Value.ForString(String() ?? "");
    }

    /// <summary>
    /// This node as JSON, for /config_dump: a document's tree as written (unquoted scalars that read as
    /// numbers, booleans or null become those; all else strings), a decoded message as proto3 JSON.
    /// </summary>
    public System.Text.Json.Nodes.JsonNode? ToJson() => _node switch
    {
        YamlMappingNode map => new System.Text.Json.Nodes.JsonObject(map.Children
            .Select(static p => KeyValuePair.Create(((YamlScalarNode)p.Key).Value ?? "", new ConfigNode(p.Value, (NodePath?)null).ToJson()))
            .DistinctBy(static p => p.Key)),
        YamlSequenceNode list => new System.Text.Json.Nodes.JsonArray([.. list.Children.Select(static c => new ConfigNode(c, (NodePath?)null).ToJson())]),
        YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain } plain when !Exists => null,
        YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: "true" or "false" } plain => System.Text.Json.Nodes.JsonValue.Create(plain.Value == "true"),
        YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain } plain when long.TryParse(plain.Value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long integer) => System.Text.Json.Nodes.JsonValue.Create(integer),
        YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain } plain when double.TryParse(plain.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double number) && double.IsFinite(number) => System.Text.Json.Nodes.JsonValue.Create(number),
        YamlScalarNode scalar => System.Text.Json.Nodes.JsonValue.Create(scalar.Value ?? ""),
        IMessage message => Proxy.Xds.Admin.ProtoJson.ToJson(message),
        _ => null,
    };

    /// <summary>The value of a message's field, or null when it is not set (see the class remarks).</summary>
    private static object? MessageField(IMessage message, string name)
    {
        // MessageDescriptor.FindFieldByName searches the whole pool, and FieldDescriptor's properties are
        // computed on each call; a table per message type with what we need makes a probe cheap.
        return Fields(message.Descriptor).TryGetValue(name, out FieldInfo? field) ? FieldValue(message, field) : null;
    }

    private static FrozenDictionary<string, FieldInfo> Fields(MessageDescriptor descriptor)
    {
        // The loader asks one message type many times in a row: the last table is kept per thread.
        (MessageDescriptor Descriptor, FrozenDictionary<string, FieldInfo> Fields) last = t_lastFields;
        if (ReferenceEquals(last.Descriptor, descriptor))
        {
            return last.Fields;
        }
        FrozenDictionary<string, FieldInfo> fields = s_fields.GetOrAdd(descriptor, static d =>
            d.Fields.InDeclarationOrder().ToFrozenDictionary(static f => f.Name, static f => new FieldInfo(f), StringComparer.Ordinal));
        t_lastFields = (descriptor, fields);
        return fields;
    }

    [ThreadStatic]
    private static (MessageDescriptor Descriptor, FrozenDictionary<string, FieldInfo> Fields) t_lastFields;

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<MessageDescriptor, FrozenDictionary<string, FieldInfo>> s_fields = new();

    private sealed class FieldInfo(FieldDescriptor field)
    {
        public readonly string Name = field.Name;
        public readonly bool IsCollection = field.IsMap || field.IsRepeated;
        public readonly bool HasPresence = field.HasPresence;
        public readonly EnumDescriptor? Enum = field.FieldType == FieldType.Enum ? field.EnumType : null;
        public readonly IFieldAccessor Accessor = field.Accessor;
    }

    private static object? FieldValue(IMessage message, FieldInfo field)
    {
        if (field.IsCollection)
        {
            object list = field.Accessor.GetValue(message);
            return ((ICollection)list).Count == 0 ? null : list;
        }
        if (field.HasPresence && !field.Accessor.HasValue(message))
        {
            return null;
        }
        object? value = field.Accessor.GetValue(message);
        if (field.Enum != null)
        {
            int number = Convert.ToInt32(value, CultureInfo.InvariantCulture);
            if (!field.HasPresence && number == 0)
            {
                return null;
            }
            return field.Enum.FindValueByNumber(number)?.Name ?? number.ToString(CultureInfo.InvariantCulture);
        }
        if (!field.HasPresence && value is "" or false or 0 or 0u or 0L or 0UL or 0.0 or 0f || value is ByteString { IsEmpty: true })
        {
            return null;
        }
        return Wrap(value);
    }

    private static IEnumerable<string> SetFields(IMessage message)
    {
        foreach (FieldInfo field in Fields(message.Descriptor).Values)
        {
            if (FieldValue(message, field) != null)
            {
                yield return field.Name;
            }
        }
    }

    /// <summary>Opens an Any (cached per thread: the loader asks the same one for its @type and then its fields).</summary>
    private static object? Wrap(object? value) => value switch
    {
        Any any => AnyView.Open(any),
        Value v => Unwrap(v),
        ListValue l => l.Values,
        _ => value,
    };

    private static object? Unwrap(Value v) => v.KindCase switch
    {
        Value.KindOneofCase.StringValue => v.StringValue,
        Value.KindOneofCase.NumberValue => v.NumberValue,
        Value.KindOneofCase.BoolValue => v.BoolValue,
        Value.KindOneofCase.StructValue => v.StructValue,
        Value.KindOneofCase.ListValue => v.ListValue.Values,
        _ => null,
    };

    private static string ToCamel(string snake)
    {
        int underscore = snake.IndexOf('_');
        if (underscore < 0)
        {
            return snake;
        }
        var chars = new System.Text.StringBuilder(snake.Length);
        bool upper = false;
        foreach (char c in snake)
        {
            if (c == '_')
            {
                upper = true;
                continue;
            }
            chars.Append(upper ? char.ToUpperInvariant(c) : c);
            upper = false;
        }
        return chars.ToString();
    }

    /// <summary>One step of a path: a field name or a list index; the string is built only on demand.</summary>
    private sealed class NodePath(NodePath? parent, string? name, int index)
    {
        public static NodePath? Root(string origin) => origin.Length == 0 ? null : new NodePath(null, origin, -1);

        public override string ToString() => ToString(generic: false);

        public string ToString(bool generic)
        {
            var text = new System.Text.StringBuilder();
            Append(text, generic);
            return text.ToString();
        }

        private void Append(System.Text.StringBuilder text, bool generic)
        {
            parent?.Append(text, generic);
            if (name != null)
            {
                if (text.Length > 0)
                {
                    text.Append('.');
                }
                text.Append(name);
            }
            else
            {
                text.Append('[');
                if (!generic)
                {
                    text.Append(index);
                }
                text.Append(']');
            }
        }
    }

    /// <summary>An Any: its type URL and, when the type is one we know, the decoded message.</summary>
    private sealed class AnyView(string typeUrl, IMessage? message)
    {
        [ThreadStatic]
        private static (Any Any, AnyView View) t_last;

        public string TypeUrl { get; } = typeUrl;
        public IMessage? Message { get; } = message;

        public static AnyView Open(Any any)
        {
            if (ReferenceEquals(t_last.Any, any))
            {
                return t_last.View;
            }
            IMessage? message = XdsTypes.TryUnpack(any.TypeUrl, any.Value, out string? error);
            if (error != null)
            {
                throw new ConfigException($"an Any of type '{any.TypeUrl}' does not decode: {error}");
            }
            var view = new AnyView(any.TypeUrl, message);
            t_last = (any, view);
            return view;
        }
    }
}
