namespace EndToEnd.Tests;

/// <summary>Envoy bootstrap fragments for tests that load a configuration the way the binary does.</summary>
internal static class BootstrapYaml
{
    /// <summary>
    /// One static listener on 127.0.0.1 (a port from the OS) with an HTTP connection manager: its extra
    /// fields, route configuration and HTTP filters are YAML written from column 0 (the router is added
    /// last). Indented for a place under static_resources.listeners.
    /// </summary>
    public static string Listener(string name, string routeConfig, string hcmFields = "", string httpFilters = "", string routerFields = "") =>
        string.Join('\n',
            $"  - name: {name}",
            "    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }",
            "    filter_chains:",
            "    - filters:",
            "      - name: envoy.filters.network.http_connection_manager",
            "        typed_config:",
            "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            $"          stat_prefix: {name}",
            Indent(hcmFields, 10),
            "          route_config:",
            Indent(routeConfig, 12),
            "          http_filters:",
            Indent(httpFilters, 10),
            "          - name: envoy.filters.http.router",
            $"            typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{(routerFields.Length > 0 ? ", " + routerFields : "")} }}");

    public static string Indent(string yaml, int spaces) =>
        yaml.Length == 0 ? "" : string.Join('\n', yaml.Split('\n').Select(l => new string(' ', spaces) + l));
}
