namespace Proxy.Core.Routing;

/// <summary>The retry_on conditions of Envoy's router (x-envoy-retry-on and x-envoy-retry-grpc-on values).</summary>
[Flags]
public enum RetryOn
{
    None = 0,
    ServerError5xx = 1 << 0,
    GatewayError = 1 << 1,
    Reset = 1 << 2,
    ConnectFailure = 1 << 3,
    Retriable4xx = 1 << 4,
    RefusedStream = 1 << 5,
    RetriableStatusCodes = 1 << 6,
    GrpcCancelled = 1 << 7,
    GrpcDeadlineExceeded = 1 << 8,
    GrpcResourceExhausted = 1 << 9,
    GrpcUnavailable = 1 << 10,
    GrpcInternal = 1 << 11,
}

/// <summary>
/// Envoy's RetryPolicy as Istio uses it: conditions, attempts, exponential back-off with full jitter, and
/// the previous_hosts predicate. Retries happen only while no response octet has gone downstream, and
/// only while the request body seen so far fits the retry buffer.
/// </summary>
public sealed class RetryPolicy
{
    /// <summary>Envoy's default per-connection buffer limit, which also bounds what a retry can replay.</summary>
    public const int DefaultBufferLimit = 1024 * 1024;

    public RetryOn RetryOn { get; init; }
    public int NumRetries { get; init; } = 1;
    public int[] RetriableStatusCodes { get; init; } = [];
    public TimeSpan BaseInterval { get; init; } = TimeSpan.FromMilliseconds(25);
    public TimeSpan MaxInterval { get; init; } = TimeSpan.FromMilliseconds(250);
    /// <summary>retry_host_predicate envoy.retry_host_predicates.previous_hosts.</summary>
    public bool AvoidPreviousHosts { get; init; }
    public int HostSelectionRetryMaxAttempts { get; init; } = 1;
    public int BufferLimit { get; init; } = DefaultBufferLimit;
    /// <summary>per_try_timeout: one attempt's limit; zero means only the route's timeout applies.</summary>
    public TimeSpan PerTryTimeout { get; init; }

    /// <summary>Envoy retries a per-try timeout under 5xx and gateway-error.</summary>
    public bool OnPerTryTimeout => (RetryOn & (RetryOn.ServerError5xx | RetryOn.GatewayError)) != 0;

    /// <summary>Parses retry_on's comma-separated list; unknown conditions are returned for a warning.</summary>
    public static RetryOn Parse(string value, List<string> unknown)
    {
        RetryOn result = RetryOn.None;
        foreach (string part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            result |= part switch
            {
                "5xx" => RetryOn.ServerError5xx,
                "gateway-error" => RetryOn.GatewayError,
                "reset" => RetryOn.Reset,
                "connect-failure" => RetryOn.ConnectFailure,
                "retriable-4xx" => RetryOn.Retriable4xx,
                "refused-stream" => RetryOn.RefusedStream,
                "retriable-status-codes" => RetryOn.RetriableStatusCodes,
                "cancelled" => RetryOn.GrpcCancelled,
                "deadline-exceeded" => RetryOn.GrpcDeadlineExceeded,
                "resource-exhausted" => RetryOn.GrpcResourceExhausted,
                "unavailable" => RetryOn.GrpcUnavailable,
                "internal" => RetryOn.GrpcInternal,
                _ => Unknown(part, unknown),
            };
        }
        return result;
    }

    private static RetryOn Unknown(string part, List<string> unknown)
    {
        unknown.Add(part);
        return RetryOn.None;
    }

    /// <summary>Envoy's back-off: a random time up to base × (2^n − 1), at most the maximum.</summary>
    public TimeSpan BackOff(int retry)
    {
        double ceiling = Math.Min(BaseInterval.TotalMilliseconds * ((1L << Math.Min(retry, 30)) - 1), MaxInterval.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(Random.Shared.NextDouble() * Math.Max(ceiling, BaseInterval.TotalMilliseconds));
    }

    public bool OnConnectFailure => (RetryOn & (RetryOn.ConnectFailure | RetryOn.ServerError5xx | RetryOn.GatewayError)) != 0;

    public bool OnReset(bool refused) =>
        (RetryOn & (RetryOn.Reset | RetryOn.ServerError5xx | RetryOn.GatewayError)) != 0 || (refused && (RetryOn & RetryOn.RefusedStream) != 0);

    /// <summary>Whether a response with this status (and gRPC status, or -1) is worth another try.</summary>
    public bool OnResponse(int status, int grpcStatus)
    {
        if (status >= 500 && (RetryOn & RetryOn.ServerError5xx) != 0)
        {
            return true;
        }
        if (status is 502 or 503 or 504 && (RetryOn & RetryOn.GatewayError) != 0)
        {
            return true;
        }
        if (status == 409 && (RetryOn & RetryOn.Retriable4xx) != 0)
        {
            return true;
        }
        if ((RetryOn & RetryOn.RetriableStatusCodes) != 0 && Array.IndexOf(RetriableStatusCodes, status) >= 0)
        {
            return true;
        }
        return grpcStatus switch
        {
            1 => (RetryOn & RetryOn.GrpcCancelled) != 0,
            4 => (RetryOn & RetryOn.GrpcDeadlineExceeded) != 0,
            8 => (RetryOn & RetryOn.GrpcResourceExhausted) != 0,
            13 => (RetryOn & RetryOn.GrpcInternal) != 0,
            14 => (RetryOn & RetryOn.GrpcUnavailable) != 0,
            _ => false,
        };
    }
}
