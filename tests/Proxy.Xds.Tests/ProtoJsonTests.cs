using System.Text.Json.Nodes;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Proxy.Xds.Admin;
using Proxy.Xds.Api.Cluster;
using Xunit;

namespace Proxy.Xds.Tests;

public sealed class ProtoJsonTests
{
    [Fact]
    public void WrappersDurationsEnumsAnd64BitIntegers_AreProto3Json()
    {
        var cluster = new Cluster
        {
            Name = "c",
            Type = Cluster.Types.DiscoveryType.Eds,
            ConnectTimeout = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(1500)),
            CircuitBreakers = new CircuitBreakers { Thresholds = { new CircuitBreakers.Types.Thresholds { MaxConnections = 7, MaxRetries = 0 } } },
        };
        JsonNode json = ProtoJson.ToJson(cluster);
        Assert.Equal("c", (string?)json["name"]);
        Assert.Equal("EDS", (string?)json["type"]);
        Assert.Equal("1.500s", (string?)json["connect_timeout"]);
        Assert.Equal(7u, (uint?)json["circuit_breakers"]!["thresholds"]![0]!["max_connections"]);
        // A wrapper set to its default is still present (it has presence).
        Assert.Equal(0u, (uint?)json["circuit_breakers"]!["thresholds"]![0]!["max_retries"]);
        Assert.Null(json["lb_policy"]);
    }

    [Fact]
    public void AnAnyOfATypeWeDoNotModel_KeepsItsBytes_AndAnEmptyOneIsJustItsType()
    {
        JsonObject unknown = ProtoJson.AnyJson("type.googleapis.com/example.Unknown", ByteString.CopyFrom(1, 2, 3));
        Assert.Equal("type.googleapis.com/example.Unknown", (string?)unknown["@type"]);
        Assert.Equal("AQID", (string?)unknown["value"]);
        JsonObject empty = ProtoJson.AnyJson("type.googleapis.com/example.Unknown", ByteString.Empty);
        Assert.Single(empty);
        JsonObject wellKnown = ProtoJson.AnyJson("type.googleapis.com/google.protobuf.Duration", Duration.FromTimeSpan(TimeSpan.FromSeconds(2)).ToByteString());
        Assert.Equal("2s", (string?)wellKnown["value"]);
    }
}
