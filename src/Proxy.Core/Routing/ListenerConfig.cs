using System.Net;

namespace Proxy.Core.Routing;

/// <summary>A listening address and the HTTP connection manager's route configuration (Envoy's Listener).</summary>
public sealed class ListenerConfig(string name, IPEndPoint address, RouteConfiguration routes)
{
    public string Name { get; } = name;
    public IPEndPoint Address { get; } = address;
    public RouteConfiguration Routes { get; } = routes;
}
