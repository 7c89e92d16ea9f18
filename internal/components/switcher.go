package components

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"time"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
	"github.com/hashgate/proxyd/switcher/workload"
)

// switcherComponent is the switcher component as the daemon sees it: the
// library's Component and the [switcher] table it was built from, which
// Reload compares against to name the keys that need a restart.
type switcherComponent struct {
	*switcher.Component
	cfg config.Switcher
	// kube is the Kubernetes node agent ([switcher.kubernetes]); nil when
	// it is off.
	kube *kubeAgent
}

// newSwitcher builds the switcher component; nil (and no error) when
// [switcher] enabled is false. gpu returns the GPU component built before
// it (nil when the GPU backend is off); it is called at start.
func newSwitcher(env daemon.Env, gpu func() *gpuComponent) (*switcherComponent, error) {
	cfg := env.Config
	if !cfg.Switcher.Enabled {
		return nil, nil
	}
	nvmlComponent := func() *nvml.Component {
		if g := gpu(); g != nil {
			return g.Component
		}
		return nil
	}
	kube, err := newKubeAgent(cfg.Switcher, env.Log, env.Events, env.Metrics, nvmlComponent)
	if err != nil {
		return nil, err
	}
	drivers, err := workloadDrivers(cfg.Switcher, kube)
	if err != nil {
		return nil, err
	}
	opts := switcher.ComponentOptions{
		Config:     switcherConfig(cfg.Switcher),
		Contracts:  contracts(cfg.Contracts),
		GPUBackend: cfg.GPU.Backend,
		GPU:        nvmlComponent,
		Drivers:    drivers,
		Log:        env.Log,
		Metrics:    env.Metrics,
		Events:     env.Events,
		Heartbeat:  heartbeat(env.Liveness),
	}
	if kube != nil {
		opts.Cluster = kube
	}
	c, err := switcher.NewComponent(opts)
	if err != nil {
		return nil, err
	}
	return &switcherComponent{Component: c, cfg: cfg.Switcher, kube: kube}, nil
}

// Start starts the Kubernetes agent, if any, then the switcher; a change
// in the cluster's demand wakes the switcher once it runs.
func (c *switcherComponent) Start(ctx context.Context) error {
	if c.kube != nil {
		c.kube.start(func() {
			if sw := c.Switcher(); sw != nil {
				sw.Wake()
			}
		})
	}
	return c.Component.Start(ctx)
}

// Ready: a running switcher whose agent cannot reach the API server is
// not ready (it neither lends nor takes back).
func (c *switcherComponent) Ready() error {
	if c.kube != nil && c.Switcher() != nil {
		if err := c.kube.Ready(); err != nil {
			return err
		}
	}
	return c.Component.Ready()
}

// Stop stops the switcher, then the agent (the switcher's last ops may
// still lend or take back a GPU).
func (c *switcherComponent) Stop(ctx context.Context) error {
	err := c.Component.Stop(ctx)
	if c.kube != nil {
		c.kube.halt()
	}
	return err
}

// Reload applies what of [switcher] and [[contract]] can change live; the
// keys returned need a restart (their old values stay in force).
func (c *switcherComponent) Reload(cfg *config.Config) ([]string, error) {
	if !cfg.Switcher.Enabled {
		return []string{"switcher.enabled"}, nil
	}
	old, now := c.cfg, cfg.Switcher
	var restart []string
	if old.StateDir != now.StateDir {
		restart = append(restart, "switcher.state_dir")
	}
	if !reflect.DeepEqual(old.Workloads(), now.Workloads()) {
		restart = append(restart, "switcher.workload")
	}
	om, _ := old.MiningWorkload()
	nm, _ := now.MiningWorkload()
	if (old.Mining == nil) != (now.Mining == nil) || !reflect.DeepEqual(om, nm) {
		restart = append(restart, "switcher.mining")
	}
	if old.Docker != now.Docker {
		restart = append(restart, "switcher.docker")
	}
	if old.DemandURL != now.DemandURL || old.DemandTokenFile != now.DemandTokenFile || old.DemandPollInterval != now.DemandPollInterval {
		restart = append(restart, "switcher.demand_url")
	}
	if old.ReconcileInterval != now.ReconcileInterval {
		restart = append(restart, "switcher.reconcile_interval")
	}
	if !reflect.DeepEqual(old.Kubernetes, now.Kubernetes) {
		restart = append(restart, "switcher.kubernetes") // the agent is built at start
	}
	ok, err := c.Component.Reload(switcherConfig(now), contracts(cfg.Contracts))
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return []string{"switcher"}, nil
	}
	return restart, nil
}

