//go:build tools

// Package apiserver pins k8s.io/kubernetes/cmd/kube-apiserver in this module's
// dependency graph; hack/testenv.sh builds it with `go build`.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
