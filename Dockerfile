# The cz-proxy image: one static executable on an empty base, running as uid/gid 65532.
# No shell, no libc, no CA bundle: the proxy trusts only the session CA in its mounted Secret.
# Build:   docker build -t registry.example.com/czctl/cz-proxy:0.1.0 \
#            --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
# Mirror registries: --build-arg RUST_IMAGE=mirror.example.com/library/rust:1.95-bookworm
# Air-gapped clusters: push the image to your private registry and run
#   czctl service intercept ... --proxy-image registry.example.com/czctl/cz-proxy:0.1.0 \
#                               [--image-pull-secret my-registry-secret]
# (or set CZ_PROXY_IMAGE once). Nothing is fetched at run time.
# CI runs the same deploy/build-proxy.sh and tests that binary in an empty root filesystem
# (proxy/tests/image_contract.rs).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=scratch

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cp "$(deploy/build-proxy.sh)" /cz-proxy

FROM ${RUNTIME_IMAGE}
ARG SOURCE=https://github.com/czctl/czctl
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cz-proxy" \
      org.opencontainers.image.description="In-cluster proxy of a czctl intercept session" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /cz-proxy /cz-proxy
USER 65532:65532
ENTRYPOINT ["/cz-proxy"]