// switcherConfig converts [switcher] into the switcher's Config.
func switcherConfig(s config.Switcher) switcher.Config {
	t := s.Timeouts
	out := switcher.Config{
		StateDir:              s.StateDir,
		MinPriceUSDPerGPUHour: s.MinPriceUSDPerGPUHour,
		MaxParallel:           s.MaxParallel,
		DemandURL:             s.DemandURL,
		DemandTokenFile:       s.DemandTokenFile,
		DemandPollInterval:    s.DemandPollInterval.D(),
		ContractRetention:     s.ContractRetention.D(),
		MaxContracts:          s.MaxContracts,
		ReconcileInterval:     s.ReconcileInterval.D(),
		StatusInterval:        s.StatusInterval.D(),
		FreePolls:             s.FreePolls,
		FreeMemorySlackMiB:    s.FreeMemorySlackMiB,
		RetryBackoff:          s.RetryBackoff.D(),
		Timeouts: switcher.Timeouts{
			StopMiner:     t.StopMiner.D(),
			VerifyFree:    t.VerifyFree.D(),
			StartAI:       t.StartAI.D(),
			DrainAI:       t.DrainAI.D(),
			RestoreMining: t.RestoreMining.D(),
		},
	}
	if m, ok := s.MiningWorkload(); ok {
		d := definition(m)
		out.Mining = &d
	}
	// Workloads() also holds the lending workload of [switcher.kubernetes].
	if ws := s.Workloads(); s.Workload != nil || len(ws) > 0 {
		out.Workload = map[string]workload.Definition{}
		for name, w := range ws {
			out.Workload[name] = definition(w)
		}
	}
	return out
}

// definition converts one workload table; its runtime's driver converts
// the runtime's own keys into the Params the runtime reads.
func definition(w config.Workload) workload.Definition {
	d := workload.Definition{
		Runtime:         w.Runtime,
		PowerLimitW:     w.PowerLimitW,
		StopTimeout:     w.StopTimeout.D(),
		Readiness:       w.Readiness,
		ReadinessPath:   w.ReadinessPath,
		ReadinessStatus: w.ReadinessStatus,
		Warmup:          w.Warmup,
		WarmupModel:     w.WarmupModel,
		WarmupTimeout:   w.WarmupTimeout.D(),
		Port:            w.Port,
		PortPerGPU:      w.PortPerGPU,
		ProofOfStart:    w.ProofOfStart,
	}
	if k, ok := shippedKinds()[w.Runtime]; ok {
		d.Params = k.params(w)
	}
	return d
}

// contracts converts the [[contract]] tables.
func contracts(cs []config.Contract) []switcher.Contract {
	out := make([]switcher.Contract, len(cs))
	for i, c := range cs {
		out[i] = switcher.Contract{ID: c.ID, GPUs: c.GPUs, Start: c.Start, End: c.End, PriceUSDPerGPUHour: c.PriceUSDPerGPUHour,
			Priority: c.Priority, Workload: c.Workload, Pin: slices.Clone(c.Pin), LeadTime: switcher.Duration(c.LeadTime)}
	}
	return out
}

// kind is one runtime kind proxyd ships: how its driver is made from
// [switcher] and how a workload's own keys become the runtime's Params.
type kind struct {
	driver func(s config.Switcher) workload.Driver
	params func(w config.Workload) any
}

