package main

import (
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/stratum/proxy"
)

// components is the one place where proxyd's components are wired into the
// daemon, in start order. A factory returns (nil, nil) when the config leaves
// its component disabled.
func components() []daemon.Factory {
	return []daemon.Factory{
		nvml.Factory,
		proxy.Factory,
	}
}
