using System.Reflection;
using System.Reflection.Emit;
using Proxy.Core.Routing;

namespace Proxy.Core.Tests;

/// <summary>
/// Core's folders depend one way, from the bottom (config primitives) to the top (the server): read from
/// the compiled assembly (signatures, base types, and every type, method and field an IL body names), so a
/// reference in code, not just a using, counts.
/// </summary>
public sealed class LayeringTests
{
    // Lower rank = lower layer; a type may use types of its own rank or below. Equal ranks may not use each other.
    private static readonly Dictionary<string, int> s_rank = new()
    {
        ["Proxy.Core.Config"] = 0,
        ["Proxy.Core.Diagnostics"] = 1,
        ["Proxy.Core.Http1"] = 1,
        ["Proxy.Core.Transport"] = 2,
        ["Proxy.Core.Routing"] = 3,
        ["Proxy.Core.Peers"] = 4,
        ["Proxy.Core.Upstream"] = 5,
        ["Proxy.Core.Forwarding"] = 6,
        ["Proxy.Core.Listeners"] = 7,
        ["Proxy.Core.Runtime"] = 8,
        ["Proxy.Core.Grpc"] = 9,
        ["Proxy.Core"] = 10,
    };

    private static readonly Dictionary<short, OpCode> s_opcodes = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!)
        .ToDictionary(o => o.Value);

    [Fact]
    public void CoreFoldersDependOneWay()
    {
        Assembly core = typeof(ProxySnapshot).Assembly;
        var violations = new SortedSet<string>();
        foreach (Type type in core.GetTypes())
        {
            if (type.Namespace == null && Outermost(type).Name.StartsWith('<'))
            {
                continue; // the compiler's own (collection expressions, static data)
            }
            string layer = Layer(type);
            if (!s_rank.TryGetValue(layer, out int rank))
            {
                Assert.Fail($"{type.FullName}: namespace {type.Namespace} has no layer in this test");
            }
            foreach (Type used in Referenced(type))
            {
                Type target = Outermost(used);
                if (target.Assembly == core && s_rank.TryGetValue(Layer(target), out int usedRank)
                    && Layer(target) != layer && usedRank >= rank)
                {
                    violations.Add($"{layer} -> {Layer(target)}: {Outermost(type).Name} uses {target.Name}");
                }
            }
        }
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public void TheCheckSeesReferencesInsideMethodBodies()
    {
        // The exchange reaches the pools only inside its methods' bodies for some calls: they must be seen.
        Type exchange = typeof(Forwarding.Exchange);
        Type[] used = [.. Referenced(exchange).Select(Outermost)];
        Assert.Contains(typeof(Transport.FlushBatch), used);
        Assert.Contains(typeof(Upstream.UpstreamPool), used);
    }

    /// <summary>A type's layer: its namespace (TLS is part of the transport).</summary>
    private static string Layer(Type type) => type.Namespace == "Proxy.Core.Transport.Tls" ? "Proxy.Core.Transport" : type.Namespace ?? "";

    private static Type Outermost(Type type)
    {
        while (type.IsGenericType && !type.IsGenericTypeDefinition && type.GetGenericTypeDefinition() is { } definition && definition != type)
        {
            type = definition;
        }
        while (type.DeclaringType != null)
        {
            type = type.DeclaringType;
        }
        return type.HasElementType ? Outermost(type.GetElementType()!) : type;
    }

    private static IEnumerable<Type> Referenced(Type type)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        if (type.BaseType != null)
        {
            yield return type.BaseType;
        }
        foreach (Type i in type.GetInterfaces())
        {
            yield return i;
        }
        foreach (FieldInfo field in type.GetFields(all))
        {
            yield return field.FieldType;
        }
        foreach (MethodBase method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
        {
            if (method is MethodInfo m)
            {
                yield return m.ReturnType;
            }
            foreach (ParameterInfo p in method.GetParameters())
            {
                yield return p.ParameterType;
            }
            foreach (Type t in BodyReferences(method))
            {
                yield return t;
            }
        }
        foreach (Type nested in type.GetNestedTypes(all))
        {
            foreach (Type t in Referenced(nested))
            {
                yield return t;
            }
        }
    }

    /// <summary>The types of every method, field and type token in the IL body.</summary>
    private static IEnumerable<Type> BodyReferences(MethodBase method)
    {
        byte[]? il = method.GetMethodBody()?.GetILAsByteArray();
        if (il == null)
        {
            yield break;
        }
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        int i = 0;
        while (i < il.Length)
        {
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            i += il[i] == 0xFE ? 2 : 1;
            OpCode op = s_opcodes[value];
            int token = op.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok
                ? BitConverter.ToInt32(il, i) : 0;
            i += op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + (4 * BitConverter.ToInt32(il, i)),
                _ => 4,
            };
            if (token == 0)
            {
                continue;
            }
            MemberInfo? member = method.Module.ResolveMember(token, typeArgs, methodArgs);
            Type? declaring = member as Type ?? member?.DeclaringType;
            if (declaring != null)
            {
                yield return declaring;
            }
            if (member is FieldInfo field)
            {
                yield return field.FieldType;
            }
        }
    }
}
