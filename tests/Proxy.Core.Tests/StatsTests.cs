using System.Diagnostics;
using Proxy.Core.Diagnostics;

namespace Proxy.Core.Tests;

public sealed class StatsTests
{
    [Fact]
    public void Counters_InOneBlock_CountExactly_FromManyThreads_AndDoNotDisturbEachOther()
    {
        var store = new StatsStore();
        var block = new StatBlock(2 + Histogram.Slots);
        Counter a = store.Counter("cluster", "c", "upstream_rq_total", "envoy_cluster_name", block);
        Counter b = store.Counter("cluster", "c", "upstream_rq_retry", "envoy_cluster_name", block);
        Histogram h = store.Histogram("cluster", "c", "upstream_rq_time", "envoy_cluster_name", block);
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ =>
        {
            for (int i = 0; i < 100_000; i++)
            {
                a.Inc();
                if (i % 2 == 0)
                {
                    b.Inc(StatLine.Current);
                }
            }
        });
        Assert.Equal(800_000, a.Value);
        Assert.Equal(400_000, b.Value);
        Assert.Equal(0, h.Count);
        Assert.False(h.Used);
        Assert.Same(a, store.Counter("cluster", "c", "upstream_rq_total", "envoy_cluster_name"));

        // reset_counters: the value starts again, Prometheus' total does not.
        a.Reset();
        a.Inc();
        Assert.Equal(1, a.Value);
        Assert.Equal(800_001, a.Total);
    }

    [Fact]
    public void Histogram_BucketsByEnvoysBounds_AndEstimatesQuantiles()
    {
        var h = new StatsStore().Histogram("http", "p", "downstream_rq_time", "envoy_http_conn_manager_prefix");
        long ms = Stopwatch.Frequency / 1000;
        h.RecordTicks(ms / 4);       // 0.25 ms → le 0.5
        h.RecordTicks(3 * ms);       // → le 5
        h.RecordTicks(3 * ms);
        h.RecordTicks(7_000 * ms);   // → le 10000
        long[] buckets = h.Buckets();
        Assert.Equal(1, buckets[Array.IndexOf(Histogram.Bounds, 0.5)]);
        Assert.Equal(2, buckets[Array.IndexOf(Histogram.Bounds, 5.0)]);
        Assert.Equal(1, buckets[Array.IndexOf(Histogram.Bounds, 10000.0)]);
        Assert.Equal(4, h.Count);
        Assert.InRange(h.SumMs, 7006.2, 7006.3);
        Assert.InRange(h.Quantile(0.5), 1, 5);
        Assert.InRange(h.Quantile(1), 5000, 10000);
        Assert.True(double.IsNaN(new StatsStore().Histogram("x", null, "empty").Quantile(0.5)));
    }

    [Fact]
    public void PrometheusNames_FollowEnvoysTagExtraction()
    {
        var store = new StatsStore();
        Counter byClass = store.Counter("cluster", "outbound|9080|v1|a\"b", "upstream_rq_2xx", "envoy_cluster_name");
        Assert.Equal("cluster.outbound|9080|v1|a\"b.upstream_rq_2xx", byClass.Name);
        Assert.Equal("envoy_cluster_upstream_rq_xx", byClass.PrometheusName);
        Assert.Equal("envoy_response_code_class=\"2\",envoy_cluster_name=\"outbound|9080|v1|a\\\"b\"", byClass.Labels);
        Counter plain = store.Counter("cluster_manager", "cds", "update_success");
        Assert.Equal("cluster_manager.cds.update_success", plain.Name);
        Assert.Equal("envoy_cluster_manager_cds_update_success", plain.PrometheusName);
        Assert.Equal("", plain.Labels);
        Gauge state = store.Gauge("server", null, "state", read: static () => 3);
        Assert.Equal("envoy_server_state", state.PrometheusName);
        Assert.Equal(3, state.Value);
        Assert.Equal(["cluster.outbound|9080|v1|a\"b.upstream_rq_2xx", "cluster_manager.cds.update_success", "server.state"], store.All().Select(s => s.Name));
    }

    [Fact]
    public void AStatBlock_RefusesMoreStatsThanItHasRoomFor()
    {
        var block = new StatBlock(1);
        var store = new StatsStore();
        store.Counter("a", null, "one", block: block);
        Assert.Throws<InvalidOperationException>(() => store.Histogram("a", null, "two", block: block));
    }
}

public sealed class RemovedClusterStatsTests
{
    [Fact]
    public void AClusterNoSnapshotHasAnyMore_LosesItsStats_AndStartsFromZeroIfItComesBack()
    {
        var pools = new Proxy.Core.Upstream.UpstreamPools();
        string gone = $"gone-{Guid.NewGuid():N}", kept = $"kept-{Guid.NewGuid():N}";
        pools.ClusterState(gone).Stats.UpstreamRqTotal.Inc();
        var keptCluster = new Proxy.Core.Routing.Cluster(kept, Proxy.Core.Routing.UpstreamProtocol.Http1, [], TimeSpan.FromSeconds(1)) { State = pools.ClusterState(kept) };
        keptCluster.State.Stats.UpstreamRqTotal.Inc();
        Assert.Contains(StatsStore.Default.All(), s => s.Name == $"cluster.{gone}.upstream_rq_total");

        pools.Prune(new Proxy.Core.Routing.ProxySnapshot([], [keptCluster], 1));
        Assert.DoesNotContain(StatsStore.Default.All(), s => s.Name.StartsWith($"cluster.{gone}.", StringComparison.Ordinal));
        Assert.Equal(1, ((Counter)StatsStore.Default.All().Single(s => s.Name == $"cluster.{kept}.upstream_rq_total")).Total);
        Assert.Equal(0, pools.ClusterState(gone).Stats.UpstreamRqTotal.Total);
    }
}
