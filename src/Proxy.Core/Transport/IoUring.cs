using System.Runtime.InteropServices;

namespace Proxy.Core.Transport;

/// <summary>
/// A minimal io_uring of one event loop, used for two things: the receives of the sockets one
/// <c>epoll_wait</c> reported readable, and the sends an iteration of the loop produced, each go to the
/// kernel in one <c>io_uring_enter</c> instead of one <c>recv</c> or <c>send</c> each. Every operation is
/// non-blocking (MSG_DONTWAIT: the kernel completes it at once, with octets moved or -EAGAIN), so the
/// call returns with every completion posted and no buffer outlives it. Where a system call is dear (a
/// virtual machine's guest kernel pays 1–1.5 µs for each here) this halves what a send or receive costs.
/// <c>LAYOTTO_IO_URING=0</c> turns it off.
/// </summary>
internal sealed unsafe partial class IoUring
{
    private const int SysIoUringSetup = 425;
    private const int SysIoUringEnter = 426;
    private const uint EnterGetEvents = 1;
    private const byte OpSend = 26;
    private const byte OpRecv = 27;
    private const uint MsgDontWait = 0x40;
    private const uint MsgNoSignal = 0x4000;
    private const long OffSqRing = 0;
    private const long OffCqRing = 0x8000000;
    private const long OffSqes = 0x10000000;
    private const int ProtRead = 1, ProtWrite = 2, MapShared = 1, MapPopulate = 0x8000;
    private const int EINTR = 4;

    private static readonly bool s_disabled = Environment.GetEnvironmentVariable("LAYOTTO_IO_URING") == "0";

    private readonly int _fd;
    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint _sqMask;
    private readonly uint* _sqArray;
    private readonly Sqe* _sqes;
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly Cqe* _cqes;
    private uint _prepared;

    /// <summary>How many operations one submission may hold.</summary>
    public int Capacity { get; }

    private IoUring(int fd, in Params p, byte* sq, byte* cq, Sqe* sqes)
    {
        _fd = fd;
        _sqHead = (uint*)(sq + p.SqOff.Head);
        _sqTail = (uint*)(sq + p.SqOff.Tail);
        _sqMask = *(uint*)(sq + p.SqOff.RingMask);
        _sqArray = (uint*)(sq + p.SqOff.Array);
        _sqes = sqes;
        _cqHead = (uint*)(cq + p.CqOff.Head);
        _cqTail = (uint*)(cq + p.CqOff.Tail);
        _cqMask = *(uint*)(cq + p.CqOff.RingMask);
        _cqes = (Cqe*)(cq + p.CqOff.Cqes);
        Capacity = (int)p.SqEntries;
    }

    /// <summary>A ring of <paramref name="entries"/> operations, or null where io_uring is unavailable or turned off.</summary>
    public static IoUring? TryCreate(uint entries)
    {
        if (s_disabled || !OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return null;
        }
        Params p = default;
        int fd = (int)syscall(SysIoUringSetup, entries, &p);
        if (fd < 0)
        {
            return null; // ENOSYS, EPERM (seccomp, io_uring_disabled), ENOMEM: sends and receives go one by one
        }
        nuint sqSize = p.SqOff.Array + p.SqEntries * 4;
        nuint cqSize = p.CqOff.Cqes + p.CqEntries * (uint)sizeof(Cqe);
        byte* sq = (byte*)mmap(null, sqSize, ProtRead | ProtWrite, MapShared | MapPopulate, fd, OffSqRing);
        byte* cq = (byte*)mmap(null, cqSize, ProtRead | ProtWrite, MapShared | MapPopulate, fd, OffCqRing);
        Sqe* sqes = (Sqe*)mmap(null, p.SqEntries * (uint)sizeof(Sqe), ProtRead | ProtWrite, MapShared | MapPopulate, fd, OffSqes);
        if (sq == (byte*)-1 || cq == (byte*)-1 || sqes == (Sqe*)-1)
        {
            _ = close(fd); // what was mapped stays mapped: one failed ring per loop at most
            return null;
        }
        return new IoUring(fd, p, sq, cq, sqes);
    }

