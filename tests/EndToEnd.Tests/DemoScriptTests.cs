namespace EndToEnd.Tests;

/// <summary>
/// Tests that build or publish the repository's projects themselves (dotnet build, the AOT publish of
/// the image layout): they run alone, after the parallel tests, so that no two builds of one project
/// share its obj/ folder at the same time.
/// </summary>
[CollectionDefinition(nameof(BuildsCollection), DisableParallelization = true)]
public sealed class BuildsCollection;

/// <summary>
/// The README's first command, as a user runs it: examples/istio/demo.sh builds, starts the control
/// plane, the servers, the sidecar (the proxy binary, launched with a pilot-agent-style bootstrap) and
/// the client as processes, applies the YAML step by step and checks every answer. Ports are moved so
/// that parallel tests cannot collide with the demo's defaults.
/// </summary>
[Collection(nameof(BuildsCollection))]
public sealed class DemoScriptTests
{
    [Fact]
    public async Task DemoScript_RunsTheSeedScenario_AndExitsZero()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Layotto.Fast.sln")))
        {
            root = Path.GetDirectoryName(root.TrimEnd(Path.DirectorySeparatorChar))!;
        }
        var psi = new System.Diagnostics.ProcessStartInfo("bash", [Path.Combine(root, "examples", "istio", "demo.sh")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.Environment["DEMO_XDS_PORT"] = Abuse.AotProxy.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);
        psi.Environment["DEMO_RUNTIME_PORT"] = Abuse.AotProxy.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);
        psi.Environment["DEMO_CLIENT_PORT"] = Abuse.AotProxy.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);
        psi.Environment["DEMO_SERVICE_PORT"] = Abuse.AotProxy.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = System.Diagnostics.Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await process.WaitForExitAsync(timeout.Token);
        string output = await stdout + await stderr;
        Assert.True(process.ExitCode == 0, output);
        Assert.Contains("answered by v1", output, StringComparison.Ordinal);
        Assert.Contains("$ curl -H 'name: layotto' localhost:", output, StringComparison.Ordinal);
        Assert.Contains("hello, i am layotto v1", output, StringComparison.Ordinal);
        Assert.Contains("hello, i am layotto v2", output, StringComparison.Ordinal);
        Assert.Contains("done: every answer was the expected one", output, StringComparison.Ordinal);
    }
}
