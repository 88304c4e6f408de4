#!/usr/bin/env bash
# The files of the container image, laid out under OUTDIR exactly as the Dockerfile copies them: the
# Native AOT binary at /usr/local/bin/envoy, where Istio's pilot-agent starts the proxy (it runs
# `/usr/local/bin/envoy -c <bootstrap> ...` with Envoy's flags), and under its own name beside it.
# The Dockerfile's build stage runs this script; the tests run it too, so the image holds what they tested.
#   build/image-layout.sh OUTDIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: build/image-layout.sh OUTDIR}
PUBLISH=$(mktemp -d)
trap 'rm -rf "$PUBLISH"' EXIT
dotnet publish "$ROOT/src/Proxy.Host" -c Release -r linux-x64 -p:PublishAot=true -o "$PUBLISH" --nologo -v quiet > /dev/null
mkdir -p "$OUT/usr/local/bin"
install -m 0755 "$PUBLISH/layotto-fast" "$OUT/usr/local/bin/envoy"
ln -sf envoy "$OUT/usr/local/bin/layotto-fast"
echo "image layout in $OUT: $(du -h "$OUT/usr/local/bin/envoy" | cut -f1) /usr/local/bin/envoy"
