using System.Net;
using System.Text;
using Proxy.Http2;

namespace Proxy.Core.Routing;

public enum HashPolicyKind : byte
{
    Header,
    Cookie,
    SourceIp,
    QueryParameter,
}

/// <summary>
/// Envoy's RouteAction.HashPolicy: what a consistent-hash balancer (RING_HASH, MAGLEV) hashes. Several
/// policies combine as Envoy combines them (rotate the running hash left by one, then xor); a terminal
/// policy that produced a hash ends the list.
/// </summary>
public sealed class HashPolicy(HashPolicyKind kind, string name, bool terminal)
{
    private readonly byte[] _name = Encoding.ASCII.GetBytes(kind == HashPolicyKind.Header ? name.ToLowerInvariant() : name);

    public HashPolicyKind Kind { get; } = kind;
    public string Name { get; } = name;
    public bool Terminal { get; } = terminal;

    /// <summary>The request's hash under <paramref name="policies"/>, or null when none applied (the balancer then picks at random).</summary>
    public static ulong? Compute(HashPolicy[] policies, HeaderList headers, ReadOnlySpan<byte> path, EndPoint? source)
    {
        ulong? hash = null;
        foreach (HashPolicy policy in policies)
        {
            ulong? next = policy.Hash(headers, path, source);
            if (next is not ulong value)
            {
                continue;
            }
            hash = hash is ulong h ? ((h << 1) | (h >> 63)) ^ value : value;
            if (policy.Terminal)
            {
                break;
            }
        }
        return hash;
    }

    private ulong? Hash(HeaderList headers, ReadOnlySpan<byte> path, EndPoint? source)
    {
        switch (Kind)
        {
            case HashPolicyKind.Header:
            {
                int index = headers.IndexOf(_name);
                return index >= 0 ? StableHash.Of(headers.Value(index)) : null;
            }
            case HashPolicyKind.Cookie:
            {
                int index = headers.IndexOf("cookie"u8);
                while (index >= 0 && index < headers.Count)
                {
                    if (headers.Name(index).SequenceEqual("cookie"u8) && TryCookie(headers.Value(index), out ReadOnlySpan<byte> value))
                    {
                        return StableHash.Of(value);
                    }
                    index++;
                }
                return null;
            }
            case HashPolicyKind.SourceIp:
                if (source is IPEndPoint ip)
                {
                    Span<byte> address = stackalloc byte[16];
                    return ip.Address.TryWriteBytes(address, out int written) ? StableHash.Of(address.Slice(0, written)) : null;
                }
                return null;
            default:
            {
                var matcher = new QueryValue(_name);
                return matcher.TryFind(path, out ReadOnlySpan<byte> value) ? StableHash.Of(value) : null;
            }
        }
    }

    private bool TryCookie(ReadOnlySpan<byte> header, out ReadOnlySpan<byte> value)
    {
        while (!header.IsEmpty)
        {
            int semi = header.IndexOf((byte)';');
            ReadOnlySpan<byte> pair = (semi < 0 ? header : header.Slice(0, semi)).Trim((byte)' ');
            header = semi < 0 ? default : header.Slice(semi + 1);
            int eq = pair.IndexOf((byte)'=');
            if (eq > 0 && pair.Slice(0, eq).SequenceEqual(_name))
            {
                value = pair.Slice(eq + 1);
                return true;
            }
        }
        value = default;
        return false;
    }

    private readonly ref struct QueryValue(ReadOnlySpan<byte> name)
    {
        private readonly ReadOnlySpan<byte> _name = name;

        public bool TryFind(ReadOnlySpan<byte> path, out ReadOnlySpan<byte> value)
        {
            value = default;
            int q = path.IndexOf((byte)'?');
            if (q < 0)
            {
                return false;
            }
            ReadOnlySpan<byte> query = path.Slice(q + 1);
            while (!query.IsEmpty)
            {
                int amp = query.IndexOf((byte)'&');
                ReadOnlySpan<byte> pair = amp < 0 ? query : query.Slice(0, amp);
                query = amp < 0 ? default : query.Slice(amp + 1);
                int eq = pair.IndexOf((byte)'=');
                if ((eq < 0 ? pair : pair.Slice(0, eq)).SequenceEqual(_name))
                {
                    value = eq < 0 ? default : pair.Slice(eq + 1);
                    return true;
                }
            }
            return false;
        }
    }
}

/// <summary>A 64-bit hash that is the same in every process and run (FNV-1a with a final avalanche).</summary>
public static class StableHash
{
    public static ulong Of(ReadOnlySpan<byte> data)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in data)
        {
            h = (h ^ b) * 1099511628211UL;
        }
        // splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
        h ^= h >> 30;
        h *= 0xbf58476d1ce4e5b9UL;
        h ^= h >> 27;
        h *= 0x94d049bb133111ebUL;
        h ^= h >> 31;
        return h;
    }

    public static ulong Of(string text) => Of(Encoding.UTF8.GetBytes(text));
}
