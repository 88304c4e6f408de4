#!/usr/bin/env bash
# TLS side by side: gRPC over TLS (h2 by ALPN) through nghttpx, HAProxy and ours, each with TLS on its
# listener and h2c to ../shared/bench's grpc-go echo upstream; then new TLS handshakes per CPU-second.
# (Not its Kestrel upstream: Kestrel refuses a stream whose :scheme is https on a cleartext connection,
# and nghttpx and HAProxy pass the client's https on; we send the upstream hop's own scheme, as Envoy does.)
# The method is ../shared/bench's (whose harness speaks only cleartext to the proxy): the proxy alone on
# CPU 0, h2load and the upstream on CPU 1, CPU of the proxy's whole process tree from /proc, repeats
# round robin, medians.
#
# usage: perf/tls/run.sh [--duration S] [--repeat N] [--proxies nghttpx,haproxy,ours] [--ours BINARY]
#   grpc:       h2load over TLS 1.3, 16 connections x 16 streams, gRPC unary echo (closed loop)
#   handshake:  h2load opening 3000 connections at 300/s, one request each: full TLS 1.3 handshakes
# Certificates: one ECDSA P-256 server certificate (made here with openssl) for every proxy.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH=$(cd "$ROOT/../shared/bench" && pwd)
. "$BENCH/env.sh"
DURATION=10 REPEAT=2 PROXIES=nghttpx,haproxy,ours OURS=$ROOT/out/layotto-fast
PROXY_CPU=0 LOAD_CPU=1 LISTEN=18443 UPSTREAM=19100 CONNS=${CONNS:-3000} RATE=${RATE:-300}
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --proxies) PROXIES=$2; shift 2 ;;
    --ours) OURS=$2; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$BENCH_BUILD/grpc-echo-go" ] || "$BENCH/build.sh" --no-aot
OUT=$BENCH_WORK/tls-results/$(date +%Y%m%d-%H%M%S); mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$OUT/key.pem" -out "$OUT/cert.pem" \
  -days 7 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
cat "$OUT/cert.pem" "$OUT/key.pem" > "$OUT/haproxy.pem"
printf '\x00\x00\x00\x00\x09\x0a\x07layotto' > "$OUT/body.bin"

