using Proxy.Core.Config;

namespace Proxy.Core.Routing;

/// <summary>
/// Envoy's HTTP fault injection (envoy.extensions.filters.http.fault.v3.HTTPFault) as a route or virtual
/// host configures it: a fixed delay and/or an abort with an HTTP or gRPC status, each applied to a
/// fraction of requests. The delay comes first, then the abort, as in Envoy.
/// </summary>
public sealed class FaultPolicy
{
    public TimeSpan Delay { get; init; }
    /// <summary>The fraction of requests delayed, from 0 to 1.</summary>
    public double DelayFraction { get; init; }
    /// <summary>The HTTP status of an abort, or 0.</summary>
    public int AbortHttpStatus { get; init; }
    /// <summary>The gRPC status of an abort, or -1.</summary>
    public int AbortGrpcStatus { get; init; } = -1;
    public double AbortFraction { get; init; }

    public bool HasAbort => AbortHttpStatus > 0 || AbortGrpcStatus >= 0;

    public TimeSpan PickDelay() => Delay > TimeSpan.Zero && Hit(DelayFraction) ? Delay : TimeSpan.Zero;

    public bool PickAbort() => HasAbort && Hit(AbortFraction);

    private static bool Hit(double fraction) => fraction >= 1 || (fraction > 0 && Random.Shared.NextDouble() < fraction);

    /// <summary>FractionalPercent: numerator over HUNDRED, TEN_THOUSAND or MILLION.</summary>
    public static double Fraction(long numerator, string? denominator) => denominator switch
    {
        null or "HUNDRED" => numerator / 100.0,
        "TEN_THOUSAND" => numerator / 10_000.0,
        "MILLION" => numerator / 1_000_000.0,
        _ => throw new ConfigException($"unknown percentage denominator '{denominator}'"),
    };

    /// <summary>gRPC's mapping of an HTTP status to a gRPC status (grpc/doc/http-grpc-status-mapping.md).</summary>
    public static int GrpcStatusForHttp(int status) => status switch
    {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 or 502 or 503 or 504 => 14,
        _ => 2,
    };
}
