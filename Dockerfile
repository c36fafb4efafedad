# The operator's image: one static binary on a distroless base, running as non-root.
# Build:  docker build -t <registry>/compshare-operator:0.1.0 .
# (No Docker engine runs on the project's CI machines; the same static build is checked there with
#  `cargo build --release --target x86_64-unknown-linux-musl`.)

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin compshare-operator \
 && cp target/release/compshare-operator /compshare-operator

# distroless/static has CA certificates (for https://api.compshare.cn) and a nonroot user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /compshare-operator /compshare-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/compshare-operator"]
CMD ["run"]
