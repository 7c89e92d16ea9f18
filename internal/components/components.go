// Package components is the one place where proxyd's components are wired
// into the daemon, in start order: `proxyd run` and `proxyd demo` both use
// this list, so the demo runs exactly what an operator runs.
package components

import (
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
)

// Factories returns a fresh list of factories. A factory returns (nil, nil)
// when the config leaves its component disabled. The GPU component the first
// factory builds reaches the switcher through this closure only, so each
// call wires one daemon.
func Factories() []daemon.Factory {
	var gpu *nvml.Component
	return []daemon.Factory{
		func(env daemon.Env) (daemon.Component, error) {
			c, err := nvml.Factory(env)
			if err != nil || c == nil {
				return nil, err
			}
			gpu, _ = c.(*nvml.Component)
			return c, nil
		},
		Proxy,
		switcher.Factory(func() *nvml.Component { return gpu }),
	}
}
