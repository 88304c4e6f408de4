using System.Collections.Frozen;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Proxy.Xds.Api.Cluster;
using Proxy.Xds.Api.Endpoint;
using Proxy.Xds.Api.Listener;
using Proxy.Xds.Api.Route;

namespace Proxy.Xds;

/// <summary>The four resource types of xDS we consume.</summary>
public enum XdsResourceType
{
    Cluster,
    Endpoint,
    Listener,
    Route,
}

/// <summary>
/// Type URLs: the v3 names, their Envoy API v2 names (Istio 1.5), and the messages that decode each.
/// v2 resources are decoded with the v3 messages: the field numbers agree, and the v2-only fields we
/// handle are declared in our protos at their v2 numbers.
/// </summary>
public static class XdsTypes
{
    public const string Prefix = "type.googleapis.com/";
    public const string ClusterV3 = Prefix + "envoy.config.cluster.v3.Cluster";
    public const string EndpointV3 = Prefix + "envoy.config.endpoint.v3.ClusterLoadAssignment";
    public const string ListenerV3 = Prefix + "envoy.config.listener.v3.Listener";
    public const string RouteV3 = Prefix + "envoy.config.route.v3.RouteConfiguration";
    public const string SecretV3 = Prefix + "envoy.extensions.transport_sockets.tls.v3.Secret";
    public const string SecretV2 = Prefix + "envoy.api.v2.auth.Secret";
    public const string ClusterV2 = Prefix + "envoy.api.v2.Cluster";
    public const string EndpointV2 = Prefix + "envoy.api.v2.ClusterLoadAssignment";
    public const string ListenerV2 = Prefix + "envoy.api.v2.Listener";
    public const string RouteV2 = Prefix + "envoy.api.v2.RouteConfiguration";

