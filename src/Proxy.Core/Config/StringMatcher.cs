using System.Text;
using System.Text.RegularExpressions;

namespace Proxy.Core.Config;

public enum StringMatchKind : byte
{
    Exact,
    Prefix,
    Suffix,
    Contains,
    /// <summary>Envoy's safe_regex: RE2 syntax, matched against the whole value.</summary>
    Regex,
}

/// <summary>
/// Envoy's StringMatcher (envoy.type.matcher.v3.StringMatcher) over octets. Regexes are compiled once,
/// anchored at both ends as Envoy's RE2 matching is, and run by the non-backtracking engine, so a hostile
/// value cannot make a match take more than linear time.
/// </summary>
public sealed class StringMatcher
{
    private const int MaxStackChars = 4096;
    private readonly byte[] _value;
    private readonly Regex? _regex;

    public StringMatcher(StringMatchKind kind, string value, bool ignoreCase = false)
    {
        Kind = kind;
        Value = value;
        IgnoreCase = ignoreCase;
        _value = Encoding.UTF8.GetBytes(value);
        if (kind == StringMatchKind.Regex)
        {
            try
            {
                _regex = new Regex($"\\A(?:{value})\\z",
                    RegexOptions.NonBacktracking | RegexOptions.CultureInvariant | (ignoreCase ? RegexOptions.IgnoreCase : RegexOptions.None));
            }
            catch (ArgumentException e)
            {
                throw new ConfigException($"invalid regex '{value}': {e.Message}");
            }
        }
    }

    public StringMatchKind Kind { get; }
    public string Value { get; }
    public bool IgnoreCase { get; }

    public bool Matches(ReadOnlySpan<byte> candidate)
    {
        ReadOnlySpan<byte> v = _value;
        switch (Kind)
        {
            case StringMatchKind.Exact:
                return IgnoreCase ? Ascii.EqualsIgnoreCase(candidate, v) : candidate.SequenceEqual(v);
            case StringMatchKind.Prefix:
                return candidate.Length >= v.Length && Equal(candidate.Slice(0, v.Length), v);
            case StringMatchKind.Suffix:
                return candidate.Length >= v.Length && Equal(candidate.Slice(candidate.Length - v.Length), v);
            case StringMatchKind.Contains:
                if (!IgnoreCase)
                {
                    return candidate.IndexOf(v) >= 0;
                }
                for (int i = 0; i + v.Length <= candidate.Length; i++)
                {
                    if (Ascii.EqualsIgnoreCase(candidate.Slice(i, v.Length), v))
                    {
                        return true;
                    }
                }
                return false;
            default:
                return MatchesRegex(candidate);
        }
    }

    private bool Equal(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => IgnoreCase ? Ascii.EqualsIgnoreCase(a, b) : a.SequenceEqual(b);

    private bool MatchesRegex(ReadOnlySpan<byte> candidate)
    {
        if (candidate.Length > MaxStackChars)
        {
            return _regex!.IsMatch(Encoding.Latin1.GetString(candidate));
        }
        Span<char> chars = stackalloc char[candidate.Length];
        Encoding.Latin1.GetChars(candidate, chars);
        return _regex!.IsMatch(chars);
    }
}
