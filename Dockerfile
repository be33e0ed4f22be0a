# A small static, non-root image: a musl build of the operator on an empty base, with CA certificates for
# HTTPS proxies, running as UID 65532. No shell at run time. One final stage, fed one of two ways:
#
#   docker build .                              BINARY=source (default): builds the binary in a Rust stage, for
#                                               the machine's architecture (buildx --platform picks it)
#   docker build --build-arg BINARY=prebuilt .  copies dist/<TARGETARCH>/litellm-operator and
#                                               dist/ca-certificates.crt from the context, as made by
#                                               `hack/static-build.sh --dist dist`; hack/image.sh and the release
#                                               workflow build this way (no compiler in the image build, no
#                                               emulation for other architectures)
ARG BINARY=source

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY crds ./crds
RUN target="$(uname -m)-unknown-linux-musl" && rustup target add "$target" \
 && cargo build --release --locked --target "$target" --bin litellm-operator \
 && cp "target/$target/release/litellm-operator" /litellm-operator

FROM scratch AS binary-source
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /litellm-operator /litellm-operator

FROM scratch AS binary-prebuilt
ARG TARGETARCH
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/${TARGETARCH}/litellm-operator /litellm-operator

FROM binary-${BINARY} AS image
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/litellm-operator"]
CMD ["run"]
