using System.Text;

namespace Proxy.Core.Routing;

public enum PathMatchKind : byte
{
    Prefix,
    /// <summary>The path without its query string equals the value.</summary>
    Path,
}

/// <summary>Envoy's Route: a match on the request and the cluster it goes to.</summary>
public sealed class Route
{
    private readonly byte[] _value;

    public Route(string name, PathMatchKind kind, string value, Cluster cluster, TimeSpan timeout, bool caseSensitive = true)
    {
        Name = name;
        Kind = kind;
        MatchValue = value;
        _value = Encoding.ASCII.GetBytes(value);
        Cluster = cluster;
        Timeout = timeout;
        CaseSensitive = caseSensitive;
    }

    public string Name { get; }
    public PathMatchKind Kind { get; }
    public string MatchValue { get; }
    public bool CaseSensitive { get; }
    public Cluster Cluster { get; }
    /// <summary>The whole request's time limit; <see cref="TimeSpan.Zero"/> means none (Envoy's "0s").</summary>
    public TimeSpan Timeout { get; }

    public bool Matches(ReadOnlySpan<byte> path)
    {
        switch (Kind)
        {
            case PathMatchKind.Prefix:
                return path.Length >= _value.Length && Equal(path.Slice(0, _value.Length));
            default:
                int query = path.IndexOfAny((byte)'?', (byte)'#');
                if (query >= 0)
                {
                    path = path.Slice(0, query);
                }
                return path.Length == _value.Length && Equal(path);
        }
    }

    private bool Equal(ReadOnlySpan<byte> candidate) =>
        CaseSensitive ? candidate.SequenceEqual(_value) : Ascii.EqualsIgnoreCase(candidate, _value);
}
