//go:build tools

// Package tools pins the validators hack/tools/build-validators builds (one `go build`).
package tools

import (
	_ "github.com/helm/chart-testing/v3/ct"
	_ "github.com/prometheus/prometheus/cmd/promtool"
	_ "sigs.k8s.io/krew/cmd/krew"
	_ "sigs.k8s.io/krew/cmd/validate-krew-manifest"
)
