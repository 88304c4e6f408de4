using Proxy.Xds;
using Proxy.Xds.Mesh;
using YamlDotNet.RepresentationModel;

namespace EndToEnd.Tests;

/// <summary>
/// What a real cluster gets: the image's file layout (the script the Dockerfile runs), and the Kubernetes
/// manifests (valid Kubernetes YAML, and Istio resources our translator reads the way istiod would).
/// </summary>
[Collection(nameof(BuildsCollection))]
public sealed class ImageAndManifestTests
{
    private static string Root()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Layotto.Fast.sln")))
        {
            root = Path.GetDirectoryName(root.TrimEnd(Path.DirectorySeparatorChar))!;
        }
        return root;
    }

    private static IEnumerable<(string File, YamlMappingNode Doc)> Documents(string dir)
    {
        foreach (string file in Directory.EnumerateFiles(dir, "*.yaml").Order(StringComparer.Ordinal))
        {
            var stream = new YamlStream();
            stream.Load(new StringReader(File.ReadAllText(file)));
            foreach (YamlDocument doc in stream.Documents)
            {
                yield return (file, Assert.IsType<YamlMappingNode>(doc.RootNode));
            }
        }
    }

    private static string? Scalar(YamlMappingNode map, params string[] path)
    {
        YamlNode node = map;
        foreach (string key in path)
        {
            if (node is not YamlMappingNode m || !m.Children.TryGetValue(new YamlScalarNode(key), out YamlNode? next))
            {
                return null;
            }
            node = next;
        }
        return (node as YamlScalarNode)?.Value;
    }

    [Fact]
    public void KubernetesManifests_AreKubernetesYaml()
    {
        var kinds = new List<string>();
        foreach (var (file, doc) in Documents(Path.Combine(Root(), "examples", "istio", "k8s")).Concat(Documents(Path.Combine(Root(), "examples", "istio", "routing"))))
        {
            string kind = Scalar(doc, "kind") ?? throw new Xunit.Sdk.XunitException($"{file}: no kind");
            Assert.False(string.IsNullOrEmpty(Scalar(doc, "apiVersion")), $"{file} {kind}: no apiVersion");
            Assert.False(string.IsNullOrEmpty(Scalar(doc, "metadata", "name")), $"{file} {kind}: no metadata.name");
            kinds.Add(kind);
            if (kind == "Deployment")
            {
                // The selector must match the pod template's labels, or the API server refuses it.
                var selector = (YamlMappingNode)((YamlMappingNode)((YamlMappingNode)doc["spec"])["selector"])["matchLabels"];
                var labels = (YamlMappingNode)((YamlMappingNode)((YamlMappingNode)((YamlMappingNode)doc["spec"])["template"])["metadata"])["labels"];
                foreach (var (key, value) in selector.Children)
                {
                    Assert.Equal(value.ToString(), labels.Children[key].ToString());
                }
                var containers = (YamlSequenceNode)((YamlMappingNode)((YamlMappingNode)((YamlMappingNode)doc["spec"])["template"])["spec"])["containers"];
                Assert.All(containers, c => Assert.False(string.IsNullOrEmpty(Scalar((YamlMappingNode)c, "image"))));
            }
        }
        Assert.Equal(["Service", "Deployment", "Service", "Deployment", "Deployment", "DestinationRule", "VirtualService", "VirtualService"], kinds);
    }

    [Fact]
    public void TheClusterManifests_TranslateAsIstiodWould()
    {
        string k8s = Path.Combine(Root(), "examples", "istio", "k8s");
        string routing = Path.Combine(Root(), "examples", "istio", "routing");
        var files = new[] { Path.Combine(k8s, "server.yaml"), Path.Combine(routing, "destination-rule.yaml"), Path.Combine(routing, "virtual-service-header.yaml") }
            .Select(f => (f, File.ReadAllText(f)));
        var resources = new IstioTranslator().Translate(files);
        string[] clusters = [.. resources.Where(r => r.Type == XdsResourceType.Cluster).Select(r => r.Name)];
        Assert.Equal(["outbound|9090||server.default.svc.cluster.local", "outbound|9090|v1|server.default.svc.cluster.local", "outbound|9090|v2|server.default.svc.cluster.local"], clusters);
        var routes = (Proxy.Xds.Api.Route.RouteConfiguration)resources.Single(r => r.Type == XdsResourceType.Route).Resource;
        Assert.Equal("9090", routes.Name);
        var host = routes.VirtualHosts.Single();
        Assert.Equal("server.default.svc.cluster.local:9090", host.Name);
        Assert.Equal(["server.default.svc.cluster.local", "server", "server.default.svc", "server.default"], host.Domains);
        Assert.Equal("name", host.Routes[0].Match.Headers[0].Name);
        Assert.Equal("layotto", host.Routes[0].Match.Headers[0].StringMatch.Exact);
        Assert.Equal("outbound|9090|v1|server.default.svc.cluster.local", host.Routes[0].Route_.Cluster);
        Assert.Equal("outbound|9090|v2|server.default.svc.cluster.local", host.Routes[1].Route_.Cluster);
    }

    [Fact]
    public async Task ImageLayout_PutsTheAotBinaryWherePilotAgentStartsEnvoy()
    {
        string dockerfile = File.ReadAllText(Path.Combine(Root(), "Dockerfile"));
        // The image is the script's output and nothing else: what this test checks is what ships.
        Assert.Contains("RUN build/image-layout.sh /image", dockerfile, StringComparison.Ordinal);
        Assert.Contains("COPY --from=build /image/ /", dockerfile, StringComparison.Ordinal);
        Assert.Contains("ENV LAYOTTO_RUNTIME_API=127.0.0.1:34904", dockerfile, StringComparison.Ordinal);

        await Abuse.AotProxy.BinaryAsync(); // the other AOT publish of this run is done first: one at a time
        string output = Directory.CreateTempSubdirectory("image-").FullName;
        try
        {
            var (exit, stdout, stderr) = await Processes.RunAsync("bash", [Path.Combine(Root(), "build", "image-layout.sh"), output], TimeSpan.FromMinutes(10));
            Assert.True(exit == 0, stdout + stderr);
            string envoy = Path.Combine(output, "usr", "local", "bin", "envoy");
            Assert.True(File.Exists(envoy));
            var (versionExit, version, _) = await Processes.RunAsync(envoy, ["--version"], TimeSpan.FromSeconds(30));
            Assert.Equal(0, versionExit);
            Assert.Contains("Native AOT", version, StringComparison.Ordinal);
            // pilot-agent's command line is accepted (validate mode exits after loading the bootstrap).
            string bootstrap = Path.Combine(Root(), "examples", "bootstrap.yaml");
            var (validateExit, validated, validateErr) = await Processes.RunAsync(envoy,
                ["-c", bootstrap, "--drain-time-s", "45", "--drain-strategy", "immediate", "--local-address-ip-version", "v4", "--file-flush-interval-msec", "1000",
                 "--disable-hot-restart", "--allow-unknown-static-fields", "--log-format", "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t", "-l", "warning", "--mode", "validate"],
                TimeSpan.FromSeconds(30));
            Assert.True(validateExit == 0, validated + validateErr);
        }
        finally
        {
            Directory.Delete(output, recursive: true);
        }
    }
}
