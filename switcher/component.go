package switcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/kubeagent"
	"github.com/hashgate/proxyd/switcher/runtime"
)

// DefaultRetryInterval is how often the component retries building the
// switcher while the GPU backend is not up (or the state is unreadable).
const DefaultRetryInterval = 5 * time.Second

// Factory returns the switcher's daemon factory. gpu returns the GPU
// component built before it (nil when the GPU backend is off); it is
// called at start, after every factory ran. The factory returns (nil, nil)
// when [switcher] enabled is false.
func Factory(gpu func() *nvml.Component) daemon.Factory {
	return func(env daemon.Env) (daemon.Component, error) {
		if !env.Config.Switcher.Enabled {
			return nil, nil
		}
		c, err := NewComponent(ComponentOptions{
			Config:  env.Config,
			GPU:     gpu,
			Log:     env.Log,
			Metrics: env.Metrics,
			Events:  env.Events,
			Heartbeat: func(name string, maxAge time.Duration) (func(), func()) {
				b := env.Liveness.Register(name, maxAge)
				return b.Beat, func() { env.Liveness.Unregister(b) }
			},
		})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// ComponentOptions build a Component.
type ComponentOptions struct {
	Config *config.Config
	// GPU returns the GPU component (nil: GPU backend off).
	GPU     func() *nvml.Component
	Log     *zap.Logger
	Metrics prometheus.Registerer
	// Heartbeat registers the loop with the daemon's liveness board; nil: none.
	Heartbeat func(loop string, maxAge time.Duration) (beat func(), done func())
	Clock     Clock
	// Runtimes, if set, replaces the runtimes built from the config.
	Runtimes func(lib *nvml.Library) ([]runtime.Runtime, error)
	// RetryInterval: 0 means DefaultRetryInterval.
	RetryInterval time.Duration
	// FeedClient polls the demand feed (nil: a default client).
	FeedClient *http.Client
	// Events is the daemon's journal (nil: the switcher keeps its own).
	Events *events.Log
}

// Component runs the switcher in the daemon: it waits for the GPU backend,
// builds the runtimes and the switcher, reconciles and runs the loop, and
// serves the switcher's API. Without GPUs it stays up and not ready, with
// the reason.
type Component struct {
	opts    ComponentOptions
	log     *zap.Logger
	metrics *Metrics

	mu      sync.Mutex // guards the fields below
	sw      *Switcher
	why     error // why there is no switcher yet
	cancel  context.CancelFunc
	done    chan struct{}
	hooked  *nvml.Component
	closers []func() error
	// agent lends GPUs to a cluster ([switcher.kubernetes]); agentStop
	// ends its Run and waits for it.
	agent     *kubeagent.Agent
	agentStop func()
}

// NewComponent checks the config against what the switcher can run and
// registers its metrics. Nothing is started before Start.
func NewComponent(o ComponentOptions) (*Component, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.GPU == nil {
		o.GPU = func() *nvml.Component { return nil }
	}
	cfg := o.Config.Switcher
	if o.Runtimes == nil && slices.Contains(Kinds(cfg), runtime.KindSimulated) && o.Config.GPU.Backend != nvml.BackendSimulated {
		return nil, fmt.Errorf("switcher: a workload uses runtime \"simulated\", which runs on simulated GPUs only; "+
			"set [gpu] backend = \"simulated\" or give the workload a real runtime (docker, exec); [gpu] backend is %q", o.Config.GPU.Backend)
	}
	workloads := cfg.Workloads()
	for i, c := range o.Config.Contracts {
		if _, ok := workloads[c.Workload]; !ok {
			return nil, fmt.Errorf("switcher: contract[%d] %q names workload %q, but there is no [switcher.workload.%s]",
				i, c.ID, c.Workload, c.Workload)
		}
	}
	c := &Component{opts: o, log: o.Log.With(zap.String("component", "switcher")), why: errors.New("not started")}
	m, err := NewMetrics(o.Metrics, c.Switcher)
	if err != nil {
		return nil, fmt.Errorf("switcher: registering metrics: %w", err)
	}
	c.metrics = m
	return c, nil
}

// Name implements the daemon's Component.
func (c *Component) Name() string { return "switcher" }

// Switcher returns the running switcher, nil until the GPU backend is up.
func (c *Component) Switcher() *Switcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sw
}

// Start implements the daemon's Component: the switcher is built (and
// reconciles) in the background as soon as GPUs can be seen.
func (c *Component) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.cancel, c.done = cancel, make(chan struct{})
	c.why = errors.New("starting")
	c.mu.Unlock()
	go c.run(ctx)
	return nil
}

