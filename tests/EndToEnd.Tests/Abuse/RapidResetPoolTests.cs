using Proxy.Core.Routing;
using Proxy.Core.Upstream;
using Proxy.Http2;

namespace EndToEnd.Tests.Abuse;

/// <summary>
/// After a rapid-reset attack, nothing in the proxy stays taken: no upstream HTTP/1.1 connection is
/// held by a reset stream, no request or pending slot stays counted (the 503 "upstream connection limit
/// reached" the attack used to cause for everyone). Read from the pools and cluster state themselves.
/// </summary>
public sealed class RapidResetPoolTests(ProxyFixture fixture) : IClassFixture<ProxyFixture>
{
    [Fact]
    public async Task AfterRapidReset_NoUpstreamConnectionOrSlotStaysTaken()
    {
        Cluster http = fixture.Proxy.Snapshots.Current.Clusters["http"];
        var pool = (Http1UpstreamPool)http.Endpoints[0].Pool;
        for (int round = 0; round < 3; round++)
        {
            using RawH2Client attacker = await RawH2Client.ConnectAsync(fixture.ProxyPort);
            attacker.Preface();
            var reading = attacker.ReadFramesAsync((type, _) => type == Http2FrameType.GoAway, TimeSpan.FromSeconds(20));
            for (int streamId = 1; streamId < 4000 && !reading.IsCompleted; streamId += 2)
            {
                // HEADERS and RST_STREAM in separate reads: the request does reach the upstream pool
                // (a connection is being opened for it, or taken idle) before the reset cancels it.
                attacker.Headers(streamId, "GET", "/sleep/50", endStream: true);
                if (!await attacker.FlushAsync())
                {
                    break;
                }
                await Task.Delay(streamId % 8 == 1 ? 2 : 0);
                attacker.Reset(streamId, Http2ErrorCode.Cancel);
                if (!await attacker.FlushAsync())
                {
                    break;
                }
            }
            var frames = await reading;
            Assert.Contains(frames, f => f.Type == Http2FrameType.GoAway);
        }
        // Connections still being opened for reset streams settle, then every one is idle.
        for (int i = 0; i < 100 && (http.State.ActiveRequests != 0 || pool.ActiveRequests != 0 || pool.OpenCount != pool.IdleCount); i++)
        {
            await Task.Delay(50);
        }
        Assert.Equal(0, http.State.ActiveRequests);
        Assert.Equal(0, http.State.PendingRequests);
        Assert.Equal(0, pool.ActiveRequests);
        Assert.Equal(pool.IdleCount, pool.OpenCount);
        // And the next client is served at once.
        var (exit, stdout, stderr) = await Processes.RunAsync("curl", ["-sS", $"http://127.0.0.1:{fixture.ProxyPort}/hello"]);
        Assert.True(exit == 0, stderr);
        Assert.Equal("hello", stdout);
    }
}
