using System.Buffers;

namespace Proxy.Core.Http1;

/// <summary>
/// The chunked transfer coding (RFC 9112 §7.1) decoded incrementally from a contiguous buffer. Chunk
/// extensions are ignored; trailer fields are returned as raw lines for the caller to parse. Every line
/// it reads is bounded, so a hostile sender cannot make it buffer without limit.
/// </summary>
public struct ChunkedDecoder
{
    private const int MaxLineLength = 4096;

    private enum State : byte
    {
        Size,
        Data,
        DataCrlf,
        Trailers,
        Done,
    }

    private State _state;
    private long _remaining;

    public enum Result : byte
    {
        /// <summary>More input is needed.</summary>
        NeedMore,
        /// <summary><c>data</c> holds body octets.</summary>
        Data,
        /// <summary><c>data</c> holds one trailer field line (without CRLF).</summary>
        Trailer,
        /// <summary>The last chunk and the trailer section have been read.</summary>
        Done,
        Error,
    }

    public readonly bool IsDone => _state == State.Done;

    public void Reset()
    {
        _state = State.Size;
        _remaining = 0;
    }

    /// <summary>Decodes from the front of <paramref name="input"/>, advancing <paramref name="consumed"/>.</summary>
    public Result Decode(ReadOnlySpan<byte> input, ref int consumed, out ReadOnlySpan<byte> data)
    {
        data = default;
        while (true)
        {
            ReadOnlySpan<byte> rest = input.Slice(consumed);
            switch (_state)
            {
                case State.Size:
                {
                    int lf = rest.IndexOf((byte)'\n');
                    if (lf < 0)
                    {
                        return rest.Length > MaxLineLength ? Result.Error : Result.NeedMore;
                    }
                    if (lf == 0 || rest[lf - 1] != (byte)'\r' || lf > MaxLineLength)
                    {
                        return Result.Error;
                    }
                    ReadOnlySpan<byte> line = rest.Slice(0, lf - 1);
                    int ext = line.IndexOf((byte)';');
                    ReadOnlySpan<byte> hex = (ext < 0 ? line : line.Slice(0, ext)).TrimEnd(" \t"u8);
                    if (hex.IsEmpty || hex.Length > 15 || !TryParseHex(hex, out long size))
                    {
                        return Result.Error;
                    }
                    consumed += lf + 1;
                    _remaining = size;
                    _state = size == 0 ? State.Trailers : State.Data;
                    continue;
                }
                case State.Data:
                {
                    if (rest.IsEmpty)
                    {
                        return Result.NeedMore;
                    }
                    int take = (int)Math.Min(rest.Length, _remaining);
                    data = rest.Slice(0, take);
                    consumed += take;
                    _remaining -= take;
                    if (_remaining == 0)
                    {
                        _state = State.DataCrlf;
                    }
                    return Result.Data;
                }
                case State.DataCrlf:
                {
                    if (rest.Length < 2)
                    {
                        return Result.NeedMore;
                    }
                    if (rest[0] != (byte)'\r' || rest[1] != (byte)'\n')
                    {
                        return Result.Error;
                    }
                    consumed += 2;
                    _state = State.Size;
                    continue;
                }
                case State.Trailers:
                {
                    int lf = rest.IndexOf((byte)'\n');
                    if (lf < 0)
                    {
                        return rest.Length > MaxLineLength ? Result.Error : Result.NeedMore;
                    }
                    if (lf == 0 || rest[lf - 1] != (byte)'\r')
                    {
                        return Result.Error;
                    }
                    consumed += lf + 1;
                    if (lf == 1)
                    {
                        _state = State.Done;
                        return Result.Done;
                    }
                    data = rest.Slice(0, lf - 1);
                    return Result.Trailer;
                }
                default:
                    return Result.Done;
            }
        }
    }

    private static bool TryParseHex(ReadOnlySpan<byte> hex, out long value)
    {
        value = 0;
        foreach (byte b in hex)
        {
            int digit = b switch
            {
                >= (byte)'0' and <= (byte)'9' => b - '0',
                >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
                >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
                _ => -1,
            };
            if (digit < 0)
            {
                return false;
            }
            value = (value << 4) | (uint)digit;
        }
        return true;
    }
}