func (c *Component) maxAge() time.Duration {
	cfg := c.opts.Config.Switcher
	return max(time.Minute, 5*cfg.ReconcileInterval.D(), 5*c.opts.RetryInterval) + 2*cfg.Docker.APITimeout.D()
}

func (c *Component) run(ctx context.Context) {
	defer close(c.done)
	beat, done := func() {}, func() {}
	if c.opts.Heartbeat != nil {
		beat, done = c.opts.Heartbeat("switcher", c.maxAge())
	}
	defer done()
	t := time.NewTicker(c.opts.RetryInterval)
	defer t.Stop()
	var sw *Switcher
	for sw == nil {
		beat()
		var err error
		sw, err = c.build()
		if err != nil {
			c.mu.Lock()
			changed := c.why == nil || c.why.Error() != err.Error()
			c.why = err
			c.mu.Unlock()
			if changed {
				c.log.Warn("switcher not running yet", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	c.mu.Lock()
	c.sw, c.why = sw, nil
	c.mu.Unlock()
	c.log.Info("switcher running", zap.Int("gpus", len(sw.GPUStatuses())), zap.Strings("runtimes", Kinds(c.opts.Config.Switcher)))
	if gc := c.opts.GPU(); gc != nil {
		if mgr := gc.Manager(); mgr != nil {
			// Attribution knows the containers proxyd runs; cleared on Stop.
			mgr.SetKnownWorkloads(sw.KnownWorkloads)
		}
		gc.SetAPIHooks(nvml.APIHooks{
			Annotate: func(uuid string) any {
				st, err := sw.GPUStatus(uuid)
				if err != nil {
					return nil
				}
				c.mu.Lock()
				agent := c.agent
				c.mu.Unlock()
				if agent != nil {
					// The GPU's device, proxyd's rule on it and the claims it serves.
					return struct {
						GPUStatus
						Kubernetes kubeagent.GPUInfo `json:"kubernetes"`
					}{st, agent.GPU(uuid)}
				}
				return st
			},
			AfterResume: func(_ context.Context, uuid string) error {
				_, err := sw.Resume(uuid)
				return err
			},
		})
		c.mu.Lock()
		c.hooked = gc
		c.mu.Unlock()
	}
	sw.Run(ctx, beat)
}

// build makes the runtimes and the switcher once the GPU backend is up.
func (c *Component) build() (*Switcher, error) {
	gc := c.opts.GPU()
	if gc == nil {
		return nil, errors.New("GPU backend is off ([gpu] backend = \"off\"): the switcher has no GPUs to manage")
	}
	mgr := gc.Manager()
	if mgr == nil {
		if err := gc.Ready(); err != nil {
			return nil, fmt.Errorf("waiting for the GPU backend: %w", err)
		}
		return nil, errors.New("GPU features are off (no NVIDIA driver and [gpu] backend = \"auto\"): the switcher has no GPUs to manage")
	}
	lib := gc.Library()
	var rts []runtime.Runtime
	var closers []func() error
	if c.opts.Runtimes != nil {
		var err error
		if rts, err = c.opts.Runtimes(lib); err != nil {
			return nil, err
		}
	} else {
		cfg := c.opts.Config.Switcher
		for _, kind := range Kinds(cfg) {
			switch kind {
			case runtime.KindSimulated:
				if lib == nil || lib.Sim == nil {
					return nil, errors.New("the simulated runtime needs the simulated GPU backend")
				}
				rts = append(rts, runtime.NewSim(runtime.SimOptions{Server: lib.Sim, Now: c.now}))
			case runtime.KindExec:
				rts = append(rts, runtime.NewExec(c.log.Named("exec"), nil))
			case config.RuntimeKubernetes:
				// Added below, once the agent is built.
			case runtime.KindDocker:
				d, err := runtime.NewDocker(runtime.DockerOptions{Config: cfg.Docker, Log: c.log.Named("docker"), Now: c.now})
				if err != nil {
					return nil, err
				}
				rts = append(rts, d)
				closers = append(closers, d.Close)
			}
		}
	}
	agent, stopAgent, err := c.startAgent()
	if err != nil {
		for _, cl := range closers {
			_ = cl()
		}
		return nil, err
	}
	var cluster ClusterDemand
	if agent != nil {
		cluster = agent
		rts = kubeRuntimes(agent, rts, c.opts.Config.Switcher)
	}
	sw, err := New(Options{
		Cluster:    cluster,
		Config:     c.opts.Config.Switcher,
		Contracts:  c.opts.Config.Contracts,
		GPUs:       mgr,
		Runtimes:   rts,
		Clock:      c.opts.Clock,
		Log:        c.log,
		Metrics:    c.metrics,
		FeedClient: c.opts.FeedClient,
		Events:     c.opts.Events,
	})
	if err != nil {
		stopAgent()
		for _, cl := range closers {
			_ = cl()
		}
		return nil, err
	}
	if agent != nil {
		agent.OnChange(sw.Wake)
	}
	c.mu.Lock()
	c.closers = closers
	c.agent, c.agentStop = agent, stopAgent
	c.mu.Unlock()
	return sw, nil
}

// startAgent builds and runs the Kubernetes agent when
// [switcher.kubernetes] is enabled; stop ends it (a no-op without one).
func (c *Component) startAgent() (*kubeagent.Agent, func(), error) {
	k := c.opts.Config.Switcher.Kubernetes
	if k == nil || !k.Enabled {
		return nil, func() {}, nil
	}
	node := k.NodeName
	if node == "" {
		node = os.Getenv("NODE_NAME")
	}
	client, err := kubeagent.NewClient(k.Kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	a, err := kubeagent.New(kubeagent.Options{
		Client: client, Node: node, Driver: k.Driver, UUIDAttribute: k.UUIDAttribute,
		Selector:         kubeagent.Selector{Namespaces: k.Namespaces, DeviceClass: k.DeviceClass, MinPriority: k.MinPriority},
		IdleBeforeMining: k.IdleBeforeMining.D(), MaxLent: k.MaxLent, APITimeout: k.APITimeout.D(), ClusterContract: ClusterContractID,
		Clock: c.opts.Clock, Log: c.log.Named("kubernetes"),
	})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	return a, func() { cancel(); <-done }, nil
}

// kubeRuntimes adds the lending runtime and makes the miner's runtime
// start a miner only on a GPU tainted for mining.
func kubeRuntimes(a *kubeagent.Agent, rts []runtime.Runtime, cfg config.Switcher) []runtime.Runtime {
	mining, _ := cfg.MiningWorkload()
	out := make([]runtime.Runtime, 0, len(rts)+1)
	for _, rt := range rts {
		if rt.Kind() == mining.Runtime {
			rt = a.GuardMining(rt)
		}
		out = append(out, rt)
	}
	return append(out, a.Runtime())
}

func (c *Component) now() time.Time {
	if c.opts.Clock != nil {
		return c.opts.Clock.Now()
	}
	return time.Now()
}

// Summary is the switcher's Summary, or one that says why there is no
// switcher yet (the demo prints it).
func (c *Component) Summary() Summary {
	if sw := c.Switcher(); sw != nil {
		return sw.Summary()
	}
	s := Summary{States: map[State]int{}}
	if err := c.Ready(); err != nil {
		s.NotReady = err.Error()
	}
	return s
}

// Ready implements the daemon's Component.
func (c *Component) Ready() error {
	c.mu.Lock()
	sw, why := c.sw, c.why
	c.mu.Unlock()
	if sw == nil {
		if why == nil {
			why = errors.New("not started")
		}
		return why
	}
	c.mu.Lock()
	agent := c.agent
	c.mu.Unlock()
	if agent != nil {
		if err := agent.Ready(); err != nil {
			return err
		}
	}
	return sw.NotReady()
}

// Stop implements the daemon's Component: the loop ends, running ops get
// until ctx, the state is written. Workloads keep running.
func (c *Component) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel, done, hooked, sw, closers, stopAgent := c.cancel, c.done, c.hooked, c.sw, c.closers, c.agentStop
	c.hooked, c.closers, c.agentStop = nil, nil, nil
	c.mu.Unlock()
	if hooked != nil {
		hooked.SetAPIHooks(nvml.APIHooks{})
		if mgr := hooked.Manager(); mgr != nil {
			mgr.SetKnownWorkloads(nil)
		}
	}
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("switcher loop did not end in time: %w", ctx.Err())
	}
	var err error
	if sw != nil {
		err = sw.Shutdown(ctx)
	}
	if stopAgent != nil {
		stopAgent()
	}
	for _, cl := range closers {
		_ = cl()
	}
	return err
}

// Reload implements the daemon's Reloader.
func (c *Component) Reload(cfg *config.Config) ([]string, error) {
	if !cfg.Switcher.Enabled {
		return []string{"switcher.enabled"}, nil
	}
	sw := c.Switcher()
	if sw == nil {
		return []string{"switcher"}, nil
	}
	return sw.Reload(cfg)
}
