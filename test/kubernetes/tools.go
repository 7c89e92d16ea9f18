//go:build tools

// Package kubernetes pins the kube-apiserver the acceptance tests run; the
// tools build tag keeps it out of every ordinary build.
package kubernetes

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
