#!/usr/bin/env bash
# Runs every test: unit tests, the simulator against the official Python SDK, and the operator
# against a real control plane (etcd, kube-apiserver, kube-controller-manager built from Go
# modules on first use and cached). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Control plane binaries (built from Go modules the first time, then cached)" >&2
bash testbed/build.sh >/dev/null
echo "==> UCloud's Python SDK for the compatibility test" >&2
COMPSHARE_SDK_PYTHON=$(bash hack/sdk-venv.sh)
export COMPSHARE_SDK_PYTHON

echo "==> cargo test" >&2
cargo test --workspace --locked "$@"
