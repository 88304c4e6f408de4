using Google.Protobuf;
using Grpc.Core;
using EndToEnd.Tests.Grpc;

namespace EndToEnd.Tests;

/// <summary>The upstream gRPC service: Grpc.AspNetCore on Kestrel, h2c on loopback.</summary>
public sealed class EchoService(UpstreamProbe probe) : Echo.EchoBase
{
    public override async Task<EchoReply> Unary(EchoRequest request, ServerCallContext context)
    {
        probe.Calls.Add(context.Method);
        await EchoMetadataAsync(context);
        if (request.DelayMs > 0)
        {
            await DelayAsync(request.DelayMs, context);
        }
        if (request.Status != 0)
        {
            context.ResponseTrailers.Add("x-trailer", "trailer-value");
            throw new RpcException(new Status((StatusCode)request.Status, request.Message));
        }
        context.ResponseTrailers.Add("x-trailer", "trailer-value");
        return new EchoReply
        {
            Message = request.Message,
            Payload = request.ReplySize > 0 ? ByteString.CopyFrom(new byte[request.ReplySize]) : request.Payload,
        };
    }

    public override async Task ServerStream(EchoRequest request, IServerStreamWriter<EchoReply> responseStream, ServerCallContext context)
    {
        probe.Calls.Add(context.Method);
        try
        {
            for (int i = 0; i < request.Count; i++)
            {
                await responseStream.WriteAsync(new EchoReply { Message = request.Message, Index = i });
                if (request.Message == "abort" && i == 0)
                {
                    // The upstream resets the stream after its first message.
                    context.GetHttpContext().Abort();
                    return;
                }
                if (request.DelayMs > 0)
                {
                    await DelayAsync(request.DelayMs, context);
                }
            }
        }
        catch (OperationCanceledException)
        {
            probe.Cancelled.TrySetResult(context.Method);
            throw;
        }
    }

    public override async Task<EchoReply> ClientStream(IAsyncStreamReader<EchoRequest> requestStream, ServerCallContext context)
    {
        probe.Calls.Add(context.Method);
        int count = 0;
        long bytes = 0;
        await foreach (EchoRequest request in requestStream.ReadAllAsync(context.CancellationToken))
        {
            count++;
            bytes += request.Payload.Length;
        }
        return new EchoReply { Message = $"{count} messages, {bytes} bytes", Index = count };
    }

    public override async Task Duplex(IAsyncStreamReader<EchoRequest> requestStream, IServerStreamWriter<EchoReply> responseStream, ServerCallContext context)
    {
        probe.Calls.Add(context.Method);
        int i = 0;
        await foreach (EchoRequest request in requestStream.ReadAllAsync(context.CancellationToken))
        {
            await responseStream.WriteAsync(new EchoReply { Message = request.Message, Index = i++, Payload = request.Payload });
        }
    }

    private async Task DelayAsync(int milliseconds, ServerCallContext context)
    {
        try
        {
            await Task.Delay(milliseconds, context.CancellationToken);
        }
        catch (OperationCanceledException)
        {
            probe.Cancelled.TrySetResult(context.Method);
            throw;
        }
    }

    private static async Task EchoMetadataAsync(ServerCallContext context)
    {
        var headers = new Metadata();
        foreach (Metadata.Entry entry in context.RequestHeaders)
        {
            if (entry.Key.StartsWith("x-echo-", StringComparison.Ordinal))
            {
                headers.Add(entry.IsBinary ? new Metadata.Entry(entry.Key, entry.ValueBytes) : new Metadata.Entry(entry.Key, entry.Value));
            }
        }
        if (headers.Count > 0)
        {
            await context.WriteResponseHeadersAsync(headers);
        }
    }
}

/// <summary>What the upstream saw: calls made, and whether cancellation reached it.</summary>
public sealed class UpstreamProbe
{
    public System.Collections.Concurrent.ConcurrentBag<string> Calls { get; } = [];
    public TaskCompletionSource<string> Cancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}
