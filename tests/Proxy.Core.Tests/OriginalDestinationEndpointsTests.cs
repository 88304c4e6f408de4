using System.Net;
using Proxy.Core.Routing;
using Proxy.Core.Upstream;

namespace Proxy.Core.Tests;

public sealed class OriginalDestinationEndpointsTests
{
    [Fact]
    public void Destinations_AreKeptForReuse_BoundedAtTheLimit_AndLetGoWhenIdle()
    {
        var cluster = new Cluster($"PassthroughCluster-{Guid.NewGuid():N}", UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(1));
        IPEndPoint Destination(int i) => new(new IPAddress([10, 200, (byte)(i >> 8), (byte)i]), 8080);
        OriginalDestinationEndpoints.Prune(Environment.TickCount64 + 3_600_000); // whatever earlier tests left
        UpstreamEndpoint first = OriginalDestinationEndpoints.For(Destination(0), cluster)!;
        Assert.Same(first, OriginalDestinationEndpoints.For(Destination(0), cluster));
        for (int i = 1; OriginalDestinationEndpoints.Count < OriginalDestinationEndpoints.Limit; i++)
        {
            Assert.NotNull(OriginalDestinationEndpoints.For(Destination(i), cluster));
        }
        // Full, and every one recently used: a new destination is refused rather than growing the table.
        Assert.Null(OriginalDestinationEndpoints.For(new IPEndPoint(IPAddress.Parse("10.201.0.1"), 80), cluster));

        // A cleanup interval later, the idle ones are let go, but not one with a request in flight.
        first.Pool.RequestStarted();
        OriginalDestinationEndpoints.Prune(Environment.TickCount64 + (long)OriginalDestinationEndpoints.CleanupInterval.TotalMilliseconds + 1);
        Assert.Equal(1, OriginalDestinationEndpoints.Count);
        Assert.Same(first, OriginalDestinationEndpoints.For(Destination(0), cluster));
        Assert.False(first.Pool.IsRetired);
        first.Pool.RequestEnded();
        Assert.NotNull(OriginalDestinationEndpoints.For(new IPEndPoint(IPAddress.Parse("10.201.0.1"), 80), cluster));
        Assert.Equal(2, OriginalDestinationEndpoints.Count);
        OriginalDestinationEndpoints.Prune(Environment.TickCount64 + 3_600_000);
        Assert.Equal(0, OriginalDestinationEndpoints.Count);
        Assert.True(first.Pool.IsRetired);
    }
}
