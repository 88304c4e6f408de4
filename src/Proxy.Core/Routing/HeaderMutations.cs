using System.Text;
using Proxy.Core.Config;
using Proxy.Http2;

namespace Proxy.Core.Routing;

/// <summary>Envoy's HeaderValueOption append actions.</summary>
public enum HeaderAppendAction : byte
{
    /// <summary>APPEND_IF_EXISTS_OR_ADD (and v2/v3 append: true, the default).</summary>
    Append,
    /// <summary>ADD_IF_ABSENT.</summary>
    AddIfAbsent,
    /// <summary>OVERWRITE_IF_EXISTS_OR_ADD (append: false).</summary>
    OverwriteOrAdd,
    /// <summary>OVERWRITE_IF_EXISTS.</summary>
    OverwriteIfExists,
}

/// <summary>
/// headers_to_add / headers_to_remove of one level (route configuration, virtual host, route). Removals
/// go first, then additions in order, as Envoy applies them.
/// </summary>
public sealed class HeaderMutations
{
    private readonly (byte[] Name, byte[] Value, HeaderAppendAction Action)[] _add;
    private readonly byte[][] _remove;

    public HeaderMutations(IReadOnlyList<(string Name, string Value, HeaderAppendAction Action)> add, IReadOnlyList<string> remove)
    {
        foreach (var (name, _, _) in add)
        {
            Validate(name);
        }
        foreach (string name in remove)
        {
            Validate(name);
        }
        _add = [.. add.Select(static a => (Encoding.ASCII.GetBytes(a.Name.ToLowerInvariant()), Encoding.UTF8.GetBytes(a.Value), a.Action))];
        _remove = [.. remove.Select(static r => Encoding.ASCII.GetBytes(r.ToLowerInvariant()))];
    }

    public static HeaderMutations? Create(IReadOnlyList<(string Name, string Value, HeaderAppendAction Action)> add, IReadOnlyList<string> remove) =>
        add.Count == 0 && remove.Count == 0 ? null : new HeaderMutations(add, remove);

    public int AddCount => _add.Length;
    public int RemoveCount => _remove.Length;

    private static void Validate(string name)
    {
        // Envoy refuses to add or remove pseudo-headers and host through these lists.
        if (name.Length == 0 || name[0] == ':' || name.Equals("host", StringComparison.OrdinalIgnoreCase))
        {
            throw new ConfigException($"header '{name}' cannot be added or removed");
        }
        foreach (char c in name)
        {
            if (c <= ' ' || c >= 0x7f)
            {
                throw new ConfigException($"header name '{name}' is not a token");
            }
        }
    }

    public void Apply(HeaderList headers)
    {
        foreach (byte[] name in _remove)
        {
            RemoveAll(headers, name);
        }
        foreach (var (name, value, action) in _add)
        {
            int existing = headers.IndexOf(name);
            switch (action)
            {
                case HeaderAppendAction.Append:
                    headers.Add(name, value);
                    break;
                case HeaderAppendAction.AddIfAbsent:
                    if (existing < 0)
                    {
                        headers.Add(name, value);
                    }
                    break;
                case HeaderAppendAction.OverwriteOrAdd:
                    RemoveAll(headers, name);
                    headers.Add(name, value);
                    break;
                case HeaderAppendAction.OverwriteIfExists:
                    if (existing >= 0)
                    {
                        RemoveAll(headers, name);
                        headers.Add(name, value);
                    }
                    break;
            }
        }
    }

    private static void RemoveAll(HeaderList headers, byte[] name)
    {
        for (int i = headers.Count - 1; i >= 0; i--)
        {
            if (headers.Name(i).SequenceEqual(name))
            {
                headers.RemoveAt(i);
            }
        }
    }
}
