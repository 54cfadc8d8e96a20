# syntax=docker/dockerfile:1
#
# Four images from one multi-stage build (see docs/operator.md, "Images"):
#
#   docker build --target operator    -t ghcr.io/diloco-dev/diloco-operator:0.1.0 .
#   docker build --target console     -t ghcr.io/diloco-dev/diloco-console:0.1.0 .
#   docker build --target coordinator -t ghcr.io/diloco-dev/diloco-coordinator:0.1.0 .
#   docker build --target worker      -t ghcr.io/diloco-dev/diloco-example-worker:0.1.0 .
#
# The worker image runs the example worker (client/): a small model trained through the
# coordinator, for trying a server out from inside a cluster. It shares the coordinator's
# libtorch stage, so a node that has one image stores those layers once.
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

# The binaries, release profile, with the lockfile as committed.
FROM rust:${RUST_VERSION}-bookworm AS build
ARG PYTHON_VERSION
COPY --from=torch /opt/venv /opt/venv
# Overrides .cargo/config.toml; the coordinator gets an rpath to this directory, so the
# runtime image keeps libtorch at the same path.
ENV LIBTORCH=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p diloco-operator -p diloco-coordinator \
        -p diloco-client -p diloco-console --bins \
    && install -D target/release/diloco-operator /out/diloco-operator \
    && install -D target/release/diloco-console /out/diloco-console \
    && install -D target/release/diloco-coordinator /out/diloco-coordinator \
    && install -D target/release/diloco-example-worker /out/diloco-example-worker

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

# The console (web UI and proxy; its assets are in the binary): the operator's base, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot AS console
COPY --from=binaries /out/diloco-console /usr/local/bin/diloco-console
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/diloco-console"]

# libtorch and the CUDA libraries the wheel depends on, shared by the coordinator and the worker.
FROM debian:bookworm-slim AS torch-runtime
ARG PYTHON_VERSION
# The user the images run as, named like distroless's: without a passwd entry a container
# started as uid 65532 with no runAsGroup would get the root group (gid 0).
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'nonroot:x:65532:' >>/etc/group
COPY --from=binaries /opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch/lib /opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch/lib
COPY --from=binaries /opt/venv/lib/python${PYTHON_VERSION}/site-packages/nvidia /opt/venv/lib/python${PYTHON_VERSION}/site-packages/nvidia
# A binary built elsewhere carries an rpath to that machine's libtorch; this finds the copy here.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/torch/lib

# The coordinator: the binary on the libtorch stage.
FROM torch-runtime AS coordinator
COPY --from=binaries /out/diloco-coordinator /usr/local/bin/diloco-coordinator
USER 65532:65532
EXPOSE 8512 8513 9090
ENTRYPOINT ["/usr/local/bin/diloco-coordinator"]

# The example worker (reads a mounted worker bundle: --credentials-dir).
FROM torch-runtime AS worker
COPY --from=binaries /out/diloco-example-worker /usr/local/bin/diloco-example-worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/diloco-example-worker"]