    /// <summary>Adds a non-blocking send of <paramref name="length"/> octets at <paramref name="data"/> (kept valid until <see cref="Submit"/> returns).</summary>
    public void PrepareSend(int socket, byte* data, int length, ulong userData) =>
        Prepare(OpSend, socket, data, length, MsgDontWait | MsgNoSignal, userData);

    /// <summary>Adds a non-blocking receive of up to <paramref name="length"/> octets into <paramref name="data"/> (kept valid until <see cref="Submit"/> returns).</summary>
    public void PrepareReceive(int socket, byte* data, int length, ulong userData) =>
        Prepare(OpRecv, socket, data, length, MsgDontWait, userData);

    /// <summary>How many operations are prepared and not yet submitted.</summary>
    public int Prepared => (int)_prepared;

    /// <summary>Forgets what was prepared (nothing reaches the kernel; the caller does it another way).</summary>
    public void Discard() => _prepared = 0;

    private void Prepare(byte opcode, int socket, byte* data, int length, uint flags, ulong userData)
    {
        if (_prepared >= (uint)Capacity)
        {
            throw new InvalidOperationException("io_uring: more operations prepared than the ring holds");
        }
        uint tail = *_sqTail + _prepared;
        uint index = tail & _sqMask;
        Sqe* sqe = _sqes + index;
        *sqe = default;
        sqe->Opcode = opcode;
        sqe->Fd = socket;
        sqe->Addr = (ulong)data;
        sqe->Len = (uint)length;
        sqe->MsgFlags = flags;
        sqe->UserData = userData;
        _sqArray[index] = index;
        _prepared++;
    }

    /// <summary>
    /// Submits what was prepared and waits for the completions (at once: every operation is non-blocking).
    /// Returns how many of the prepared operations the kernel took, in order; the rest (only when it refused
    /// the submission) are withdrawn, never run later, and are the caller's to do.
    /// </summary>
    public int Submit()
    {
        uint count = _prepared;
        _prepared = 0;
        if (count == 0)
        {
            return 0;
        }
        uint start = *_sqTail;
        Volatile.Write(ref *_sqTail, start + count);
        uint done = 0;
        while (done < count)
        {
            long n = syscall(SysIoUringEnter, _fd, count - done, count - done, EnterGetEvents, null, 0);
            if (n >= 0)
            {
                done += (uint)n;
            }
            else if (Marshal.GetLastPInvokeError() != EINTR)
            {
                // Refused (ENOMEM, EBUSY…): what the kernel did not consume is taken back, so that a
                // later submission cannot send octets whose buffer has been reused meanwhile.
                done = Volatile.Read(ref *_sqHead) - start;
                Volatile.Write(ref *_sqTail, start + done);
                break;
            }
        }
        return (int)done;
    }

    /// <summary>The next completion: its user data and result (octets moved, 0 for a receive at the end of the stream, or -errno).</summary>
    public bool TryReap(out ulong userData, out int result)
    {
        uint head = *_cqHead;
        if (head == Volatile.Read(ref *_cqTail))
        {
            userData = 0;
            result = 0;
            return false;
        }
        Cqe* cqe = _cqes + (head & _cqMask);
        userData = cqe->UserData;
        result = cqe->Res;
        Volatile.Write(ref *_cqHead, head + 1);
        return true;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SqRingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1;
        public ulong UserAddr;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CqRingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1;
        public ulong UserAddr;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd, Resv0, Resv1, Resv2;
        public SqRingOffsets SqOff;
        public CqRingOffsets CqOff;
    }

    [StructLayout(LayoutKind.Explicit, Size = 64)]
    private struct Sqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(4)] public int Fd;
        [FieldOffset(16)] public ulong Addr;
        [FieldOffset(24)] public uint Len;
        [FieldOffset(28)] public uint MsgFlags;
        [FieldOffset(32)] public ulong UserData;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Cqe
    {
        public ulong UserData;
        public int Res;
        public uint Flags;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial long syscall(long number, uint entries, Params* p);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long syscall(long number, int fd, uint toSubmit, uint minComplete, uint flags, void* sig, nuint sigSize);

    [LibraryImport("libc", SetLastError = true)]
    private static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
