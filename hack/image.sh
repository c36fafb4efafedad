#!/usr/bin/env bash
# Builds the operator's container image without Docker: a static musl binary, assembled by
# hack/image.py into an OCI image layout tarball that `ctr -n k8s.io images import`,
# `skopeo copy oci-archive:` and `crane push` (after `tar -x`) accept. The Dockerfile describes the
# same image for people with Docker; crates/operator/tests/image.rs checks this one.
#
# Usage: hack/image.sh [OUT]      OUT defaults to target/image/compshare-operator.tar
#                                 (prints OUT's absolute path; the image's digest goes to stderr)
#
# Reproducible: the same commit, built with the same toolchain (rust-toolchain, musl-gcc, Python's
# zlib), gives the same image digest. Source paths are remapped so the checkout's location and
# the user's home do not end up in the binary; the layer's entries are sorted, owned by numeric
# ids, stamped with SOURCE_DATE_EPOCH (default: the commit's time), and gzipped without a time.
#
# Build time, measured with a cold target directory on 2 cores under `nice -n 19` while other jobs
# kept the load near 17: the musl release build with the workspace's [profile.release] (fat LTO,
# one codegen unit) took 61m32s wall but only 18m07s of CPU (17m01s user, 1m06s sys), the fat-LTO
# compile of the compshare-operator binary alone 6-7 minutes; assembling the image takes 4.5s. The image ships
# the optimised binary (a cheaper [profile.image] would ship a different program), so there is no
# second profile; on an unloaded 2-core machine expect roughly 10-15 minutes cold, which CI's
# 60-minute budget must absorb (measure it there). The CA roots come from the build machine's
# ca-certificates package, so their version is part of "the same toolchain".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=x86_64-unknown-linux-musl
# Absolute, so that tests running in another directory can open it.
out=$(realpath -m "${1:-target/image/compshare-operator.tar}")

# What the build needs that a fresh machine may lack, said before a long build fails on it.
missing=()
rustup target list --installed 2>/dev/null | grep -qx "$target" \
  || missing+=("the Rust target: rustup target add $target")
# ring and mimalloc compile C for the target; glibc's headers do not fit musl.
command -v musl-gcc >/dev/null || missing+=("musl-gcc: apt-get install musl-tools")
[ -r /etc/ssl/certs/ca-certificates.crt ] \
  || missing+=("CA roots (/etc/ssl/certs/ca-certificates.crt): apt-get install ca-certificates")
command -v python3 >/dev/null || missing+=("python3")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'hack/image.sh: missing %s\n' "${missing[@]}" >&2
  exit 1
fi

echo "==> cargo build --release --target $target" >&2
cargo_home=${CARGO_HOME:-$HOME/.cargo}
RUSTFLAGS="--remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/cargo" \
  cargo build --release --locked --target "$target" -p compshare-operator --bin compshare-operator

echo "==> OCI image layout $out" >&2
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$(dirname "$out")"
python3 hack/image.py \
  --binary "target/$target/release/compshare-operator" \
  --ca-roots /etc/ssl/certs/ca-certificates.crt \
  --out "$out"
echo "$out"
