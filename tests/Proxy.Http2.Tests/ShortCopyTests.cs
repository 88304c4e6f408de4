namespace Proxy.Http2.Tests;

public sealed class ShortCopyTests
{
    [Fact]
    public void EveryLength_IsCopiedExactly_AndNothingAroundItIsTouched()
    {
        var random = new Random(16);
        for (int length = 0; length <= 70; length++)
        {
            byte[] source = new byte[length];
            random.NextBytes(source);
            byte[] destination = new byte[length + 64];
            Array.Fill(destination, (byte)0xEE);
            ShortCopy.To(source, ref destination[32]);
            Assert.Equal(source, destination.AsSpan(32, length).ToArray());
            Assert.All(destination.AsSpan(0, 32).ToArray(), b => Assert.Equal(0xEE, b));
            Assert.All(destination.AsSpan(32 + length).ToArray(), b => Assert.Equal(0xEE, b));
        }
    }

    [Fact]
    public void Equal_AgreesWithSequenceEqual_ForEveryLengthAndEveryDifferingOctet()
    {
        var random = new Random(17);
        for (int length = 0; length <= 40; length++)
        {
            byte[] a = new byte[length];
            random.NextBytes(a);
            Assert.True(ShortCopy.Equal(a, (byte[])a.Clone()));
            Assert.False(ShortCopy.Equal(a, [.. a, 0]));
            for (int i = 0; i < length; i++)
            {
                byte[] b = (byte[])a.Clone();
                b[i] ^= (byte)(1 << random.Next(8));
                Assert.False(ShortCopy.Equal(a, b), $"length {length}, octet {i}");
            }
        }
    }
}
