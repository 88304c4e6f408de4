namespace Proxy.Http2.Tests;

/// <summary>Finds ../shared/testdata beside the checkout, as laid out for developers and CI.</summary>
internal static class TestData
{
    public static string Root { get; } = Find();

    private static string Find()
    {
        string? env = Environment.GetEnvironmentVariable("LAYOTTO_TESTDATA");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env))
        {
            return env;
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(dir.FullName, "shared", "testdata"), Path.Combine(dir.FullName, "..", "shared", "testdata") })
            {
                if (Directory.Exists(Path.Combine(candidate, "hpack")))
                {
                    return Path.GetFullPath(candidate);
                }
            }
        }
        throw new DirectoryNotFoundException("shared/testdata not found beside the checkout; set LAYOTTO_TESTDATA");
    }

    public static string Path_(params string[] parts) => Path.Combine([Root, .. parts]);
}
