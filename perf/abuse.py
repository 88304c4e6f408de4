#!/usr/bin/env python3
"""The proxy's memory and CPU under abusive clients, beside nghttpx and HAProxy under the same abuse.

usage: perf/abuse.py [--targets ours,nghttpx,haproxy] [--ours BINARY] [--scenarios ...] [--seconds N]

Every target runs as a standalone reverse proxy (HTTP/1.1 and h2c on one port, HTTP/1.1 upstream) on
loopback, pinned to CPU 0; the abusers and the upstream run on CPU 1. Scenarios:
  slow-h2     N h2c clients open 2^31-1 windows, request a 512 MiB response and never read it
  slow-h1     the same over HTTP/1.1
  reset       HEADERS+RST_STREAM pairs as fast as one connection takes them (CVE-2023-44487)
  idle        2,000 connections with heads that never finish, then 10,000 idle connections
For each: the proxy's RSS growth (VmRSS summed over its processes), its CPU, what the upstream saw,
and whether well-behaved requests made meanwhile were served. Loopback only; every loop is bounded.
"""
import argparse, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


# ---- the upstream: HTTP/1.1, counts requests and the octets of big bodies it managed to write ----
class Upstream:
    def __init__(self):
        self.requests = 0
        self.big_bytes = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests += 1
                if self.path.startswith("/big/"):
                    size = int(self.path[5:])
                    self.send_response(200)
                    self.send_header("content-length", str(size))
                    self.end_headers()
                    chunk = b"\0" * 65536
                    try:
                        sent = 0
                        while sent < size:
                            n = min(len(chunk), size - sent)
                            self.wfile.write(chunk[:n])
                            sent += n
                            owner.big_bytes += n
                    except OSError:
                        pass
                    return
                body = b"hello"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- targets ----
