#!/usr/bin/env bash
# Builds the control plane for the tests (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from the Go modules pinned in testbed/go/go.mod, and helm from testbed/helm/go.mod, and caches
# the binaries.
#
# Usage: testbed/build.sh            prints the directory that holds the binaries
#
# The binaries go to $COMPSHARE_TESTBED_CACHE (default ~/.cache/compshare-operator/testbed), keyed
# by a hash of go.mod and go.sum, so a fresh clone on the same machine reuses them; .testbed/bin in
# the repository (ignored by git) links to that directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
key=$(cat "$here"/go/go.{mod,sum} "$here"/helm/go.{mod,sum} "$here/build.sh" | sha256sum | cut -c1-16)
cache=${COMPSHARE_TESTBED_CACHE:-$HOME/.cache/compshare-operator/testbed}/$key
bins=(etcd kube-apiserver kube-controller-manager kubectl helm)

complete() { for b in "${bins[@]}"; do [ -x "$cache/$b" ] || return 1; done; }

if ! complete; then
  echo "testbed: building ${bins[*]} into $cache (first time only; 5-15 min on 2 cores)" >&2
  mkdir -p "$cache.tmp"
  (
    cd "$here/go"
    export CGO_ENABLED=0 GOFLAGS=-mod=mod
    # Stamp the release into the binaries: a bare `go build` reports v0.0.0-master, which
    # confuses version checks in clients (kubectl's skew warning, kube-rs discovery).
    k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
    minor=$(echo "$k8s" | cut -d. -f2)
    stamp=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      stamp+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    go build -trimpath -ldflags='-s -w' -o "$cache.tmp/etcd" go.etcd.io/etcd/server/v3
    go build -trimpath -ldflags="-s -w$stamp" -o "$cache.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl
    # helm's default Kubernetes version for `helm template` is stamped the same way.
    cd "$here/helm"
    helm=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
    go build -trimpath -o "$cache.tmp/helm" -ldflags="-s -w \
      -X helm.sh/helm/v3/internal/version.version=$helm \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
      helm.sh/helm/v3/cmd/helm
  ) >&2
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi

mkdir -p "$root/.testbed"
ln -sfn "$cache" "$root/.testbed/bin"
echo "$cache"
