//go:build tools

// Package tools pins the versions of the command-line tools the test suite builds.
package tools

import (
	_ "github.com/yannh/kubeconform/cmd/kubeconform"
	_ "helm.sh/helm/v3/cmd/helm"
)
