# syntax=docker/dockerfile:1
# Multi-stage build: a Rust toolchain image compiles driftscope (librdkafka is built
# from source by rdkafka-sys); the runtime image is distroless (glibc, OpenSSL, CA
# certificates, no shell, no package manager) and holds only the stripped binary and
# the one shared library it needs that distroless lacks (zlib).
#
#   docker build -t driftscope .                                     the runtime image
#   docker build --target debug-symbols --output type=local,dest=artifacts/ .
#                                       artifacts/driftscope.debug, for symbolizing crashes
#
# Release builds keep debug info (`[profile.release] debug = 1`, which the benchmarks
# use for profiling); it is split off here instead: the runtime binary carries a
# `.gnu_debuglink` and the GNU build id, so `gdb`/`addr2line`/`eu-stack` pick up
# driftscope.debug for a core dump or a backtrace's addresses.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin driftscope
RUN mkdir -p /out/lib /out/state \
    && objcopy --only-keep-debug target/release/driftscope /out/driftscope.debug \
    && objcopy --strip-all --add-gnu-debuglink=/out/driftscope.debug target/release/driftscope /out/driftscope \
    && cp -L "/usr/lib/$(gcc -print-multiarch)/libz.so.1" /out/lib/

# The debug info alone, as a build output (see the top of this file).
FROM scratch AS debug-symbols
COPY --from=build /out/driftscope.debug /driftscope.debug

# The runtime image. Runs as the distroless `nonroot` user (uid/gid 65532); the only
# directory it writes is state.dir (/var/lib/driftscope, a volume), so the root
# filesystem can be mounted read-only. Kubernetes probes /healthz and /readyz over HTTP;
# a Docker or Compose health check runs the binary itself, there being no shell or
# curl: `driftscope probe --url http://127.0.0.1:9464/readyz` (docker-compose.yml).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/lib/libz.so.1 /usr/lib/libz.so.1
COPY --from=build /out/driftscope /usr/local/bin/driftscope
COPY --from=build --chown=65532:65532 /out/state /var/lib/driftscope
USER 65532:65532
WORKDIR /var/lib/driftscope
VOLUME ["/var/lib/driftscope"]
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/driftscope"]
CMD ["run", "--config", "/etc/driftscope/driftscope.toml"]