    private static readonly FrozenDictionary<string, MessageDescriptor> s_messages = new Dictionary<string, MessageDescriptor>
    {
        ["envoy.config.cluster.v3.Cluster"] = Cluster.Descriptor,
        ["envoy.api.v2.Cluster"] = Cluster.Descriptor,
        ["envoy.config.endpoint.v3.ClusterLoadAssignment"] = ClusterLoadAssignment.Descriptor,
        ["envoy.api.v2.ClusterLoadAssignment"] = ClusterLoadAssignment.Descriptor,
        ["envoy.config.listener.v3.Listener"] = Listener.Descriptor,
        ["envoy.api.v2.Listener"] = Listener.Descriptor,
        ["envoy.config.route.v3.RouteConfiguration"] = RouteConfiguration.Descriptor,
        ["envoy.api.v2.RouteConfiguration"] = RouteConfiguration.Descriptor,
        ["envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"] = Api.Hcm.HttpConnectionManager.Descriptor,
        ["envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager"] = Api.Hcm.HttpConnectionManager.Descriptor,
        ["envoy.extensions.filters.http.fault.v3.HTTPFault"] = Api.Fault.HTTPFault.Descriptor,
        ["envoy.config.filter.http.fault.v2.HTTPFault"] = Api.Fault.HTTPFault.Descriptor,
        ["envoy.extensions.filters.http.cors.v3.CorsPolicy"] = Api.Cors.CorsPolicy.Descriptor,
        ["envoy.config.route.v3.CorsPolicy"] = CorsPolicy.Descriptor,
        ["envoy.api.v2.route.CorsPolicy"] = CorsPolicy.Descriptor,
        ["envoy.config.route.v3.FilterConfig"] = FilterConfig.Descriptor,
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = Api.UpstreamHttp.HttpProtocolOptions.Descriptor,
        ["envoy.extensions.filters.http.rbac.v3.RBAC"] = Api.HttpRbac.RBAC.Descriptor,
        ["envoy.config.filter.http.rbac.v2.RBAC"] = Api.HttpRbac.RBAC.Descriptor,
        ["envoy.extensions.filters.network.rbac.v3.RBAC"] = Api.NetworkRbac.RBAC.Descriptor,
        ["envoy.config.filter.network.rbac.v2.RBAC"] = Api.NetworkRbac.RBAC.Descriptor,
        ["envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"] = Api.TcpProxy.TcpProxy.Descriptor,
        ["envoy.config.filter.network.tcp_proxy.v2.TcpProxy"] = Api.TcpProxy.TcpProxy.Descriptor,
        ["envoy.extensions.filters.http.router.v3.Router"] = Api.Router.Router.Descriptor,
        ["envoy.config.filter.http.router.v2.Router"] = Api.Router.Router.Descriptor,
        ["envoy.extensions.access_loggers.file.v3.FileAccessLog"] = Api.FileAccessLog.FileAccessLog.Descriptor,
        ["envoy.config.accesslog.v2.FileAccessLog"] = Api.FileAccessLog.FileAccessLog.Descriptor,
        ["envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"] = Api.StreamAccessLog.StdoutAccessLog.Descriptor,
        ["envoy.extensions.access_loggers.stream.v3.StderrAccessLog"] = Api.StreamAccessLog.StderrAccessLog.Descriptor,
        ["envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"] = Api.Tls.DownstreamTlsContext.Descriptor,
        ["envoy.api.v2.auth.DownstreamTlsContext"] = Api.Tls.DownstreamTlsContext.Descriptor,
        ["envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"] = Api.Tls.UpstreamTlsContext.Descriptor,
        ["envoy.api.v2.auth.UpstreamTlsContext"] = Api.Tls.UpstreamTlsContext.Descriptor,
        ["envoy.extensions.transport_sockets.tls.v3.Secret"] = Api.Tls.Secret.Descriptor,
        ["envoy.api.v2.auth.Secret"] = Api.Tls.Secret.Descriptor,
        ["google.protobuf.Struct"] = Google.Protobuf.WellKnownTypes.Struct.Descriptor,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Every message type we decode from an Any (each once).</summary>
    public static IEnumerable<MessageDescriptor> Messages => s_messages.Values.Distinct();

    /// <summary>The message that decodes a type (by type URL or full name, v3 or v2); null for types we do not know.</summary>
    public static MessageDescriptor? Find(string typeUrl)
    {
        int slash = typeUrl.LastIndexOf('/');
        return s_messages.GetValueOrDefault(slash < 0 ? typeUrl : typeUrl[(slash + 1)..]);
    }

    /// <summary>The resource type a type URL names, v3 or v2; null for others (Secret, unknown).</summary>
    public static XdsResourceType? ResourceType(string typeUrl) => typeUrl switch
    {
        ClusterV3 or ClusterV2 => XdsResourceType.Cluster,
        EndpointV3 or EndpointV2 => XdsResourceType.Endpoint,
        ListenerV3 or ListenerV2 => XdsResourceType.Listener,
        RouteV3 or RouteV2 => XdsResourceType.Route,
        _ => null,
    };

    public static string TypeUrl(XdsResourceType type, bool v2) => (type, v2) switch
    {
        (XdsResourceType.Cluster, false) => ClusterV3,
        (XdsResourceType.Endpoint, false) => EndpointV3,
        (XdsResourceType.Listener, false) => ListenerV3,
        (XdsResourceType.Route, false) => RouteV3,
        (XdsResourceType.Cluster, true) => ClusterV2,
        (XdsResourceType.Endpoint, true) => EndpointV2,
        (XdsResourceType.Listener, true) => ListenerV2,
        _ => RouteV2,
    };

    /// <summary>
    /// Decodes an Any's bytes when its type is one we know (null when it is not, which callers treat as
    /// "not honoured"); <paramref name="error"/> says why bytes of a known type did not decode.
    /// </summary>
    public static IMessage? TryUnpack(string typeUrl, ByteString value, out string? error)
    {
        error = null;
        int slash = typeUrl.LastIndexOf('/');
        string name = slash < 0 ? typeUrl : typeUrl[(slash + 1)..];
        if (!s_messages.TryGetValue(name, out MessageDescriptor? descriptor))
        {
            return null;
        }
        try
        {
            return descriptor.Parser.ParseFrom(value);
        }
        catch (InvalidProtocolBufferException e)
        {
            error = e.Message;
            return null;
        }
    }
}
