# syntax=docker/dockerfile:1

# ---- build -------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# usersync's own queries are sqlx's compile-time checked macros: build from the committed .sqlx/
# data instead of a live database (as .cargo/config.toml does everywhere).
ENV SQLX_OFFLINE=true

COPY . .

# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir within the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/usersync /usr/local/bin/usersync

# ---- runtime (curl is there for the health check) -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# target/release/usersync from the builder.
COPY --from=builder /usr/local/bin/usersync /usr/local/bin/usersync

# nobody:nogroup
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=12 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["usersync"]
CMD ["serve"]
