# syntax=docker/dockerfile:1
# Troupe's container images, as infra/k8s and infra/aws run them: `troupe` on PATH and,
# under /app, spin.toml, the function components (functions/dist) and the embedding
# model (models/all-MiniLM-L6-v2). The default command is the embedded pipeline.
#
#   docker build -t troupe .                          # CPU: up | serve | worker | init
#   docker build -t troupe:cuda \                     # the GPU worker
#     --build-arg BUILD_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUN_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 \
#     --build-arg FEATURES=cuda --build-arg CUDA_COMPUTE_CAP=90 .
#
# CUDA_COMPUTE_CAP is the GPU generation the kernels are built for (80 A100, 89 L4/L40S,
# 90 H100/H200): the build machine needs no GPU, but nvcc needs to know.

ARG BUILD_IMAGE=debian:bookworm
ARG RUN_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG FEATURES=""
ARG CUDA_COMPUTE_CAP=""
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/root/.cargo/bin:$PATH \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    CARGO_TARGET_DIR=/cache/target \
    FUNCTIONS_TARGET_DIR=/cache/functions-target
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
WORKDIR /src
# The toolchain rust-toolchain.toml names (with wasm32-wasip2), in its own layer.
COPY rust-toolchain.toml .
RUN rustup toolchain install
COPY . .
# The components, the model (verified by its sha256), then the binary. Build caches
# stay out of the image, one per base image and feature set (objects compiled against
# one glibc must not be linked on another).
ARG BUILD_IMAGE
RUN --mount=type=cache,id=troupe-build-${BUILD_IMAGE}-${FEATURES},target=/cache \
    --mount=type=cache,target=/root/.cargo/registry \
    ./scripts/build-functions.sh \
 && ./scripts/fetch-model.sh \
 && cargo build --release --locked -p troupe-cli ${FEATURES:+--features "$FEATURES"} \
 && install -D "$CARGO_TARGET_DIR/release/troupe" /out/bin/troupe \
 && mkdir -p /out/app/functions \
 && cp -r spin.toml models /out/app/ \
 && cp -r functions/dist /out/app/functions/

FROM ${RUN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home troupe \
 && mkdir -p /data && chown troupe /data
COPY --from=build /out/bin/troupe /usr/local/bin/troupe
COPY --from=build /out/app /app
WORKDIR /app
USER troupe
ENV TROUPE_MODEL_DIR=/app/models/all-MiniLM-L6-v2
# The container listens on 0.0.0.0: the API needs a credential from the start
# (`troupe keys create --data-dir /data --tenant NAME`, or TROUPE_OIDC_ISSUER).
ENV TROUPE_AUTH=required
EXPOSE 8080 8081
ENTRYPOINT ["troupe"]
CMD ["up", "--listen", "0.0.0.0:8080", "--manifest", "/app/spin.toml", "--data-dir", "/data"]
