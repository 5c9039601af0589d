# syntax=docker/dockerfile:1
#
# ami-usage-exporter container image.
#
#   docker build --build-arg AMI_USAGE_REVISION="$(git rev-parse --short=12 HEAD)" -t ami-usage-exporter .
#   docker run --rm -p 10264:10264 \
#     -v "$PWD/config/example.yml:/etc/ami-usage-exporter/config.yml:ro" ami-usage-exporter
#
# The configuration is read from /etc/ami-usage-exporter/config.yml: mount yours there (the image
# ships none, so a missing mount fails at start-up instead of polling a placeholder AMI). Further
# flags (--log.level=debug, --log.format=json, ...) can be appended as arguments.

############################################################################################
# Build stage
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# 1. Dependencies only, cached until Cargo.toml, Cargo.lock or build.rs change. Cargo needs a
#    file for every target the manifests name (the exporter and demo binaries, the library, the
#    render benchmark, the simulator crate), so empty stubs stand in for the sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY ec2-sim/Cargo.toml ec2-sim/Cargo.toml
RUN mkdir -p src/bin ec2-sim/src benches \
    && printf 'fn main() {}\n' > src/main.rs \
    && printf 'fn main() {}\n' > src/bin/demo.rs \
    && printf 'fn main() {}\n' > benches/render.rs \
    && printf 'fn main() {}\n' > ec2-sim/src/main.rs \
    && : > src/lib.rs \
    && : > ec2-sim/src/lib.rs \
    && cargo build --release --locked --bin ami-usage-exporter

# 2. The real sources. COPY keeps the files' modification times, which can be older than the
#    stub build, so the crate roots are touched: cargo then rebuilds the two workspace crates,
#    and only them.
COPY src src
COPY ec2-sim/src ec2-sim/src
# The git revision for `ami_usage_build_info` and `--version` (.git is not in the build context).
# Declared here, after the dependency layer, so a new revision does not invalidate that layer.
ARG AMI_USAGE_REVISION=""
RUN touch src/main.rs src/lib.rs src/bin/demo.rs ec2-sim/src/main.rs ec2-sim/src/lib.rs \
    && cargo build --release --locked --bin ami-usage-exporter \
    && ./target/release/ami-usage-exporter --version

############################################################################################
# Runtime stage: glibc, libgcc, CA certificates and nothing else; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG AMI_USAGE_REVISION=""
LABEL org.opencontainers.image.title="ami-usage-exporter" \
      org.opencontainers.image.description="Prometheus exporter for EC2 AMI usage reports: which AWS accounts use your shared AMIs, and how much" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${AMI_USAGE_REVISION}"

COPY --from=builder /src/target/release/ami-usage-exporter /usr/local/bin/ami-usage-exporter

# 65532 is distroless's "nonroot" user; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 10264
ENTRYPOINT ["/usr/local/bin/ami-usage-exporter", "--config.file=/etc/ami-usage-exporter/config.yml"]
