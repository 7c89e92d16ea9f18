// Package kubernetes holds proxyd's acceptance tests against a real
// kube-apiserver and a real etcd (in-process, go.etcd.io/etcd/server/v3
// embed), both on 127.0.0.1: proxyd runs as a Kubernetes node agent with
// the permissions of deploy/kubernetes/rbac.yaml and lends simulated GPUs
// to claims the tests create, playing the scheduler and the kubelet.
//
// It is a module of its own so that k8s.io/kubernetes, which only the
// kube-apiserver build needs, stays out of proxyd's module. Build the API
// server with `make kube-apiserver`; without it the tests skip, or fail
// when CI is set.
package kubernetes
