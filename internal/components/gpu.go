package components

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
	"github.com/hashgate/proxyd/switcher/kubeagent"
)

// GPU builds the GPU component alone, its routes without the switcher's
// view (tests and tools that run no switcher); it returns (nil, nil) when
// [gpu] backend is "off".
func GPU(env daemon.Env) (daemon.Component, error) {
	c, err := newGPU(env, nil)
	if c == nil || err != nil {
		return nil, err
	}
	return c, nil
}

// gpuComponent is the GPU component as the daemon sees it: nvml's
// Component, the [gpu] table it was built from (Reload compares against
// it) and the switcher whose view the GPU routes show.
type gpuComponent struct {
	*nvml.Component
	cfg config.GPU
	// sw returns the switcher component; nil when there is none (a GPU
	// component built alone, or [switcher] enabled = false). Set before
	// the daemon starts, read by requests.
	sw func() *switcherComponent
}

// newGPU converts [gpu] into nvml's options; nil (and no error) when the
// backend is "off".
func newGPU(env daemon.Env, sw func() *switcherComponent) (*gpuComponent, error) {
	cfg := env.Config.GPU
	c, err := nvml.NewComponent(nvml.ComponentOptions{
		Backend:         cfg.Backend,
		PollInterval:    cfg.PollInterval.D(),
		AppXIDs:         slices.Clone(cfg.AppXIDs),
		SlowdownSustain: cfg.SlowdownSustain.D(),
		Log:             env.Log,
		Metrics:         env.Metrics,
		Heartbeat:       heartbeat(env.Liveness),
	})
	if c == nil || err != nil {
		return nil, err
	}
	if sw == nil {
		sw = func() *switcherComponent { return nil }
	}
	return &gpuComponent{Component: c, cfg: cfg, sw: sw}, nil
}

// heartbeat adapts the daemon's liveness board to the libraries' Heartbeat
// func: a loop registers, beats, and unregisters when it ends on purpose.
func heartbeat(l *daemon.Liveness) func(loop string, maxAge time.Duration) (beat func(), done func()) {
	if l == nil {
		return nil
	}
	return func(name string, maxAge time.Duration) (func(), func()) {
		b := l.Register(name, maxAge)
		return b.Beat, func() { l.Unregister(b) }
	}
}

// RegisterAPI serves the GPU routes (see nvml.Component.RegisterAPI). With
// a switcher, every GPU also shows its switch state under "switch" (with
// [switcher.kubernetes], its device, rule and claims under
// "switch.kubernetes") and a resume returns the GPU to the switcher's
// service too.
func (g *gpuComponent) RegisterAPI(mux *http.ServeMux) {
	g.Component.RegisterAPIWith(mux, nvml.APIExtension{
		Annotate: func(uuid string) any {
			sw := g.running()
			if sw == nil {
				return nil
			}
			st, err := sw.GPUStatus(uuid)
			if err != nil {
				return nil
			}
			if sc := g.sw(); sc != nil && sc.kube != nil {
				// The GPU's device, proxyd's rule on it and the claims it serves.
				return struct {
					switcher.GPUStatus
					Kubernetes kubeagent.GPUInfo `json:"kubernetes"`
				}{st, sc.kube.GPU(uuid)}
			}
			return st
		},
		AfterResume: func(_ context.Context, uuid string) error {
			sw := g.running()
			if sw == nil {
				return nil
			}
			_, err := sw.Resume(uuid)
			return err
		},
	})
}

// Reload takes a new config: every [gpu] key needs a restart.
func (g *gpuComponent) Reload(cfg *config.Config) ([]string, error) {
	old, now := g.cfg, cfg.GPU
	var restart []string
	if old.Backend != now.Backend {
		restart = append(restart, "gpu.backend")
	}
	if old.PollInterval != now.PollInterval {
		restart = append(restart, "gpu.poll_interval")
	}
	if !slices.Equal(old.AppXIDs, now.AppXIDs) {
		restart = append(restart, "gpu.app_xids")
	}
	if old.SlowdownSustain != now.SlowdownSustain {
		restart = append(restart, "gpu.slowdown_sustain")
	}
	return restart, nil
}

// running returns the switcher while it runs; nil before it is built and
// when there is none.
func (g *gpuComponent) running() *switcher.Switcher {
	if sc := g.sw(); sc != nil {
		return sc.Switcher()
	}
	return nil
}
