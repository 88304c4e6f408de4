using System.Buffers;
using System.Buffers.Text;
using System.Text;
using Proxy.Http2;

namespace Proxy.Core.Config;

/// <summary>
/// Envoy's HeaderMatcher (envoy.config.route.v3.HeaderMatcher): a string match, a range match or a
/// presence match on one header (pseudo-headers :method, :authority, :scheme, :path included), with
/// invert_match and treat_missing_header_as_empty. Several fields with the same name are matched as
/// their comma-joined values, as Envoy does.
/// </summary>
public sealed class HeaderMatcher
{
    private readonly byte[] _name;

    private HeaderMatcher(string name, bool invert, bool treatMissingAsEmpty)
    {
        Name = name.ToLowerInvariant();
        _name = Encoding.ASCII.GetBytes(Name);
        Invert = invert;
        TreatMissingAsEmpty = treatMissingAsEmpty;
    }

    public string Name { get; }
    public bool Invert { get; }
    public bool TreatMissingAsEmpty { get; }
    public StringMatcher? String { get; private init; }
    public (long Start, long End)? Range { get; private init; }
    /// <summary>present_match: true = the header must be present, false = absent.</summary>
    public bool? Present { get; private init; }

    public static HeaderMatcher ForString(string name, StringMatcher matcher, bool invert = false, bool treatMissingAsEmpty = false) =>
        new(name, invert, treatMissingAsEmpty) { String = matcher };

    public static HeaderMatcher ForRange(string name, long start, long end, bool invert = false, bool treatMissingAsEmpty = false) =>
        new(name, invert, treatMissingAsEmpty) { Range = (start, end) };

    public static HeaderMatcher ForPresence(string name, bool present, bool invert = false) =>
        new(name, invert, false) { Present = present };

    public bool Matches(HeaderList headers)
    {
        int first = -1;
        int count = 0;
        int total = 0;
        for (int i = 0; i < headers.Count; i++)
        {
            ReadOnlySpan<byte> n = headers.Name(i);
            if (n.Length == _name.Length && n.SequenceEqual(_name))
            {
                if (first < 0)
                {
                    first = i;
                }
                count++;
                total += headers.Value(i).Length + 1;
            }
        }

        if (count == 0)
        {
            if (Present is bool wanted)
            {
                return wanted == Invert;
            }
            if (!TreatMissingAsEmpty)
            {
                return Invert;
            }
            return MatchesValue(default) != Invert;
        }
        if (Present is bool present)
        {
            return present != Invert;
        }
        if (count == 1)
        {
            return MatchesValue(headers.Value(first)) != Invert;
        }
        byte[]? rented = total > 1024 ? ArrayPool<byte>.Shared.Rent(total) : null;
        Span<byte> joined = rented ?? stackalloc byte[1024];
        int length = 0;
        for (int i = first; i < headers.Count; i++)
        {
            ReadOnlySpan<byte> n = headers.Name(i);
            if (n.Length == _name.Length && n.SequenceEqual(_name))
            {
                if (length > 0)
                {
                    joined[length++] = (byte)',';
                }
                ReadOnlySpan<byte> v = headers.Value(i);
                v.CopyTo(joined.Slice(length));
                length += v.Length;
            }
        }
        bool result = MatchesValue(joined.Slice(0, length)) != Invert;
        if (rented != null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
        return result;
    }

    private bool MatchesValue(ReadOnlySpan<byte> value)
    {
        if (String != null)
        {
            return String.Matches(value);
        }
        // range_match: a signed integer in [start, end).
        return Range is var (start, end) && Utf8Parser.TryParse(value, out long number, out int consumed) && consumed == value.Length
               && number >= start && number < end;
    }
}
