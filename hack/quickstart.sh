#!/usr/bin/env bash
# Runs the whole thing locally on an embedded default: a Kubernetes control plane (etcd and
# kube-apiserver built from Go modules), the CompShare simulator with its sample instances, the
# CRD, sample resources, and the operator; then prints `kubectl get compshareinstances -o wide`.
#
# Usage: hack/quickstart.sh [--keep]
#   --keep   leave everything running (until Ctrl-C) to try kubectl yourself
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = "--keep" ] && keep=true

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "Building the control plane binaries (cached after the first time)"
bins=$(testbed/build.sh)
kubectl="$bins/kubectl"
say "Building compshare-operator"
cargo build --quiet --package compshare-operator --package compshare-simulator --package compshare-testbed --bins
operator=target/debug/compshare-operator
simulator=target/debug/compshare-simulator

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "Starting a local control plane"
target/debug/compshare-testbed up --dir "$work/cluster" >"$work/up.out" 2>"$work/up.err" &
pids+=($!)
for _ in $(seq 1 120); do grep -q KUBECONFIG "$work/up.out" 2>/dev/null && break; sleep 0.5; done
grep -q KUBECONFIG "$work/up.out" || { cat "$work/up.err" >&2; exit 1; }
eval "$(cat "$work/up.out")"

sim_port=$(free_port)
say "Starting the CompShare simulator on 127.0.0.1:$sim_port (built-in sample instances)"
"$simulator" --listen "127.0.0.1:$sim_port" >"$work/simulator.log" 2>&1 &
pids+=($!)

say "Installing the CRD, a credentials Secret and sample resources in namespace demo"
"$kubectl" apply --server-side -f crds/ >/dev/null
"$kubectl" wait --for condition=established --timeout=60s crd/compshareinstances.compshare.ucloud.cn >/dev/null
"$kubectl" create namespace demo >/dev/null
"$kubectl" -n demo create secret generic compshare-credentials \
  --from-literal=publicKey=compshare-demo-public-key \
  --from-literal=privateKey=compshare-demo-private-key >/dev/null
"$kubectl" -n demo apply -f examples/quickstart.yaml >/dev/null
say "And a machine for the operator to create (management allowed in namespace demo)"
"$kubectl" -n demo create secret generic trainer-password --from-literal=password=quickstart-pw-42 >/dev/null
"$kubectl" -n demo apply -f examples/managed-machine.yaml >/dev/null

metrics_port=$(free_port)
say "Starting the operator (metrics on http://127.0.0.1:$metrics_port/metrics)"
"$operator" run --endpoint "http://127.0.0.1:$sim_port" --allow-insecure-http \
  --metrics-address "127.0.0.1:$metrics_port" --management-namespaces demo >"$work/operator.log" 2>&1 &
pids+=($!)

"$kubectl" -n demo wait --for=condition=Synced --timeout=60s compshareinstance --all >/dev/null
"$kubectl" -n demo wait --for=condition=Running --timeout=60s compshareinstance/trainer >/dev/null
echo
"$kubectl" -n demo get compshareinstances -o wide

if $keep; then
  echo
  say "Everything keeps running until Ctrl-C. In another shell:"
  echo "  export KUBECONFIG=$KUBECONFIG"
  echo "  $kubectl -n demo get compshareinstances -o wide"
  echo "  curl -s -X PATCH http://127.0.0.1:$sim_port/_simulator/instances/uhost-1a2b3c4d -d '{\"State\": \"Stopped\"}'"
  echo "  $kubectl -n demo get events.events.k8s.io"
  echo "  $kubectl -n demo patch csinst trainer --type=merge -p '{\"spec\":{\"powerState\":\"Stopped\"}}'"
  echo "  $kubectl -n demo delete csinst trainer    # releases the machine: see curl http://127.0.0.1:$sim_port/_simulator/instances"
  echo "  Logs: $work/operator.log, $work/simulator.log"
  wait
fi
