#!/usr/bin/env bash
# The load driver against h2load, same target, same run: rps, p50 and the driver's own CPU per request.
# The target: our proxy (out/layotto-fast) on CPU 0 in front of ../shared/bench's grpc-go echo upstream;
# each load generator and the upstream on CPU 1, one after the other, --repeat times.
# usage: perf/Proxy.Load/vs-h2load.sh [--repeat N] [--duration S]   (gRPC unary, 16 connections x 16 streams)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd); BENCH=$(cd "$ROOT/../shared/bench" && pwd)
. "$BENCH/env.sh"
REPEAT=3 DURATION=10 LISTEN=18081 UPSTREAM=19101
while [ $# -gt 0 ]; do case "$1" in --repeat) REPEAT=$2; shift 2 ;; --duration) DURATION=$2; shift 2 ;; *) echo "unknown option $1" >&2; exit 2 ;; esac; done
[ -x "$BENCH_BUILD/grpc-echo-go" ] || "$BENCH/build.sh" --no-aot
dotnet build "$HERE" -c Release --nologo -v q >/dev/null
DRIVER=("dotnet" "$HERE/bin/Release/net10.0/proxy-load.dll")
OUT=$(mktemp -d); HZ=$(getconf CLK_TCK)
printf '\x00\x00\x00\x00\x07xxxxxxx' > "$OUT/body.bin"; printf 'xxxxxxx' > "$OUT/payload.bin"
setsid taskset -c 1 "$BENCH/upstream/grpc-upstream.sh" go "$UPSTREAM" > "$OUT/upstream.log" 2>&1 < /dev/null &
UPID=$!
setsid taskset -c 0 "$ROOT/out/layotto-fast" --listen 127.0.0.1:$LISTEN --upstream 127.0.0.1:$UPSTREAM --upstream-protocol grpc --concurrency 1 > "$OUT/proxy.log" 2>&1 < /dev/null &
PPID_=$!
trap 'kill -TERM -- -$UPID -$PPID_ 2>/dev/null || true' EXIT
sleep 2
URL=http://127.0.0.1:$LISTEN/echo.Echo/Echo
cpu_of() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"; }
echo "tool,rep,rps,p50_ms,mean_ms,cpu_s,cpu_us_per_req   (h2load p50: from a run with --log-file, whose rps is in the last column; its mean: from the run without)"
H2=(-t1 -c 16 -m 16 -D "$DURATION" --warm-up-time=1 -d "$OUT/body.bin" -H 'content-type: application/grpc' -H 'te: trailers')
for rep in $(seq "$REPEAT"); do
  # h2load twice: once with its per-request log (latency in µs, third column) for p50, once without for rps and CPU
  taskset -c 1 h2load "${H2[@]}" --log-file="$OUT/h2load.log" "$URL" > "$OUT/h2load-log.txt" 2>&1 || true
  rps_log=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$OUT/h2load-log.txt")
  p50=$(sort -n -k3 "$OUT/h2load.log" | awk '{ v[NR]=$3 } END { printf "%.3f", v[int(NR/2)+1]/1000 }'); rm -f "$OUT/h2load.log"
  t=$( { /usr/bin/time -f '%U %S' taskset -c 1 h2load "${H2[@]}" "$URL" > "$OUT/h2load.txt"; } 2>&1 | tail -1)
  done_=$(awk '/^requests:/ { print $8 }' "$OUT/h2load.txt"); rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$OUT/h2load.txt")
  # h2load's CPU covers its warm-up second too, at about the measured rate
  mean=$(awk '/^time for request:/ { v=$6; if (v ~ /ms$/) { sub("ms", "", v); print v } else if (v ~ /us$/) { sub("us", "", v); print v/1000 } else { sub("s", "", v); print v*1000 } }' "$OUT/h2load.txt")
  echo "h2load,$rep,$rps,$p50,$mean,$(echo "$t" | awk '{print $1+$2}'),$(echo "$t $done_ $rps" | awk '{ printf "%.2f", 1e6*($1+$2)/($3+$4) }'),$rps_log"
  t=$( { /usr/bin/time -f '%U %S' taskset -c 1 "${DRIVER[@]}" --url "$URL" --grpc --body-file "$OUT/payload.bin" --connections 16 --streams 16 \
      --duration "${DURATION}s" --warmup 1s --quiet --report "$OUT/driver" > "$OUT/driver.txt"; } 2>&1 | tail -1)
  python3 - "$OUT/driver/report.json" "$t" "$rep" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); u, s = map(float, sys.argv[2].split())
# the driver's CPU covers its warm-up second too: count the requests of that second at the measured rate
total = r["requests"] + r["rps"] * 1.0
print(f"proxy-load,{sys.argv[3]},{r['rps']:.2f},{r['latency_ms']['p50']:.3f},{r['latency_ms']['mean']:.3f},{u+s:.2f},{1e6*(u+s)/total:.2f}")
PY
done
