#!/usr/bin/env python3
"""Memory of the proxy at rest and with N idle HTTP/2 connections.

usage: perf/idle-connections.py PROXY_BINARY [N]
Starts the proxy (standalone mode, loopback), reads its VmRSS, opens N h2c connections that complete
the preface and SETTINGS exchange and then sit idle, and reads VmRSS again. Loopback only.
"""
import os, socket, subprocess, sys, time

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
proxy = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9", "--upstream-protocol", "h2", "-l", "warning"])

def rss_mb():
    with open(f"/proc/{proxy.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
try:
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)
    print(f"idle RSS: {rss_mb():.1f} MB")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(preface); socks.append(s)
    for s in socks:
        s.settimeout(10)
        if not s.recv(100):
            sys.exit("the proxy closed an idle connection")
    time.sleep(2)
    print(f"RSS with {len(socks)} idle HTTP/2 connections: {rss_mb():.1f} MB")
finally:
    proxy.terminate(); proxy.wait(10)
