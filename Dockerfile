# The cz-proxy image: the proxy binary alone, running as a non-root user on a minimal base.
# Build:   docker build -t registry.example.com/czctl/cz-proxy:0.1.0 .
# Air-gapped clusters: push that image to your private registry and run
#   czctl service intercept ... --proxy-image registry.example.com/czctl/cz-proxy:0.1.0 \
#                               [--image-pull-secret my-registry-secret]
# (or set CZ_PROXY_IMAGE once). Nothing is fetched at run time.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cz-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cz-proxy /cz-proxy
USER 65532:65532
ENTRYPOINT ["/cz-proxy"]
