#!/usr/bin/env bash
# A/B of two proxy binaries on one gRPC hop, pairs back to back (the box drifts by tens of percent within
# minutes, so only pairs run close together compare): the proxy alone on CPU 0, h2load (16 connections x
# 16 streams) and ../shared/bench's Kestrel echo on CPU 1; CPU-us per request of the proxy from /proc.
# usage: perf/ab/run.sh BINARY_A BINARY_B [PAIRS] [SECONDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$(cd "$ROOT/../shared/bench" && pwd)
A=$1 B=$2 PAIRS=${3:-3} SECONDS_=${4:-10}
LISTEN=18080 UPSTREAM=19100
WORK=$(mktemp -d)
printf '\x00\x00\x00\x00\x09\x0a\x07layotto' > "$WORK/body"
setsid taskset -c 1 "$BENCH/upstream/grpc-upstream.sh" kestrel $UPSTREAM > "$WORK/upstream.log" 2>&1 &
UP=$!
trap 'kill -- -$UP 2>/dev/null || kill $UP 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 1
load() { taskset -c 1 h2load -t1 -D "$1" -c 16 -m 16 -d "$WORK/body" -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$LISTEN/echo.Echo/Echo"; }
one() { # one BINARY: prints CPU-us per request
  setsid taskset -c 0 "$1" --listen 127.0.0.1:$LISTEN --upstream 127.0.0.1:$UPSTREAM --upstream-protocol grpc --concurrency 1 > "$WORK/proxy.log" 2>&1 &
  local pid=$!
  sleep 1
  load 3 > /dev/null
  local t0; t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
  load "$SECONDS_" > "$WORK/h2load.txt"
  local t1; t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  kill $pid; wait $pid 2>/dev/null || true
  local done; done=$(awk '/^requests:/ { print $8 }' "$WORK/h2load.txt")
  awk -v c=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$done" 'BEGIN { printf "%.2f", c / hz * 1e6 / n }'
}
# The second run of a pair measures slower by a few percent whichever binary it is (seen 2026-12-03:
# +5 % either way round): odd pairs run A first, even pairs B first, so the order cancels out.
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then a=$(one "$A"); b=$(one "$B"); else b=$(one "$B"); a=$(one "$A"); fi
  echo "pair $i: A $a  B $b  (B/A $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }'))"
done