// shippedKinds are the runtime kinds proxyd ships. A new kind is a package
// with its runtime, an entry here and its sub-table in internal/config.
func shippedKinds() map[string]kind {
	return map[string]kind{
		workload.KindDocker: {
			driver: func(s config.Switcher) workload.Driver {
				docker := s.Docker
				return workload.Driver{
					New: func(env workload.Env) (workload.Runtime, error) {
						return workload.NewDocker(workload.DockerOptions{Host: docker.Host, DeviceMode: docker.DeviceMode,
							APITimeout: docker.APITimeout.D(), Log: env.Log, Now: env.Now})
					},
					// A docker call may take its API timeout twice (a stop
					// and the inspect after it).
					CallBound: 2 * docker.APITimeout.D(),
				}
			},
			params: func(w config.Workload) any {
				d := deref(w.Docker)
				return workload.DockerParams{Image: d.Image, Cmd: slices.Clone(d.Cmd), Env: slices.Clone(d.Env),
					Binds: slices.Clone(d.Binds), Network: d.Network}
			},
		},
		workload.KindExec: {
			driver: func(config.Switcher) workload.Driver {
				return workload.Driver{New: func(env workload.Env) (workload.Runtime, error) { return workload.NewExec(env.Log, nil), nil }}
			},
			params: func(w config.Workload) any {
				e := deref(w.Exec)
				return workload.ExecParams{StartCommand: slices.Clone(e.StartCommand), StopCommand: slices.Clone(e.StopCommand),
					StatusCommand: slices.Clone(e.StatusCommand), KillCommand: slices.Clone(e.KillCommand), CommandTimeout: e.CommandTimeout.D()}
			},
		},
		workload.KindSimulated: {
			driver: func(config.Switcher) workload.Driver {
				return workload.Driver{
					New: func(env workload.Env) (workload.Runtime, error) {
						if env.Sim == nil {
							return nil, errSimNeedsSimGPUs
						}
						return workload.NewSim(workload.SimOptions{Server: env.Sim, Now: env.Now}), nil
					},
					SimulatedOnly: true,
				}
			},
			params: func(w config.Workload) any {
				sim := deref(w.Simulated)
				return workload.SimParams{MemoryMiB: sim.MemoryMiB, Load: sim.Load, StartDelay: sim.StartDelay.D(),
					ReadyDelay: sim.ReadyDelay.D(), StopDelay: sim.StopDelay.D(), NeverReady: sim.NeverReady}
			},
		},
	}
}

// workloadDrivers registers every kind's driver in a registry of its own;
// with a Kubernetes agent also its lending kind, and the miner's runtime
// guarded by it.
func workloadDrivers(s config.Switcher, kube *kubeAgent) (*workload.Registry, error) {
	drivers := map[string]workload.Driver{}
	for name, k := range shippedKinds() {
		drivers[name] = k.driver(s)
	}
	if kube != nil {
		kube.register(drivers, s)
	}
	r := workload.NewRegistry()
	for name, d := range drivers {
		if err := r.Register(name, d); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// deref returns *p, or the zero value for nil (a runtime sub-table the
// file left out).
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

var errSimNeedsSimGPUs = errors.New("the simulated runtime needs the simulated GPU backend")

// DemoSwitcher returns a [switcher] section for `proxyd demo` and for
// tests: enabled, state in stateDir, mining and one AI workload
// (switcher.DemoWorkload) on the simulated runtime, with delays and
// timeouts of seconds so that a contract moves GPUs to AI and back while a
// person watches. It needs [gpu] backend = "simulated" (poll_interval of
// 100 to 250ms suits it). The AI workload runs under a 300 W power limit,
// mining under the GPU's own limit.
func DemoSwitcher(stateDir string) config.Switcher {
	d := func(v time.Duration) config.Duration { return config.Duration(v) }
	cfg := config.Default().Switcher
	cfg.Enabled = true
	cfg.StateDir = stateDir
	cfg.MaxParallel = 2
	cfg.FreePolls = 2
	cfg.ReconcileInterval = d(100 * time.Millisecond)
	cfg.StatusInterval = d(500 * time.Millisecond)
	cfg.RetryBackoff = d(30 * time.Second)
	cfg.Timeouts = config.SwitcherTimeouts{
		StopMiner:     d(10 * time.Second),
		VerifyFree:    d(10 * time.Second),
		StartAI:       d(30 * time.Second),
		DrainAI:       d(10 * time.Second),
		RestoreMining: d(10 * time.Second),
	}
	cfg.Mining = &config.Workload{
		Runtime:     config.RuntimeSimulated,
		StopTimeout: d(5 * time.Second),
		Readiness:   config.ReadinessRunning,
		Simulated: &config.SimulatedWorkload{
			MemoryMiB:  2048,
			Load:       0.85,
			StartDelay: d(200 * time.Millisecond),
			ReadyDelay: d(300 * time.Millisecond),
			StopDelay:  d(200 * time.Millisecond),
		},
	}
	cfg.Workload = &config.WorkloadTable{
		switcher.DemoWorkload: {
			Runtime:     config.RuntimeSimulated,
			PowerLimitW: 300,
			StopTimeout: d(5 * time.Second),
			Readiness:   config.ReadinessRunning,
			Simulated: &config.SimulatedWorkload{
				MemoryMiB:  30000,
				Load:       0.95,
				StartDelay: d(300 * time.Millisecond),
				ReadyDelay: d(1500 * time.Millisecond),
				StopDelay:  d(300 * time.Millisecond),
			},
		},
	}
	return cfg
}
