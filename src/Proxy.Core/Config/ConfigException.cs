namespace Proxy.Core.Config;

/// <summary>A configuration that cannot be used; the message names the resource and the field.</summary>
public sealed class ConfigException(string message) : Exception(message);
