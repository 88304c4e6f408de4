using Proxy.Core.Routing;

namespace Proxy.Core.Forwarding;

public sealed partial class Exchange
{
    /// <summary>
    /// Under the lock: injects the route's fault. Returns true when the exchange is taken care of (aborted
    /// now, or delayed and continued later); false to go on to the upstream at once.
    /// </summary>
    private bool ApplyFault(FaultPolicy fault)
    {
        TimeSpan delay = fault.PickDelay();
        bool abort = fault.PickAbort();
        if (delay > TimeSpan.Zero)
        {
            PauseThenAcquire(delay, _generation, fault: true, abort ? fault : null);
            return true;
        }
        if (abort)
        {
            Abort(fault);
            return true;
        }
        return false;
    }

    private void Abort(FaultPolicy fault)
    {
        int grpc = fault.AbortGrpcStatus >= 0 ? fault.AbortGrpcStatus : FaultPolicy.GrpcStatusForHttp(fault.AbortHttpStatus);
        int http = fault.AbortHttpStatus > 0 ? fault.AbortHttpStatus : 503;
        _upstreamClosed = true;
        SendLocalReply(http, grpc, "fault filter abort");
    }
}
