# syntax=docker/dockerfile:1
# cerego: a multi-stage build.
#   runtime (default): a small distroless image running as a non-root user
#   dev:               the toolchain plus cargo-watch, for the compose development override
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /app
# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin cerego \
    && rm -rf src
COPY migrations migrations
COPY assets assets
COPY src src
# touch: the placeholder build left newer timestamps on the crate's own artifacts.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin cerego \
    && mkdir -p /var/lib/cerego

FROM rust:${RUST_VERSION}-slim-bookworm AS dev
RUN cargo install cargo-watch@8.5.3 --locked
WORKDIR /app
ENV HOST=0.0.0.0 PORT=8000 LOG_FORMAT=pretty
EXPOSE 8000
CMD ["cargo", "watch", "--why", "-w", "src", "-w", "migrations", "-w", "assets", "-w", "Cargo.toml", "-x", "run"]

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /app/target/release/cerego /usr/local/bin/cerego
# The embedded SQLite default writes ./data; give the non-root user a place for it.
COPY --from=build --chown=65532:65532 /var/lib/cerego /var/lib/cerego
WORKDIR /var/lib/cerego
USER 65532:65532
ENV HOST=0.0.0.0 PORT=8000 LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/cerego", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/cerego"]
CMD ["serve"]
