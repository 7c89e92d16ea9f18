package components

import (
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
)

// switcherComponent is the switcher component as the daemon sees it.
type switcherComponent struct {
	*switcher.Component
}

// newSwitcher builds the switcher component; nil (and no error) when
// [switcher] enabled is false. gpu returns the GPU component built before
// it (nil when the GPU backend is off); it is called at start.
func newSwitcher(env daemon.Env, gpu func() *gpuComponent) (*switcherComponent, error) {
	if !env.Config.Switcher.Enabled {
		return nil, nil
	}
	c, err := switcher.NewComponent(switcher.ComponentOptions{
		Config: env.Config,
		GPU: func() *nvml.Component {
			if g := gpu(); g != nil {
				return g.Component
			}
			return nil
		},
		Log:       env.Log,
		Metrics:   env.Metrics,
		Events:    env.Events,
		Heartbeat: heartbeat(env.Liveness),
	})
	if err != nil {
		return nil, err
	}
	return &switcherComponent{Component: c}, nil
}
