# The operator's image: one static binary, CA roots and a nonroot user on an empty base.
# Build:  docker build -t <registry>/compshare-operator:0.1.0 .
# Without Docker (as CI does): `bash hack/image.sh` builds the same image (the same static musl
# binary, files, user, entrypoint and command) as an OCI image layout tarball; its user,
# entrypoint, command and port are read from this file's final stage, and
# crates/operator/tests/image.rs checks that image, and this file, against the chart.

FROM rust:1.95-bookworm AS build
# musl-gcc: ring and mimalloc compile C for the musl target. ca-certificates: Debian's CA roots,
# the bundle hack/image.sh copies too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
      -p compshare-operator --bin compshare-operator \
 && cp target/x86_64-unknown-linux-musl/release/compshare-operator /compshare-operator \
 && install -d -m 1777 /empty-tmp

FROM scratch
# Found by rustls-native-certs at this path (no SSL_CERT_FILE), for https://api.compshare.cn.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY hack/rootfs/etc/passwd hack/rootfs/etc/group /etc/
COPY --from=build /empty-tmp /tmp
COPY --from=build /compshare-operator /compshare-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/compshare-operator"]
CMD ["run"]
