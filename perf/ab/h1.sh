#!/usr/bin/env bash
# CPU per HTTP/1.1 request of two or more proxy binaries, alternated, at a fixed or unlimited rate.
#
#   perf/ab/h1.sh [--rounds N] [--rate R] BINARY...
#
# The proxy runs pinned to CPU 0 (--concurrency 1); an nginx upstream and h2load --h1 -c 64 share CPU 1
# (the layout of ../shared/bench). Each round runs every binary in turn: 2 s of warm-up, then 8 s measured;
# the proxy's user and system time come from /proc/PID/stat. --rate R is h2load's --rps per connection
# (64 connections: 300 = 19,200 requests/s); without it, h2load goes as fast as it can. A fixed rate makes
# the binaries meet the same load, so their batching is alike: use it to compare small changes.
set -euo pipefail
rounds=3 rate=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--rounds N] [--rate R] BINARY..." >&2; exit 2; }
command -v h2load >/dev/null && command -v nginx >/dev/null || { echo "needs h2load (nghttp2-client) and nginx" >&2; exit 2; }
work=$(mktemp -d)
up=19390 port=19391
mkdir -p "$work/tmp"
cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/error.log warn;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp; keepalive_requests 100000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$up; location / { default_type text/plain; return 200 "hello, world\n"; } } }
CONF
taskset -c 1 nginx -p "$work" -e "$work/error.log" -c "$work/nginx.conf" & upstream=$!
trap 'kill $upstream 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5
ticks=$(getconf CLK_TCK)
cpu() { awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$1/stat"; }
for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    taskset -c 0 "$bin" --listen 127.0.0.1:$port --upstream 127.0.0.1:$up --upstream-protocol h1 --concurrency 1 > "$work/proxy.log" 2>&1 & pid=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    taskset -c 1 h2load --h1 -c 64 -m 1 -t1 -D 2 "http://127.0.0.1:$port/" > /dev/null 2>&1
    read -r u0 s0 < <(cpu $pid)
    done=$(taskset -c 1 h2load --h1 -c 64 -m 1 -t1 -D 8 ${rate:+--rps $rate} "http://127.0.0.1:$port/" 2>&1 | awk '/^requests:/ {print $8}')
    read -r u1 s1 < <(cpu $pid)
    kill $pid; wait $pid 2>/dev/null || true
    awk -v r="$round" -v b="$bin" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v d="${done:-0}" -v t="$ticks" 'BEGIN {
      if (d == 0) { printf "%s %s: no request succeeded\n", r, b; exit }
      printf "%s %s requests=%d user=%.2f sys=%.2f total=%.2f us/request\n", r, b, d, u*1e6/t/d, s*1e6/t/d, (u+s)*1e6/t/d }'
    port=$((port + 1))
  done
done
