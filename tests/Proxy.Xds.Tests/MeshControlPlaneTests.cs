using System.Net;
using Proxy.Xds.Mesh;

namespace Proxy.Xds.Tests;

/// <summary>
/// How the embedded control plane follows its directory: kernel notifications (taken once quiet), the
/// full-scan poll as the safety net, and the layout Kubernetes gives a mounted ConfigMap (files reached
/// through a "..data" link that is swapped atomically).
/// </summary>
public sealed class MeshControlPlaneTests : IDisposable
{
    private static readonly TimeSpan Forever = TimeSpan.FromHours(1);
    private readonly string _dir = Directory.CreateTempSubdirectory("mesh-cp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Service(string name, int port) => $$"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: { name: {{name}}, namespace: default }
        spec:
          hosts: [{{name}}.default.svc.cluster.local]
          resolution: STATIC
          ports: [ { number: {{port}}, name: http } ]
          endpoints: [ { address: 10.0.0.1 } ]
        """;

    private static async Task UntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(10);
        }
    }

    [Fact]
    public async Task AChangedFile_IsTakenOnItsNotification_WithoutWaitingForThePoll()
    {
        File.WriteAllText(Path.Combine(_dir, "a.yaml"), Service("a", 80));
        await using var mesh = new MeshControlPlane(_dir, new IPEndPoint(IPAddress.Loopback, 0));
        mesh.Start(Forever);
        long first = mesh.Ads.Version;
        Assert.Null(mesh.LastError);

        File.WriteAllText(Path.Combine(_dir, "a.yaml"), Service("a", 81));
        await UntilAsync(() => mesh.Ads.Version > first, "the changed file");
        long second = mesh.Ads.Version;

        // Added, then removed; a file that is not YAML changes nothing.
        File.WriteAllText(Path.Combine(_dir, "b.yml"), Service("b", 80));
        await UntilAsync(() => mesh.Ads.Version > second, "the added file");
        long third = mesh.Ads.Version;
        File.WriteAllText(Path.Combine(_dir, "notes.txt"), "not configuration");
        File.Delete(Path.Combine(_dir, "b.yml"));
        await UntilAsync(() => mesh.Ads.Version > third, "the removed file");
        await Task.Delay(200);
        Assert.Equal(third + 1, mesh.Ads.Version);
        Assert.Null(mesh.LastError);
    }

    [Fact]
    public async Task WithoutNotifications_ThePollTakesAChangeOnceItHeldStill()
    {
        File.WriteAllText(Path.Combine(_dir, "a.yaml"), Service("a", 80));
        await using var mesh = new MeshControlPlane(_dir, new IPEndPoint(IPAddress.Loopback, 0));
        mesh.Start(TimeSpan.FromMilliseconds(50), watch: false);
        long first = mesh.Ads.Version;
        File.WriteAllText(Path.Combine(_dir, "a.yaml"), Service("a", 81));
        await UntilAsync(() => mesh.Ads.Version > first, "the polled change");
    }

    [Fact]
    public async Task ABrokenSave_IsReported_AndItsFixIsTaken()
    {
        File.WriteAllText(Path.Combine(_dir, "a.yaml"), Service("a", 80));
        await using var mesh = new MeshControlPlane(_dir, new IPEndPoint(IPAddress.Loopback, 0));
        mesh.Start(Forever);
        long first = mesh.Ads.Version;
        File.WriteAllText(Path.Combine(_dir, "a.yaml"), "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: [unclosed");
        await UntilAsync(() => mesh.LastError != null, "the error");
        Assert.Contains("a.yaml", mesh.LastError, StringComparison.Ordinal);
        Assert.Equal(first, mesh.Ads.Version);
        File.WriteAllText(Path.Combine(_dir, "a.yaml"), Service("a", 82));
        await UntilAsync(() => mesh.Ads.Version > first && mesh.LastError == null, "the fixed file");
    }

    [Fact]
    public async Task AConfigMapMount_SwappedThroughItsDataLink_IsTaken()
    {
        // What the kubelet does: files are links into "..data", itself a link to a timestamped
        // directory; an update writes a new directory and renames a new link over "..data".
        string v1 = Path.Combine(_dir, "..2026_12_02_01");
        Directory.CreateDirectory(v1);
        File.WriteAllText(Path.Combine(v1, "mesh.yaml"), Service("a", 80));
        Directory.CreateSymbolicLink(Path.Combine(_dir, "..data"), "..2026_12_02_01");
        File.CreateSymbolicLink(Path.Combine(_dir, "mesh.yaml"), "..data/mesh.yaml");
        await using var mesh = new MeshControlPlane(_dir, new IPEndPoint(IPAddress.Loopback, 0));
        mesh.Start(Forever);
        Assert.Null(mesh.LastError);
        long first = mesh.Ads.Version;

        string v2 = Path.Combine(_dir, "..2026_12_02_02");
        Directory.CreateDirectory(v2);
        File.WriteAllText(Path.Combine(v2, "mesh.yaml"), Service("a", 81));
        Directory.CreateSymbolicLink(Path.Combine(_dir, "..data_tmp"), "..2026_12_02_02");
        // rename(2) of the new link over the old one (File.Move would follow the links to directories).
        using (var mv = System.Diagnostics.Process.Start("mv", ["-T", Path.Combine(_dir, "..data_tmp"), Path.Combine(_dir, "..data")]))
        {
            await mv.WaitForExitAsync();
            Assert.Equal(0, mv.ExitCode);
        }
        Directory.Delete(v1, recursive: true);
        await UntilAsync(() => mesh.Ads.Version > first, "the swapped ConfigMap");
        Assert.Null(mesh.LastError);
    }
}
