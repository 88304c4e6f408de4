namespace Proxy.Core.Routing;

/// <summary>
/// The connection manager's normalize_path and merge_slashes (Istio turns normalize_path on for every
/// listener, so that an authorization policy on /admin also holds for /a/../admin): on the path part of
/// :path only, before RBAC and routing, and what goes upstream. RFC 3986 normalization as Envoy does it:
/// percent-encoded unreserved characters decoded (§6.2.2.2; %2E is a dot), backslashes taken as slashes,
/// then dot segments removed (§5.2.4, never above the root); other escapes (%2F included) are kept.
/// </summary>
public static class PathNormalizer
{
    /// <summary>
    /// Writes the normalized <paramref name="path"/> into <paramref name="output"/> (at least as long) and
    /// returns its length, or -1 when the path is already normal (the common case: nothing is copied).
    /// </summary>
    public static int Normalize(ReadOnlySpan<byte> path, Span<byte> output, bool mergeSlashes, bool normalize = true)
    {
        int queryAt = path.IndexOf((byte)'?');
        ReadOnlySpan<byte> part = queryAt < 0 ? path : path.Slice(0, queryAt);
        if (part.IsEmpty || part[0] != (byte)'/' || !(normalize ? NeedsWork(part, mergeSlashes) : mergeSlashes && part.IndexOf("//"u8) >= 0))
        {
            return -1;
        }
        // 1. Decode unreserved escapes and turn backslashes into slashes (never longer than the input).
        int n = 0;
        for (int i = 0; i < part.Length; i++)
        {
            byte c = part[i];
            if (!normalize)
            {
                output[n++] = c; // merge_slashes alone: nothing decoded, no dot segments removed
                continue;
            }
            if (c == (byte)'%' && i + 2 < part.Length && IsHex(part[i + 1]) && IsHex(part[i + 2]))
            {
                byte decoded = (byte)((Hex(part[i + 1]) << 4) | Hex(part[i + 2]));
                if (IsUnreserved(decoded))
                {
                    output[n++] = decoded;
                    i += 2;
                    continue;
                }
            }
            output[n++] = c == (byte)'\\' ? (byte)'/' : c;
        }
        // 2. Remove dot segments in place: each segment is copied down unless it is "." or "..".
        Span<byte> text = output.Slice(0, n);
        int written = 0;
        int at = 0;
        while (at < n)
        {
            // text[at] is '/': the segment runs to the next '/'.
            int next = text.Slice(at + 1).IndexOf((byte)'/');
            int end = next < 0 ? n : at + 1 + next;
            ReadOnlySpan<byte> segment = text.Slice(at + 1, end - at - 1);
            bool last = end == n;
            if (normalize && segment.Length == 1 && segment[0] == (byte)'.')
            {
                if (last)
                {
                    text[written++] = (byte)'/'; // "/a/." → "/a/"
                }
            }
            else if (normalize && segment.Length == 2 && segment[0] == (byte)'.' && segment[1] == (byte)'.')
            {
                // Back to the previous segment's start (not above the root).
                int back = written > 0 ? text.Slice(0, written).LastIndexOf((byte)'/') : 0;
                written = Math.Max(back, 0);
                if (last)
                {
                    text[written++] = (byte)'/'; // "/a/b/.." → "/a/"
                }
            }
            else if (segment.IsEmpty && mergeSlashes && !last)
            {
                // "//": merged into one.
            }
            else
            {
                text[written++] = (byte)'/';
                segment.CopyTo(text.Slice(written));
                written += segment.Length;
            }
            at = end;
        }
        if (written == 0)
        {
            text[written++] = (byte)'/';
        }
        if (queryAt >= 0)
        {
            path.Slice(queryAt).CopyTo(output.Slice(written));
            written += path.Length - queryAt;
        }
        return written == path.Length && output.Slice(0, written).SequenceEqual(path) ? -1 : written;
    }

    /// <summary>Whether the path part (before '?') holds an escaped slash or backslash: %2F, %5C, any case.</summary>
    public static bool HasEscapedSlash(ReadOnlySpan<byte> path)
    {
        int queryAt = path.IndexOf((byte)'?');
        ReadOnlySpan<byte> part = queryAt < 0 ? path : path.Slice(0, queryAt);
        for (int i = part.IndexOf((byte)'%'); i >= 0 && i + 2 < part.Length; )
        {
            if ((part[i + 1] == (byte)'2' && (part[i + 2] | 0x20) == (byte)'f') || (part[i + 1] == (byte)'5' && (part[i + 2] | 0x20) == (byte)'c'))
            {
                return true;
            }
            int next = part.Slice(i + 1).IndexOf((byte)'%');
            i = next < 0 ? -1 : i + 1 + next;
        }
        return false;
    }

    /// <summary>Decodes %2F and %5C in the path part into <paramref name="output"/>; returns the new length.</summary>
    public static int UnescapeSlashes(ReadOnlySpan<byte> path, Span<byte> output)
    {
        int queryAt = path.IndexOf((byte)'?');
        int partLength = queryAt < 0 ? path.Length : queryAt;
        int n = 0;
        for (int i = 0; i < path.Length; i++)
        {
            byte c = path[i];
            if (c == (byte)'%' && i + 2 < partLength)
            {
                if (path[i + 1] == (byte)'2' && (path[i + 2] | 0x20) == (byte)'f')
                {
                    output[n++] = (byte)'/';
                    i += 2;
                    continue;
                }
                if (path[i + 1] == (byte)'5' && (path[i + 2] | 0x20) == (byte)'c')
                {
                    output[n++] = (byte)'\\';
                    i += 2;
                    continue;
                }
            }
            output[n++] = c;
        }
        return n;
    }

    /// <summary>Whether anything could change: an escape, a backslash, a dot segment, or (when merging) "//".</summary>
    private static bool NeedsWork(ReadOnlySpan<byte> part, bool mergeSlashes)
    {
        if (part.IndexOfAny((byte)'%', (byte)'\\') >= 0 || (mergeSlashes && part.IndexOf("//"u8) >= 0))
        {
            return true;
        }
        int dot = part.IndexOf("/."u8);
        while (dot >= 0)
        {
            int after = dot + 2;
            if (after == part.Length || part[after] == (byte)'/'
                || (part[after] == (byte)'.' && (after + 1 == part.Length || part[after + 1] == (byte)'/')))
            {
                return true;
            }
            int next = part.Slice(after).IndexOf("/."u8);
            dot = next < 0 ? -1 : after + next;
        }
        return false;
    }

    private static bool IsHex(byte c) => char.IsAsciiHexDigit((char)c);

    private static int Hex(byte c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;

    private static bool IsUnreserved(byte c) => char.IsAsciiLetterOrDigit((char)c) || c is (byte)'-' or (byte)'.' or (byte)'_' or (byte)'~';
}
