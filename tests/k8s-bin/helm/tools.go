//go:build tools

// Package tools pins the helm command that the deployment tests build and run.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
