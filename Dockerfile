# syntax=docker/dockerfile:1
#
# Two images from one multi-stage build (see docs/operator.md, "Images"):
#
#   docker build --target operator    -t ghcr.io/diloco-dev/diloco-operator:0.1.0 .
#   docker build --target coordinator -t ghcr.io/diloco-dev/diloco-coordinator:0.1.0 .
#
# Build arguments: RUST_VERSION, PYTHON_VERSION and TORCH_VERSION (tch 0.26 needs PyTorch
# 2.13.0 exactly). The coordinator links the CUDA build of libtorch from PyPI; on a GPU node the
# NVIDIA container toolkit supplies the driver, elsewhere it runs on CPU. Both run as the
# unprivileged user 65532 with nothing writable but their mounted volumes.
#
# BINARIES picks where the binaries and libtorch come from. `build` (the default) compiles them
# in the `build` stage above. `prebuilt` takes them from the build context instead: `out/`
# with the binaries and `site-packages/` with `torch/lib` (and `nvidia/`), as laid out by
# `scripts/images build`, which builds on the host and runs the same runtime stages with
# buildah (docs/local-node.md). Only the stages a target needs are built.

ARG RUST_VERSION=1.89
ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.13.0
ARG BINARIES=build

# libtorch, from the same PyPI wheel the project builds and tests against.
FROM python:${PYTHON_VERSION}-slim-bookworm AS torch
ARG TORCH_VERSION
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"

# Both binaries, release profile, with the lockfile as committed.
FROM rust:${RUST_VERSION}-bookworm AS build
ARG PYTHON_VERSION
COPY --from=torch /opt/venv /opt/venv
# Overrides .cargo/config.toml; the coordinator gets an rpath to this directory, so the
# runtime image keeps libtorch at the same path.
ENV LIBTORCH=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p diloco-operator -p diloco-coordinator --bins \
    && install -D target/release/diloco-operator /out/diloco-operator \
    && install -D target/release/diloco-coordinator /out/diloco-coordinator

# Binaries built outside the image build (BINARIES=prebuilt), from the build context.
FROM scratch AS prebuilt
ARG PYTHON_VERSION
COPY out/ /out/
COPY site-packages/ /opt/venv/lib/python${PYTHON_VERSION}/site-packages/

FROM ${BINARIES} AS binaries

# The operator: one binary without libtorch on a minimal glibc base, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=binaries /out/diloco-operator /usr/local/bin/diloco-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/diloco-operator"]
CMD ["run"]

# The coordinator: the binary plus libtorch and the CUDA libraries the wheel depends on.
FROM debian:bookworm-slim AS coordinator
ARG PYTHON_VERSION
COPY --from=binaries /opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch/lib /opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch/lib
COPY --from=binaries /opt/venv/lib/python${PYTHON_VERSION}/site-packages/nvidia /opt/venv/lib/python${PYTHON_VERSION}/site-packages/nvidia
COPY --from=binaries /out/diloco-coordinator /usr/local/bin/diloco-coordinator
# A binary built elsewhere carries an rpath to that machine's libtorch; this finds the copy here.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch/lib
USER 65532:65532
EXPOSE 8512 8513 9090
ENTRYPOINT ["/usr/local/bin/diloco-coordinator"]
