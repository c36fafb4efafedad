//go:build tools

// Package helm pins the helm binary built by ../build.sh.
package helm

import _ "helm.sh/helm/v3/cmd/helm"
