// Package components is the one place where proxyd's components are wired
// into the daemon, in start order: `proxyd run` and `proxyd demo` both use
// this list, so the demo runs exactly what an operator runs.
//
// The libraries (nvml, switcher, stratum/proxy) know nothing of the daemon
// or of the config file: each file here converts its section of the config
// into a library's Options, adapts the daemon's liveness board and turns a
// reload into the keys that need a restart. gpu.go also composes the GPU
// routes with the switcher's view of each GPU; kubernetes.go builds the
// Kubernetes node agent ([switcher.kubernetes]) and registers its lending
// runtime as a workload kind.
package components

import (
	"github.com/hashgate/proxyd/internal/daemon"
)

// Factories returns a fresh list of factories. A factory returns (nil, nil)
// when the config leaves its component disabled. The GPU and switcher
// components reach each other through this closure only, so each call
// wires one daemon.
func Factories() []daemon.Factory {
	var (
		gpu *gpuComponent
		sw  *switcherComponent
	)
	return []daemon.Factory{
		func(env daemon.Env) (daemon.Component, error) {
			c, err := newGPU(env, func() *switcherComponent { return sw })
			if err != nil || c == nil {
				return nil, err
			}
			gpu = c
			return c, nil
		},
		Proxy,
		func(env daemon.Env) (daemon.Component, error) {
			c, err := newSwitcher(env, func() *gpuComponent { return gpu })
			if err != nil || c == nil {
				return nil, err
			}
			sw = c
			return c, nil
		},
	}
}
