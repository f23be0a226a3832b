# syntax=docker/dockerfile:1
# Tollgate: build with the Rust toolchain, run from a small distroless image (glibc, CA
# certificates, no shell), as a non-root user.
#   docker build -t tollgate .
#   docker run -p 8080:8080 -v $PWD/tollgate.toml:/etc/tollgate/tollgate.toml:ro tollgate
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY prices ./prices
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tollgate \
    && cp target/release/tollgate /usr/local/bin/tollgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/tollgate /usr/local/bin/tollgate
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.toml"]