command_of() { # command_of <proxy> <dir>
  case "$1" in
    nghttpx) echo "nghttpx --conf=/dev/null --frontend=127.0.0.1,$LISTEN '--backend=127.0.0.1,$UPSTREAM;;proto=h2' \
      --workers=1 --single-thread --no-via --no-ocsp --frontend-http2-max-concurrent-streams=1024 \
      --frontend-keep-alive-timeout=300s --backend-keep-alive-timeout=300s --pid-file=$2/nghttpx.pid \
      --errorlog-file=$2/error.log $OUT/key.pem $OUT/cert.pem" ;;
    haproxy)
      cat > "$2/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
  tune.h2.max-concurrent-streams 1024
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$LISTEN ssl crt $OUT/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$UPSTREAM proto h2
CONF
      echo "haproxy -db -f $2/haproxy.cfg" ;;
    ours) echo "$OURS --listen 127.0.0.1:$LISTEN --upstream 127.0.0.1:$UPSTREAM --upstream-protocol grpc --concurrency 1 \
      --tls-cert $OUT/cert.pem --tls-key $OUT/key.pem" ;;
    *) echo "unknown proxy $1" >&2; exit 2 ;;
  esac
}
tree_ticks() { # utime+stime of a process and its descendants
  local t=0 p
  for p in $(ps -e -o pid=,ppid= | awk -v r="$1" '{ par[$1]=$2 } END { keep[r]=1; m=1; while (m) { m=0; for (p in par) if (!(p in keep) && (par[p] in keep)) { keep[p]=1; m=1 } } for (p in keep) print p }'); do
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0)))
  done
  echo "$t"
}
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_port() { local i; for i in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

setsid taskset -c "$LOAD_CPU" "$BENCH/upstream/grpc-upstream.sh" go "$UPSTREAM" > "$OUT/upstream.log" 2>&1 < /dev/null &
UPID=$!
trap 'kill -TERM -- -$UPID 2>/dev/null || true' EXIT
wait_port "$UPSTREAM"
taskset -c "$LOAD_CPU" h2load -t1 -D 2 -c 16 -m 16 -d "$OUT/body.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$UPSTREAM/echo.Echo/Echo" > /dev/null 2>&1 || true
echo "scenario,proxy,rep,rps,done,failed,cpu_s,cpu_us_per_req,handshakes_per_cpu_s,rss_mb" > "$OUT/results.csv"
IFS=, read -r -a targets <<< "$PROXIES"
for scen in ${SCENARIOS:-grpc handshake}; do
  for rep in $(seq "$REPEAT"); do
    for p in "${targets[@]}"; do
      dir=$OUT/$scen/$p.$rep; mkdir -p "$dir"
      cmd=$(command_of "$p" "$dir"); echo "$cmd" > "$dir/command"
      setsid taskset -c "$PROXY_CPU" bash -c "exec $cmd" > "$dir/proxy.log" 2>&1 < /dev/null &
      pid=$!
      if ! wait_port "$LISTEN"; then echo "  !! $p did not start" >&2; tail "$dir/proxy.log" >&2; kill -TERM -- -$pid 2>/dev/null; continue; fi
      url=https://127.0.0.1:$LISTEN/echo.Echo/Echo
      grpc=(-d "$OUT/body.bin" -H 'content-type: application/grpc' -H 'te: trailers')
      timeout 10 nghttp -v "${grpc[@]}" "$url" > "$dir/smoke.txt" 2>&1 || true
      grep -aq 'grpc-status: 0' "$dir/smoke.txt" || { echo "  !! $p: smoke check failed" >&2; kill -TERM -- -$pid; wait $pid 2>/dev/null || true; continue; }
      if [ "$scen" = grpc ]; then
        taskset -c "$LOAD_CPU" h2load -t1 -D 3 -c 16 -m 16 "${grpc[@]}" "$url" > "$dir/warmup.txt" 2>&1 || true
        t0=$(tree_ticks "$pid")
        taskset -c "$LOAD_CPU" h2load -t1 -D "$DURATION" -c 16 -m 16 "${grpc[@]}" "$url" > "$dir/h2load.txt" 2>&1 || true
      else
        taskset -c "$LOAD_CPU" h2load -t1 -c 300 -n 300 --rate 300 "${grpc[@]}" "$url" > "$dir/warmup.txt" 2>&1 || true
        t0=$(tree_ticks "$pid")
        taskset -c "$LOAD_CPU" h2load -t1 -c "$CONNS" -n "$CONNS" --rate "$RATE" "${grpc[@]}" "$url" > "$dir/h2load.txt" 2>&1 || true
      fi
      t1=$(tree_ticks "$pid"); hwm=$(hwm_kb "$pid")
      kill -TERM -- -$pid 2>/dev/null || true; for i in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; kill -KILL -- -$pid 2>/dev/null || true
      wait $pid 2>/dev/null || true
      rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$dir/h2load.txt")
      done_=$(awk '/^requests:/ { print $6 }' "$dir/h2load.txt")
      failed=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$dir/h2load.txt")
      echo "$scen,$p,$rep,$rps,$done_,$failed,$t0,$t1,$hwm" | awk -F, -v hz="$HZ" -v conns="$CONNS" '{
        cpu=($8-$7)/hz; per=(cpu > 0 && $5 > 0) ? 1e6*cpu/$5 : 0; hs=(cpu > 0) ? conns/cpu : 0
        printf "%s,%s,%s,%s,%s,%s,%.2f,%.2f,%.0f,%.1f\n", $1, $2, $3, $4, $5, $6, cpu, per, hs, $9/1024 }' >> "$OUT/results.csv"
      tail -1 "$OUT/results.csv" | awk -F, '{ printf "  %-9s %-8s rps=%-9s done=%s failed=%s cpu/req=%sus handshakes/cpu-s=%s rss=%sMB\n", $1, $2, $4, $5, $6, $8, $9, $10 }'
    done
  done
done
echo
echo "medians (scenario proxy: cpu-us/req | handshakes per cpu-second | rss MB)"
awk -F, 'NR > 1 { k=$1" "$2; n[k]++; c[k,n[k]]=$8; h[k,n[k]]=$9; r[k,n[k]]=$10 }
  function med(a, k, m,   i, j, t, v) { for (i=1;i<=m;i++) v[i]=a[k,i]; for (i=1;i<=m;i++) for (j=i+1;j<=m;j++) if (v[j]<v[i]) { t=v[i]; v[i]=v[j]; v[j]=t }
    return (m % 2) ? v[(m+1)/2] : (v[m/2]+v[m/2+1])/2 }
  END { for (k in n) printf "%-22s %8.2f | %8.0f | %6.1f\n", k, med(c,k,n[k]), med(h,k,n[k]), med(r,k,n[k]) }' "$OUT/results.csv" | sort | tee "$OUT/table.txt"
echo "results: $OUT"
