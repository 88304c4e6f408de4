# Layotto.Fast as Istio's sidecar proxy image: Istio's proxyv2 image (pilot-agent, its bootstrap
# template, its user and layout) with our Native AOT binary where pilot-agent starts Envoy.
#   docker build -t layotto-fast/proxyv2:1.28.0 .
#   istioctl install --set values.global.proxy.image=layotto-fast/proxyv2:1.28.0     (see examples/istio/k8s)
# The build stage only runs build/image-layout.sh (the tests run the same script); the final stage
# only copies its files.
ARG ISTIO_VERSION=1.28.0

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN build/image-layout.sh /image

FROM docker.io/istio/proxyv2:${ISTIO_VERSION}
COPY --from=build /image/ /
# The runtime API (Layotto's spec.proto.runtime.v1.Runtime) for the pod's app, on the pod's loopback.
# A pod can change it with the annotation proxy.istio.io/config: '{"proxyMetadata": {"LAYOTTO_RUNTIME_API": "..."}}'.
ENV LAYOTTO_RUNTIME_API=127.0.0.1:34904
