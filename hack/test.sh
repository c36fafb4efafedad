#!/usr/bin/env bash
# Runs every test: unit tests, the simulator against the official Python SDK, the container image
# (built by hack/image.sh), and the operator against a real control plane (etcd, kube-apiserver,
# kube-controller-manager built from Go modules on first use and cached), then the quick start,
# checked against the README's table.
# Extra arguments go to `cargo test` (and skip the quick start).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Control plane binaries (built from Go modules the first time, then cached)" >&2
bash testbed/build.sh >/dev/null
echo "==> The container image (hack/image.sh), for crates/operator/tests/image.rs" >&2
COMPSHARE_IMAGE=$(bash hack/image.sh)
export COMPSHARE_IMAGE
echo "==> UCloud's Python SDK for the compatibility test" >&2
COMPSHARE_SDK_PYTHON=$(bash hack/sdk-venv.sh)
export COMPSHARE_SDK_PYTHON

echo "==> cargo test" >&2
cargo test --workspace --locked "$@"

# The README's quick start, as a user runs it (not when only some tests were asked for).
if [ $# -eq 0 ]; then
  echo "==> The quick start (hack/quickstart.sh) prints the README's table" >&2
  bash hack/quickstart.sh 2>/dev/null | python3 hack/check-quickstart.py
fi
