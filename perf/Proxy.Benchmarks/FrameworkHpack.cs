using System.Reflection;
using System.Reflection.Emit;

namespace System.Runtime.CompilerServices
{
    /// <summary>Honoured by the runtime for dynamic assemblies: lets emitted code use another assembly's internals.</summary>
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    public sealed class IgnoresAccessChecksToAttribute(string assemblyName) : Attribute
    {
        public string AssemblyName { get; } = assemblyName;
    }
}

namespace Proxy.Benchmarks
{
    public delegate void FrameworkDecode(object decoder, byte[] block, object handler);

    /// <summary>
    /// The framework's own HPACK decoder (System.Net.Http.HPack.HPackDecoder, internal to System.Net.Http,
    /// the one HttpClient uses), reached through a small emitted shim so that it is called directly, not by
    /// reflection: a no-op header handler and a static call to Decode.
    /// </summary>
    internal static class FrameworkHpack
    {
        private static readonly Assembly s_http = typeof(System.Net.Http.HttpClient).Assembly;

        public static object CreateDecoder() =>
            Activator.CreateInstance(s_http.GetType("System.Net.Http.HPack.HPackDecoder", throwOnError: true)!,
                BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, null, [4096, 65536], null)!;

        public static (FrameworkDecode Decode, object Handler) Build()
        {
            Type decoderType = s_http.GetType("System.Net.Http.HPack.HPackDecoder", throwOnError: true)!;
            Type handlerInterface = s_http.GetType("System.Net.Http.IHttpStreamHeadersHandler", throwOnError: true)!;
            var assembly = AssemblyBuilder.DefineDynamicAssembly(new AssemblyName("FrameworkHpackShim"), AssemblyBuilderAccess.Run);
            assembly.SetCustomAttribute(new CustomAttributeBuilder(
                typeof(System.Runtime.CompilerServices.IgnoresAccessChecksToAttribute).GetConstructor([typeof(string)])!, ["System.Net.Http"]));
            ModuleBuilder module = assembly.DefineDynamicModule("shim");

            TypeBuilder handler = module.DefineType("NopHandler", TypeAttributes.Public | TypeAttributes.Sealed, typeof(object), [handlerInterface]);
            foreach (MethodInfo m in handlerInterface.GetMethods())
            {
                MethodBuilder impl = handler.DefineMethod(m.Name, MethodAttributes.Public | MethodAttributes.Virtual | MethodAttributes.Final | MethodAttributes.HideBySig,
                    m.ReturnType, Array.ConvertAll(m.GetParameters(), p => p.ParameterType));
                impl.GetILGenerator().Emit(OpCodes.Ret);
                handler.DefineMethodOverride(impl, m);
            }
            Type handlerType = handler.CreateType();

            TypeBuilder shim = module.DefineType("Shim", TypeAttributes.Public | TypeAttributes.Abstract | TypeAttributes.Sealed);
            MethodBuilder invoke = shim.DefineMethod("Decode", MethodAttributes.Public | MethodAttributes.Static, typeof(void), [typeof(object), typeof(byte[]), typeof(object)]);
            ILGenerator il = invoke.GetILGenerator();
            il.Emit(OpCodes.Ldarg_0);
            il.Emit(OpCodes.Castclass, decoderType);
            il.Emit(OpCodes.Ldarg_1);
            il.Emit(OpCodes.Call, typeof(ReadOnlySpan<byte>).GetMethod("op_Implicit", [typeof(byte[])])!);
            il.Emit(OpCodes.Ldc_I4_1);
            il.Emit(OpCodes.Ldarg_2);
            il.Emit(OpCodes.Castclass, handlerInterface);
            il.Emit(OpCodes.Callvirt, decoderType.GetMethod("Decode", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, [typeof(ReadOnlySpan<byte>), typeof(bool), handlerInterface])!);
            il.Emit(OpCodes.Ret);
            Type shimType = shim.CreateType();
            var decode = shimType.GetMethod("Decode")!.CreateDelegate<FrameworkDecode>();
            return (decode, Activator.CreateInstance(handlerType)!);
        }
    }
}
