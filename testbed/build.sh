#!/usr/bin/env bash
# Builds the programs the tests run, from Go modules (no release downloads or container registries
# are reachable here), and caches them:
#   control-plane   etcd, kube-apiserver, kube-controller-manager, kubectl   (testbed/go)
#   node            kubelet, kube-proxy, kube-scheduler                       (testbed/go)
#   helm            helm                                                     (testbed/helm)
#   gitops          gitops-verdicts: kstatus, Argo CD and Flux's own code    (testbed/gitops)
#   promtool        promtool, to check and unit-test the chart's alerts      (testbed/promtool)
#
# Usage: testbed/build.sh            prints the directory that holds all the binaries
#
# Each set is cached under $COMPSHARE_TESTBED_CACHE (default ~/.cache/compshare-operator/testbed),
# keyed by a hash of its module's files and of its recipe, so a fresh clone on the same machine
# reuses it and changing one set rebuilds only that one. The printed directory (also linked from
# .testbed/bin in the repository, which git ignores) holds links to every set's binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache_root=${COMPSHARE_TESTBED_CACHE:-$HOME/.cache/compshare-operator/testbed}
links=()

# build SET MODULE RECIPE: runs RECIPE (shell, with $out the directory to build into) in
# testbed/MODULE unless that set is cached, and remembers its binaries.
build() {
  local set=$1 module=$2 recipe=$3
  local key
  key=$({ cat "$here/$module"/go.mod "$here/$module"/go.sum "$here/$module"/*.go; printf '%s' "$recipe"; } \
    | sha256sum | cut -c1-16)
  local dir="$cache_root/$set-$key"
  if [ ! -e "$dir/.complete" ]; then
    echo "testbed: building $set into $dir (first time only)" >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$here/$module" && CGO_ENABLED=0 GOFLAGS=-mod=mod out="$dir.tmp" bash -euo pipefail -c "$recipe") >&2
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  local binary
  for binary in "$dir"/*; do links+=("$binary"); done
}

# Stamps the release into the binaries: a bare `go build` reports v0.0.0-master, which confuses
# version checks in clients (kubectl's skew warning, kube-rs discovery) and the node's version.
stamp_k8s='
  k8s=$(go list -m -f "{{.Version}}" k8s.io/kubernetes)
  minor=$(echo "$k8s" | cut -d. -f2)
  stamp=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
'
# 5-15 min on 2 cores.
build control-plane go "$stamp_k8s"'
  go build -trimpath -ldflags="-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  go build -trimpath -ldflags="-s -w$stamp" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
'

# The real node's programs (crates/operator/tests/real_node.rs), from the same module: a few
# minutes more once the control plane has warmed Go's build cache.
build node go "$stamp_k8s"'
  go build -trimpath -ldflags="-s -w$stamp" -o "$out/" \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kube-scheduler
'

# helm's default Kubernetes version for `helm template` is stamped the same way (the control
# plane's minor version is part of the recipe, so a new one rebuilds helm).
minor=$(sed -n 's|^\tk8s.io/kubernetes v1\.\([0-9]*\)\..*|\1|p' "$here/go/go.mod")
[ -n "$minor" ] || { echo "testbed: no k8s.io/kubernetes version in testbed/go/go.mod" >&2; exit 1; }
build helm helm '
  helm=$(go list -m -f "{{.Version}}" helm.sh/helm/v3)
  minor='"$minor"'
  go build -trimpath -o "$out/helm" -ldflags="-s -w \
    -X helm.sh/helm/v3/internal/version.version=$helm \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    helm.sh/helm/v3/cmd/helm
'

# About 6 min on 2 cores the first time (Argo CD's module is large).
build gitops gitops '
  go build -trimpath -ldflags="-s -w" -o "$out/gitops-verdicts" .
'

# remove_all_sd leaves out the service-discovery plugins (cloud SDKs) promtool never needs for
# rules; it still links Kubernetes discovery, which it imports directly. About 7 CPU-minutes the
# first time (so 3-4 min on 2 idle cores; 26 min when measured beside three other builds).
build promtool promtool '
  go build -trimpath -tags remove_all_sd -ldflags="-s -w" -o "$out/promtool" \
    github.com/prometheus/prometheus/cmd/promtool
'

# One directory of links to every set, named by what it links to.
farm="$cache_root/bin-$(printf '%s\n' "${links[@]}" | sha256sum | cut -c1-16)"
if [ ! -d "$farm" ]; then
  rm -rf "$farm.tmp.$$" && mkdir -p "$farm.tmp.$$"
  for binary in "${links[@]}"; do ln -s "$binary" "$farm.tmp.$$/"; done
  mv -T "$farm.tmp.$$" "$farm" 2>/dev/null || rm -rf "$farm.tmp.$$"
fi
mkdir -p "$root/.testbed"
ln -sfn "$farm" "$root/.testbed/bin"
echo "$farm"
