namespace Proxy.Http2.Tests;

/// <summary>The connection's stream table agrees with a dictionary through adds, removes and growth.</summary>
public sealed class StreamMapTests
{
    [Theory]
    [InlineData(1, 2)]     // a server's peer streams: odd, stepping by two
    [InlineData(0, 1)]     // both parities
    public void AgreesWithADictionary(int parity, int step)
    {
        var map = new StreamMap();
        var model = new Dictionary<int, Http2Stream>();
        var random = new Random(9113 + step);
        int next = parity;
        for (int round = 0; round < 50_000; round++)
        {
            int op = random.Next(10);
            if (op < 4 || model.Count == 0)
            {
                // Mostly new identifiers, as a connection opens them; sometimes an old one again.
                int id = random.Next(8) == 0 && next > 200 ? next - step * random.Next(1, 100) : (next += step);
                if (model.ContainsKey(id))
                {
                    Assert.Throws<ArgumentException>(() => map.Add(id, new Http2Stream { Id = id }));
                    continue;
                }
                var stream = new Http2Stream { Id = id };
                model.Add(id, stream);
                map.Add(id, stream);
            }
            else if (op < 8)
            {
                // Remove an open stream (usually an old one), or one that is not there.
                int id = random.Next(5) == 0 ? next + step : model.Keys.ElementAt(random.Next(Math.Min(model.Count, 8)));
                Assert.Equal(model.Remove(id), map.Remove(id));
            }
            else
            {
                int id = random.Next(2) == 0 && model.Count > 0 ? model.Keys.ElementAt(random.Next(model.Count)) : next + step;
                Assert.Equal(model.TryGetValue(id, out Http2Stream? expected), map.TryGetValue(id, out Http2Stream? found));
                Assert.Same(expected, found);
            }
            Assert.Equal(model.Count, map.Count);
            if (round % 5000 == 0)
            {
                var seen = new List<int>();
                foreach (Http2Stream s in map.Values)
                {
                    seen.Add(s.Id);
                }
                Assert.Equal(model.Keys.Order(), seen.Order());
            }
        }
        map.Clear();
        Assert.Equal(0, map.Count);
        Assert.False(map.TryGetValue(next, out _));
    }
}
