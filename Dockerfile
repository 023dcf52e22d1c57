# syntax=docker/dockerfile:1
# Multi-stage build: a fully static orgops binary (musl) on distroless/static, non-root.
#   docker build -t ghcr.io/orgops/orgops:0.1.0 .
# The Rust target and flags live in hack/release-build, which this file runs; the test
# suite (hack/test.d/05-static.sh) builds the binary through the same script.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN hack/release-build /out

# distroless/static: no shell, no libc, CA certificates and a nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/orgops /usr/local/bin/orgops
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/orgops"]
CMD ["run"]
