namespace Proxy.Http2.Tests;

/// <summary>The memory of streams we reset: exact within its window, small while resets are few.</summary>
public sealed class ResetStreamSetTests
{
    [Fact]
    public void RemembersEveryReset_AndNothingElse_BeforeTheWindowSlides()
    {
        var set = new ResetStreamSet();
        Assert.False(set.Contains(1));
        foreach (int id in new[] { 301, 303, 1001, 5, 99 })
        {
            set.Add(id);
        }
        foreach (int id in new[] { 301, 303, 1001, 5, 99 })
        {
            Assert.True(set.Contains(id));
        }
        foreach (int id in new[] { 1, 3, 7, 97, 305, 999, 1003 })
        {
            Assert.False(set.Contains(id)); // closed normally, or never reset: still an error to send on
        }
    }

    [Fact]
    public void PastTheWindow_OlderStreamsCountAsReset_NewerOnesExactly()
    {
        var set = new ResetStreamSet();
        set.Add(1);
        set.Add(ResetStreamSet.WindowIds * 3 + 1);
        Assert.True(set.Contains(ResetStreamSet.WindowIds * 3 + 1));
        Assert.False(set.Contains(ResetStreamSet.WindowIds * 3 + 3));
        Assert.True(set.Contains(1)); // below the slid window: ignored, never an error
    }
}
