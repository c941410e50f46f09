# Multi-stage build: compile in the Rust image, run in a slim Debian with a non-root user.
# Not built on the development machines (no Docker engine runs there); see README.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY migrations migrations
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin gatehouse

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/gatehouse --create-home gatehouse
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY config/gatehouse.toml /etc/gatehouse/gatehouse.toml
USER gatehouse
WORKDIR /var/lib/gatehouse
# data/ holds the SQLite database and the generated key when no environment overrides them.
VOLUME ["/var/lib/gatehouse/data", "/etc/gatehouse"]
ENV GATEHOUSE__PROXY__LISTEN=0.0.0.0:8080 \
    GATEHOUSE__ADMIN__LISTEN=0.0.0.0:8081 \
    GATEHOUSE__METRICS__LISTEN=0.0.0.0:9091
EXPOSE 8080 8081 9091
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve", "--config", "/etc/gatehouse/gatehouse.toml"]
