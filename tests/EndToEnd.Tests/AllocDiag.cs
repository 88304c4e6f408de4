using System.Diagnostics.Tracing;

namespace EndToEnd.Tests;

internal sealed class AllocListener : EventListener
{
    public readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> Types = new();
    public volatile bool On;

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (On && e.EventName != null && e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal))
        {
            int i = e.PayloadNames!.IndexOf("TypeName");
            string name = i >= 0 ? e.Payload![i]?.ToString() ?? "?" : "?";
            Types.AddOrUpdate(name, 1, (_, v) => v + 1);
        }
    }
}
