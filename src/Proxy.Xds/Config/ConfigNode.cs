using System.Globalization;
using Proxy.Core.Routing;
using YamlDotNet.RepresentationModel;

namespace Proxy.Xds.Config;

/// <summary>
/// A node of a YAML or JSON configuration document that knows its own path, so every error names the
/// field exactly (static_resources.clusters[2].connect_timeout). Field names are accepted in Envoy's
/// snake_case and in proto3 JSON's lowerCamelCase.
/// </summary>
public readonly struct ConfigNode(YamlNode? node, string path)
{
    public string Path { get; } = path;
    public bool Exists => node != null && !(node is YamlScalarNode s && s.Style == YamlDotNet.Core.ScalarStyle.Plain && s.Value is "null" or "~" or "");

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

    private string Child(string name) => Path.Length == 0 ? name : Path + "." + name;

    public ConfigNode this[string field]
    {
        get
        {
            if (node is YamlMappingNode map)
            {
                string camel = ToCamel(field);
                foreach (var (key, value) in map.Children)
                {
                    if (key is YamlScalarNode k && (k.Value == field || k.Value == camel))
                    {
                        return new ConfigNode(value, Child(field));
                    }
                }
            }
            else if (node != null && Exists)
            {
                throw new ConfigException($"{Path}: expected an object");
            }
            return new ConfigNode(null, Child(field));
        }
    }

    /// <summary>An object (as opposed to a scalar or a list): a wrapper type such as UInt32Value may come either way.</summary>
    public bool IsMap => node is YamlMappingNode;

    public IEnumerable<string> Keys => node is YamlMappingNode map
        ? map.Children.Keys.OfType<YamlScalarNode>().Select(static k => k.Value ?? "")
        : [];

    public IEnumerable<ConfigNode> Items
    {
        get
        {
            if (!Exists)
            {
                yield break;
            }
            if (node is not YamlSequenceNode sequence)
            {
                throw new ConfigException($"{Path}: expected a list");
            }
            int i = 0;
            foreach (YamlNode item in sequence.Children)
            {
                yield return new ConfigNode(item, $"{Path}[{i++}]");
            }
        }
    }

    public string? String()
    {
        if (!Exists)
        {
            return null;
        }
        if (node is YamlScalarNode scalar)
        {
            return scalar.Value;
        }
        throw new ConfigException($"{Path}: expected a string");
    }

    public string RequiredString() => String() is { Length: > 0 } s ? s : throw new ConfigException($"{Path}: required");

    public long? Integer()
    {
        string? s = String();
        if (s == null)
        {
            return null;
        }
        return long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) ? v : throw new ConfigException($"{Path}: '{s}' is not an integer");
    }

    public bool? Boolean()
    {
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
        if (node is YamlMappingNode)
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
}
