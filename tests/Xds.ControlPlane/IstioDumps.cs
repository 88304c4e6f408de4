using System.Text.Json.Nodes;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Proxy.Xds;

namespace Xds.ControlPlane;

/// <summary>
/// The xDS resources inside Istio's config dumps (../shared/testdata/xds), decoded into our messages as
/// they would arrive in a DiscoveryResponse. Any typed_config of a type we do not know (Istio's Wasm,
/// TypedStruct, Mixer, RBAC...) becomes an Any of another unknown type, since a JSON parser cannot encode
/// what it has no schema for; v2 resources (Istio 1.5) decode with the v3 messages, as on the wire.
/// </summary>
public static class IstioDumps
{
    public static string TestData(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(dir.FullName, "shared", "testdata"), Path.Combine(dir.FullName, "..", "shared", "testdata") })
            {
                if (Directory.Exists(Path.Combine(candidate, "xds")))
                {
                    return Path.Combine([candidate, .. parts]);
                }
            }
        }
        throw new DirectoryNotFoundException("shared/testdata beside the checkout");
    }

    private static readonly Lazy<string> s_certs = new(static () =>
    {
        using var pki = new TestPki("Istio 1.5 Test CA");
        return pki.WriteIstioFiles(Path.Combine(Path.GetTempPath(), $"layotto-fast-certs-{Environment.ProcessId}"), "spiffe://cluster.local/ns/default/sa/bookinfo-productpage");
    });

    private static readonly MessageDescriptor[] s_known =
    [
        .. XdsTypes.Messages, Google.Protobuf.WellKnownTypes.Empty.Descriptor,
    ];

    private static readonly JsonParser s_parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(true).WithTypeRegistry(TypeRegistry.FromMessages(s_known)));

    /// <summary>
    /// The listener without the HTTP filters named <paramref name="filterName"/> in its connection
    /// managers (for example a mesh without Istio's CUSTOM authorization, whose ext_authz we refuse).
    /// </summary>
    public static Proxy.Xds.Api.Listener.Listener WithoutHttpFilter(Proxy.Xds.Api.Listener.Listener listener, string filterName)
    {
        var copy = listener.Clone();
        foreach (var chain in copy.FilterChains)
        {
            foreach (var filter in chain.Filters)
            {
                if (filter.TypedConfig is { } any && any.Is(Proxy.Xds.Api.Hcm.HttpConnectionManager.Descriptor))
                {
                    var hcm = any.Unpack<Proxy.Xds.Api.Hcm.HttpConnectionManager>();
                    var kept = hcm.HttpFilters.Where(f => f.Name != filterName).ToList();
                    hcm.HttpFilters.Clear();
                    hcm.HttpFilters.AddRange(kept);
                    filter.TypedConfig = Google.Protobuf.WellKnownTypes.Any.Pack(hcm);
                }
            }
        }
        return copy;
    }

    /// <summary>Every dynamic resource of a config dump: (type, decoded message, the original @type).</summary>
    public static List<(XdsResourceType Type, IMessage Message, string TypeUrl)> Resources(string file)
    {
        // Istio 1.5 sidecars read their mTLS certificates from /etc/certs (mounted from a secret): the
        // test provides them, made by a test CA, and the resources point there.
        string text = File.ReadAllText(TestData("xds", file)).Replace("/etc/certs/", s_certs.Value + "/", StringComparison.Ordinal);
        JsonNode root = JsonNode.Parse(text)!;
        var result = new List<(XdsResourceType, IMessage, string)>();
        Walk(root, result);
        return result;
    }

    private static void Walk(JsonNode? node, List<(XdsResourceType, IMessage, string)> result)
    {
        if (node is JsonObject obj)
        {
            foreach (string key in new[] { "listener", "cluster", "route_config", "endpoint_config" })
            {
                if (obj[key] is JsonObject resource && resource["@type"]?.GetValue<string>() is string typeUrl && XdsTypes.ResourceType(typeUrl) is XdsResourceType type)
                {
                    result.Add((type, Decode(resource), typeUrl));
                }
            }
            foreach (var (key, child) in obj.ToList())
            {
                // What a control plane sends: the dynamic resources, not the bootstrap's static ones
                // (a static listener may have no name, which LDS does not allow).
                if (!key.StartsWith("static_", StringComparison.Ordinal) && key != "bootstrap")
                {
                    Walk(child, result);
                }
            }
        }
        else if (node is JsonArray array)
        {
            foreach (JsonNode? item in array)
            {
                Walk(item, result);
            }
        }
    }

    private static IMessage Decode(JsonObject resource)
    {
        var copy = (JsonObject)resource.DeepClone();
        MessageDescriptor descriptor = XdsTypes.Find(copy["@type"]!.GetValue<string>())!;
        copy.Remove("@type");
        Rewrite(copy);
        return s_parser.Parse(copy.ToJsonString(), descriptor);
    }

    /// <summary>Known Any types get their v3 name; unknown ones become an Empty under an unknown-looking name.</summary>
    private static void Rewrite(JsonNode? node)
    {
        if (node is JsonObject obj)
        {
            foreach (var (key, child) in obj.ToList())
            {
                if (child is JsonObject inner && inner["@type"]?.GetValue<string>() is string typeUrl)
                {
                    if (XdsTypes.Find(typeUrl) is MessageDescriptor known)
                    {
                        inner["@type"] = "type.googleapis.com/" + known.FullName;
                    }
                    else
                    {
                        obj[key] = new JsonObject { ["@type"] = "type.googleapis.com/google.protobuf.Empty", ["value"] = new JsonObject() };
                        continue;
                    }
                }
                Rewrite(child);
            }
        }
        else if (node is JsonArray array)
        {
            foreach (JsonNode? item in array)
            {
                Rewrite(item);
            }
        }
    }
}
