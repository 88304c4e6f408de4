#!/usr/bin/env bash
# Layotto's Istio demo on one machine, on loopback, no Kubernetes: an app calls its sidecar's runtime API
# (InvokeService) and Istio's VirtualService, applied as YAML, decides which version of `server` answers.
#
#   examples/istio/demo.sh [--keep]
#
# Starts the embedded control plane (layotto-fast mesh), server v1 on 127.0.0.2:9090 and v2 on
# 127.0.0.3:9090, the client's sidecar (the proxy, runtime API on 127.0.0.1:34904, outbound listener
# 127.0.0.1:9090) and the client (127.0.0.1:9080); then applies the DestinationRule, the all-v1
# VirtualService and the header VirtualService in turn, showing each step's command and answer. Exits 0
# when every answer is the expected one, non-zero with the reason otherwise. --keep leaves the mesh
# running (Ctrl-C stops it). Ports can be moved with DEMO_XDS_PORT, DEMO_RUNTIME_PORT, DEMO_CLIENT_PORT,
# DEMO_SERVICE_PORT (the tests do).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
KEEP=${1:-}
XDS=${DEMO_XDS_PORT:-15010} RUNTIME=${DEMO_RUNTIME_PORT:-34904} CLIENT=${DEMO_CLIENT_PORT:-9080} SERVICE=${DEMO_SERVICE_PORT:-9090}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }

step "building (dotnet build -c Release: the proxy, the demo client and server)"
for p in src/Proxy.Host examples/istio/server examples/istio/client; do
  dotnet build "$ROOT/$p" -c Release -v quiet -nologo > /dev/null || { echo "build of $p failed" >&2; exit 1; }
done
BIN="$ROOT/src/Proxy.Host/bin/Release/net10.0/layotto-fast.dll"
SERVER="$ROOT/examples/istio/server/bin/Release/net10.0/layotto-demo-server.dll"
CLIENTAPP="$ROOT/examples/istio/client/bin/Release/net10.0/layotto-demo-client.dll"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/layotto-demo.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/mesh"
cp "$HERE/mesh/"*.yaml "$WORK/mesh/"
sed -e "s/port_value: 15010/port_value: $XDS/" "$HERE/sidecar-bootstrap.yaml" > "$WORK/sidecar.yaml"
if [ "$SERVICE" != 9090 ]; then sed -i "s/number: 9090/number: $SERVICE/" "$WORK/mesh/server.yaml"; fi

wait_port() { # host port what
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.05; done
  fail "$3 did not start listening on $1:$2"
}

step "starting: control plane, server v1 and v2, the client's sidecar, the client"
dotnet "$BIN" mesh --config "$WORK/mesh" --xds-address "127.0.0.1:$XDS" > "$WORK/mesh.log" 2>&1 & PIDS+=($!)
dotnet "$SERVER" --version v1 --listen "127.0.0.2:$SERVICE" > "$WORK/server-v1.log" 2>&1 & PIDS+=($!)
dotnet "$SERVER" --version v2 --listen "127.0.0.3:$SERVICE" > "$WORK/server-v2.log" 2>&1 & PIDS+=($!)
wait_port 127.0.0.1 "$XDS" "the control plane"
dotnet "$BIN" -c "$WORK/sidecar.yaml" --runtime-api "127.0.0.1:$RUNTIME" --concurrency 1 > "$WORK/sidecar.log" 2>&1 & PIDS+=($!)
dotnet "$CLIENTAPP" --listen "127.0.0.1:$CLIENT" --runtime-api "http://127.0.0.1:$RUNTIME" --sidecar "127.0.0.1:$SERVICE" > "$WORK/client.log" 2>&1 & PIDS+=($!)
wait_port 127.0.0.2 "$SERVICE" "server v1"
wait_port 127.0.0.3 "$SERVICE" "server v2"
wait_port 127.0.0.1 "$RUNTIME" "the sidecar's runtime API"
wait_port 127.0.0.1 "$SERVICE" "the sidecar's outbound listener"
wait_port 127.0.0.1 "$CLIENT" "the client"

call() { curl -sS --max-time 5 "$@" "http://127.0.0.1:$CLIENT/grpc" || true; }
# Applies a file (copies it into the control plane's directory), then waits for the answers to follow.
apply() { cp "$1" "$WORK/mesh/"; echo "\$ cp ${1#"$ROOT"/} <mesh config>/      # on a cluster: kubectl apply -f"; }
expect() { # expected-version curl-args...
  local want=$1; shift
  local got=""
  local streak=0
  # Five answers in a row from the expected version: the change has reached the sidecar.
  for _ in $(seq 1 100); do
    got=$(call "$@")
    if [[ "$got" == *"hello, i am layotto $want"* ]]; then streak=$((streak + 1)); [ $streak -ge 5 ] && break; else streak=0; sleep 0.1; fi
  done
  local shown=""; [ $# -gt 0 ] && shown="$1 '$2' "
  printf '$ curl %slocalhost:%s/grpc\n%s\n' "$shown" "$CLIENT" "$got"
  [[ "$got" == *"hello, i am layotto $want"* ]] || fail "expected server $want to answer, got: $got"
}

step "no VirtualService yet: requests are balanced over v1 and v2"
seen=""
for _ in $(seq 1 40); do seen+=$(call); done
[[ "$seen" == *"layotto v1"* && "$seen" == *"layotto v2"* ]] || fail "expected both v1 and v2 without a VirtualService"
echo "40 calls: $(grep -o 'layotto v1' <<< "$seen" | wc -l) answered by v1, $(grep -o 'layotto v2' <<< "$seen" | wc -l) by v2"

step "DestinationRule (subsets v1, v2) and a VirtualService sending everything to v1"
apply "$HERE/routing/destination-rule.yaml"
apply "$HERE/routing/virtual-service-all-v1.yaml"
expect v1
expect v1 -H 'name: layotto'

step "the header VirtualService: name: layotto -> v1, everything else -> v2"
rm -f "$WORK/mesh/virtual-service-all-v1.yaml"
apply "$HERE/routing/virtual-service-header.yaml"
expect v2
expect v1 -H 'name: layotto'
expect v2 -H 'name: someone-else'

step "plain HTTP through the sidecar (GET /http): the same routing"
got=$(curl -sS --max-time 5 "http://127.0.0.1:$CLIENT/http" || true)
printf '$ curl localhost:%s/http\n%s\n' "$CLIENT" "$got"
[[ "$got" == *"hello, i am layotto v2"* ]] || fail "expected v2 on /http, got: $got"

step "done: every answer was the expected one"
if [ "$KEEP" = "--keep" ]; then
  echo "the mesh keeps running (Ctrl-C stops it): curl localhost:$CLIENT/grpc; YAML in $WORK/mesh"
  trap 'cleanup; exit 0' INT TERM
  wait
fi
