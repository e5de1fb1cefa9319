# syntax=docker/dockerfile:1
# Troupe's container images, as infra/k8s and infra/aws run them: `troupe` on PATH and,
# under /app, spin.toml, the function components (functions/dist) and the embedding
# model (models/all-MiniLM-L6-v2). The default command is the embedded pipeline.
#
#   docker build -t troupe .                          # CPU: up | serve | worker | init
#   docker build -t troupe:cuda --target cuda \       # the GPU worker (make image-cuda)
#     --build-arg FEATURES=cuda --build-arg CUDA_COMPUTE_CAP=90 .
#
# The CUDA build uses the toolkit `make cuda-check` uses, from PyPI through
# scripts/cuda-env.sh, on the same Debian base; the image carries the CUDA libraries the
# binary was linked against and needs only the driver (>= 580) from the host, through the
# NVIDIA container toolkit. CUDA_COMPUTE_CAP is the GPU generation the kernels are built
# for (80 A100, 86 A10G, 89 L4/L40S, 90 H100/H200): the build machine needs no GPU.

ARG BUILD_IMAGE=debian:bookworm
ARG RUN_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG FEATURES=""
ARG CUDA_COMPUTE_CAP=""
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/root/.cargo/bin:$PATH \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    CARGO_TARGET_DIR=/cache/target \
    FUNCTIONS_TARGET_DIR=/cache/functions-target \
    TROUPE_CUDA_TOOLS=/cache/cuda-tools
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
WORKDIR /src
# The toolchain rust-toolchain.toml names (with wasm32-wasip2), in its own layer.
COPY rust-toolchain.toml .
RUN rustup toolchain install
COPY . .
# The components, the model (verified by its sha256), then the binary; with `cuda` in
# FEATURES, cargo runs under scripts/cuda-env.sh and the CUDA libraries it linked are
# kept for the cuda stage. Build caches (the CUDA toolkit's too) stay out of the image,
# one per base image and feature set (objects compiled against one glibc must not be
# linked on another).
ARG BUILD_IMAGE
RUN --mount=type=cache,id=troupe-build-${BUILD_IMAGE}-${FEATURES},target=/cache \
    --mount=type=cache,target=/root/.cargo/registry \
    ./scripts/build-functions.sh \
 && ./scripts/fetch-model.sh \
 && case ",$FEATURES," in *,cuda,*) cuda=./scripts/cuda-env.sh ;; *) cuda= ;; esac \
 && $cuda cargo build --release --locked -p troupe-cli ${FEATURES:+--features "$FEATURES"} \
 && install -D "$CARGO_TARGET_DIR/release/troupe" /out/bin/troupe \
 && mkdir -p /out/app/functions \
 && cp -r spin.toml models /out/app/ \
 && cp -r functions/dist /out/app/functions/ \
 && if [ -n "$cuda" ]; then \
      mkdir -p /out/cuda-lib && $cuda sh -c 'cp -L "$CUDA_ROOT"/lib64/*.so.* /out/cuda-lib/'; \
    fi

FROM ${RUN_IMAGE} AS runtime
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

# The GPU worker (`--target cuda`, built with FEATURES=cuda): the CUDA libraries from the
# build's toolkit; libcuda.so.1 is the driver's, which the NVIDIA container toolkit
# mounts in for the capabilities named here.
FROM runtime AS cuda
COPY --from=build /out/cuda-lib /usr/local/lib/troupe-cuda
ENV LD_LIBRARY_PATH=/usr/local/lib/troupe-cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0"

# The default target: the CPU image.
FROM runtime AS cpu
