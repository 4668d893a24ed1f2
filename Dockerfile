# syntax=docker/dockerfile:1
# Multi-stage build: a Rust toolchain image compiles driftscope (librdkafka is built
# from source by rdkafka-sys), a slim Debian image runs it.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin driftscope

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/driftscope --create-home driftscope
COPY --from=build /src/target/release/driftscope /usr/local/bin/driftscope
USER driftscope
WORKDIR /var/lib/driftscope
EXPOSE 9464
ENTRYPOINT ["driftscope"]
CMD ["run", "--config", "/etc/driftscope/driftscope.toml"]
