#!/usr/bin/env python3
"""CPU per call of the runtime API's InvokeService, next to the same request sent as plain HTTP.

usage: perf/runtime-api.py [--binary out/layotto-fast] [--requests N] [--repeat K] [--body BYTES]

One proxy process (the published binary, --concurrency 1, pinned to CPU 0) serves both paths in front of
one HTTP/1.1 upstream (nginx, one worker, a 13-byte answer; CPU 1, with h2load):
  plain    h2load GET /hello over h2c to the proxy's listener → HTTP/1.1 upstream
  invoke   h2load POSTs a prebuilt gRPC frame (InvokeServiceRequest{id, message{method "/hello", data}})
           to spec.proto.runtime.v1.Runtime/InvokeService → the same route → the same upstream
Both closed loop, 16 connections × 16 streams. Measured: the proxy's user+system CPU (from /proc) over
the calls h2load completed, per path, alternated K times; medians printed. A smoke call checks that the
runtime path answers grpc-status 0 with the upstream's body. Loopback only.
"""
import argparse, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number, payload):
    return bytes([(number << 3) | 2]) + varint(len(payload)) + payload


def invoke_frame(body_size):
    any_ = field(2, b"x" * body_size) if body_size else b""
    common = field(1, b"/hello") + (field(2, any_) if body_size else b"")
    message = field(1, b"server.default.svc.cluster.local:9090") + field(3, common)
    return b"\0" + len(message).to_bytes(4, "big") + message


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def h2load(args, cpu=1):
    out = subprocess.run(["taskset", "-c", str(cpu), "h2load", *args], capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not m:
        raise SystemExit("h2load said:\n" + out)
    return int(m.group(4)), int(m.group(5)) + int(m.group(6)), out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "out", "layotto-fast"))
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--body", type=int, default=0, help="octets of data in each InvokeService request")
    a = p.parse_args()
    for tool in ("h2load", "nghttp", "nginx", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install nghttp2-client nginx util-linux)")
    if not os.path.exists(a.binary):
        raise SystemExit(f"{a.binary} missing: dotnet publish src/Proxy.Host -c Release -r linux-x64 -p:PublishAot=true -o out")

    work = tempfile.mkdtemp(prefix="runtime-api-")
    up, listen, runtime = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(["taskset", "-c", "1", "bash", os.path.join(ROOT, "..", "shared", "bench", "upstream", "nginx-h1.sh"), str(up), work],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_port(up)
        proxy = subprocess.Popen(["taskset", "-c", "0", a.binary, "--listen", f"127.0.0.1:{listen}", "--upstream", f"127.0.0.1:{up}",
                                  "--upstream-protocol", "h1", "--concurrency", "1", "--runtime-api", f"127.0.0.1:{runtime}", "--log-level", "warning"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proxy)
        wait_port(listen)
        wait_port(runtime)
        frame = os.path.join(work, "invoke.bin")
        with open(frame, "wb") as f:
            f.write(invoke_frame(a.body))
        url = f"http://127.0.0.1:{runtime}/spec.proto.runtime.v1.Runtime/InvokeService"
        grpc_headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        smoke = subprocess.run(["nghttp", "-v", "-d", frame, *grpc_headers, url], capture_output=True, text=True, timeout=30).stdout
        if "grpc-status: 0" not in smoke or "hello, world" not in smoke:
            raise SystemExit("smoke call failed:\n" + smoke)
        loads = {
            "plain": ["-c", "16", "-m", "16", f"http://127.0.0.1:{listen}/hello"],
            "invoke": ["-c", "16", "-m", "16", "-d", frame, *grpc_headers, url],
        }
        for name, args in loads.items():  # warm-up
            h2load(["-n", "20000", *args])
        results = {name: [] for name in loads}
        for _ in range(a.repeat):
            for name, args in loads.items():
                before = cpu_seconds(proxy.pid)
                started = time.time()
                ok, failed, _ = h2load(["-n", str(a.requests), *args])
                wall = time.time() - started
                used = cpu_seconds(proxy.pid) - before
                if failed:
                    raise SystemExit(f"{name}: {failed} requests failed")
                results[name].append((used * 1e6 / ok, ok / wall, used / wall))
        print(f"runtime API vs plain HTTP through one proxy core ({a.requests} requests × {a.repeat}, body {a.body} B, "
              f"16 conns × 16 streams; medians)")
        print(f"{'path':8} {'cpu us/req':>11} {'rps':>9} {'util%':>6}   runs (cpu us/req)")
        med = {}
        for name, runs in results.items():
            med[name] = statistics.median(r[0] for r in runs)
            print(f"{name:8} {med[name]:11.2f} {statistics.median(r[1] for r in runs):9.0f} {100 * statistics.median(r[2] for r in runs):6.0f}   "
                  + " ".join(f"{r[0]:.2f}" for r in runs))
        print(f"invoke / plain = {med['invoke'] / med['plain']:.2f}x (target <= 1.5x)")
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
