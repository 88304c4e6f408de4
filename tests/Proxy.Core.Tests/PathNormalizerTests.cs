using System.Text;
using Proxy.Core.Routing;

namespace Proxy.Core.Tests;

/// <summary>normalize_path (RFC 3986 §6.2.2 and §5.2.4, as Envoy applies it) and merge_slashes.</summary>
public sealed class PathNormalizerTests
{
    private static string Normalize(string path, bool merge = false)
    {
        byte[] input = Encoding.ASCII.GetBytes(path);
        var output = new byte[input.Length];
        int n = PathNormalizer.Normalize(input, output, merge);
        return n < 0 ? path : Encoding.ASCII.GetString(output, 0, n);
    }

    [Theory]
    [InlineData("/a/../admin", "/admin")]
    [InlineData("/a/./b", "/a/b")]
    [InlineData("/../../etc/passwd", "/etc/passwd")]
    [InlineData("/a/b/..", "/a/")]
    [InlineData("/a/.", "/a/")]
    [InlineData("/a/%2e%2e/admin", "/admin")]
    [InlineData("/a/%2E./admin?x=/../y", "/admin?x=/../y")]
    [InlineData("/%61dmin", "/admin")]
    [InlineData("/a%7Eb%2Dc", "/a~b-c")]
    [InlineData("/a%2Fb", "/a%2Fb")]
    [InlineData("/a%2fb/../c", "/c")]
    [InlineData("/a\\..\\admin", "/admin")]
    [InlineData("/a//b", "/a//b")]
    [InlineData("/..", "/")]
    [InlineData("/a/..b/.c", "/a/..b/.c")]
    [InlineData("/plain/path?q=1", "/plain/path?q=1")]
    [InlineData("/bad%zz/../x", "/x")]
    [InlineData("/", "/")]
    [InlineData("*", "*")]
    public void Normalized_AsRfc3986Says(string path, string expected)
    {
        Assert.Equal(expected, Normalize(path));
    }

    [Theory]
    [InlineData("/a//b", "/a/b")]
    [InlineData("//admin", "/admin")]
    [InlineData("/a///b//", "/a/b/")]
    [InlineData("/a//b?x=//y", "/a/b?x=//y")]
    public void MergeSlashes_CollapsesRepeatedSlashes(string path, string expected)
    {
        Assert.Equal(expected, Normalize(path, merge: true));
    }

    [Fact]
    public void MergeSlashesAlone_NeitherDecodesNorRemovesDotSegments()
    {
        byte[] input = Encoding.ASCII.GetBytes("/a//%61/../b");
        var output = new byte[input.Length];
        int n = PathNormalizer.Normalize(input, output, mergeSlashes: true, normalize: false);
        Assert.Equal("/a/%61/../b", Encoding.ASCII.GetString(output, 0, n));
    }

    [Theory]
    [InlineData("/a%2Fb", true, "/a/b")]
    [InlineData("/a%2fb%5Cc", true, "/a/b\\c")]
    [InlineData("/a%25b?x=%2F", false, "/a%25b?x=%2F")]
    public void EscapedSlashes_AreFoundAndDecodedInThePathOnly(string path, bool found, string unescaped)
    {
        byte[] input = Encoding.ASCII.GetBytes(path);
        Assert.Equal(found, PathNormalizer.HasEscapedSlash(input));
        var output = new byte[input.Length];
        Assert.Equal(unescaped, Encoding.ASCII.GetString(output, 0, PathNormalizer.UnescapeSlashes(input, output)));
    }

    [Fact]
    public void AnAlreadyNormalPath_IsLeftAlone()
    {
        var output = new byte[64];
        Assert.Equal(-1, PathNormalizer.Normalize("/layotto.test.Echo/Unary"u8, output, mergeSlashes: true));
        Assert.Equal(-1, PathNormalizer.Normalize("/a/.hidden/b..c"u8, output, mergeSlashes: false));
    }
}
