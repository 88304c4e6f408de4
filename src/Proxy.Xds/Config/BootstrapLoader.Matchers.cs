using System.Collections.Frozen;
using System.Net;
using Proxy.Core.Config;
using Proxy.Core.Forwarding;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Xds.Config;

/// <summary>Matchers: headers, query parameters and strings (exact, prefix, suffix, contains, safe regex).</summary>
public sealed partial class BootstrapLoader
{
    /// <summary>v3 string_match and the legacy fields Istio 1.5 sends (exact_match, prefix_match, suffix_match, safe_regex_match).</summary>
    private static HeaderMatcher LoadHeaderMatcher(ConfigNode h)
    {
        string name = h["name"].RequiredString();
        bool invert = h["invert_match"].Boolean() ?? false;
        bool missingAsEmpty = h["treat_missing_header_as_empty"].Boolean() ?? false;
        if (h["string_match"].Exists)
        {
            return HeaderMatcher.ForString(name, LoadStringMatcher(h["string_match"]), invert, missingAsEmpty);
        }
        if (h["exact_match"].Exists || h.Keys.Contains("exact_match") || h.Keys.Contains("exactMatch"))
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Exact, h["exact_match"].String() ?? ""), invert, missingAsEmpty);
        }
        if (h["prefix_match"].Exists)
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Prefix, h["prefix_match"].String()!), invert, missingAsEmpty);
        }
        if (h["suffix_match"].Exists)
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Suffix, h["suffix_match"].String()!), invert, missingAsEmpty);
        }
        if (h["contains_match"].Exists)
        {
            return HeaderMatcher.ForString(name, new StringMatcher(StringMatchKind.Contains, h["contains_match"].String()!), invert, missingAsEmpty);
        }
        if (h["safe_regex_match"].Exists)
        {
            return HeaderMatcher.ForString(name, Regex(h["safe_regex_match"]), invert, missingAsEmpty);
        }
        if (h["regex_match"].Exists)
        {
            // v2's std::regex matcher: the same whole-value semantics, run by our linear-time engine.
            return HeaderMatcher.ForString(name, Regex(h["regex_match"], h["regex_match"].RequiredString()), invert, missingAsEmpty);
        }
        if (h["range_match"].Exists)
        {
            ConfigNode range = h["range_match"];
            long start = range["start"].Integer() ?? throw new ConfigException($"{range["start"].Path}: required");
            long end = range["end"].Integer() ?? throw new ConfigException($"{range["end"].Path}: required");
            return HeaderMatcher.ForRange(name, start, end, invert, missingAsEmpty);
        }
        if (h["present_match"].Exists)
        {
            return HeaderMatcher.ForPresence(name, h["present_match"].Boolean() ?? true, invert);
        }
        // No match specifier: Envoy treats the header as required to be present.
        return HeaderMatcher.ForPresence(name, true, invert);
    }

    private static QueryParameterMatcher LoadQueryMatcher(ConfigNode q)
    {
        string name = q["name"].RequiredString();
        if (q["string_match"].Exists)
        {
            return new QueryParameterMatcher(name, LoadStringMatcher(q["string_match"]), false);
        }
        return new QueryParameterMatcher(name, null, q["present_match"].Boolean() ?? true);
    }

    private static StringMatcher LoadStringMatcher(ConfigNode m)
    {
        bool ignoreCase = m["ignore_case"].Boolean() ?? false;
        if (m["exact"].Exists || m.Keys.Contains("exact"))
        {
            return new StringMatcher(StringMatchKind.Exact, m["exact"].String() ?? "", ignoreCase);
        }
        if (m["prefix"].Exists)
        {
            return new StringMatcher(StringMatchKind.Prefix, m["prefix"].String()!, ignoreCase);
        }
        if (m["suffix"].Exists)
        {
            return new StringMatcher(StringMatchKind.Suffix, m["suffix"].String()!, ignoreCase);
        }
        if (m["contains"].Exists)
        {
            return new StringMatcher(StringMatchKind.Contains, m["contains"].String()!, ignoreCase);
        }
        if (m["safe_regex"].Exists)
        {
            return Regex(m["safe_regex"], null, ignoreCase);
        }
        throw new ConfigException($"{m.Path}: no exact, prefix, suffix, contains or safe_regex");
    }

    private static StringMatcher Regex(ConfigNode node, string? pattern = null, bool ignoreCase = false)
    {
        try
        {
            return new StringMatcher(StringMatchKind.Regex, pattern ?? node["regex"].RequiredString(), ignoreCase);
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{node.Path}: {e.Message}");
        }
    }
}