def start_target(name, binary, upstream_port, work):
    port = free_port()
    if name == "ours":
        cmd = [binary, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
               "--concurrency", "1", "--request-headers-timeout-s", "10", "-l", "error"]
    elif name == "nghttpx":
        cmd = ["nghttpx", "--conf=/dev/null", f"--frontend=127.0.0.1,{port};no-tls",
               f"--backend=127.0.0.1,{upstream_port};;proto=http/1.1", "--workers=1", "--single-thread",
               "--no-via", "--no-ocsp", f"--errorlog-file={work}/nghttpx.log"]
    elif name == "haproxy":
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 9900
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 10s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream_port}
""")
        cmd = ["haproxy", "-db", "-f", cfg]
    else:
        sys.exit(f"unknown target {name}")
    proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.5)
    return proc, port


def tree(pid):
    pids = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) in pids and int(p) not in pids:
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def rss_mb(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
    return total


# ---- HTTP/2 frames, just enough to be rude ----
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def settings(*pairs):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def headers_block(path):
    # HPACK literals without indexing, new names: :method GET, :scheme http, :authority x, :path PATH
    out = b""
    for name, value in ((b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", path.encode())):
        out += b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return out


def good_requests(port, stop, result):
    ok = failed = 0
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            if data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello"):
                ok += 1
            else:
                failed += 1
        except OSError:
            failed += 1
        time.sleep(0.02)
    result.extend([ok, failed])


# ---- scenarios ----
def warm_up(port):
    """One ordinary request each way first, so the baseline includes what any first request costs."""
    stop = threading.Event()
    stop.set()
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /big/1048576 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
        s.close()
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PREFACE + settings() + frame(1, 0x5, 1, headers_block("/hello")))
        time.sleep(0.2)
        s.close()
    time.sleep(1)


def slow_readers(port, pid, upstream, h2, count, seconds):
    warm_up(port)
    upstream.big_bytes = 0
    base = rss_mb(pid)
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        if h2:
            block = headers_block("/big/536870912")
            s.sendall(PREFACE + settings((4, 2**31 - 1)) + frame(8, 0, 0, struct.pack(">I", 2**31 - 1 - 65535))
                      + frame(1, 0x5, 1, block))
        else:
            s.sendall(b"GET /big/536870912 HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    peak = base
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.5)
        peak = max(peak, rss_mb(pid))
    for s in socks:
        s.close()
    return {"rss_base_mb": base, "rss_peak_mb": peak, "growth_mb": peak - base,
            "per_conn_mb": (peak - base) / count, "upstream_wrote_mb": upstream.big_bytes / 2**20}


def rapid_reset(port, pid, upstream, seconds):
    stop = threading.Event()
    good = []
    t = threading.Thread(target=good_requests, args=(port, stop, good))
    t.start()
    time.sleep(0.5)
    before = upstream.requests
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(PREFACE + settings())
    s.setblocking(False)
    cpu0 = cpu_seconds(pid)
    start = time.time()
    sent = 0
    stream = 1
    closed_after = None
    goaway = None
    received = b""
    while time.time() - start < seconds and closed_after is None:
        batch = b""
        for _ in range(100):
            batch += frame(1, 0x5, stream, headers_block("/hello")) + frame(3, 0, stream, struct.pack(">I", 8))
            stream += 2
        try:
            s.sendall(batch)
            sent += 100
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            closed_after = time.time() - start
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed_after = time.time() - start
                    break
                received += chunk
        except BlockingIOError:
            pass
        except OSError:
            closed_after = time.time() - start
    # find a GOAWAY in what came back
    i = 0
    while i + 9 <= len(received):
        length = int.from_bytes(received[i:i + 3], "big")
        if received[i + 3] == 7 and i + 9 + 8 <= len(received):
            last = int.from_bytes(received[i + 9:i + 13], "big") & 0x7FFFFFFF
            code = int.from_bytes(received[i + 13:i + 17], "big")
            goaway = (last, code)
        i += 9 + length
    s.close()
    time.sleep(1)
    stop.set()
    t.join()
    attacker_upstream = upstream.requests - before - good[0] - good[1]
    return {"pairs_sent": sent, "closed_after_s": closed_after, "goaway_last_stream": goaway and goaway[0],
            "goaway_code": goaway and goaway[1], "upstream_requests_from_attacker": max(attacker_upstream, 0),
            "attacker_cpu_s": cpu_seconds(pid) - cpu0, "good_ok": good[0], "good_failed": good[1]}


def idle(port, pid, seconds):
    base = rss_mb(pid)
    started = time.time()
    heads = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        heads.append(s)
    idle_socks = []
    for _ in range(10000):
        try:
            idle_socks.append(socket.create_connection(("127.0.0.1", port)))
        except OSError:
            break
    time.sleep(0.5)
    # CPU while they only sit (before any head timeout: those are 10 s after the heads began).
    window = max(1.0, min(5.0, 9.0 - (time.time() - started)))
    cpu0 = cpu_seconds(pid)
    t0 = time.time()
    time.sleep(window)
    cpu = (cpu_seconds(pid) - cpu0) / (time.time() - t0)
    rss = rss_mb(pid)
    # Others are served while the 12,000 are open.
    stop = threading.Event()
    good = []
    t = threading.Thread(target=good_requests, args=(port, stop, good))
    t.start()
    time.sleep(2)
    stop.set()
    t.join()
    # Heads closed by a head timeout within `seconds` of being sent (10 s for ours and HAProxy here).
    time.sleep(max(0.0, seconds - (time.time() - started)))
    closed = 0
    for s in heads:
        s.setblocking(False)
        try:
            s.recv(4096)
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    for s in heads + idle_socks:
        s.close()
    return {"connections": len(heads) + len(idle_socks), "cpu_percent_sitting": cpu * 100, "cpu_window_s": window,
            "rss_mb": rss, "growth_mb": rss - base, "heads_closed_within_s": seconds, "heads_closed": closed,
            "good_ok": good[0], "good_failed": good[1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="ours,nghttpx,haproxy")
    ap.add_argument("--ours", default=os.path.join(ROOT, "out", "aot", "layotto-fast"))
    ap.add_argument("--scenarios", default="slow-h2,slow-h1,reset,idle")
    ap.add_argument("--seconds", type=float, default=15)
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    upstream = Upstream()
    results = []
    printed = 0
    for target in args.targets.split(","):
        if target != "ours" and not shutil.which(target):
            print(f"{target}: not installed, skipped")
            continue
        for scenario in args.scenarios.split(","):
            work = tempfile.mkdtemp()
            proc, port = start_target(target, args.ours, upstream.port, work)
            upstream.big_bytes = 0
            try:
                if scenario == "slow-h2":
                    for n in (1, 10):
                        r = slow_readers(port, proc.pid, upstream, True, n, args.seconds)
                        results.append((target, f"slow-h2 x{n}", r))
                elif scenario == "slow-h1":
                    for n in (1, 10):
                        r = slow_readers(port, proc.pid, upstream, False, n, args.seconds)
                        results.append((target, f"slow-h1 x{n}", r))
                elif scenario == "reset":
                    results.append((target, "reset", rapid_reset(port, proc.pid, upstream, args.seconds)))
                elif scenario == "idle":
                    results.append((target, "idle", idle(port, proc.pid, args.seconds)))
            finally:
                os.killpg(proc.pid, 15)
                proc.wait(10)
            for target_name, name, r in results[printed:]:
                print(f"{target_name:8} {name:12} " + "  ".join(
                    f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
            printed = len(results)


if __name__ == "__main__":
    main()
