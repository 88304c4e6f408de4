using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using EndToEnd.Tests.Grpc;

namespace EndToEnd.Tests;

/// <summary>Graceful shutdown: requests in flight finish; new connections are refused.</summary>
public sealed class DrainTests
{
    [Fact]
    public async Task Drain_LetsInFlightCallsFinish_AndRefusesNewConnections()
    {
        var fixture = new ProxyFixture();
        await fixture.InitializeAsync();
        try
        {
            using GrpcChannel channel = fixture.Channel();
            var client = new Echo.EchoClient(channel);
            var slow = client.UnaryAsync(new EchoRequest { Message = "in-flight", DelayMs = 1000 }).ResponseAsync;
            // Drain only once the call has reached the upstream, so it is surely in flight at the proxy.
            for (int i = 0; i < 200 && !fixture.Probe.Calls.Contains("/layotto.test.Echo/Unary"); i++)
            {
                await Task.Delay(50);
            }
            Task drain = fixture.Proxy.DrainAsync(TimeSpan.FromSeconds(5));

            EchoReply reply = await slow.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal("in-flight", reply.Message);

            using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await Assert.ThrowsAsync<SocketException>(() => socket.ConnectAsync(System.Net.IPAddress.Loopback, fixture.ProxyPort));
            await drain.WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            await fixture.DisposeAsync();
        }
    }
}
