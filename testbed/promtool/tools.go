//go:build tools

// Package promtool pins the promtool binary built by ../build.sh, which the alert tests run to
// check and unit-test the chart's Prometheus rules.
package promtool

import _ "github.com/prometheus/prometheus/cmd/promtool"
