# A small static, non-root image: a musl build of the operator on an empty base, with CA certificates for
# HTTPS proxies. No shell at run time. hack/static-build.sh builds the same binary the same way without Docker.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY crds ./crds
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin litellm-operator \
 && cp target/x86_64-unknown-linux-musl/release/litellm-operator /litellm-operator

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /litellm-operator /litellm-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/litellm-operator"]
CMD ["run"]
