#!/usr/bin/env bash
# Creates (once) a Python virtual environment with UCloud's official Python SDK under target/sdk-venv
# and prints the path of its interpreter, for the simulator's SDK compatibility test:
#
#   export COMPSHARE_SDK_PYTHON=$(bash hack/sdk-venv.sh)
#
# The SDK version is pinned so that the test compares against a known client. Progress goes to
# stderr; stdout carries only the interpreter path.
set -euo pipefail

SDK_REQUIREMENT="ucloud-sdk-python3==0.11.150"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/sdk-venv"
python="$venv/bin/python"

if ! "$python" -c 'import ucloud.client' >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    "$python" -m pip install --quiet --disable-pip-version-check "$SDK_REQUIREMENT" >&2
fi
echo "$python"
