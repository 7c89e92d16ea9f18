package switcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// DefaultRetryInterval is how often the component retries building the
// switcher while the GPU backend is not up (or the state is unreadable).
const DefaultRetryInterval = 5 * time.Second

// ComponentOptions build a Component.
type ComponentOptions struct {
	Config Config
	// Contracts are the contracts declared in the config file.
	Contracts []Contract
	// GPUBackend is the GPU component's backend (nvml.Backend*): a runtime
	// whose driver is SimulatedOnly needs nvml.BackendSimulated.
	GPUBackend string
	// GPU returns the GPU component (nil: GPU backend off).
	GPU func() *nvml.Component
	// Drivers make the runtimes the workloads name, by kind.
	Drivers *workload.Registry
	Log     *zap.Logger
	Metrics prometheus.Registerer
	// Heartbeat registers the loop with a liveness board; nil: none.
	Heartbeat func(loop string, maxAge time.Duration) (beat func(), done func())
	Clock     Clock
	// Runtimes, if set, replaces the runtimes Drivers would build.
	Runtimes func(lib *nvml.Library) ([]workload.Runtime, error)
	// RetryInterval: 0 means DefaultRetryInterval.
	RetryInterval time.Duration
	// FeedClient polls the demand feed (nil: a default client).
	FeedClient *http.Client
	// Events is the daemon's journal (nil: the switcher keeps its own).
	Events *events.Log
	// Cluster is the demand of a cluster this node lends GPUs to (see
	// Options.Cluster); nil: none. Its lending runtime is one of Drivers.
	Cluster ClusterDemand
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
	known   *nvml.Manager // told the switcher's workloads; told to forget at Stop
	closers []func() error
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
	if o.Drivers == nil {
		o.Drivers = workload.NewRegistry()
	}
	cfg := o.Config
	if o.Runtimes == nil {
		for _, kind := range Kinds(cfg) {
			d, ok := o.Drivers.Lookup(kind)
			if !ok {
				return nil, fmt.Errorf("switcher: a workload uses runtime %q, which this build does not have (known: %s)",
					kind, strings.Join(o.Drivers.Kinds(), ", "))
			}
			if d.SimulatedOnly && o.GPUBackend != nvml.BackendSimulated {
				return nil, fmt.Errorf("switcher: a workload uses runtime %q, which runs on simulated GPUs only; "+
					"set [gpu] backend = \"simulated\" or give the workload a real runtime (docker, exec); [gpu] backend is %q", kind, o.GPUBackend)
			}
		}
	}
	workloads := cfg.Workloads()
	for i, c := range o.Contracts {
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
	cfg := c.opts.Config
	return max(time.Minute, 5*cfg.ReconcileInterval, 5*c.opts.RetryInterval) + c.opts.Drivers.MaxCallBound()
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
	c.log.Info("switcher running", zap.Int("gpus", len(sw.GPUStatuses())), zap.Strings("runtimes", Kinds(c.opts.Config)))
	if gc := c.opts.GPU(); gc != nil {
		if mgr := gc.Manager(); mgr != nil {
			// Attribution knows the containers proxyd runs; cleared on Stop.
			mgr.SetKnownWorkloads(sw.KnownWorkloads)
			c.mu.Lock()
			c.known = mgr
			c.mu.Unlock()
		}
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
	var rts []workload.Runtime
	var closers []func() error
	if c.opts.Runtimes != nil {
		var err error
		if rts, err = c.opts.Runtimes(lib); err != nil {
			return nil, err
		}
	} else {
		env := workload.Env{Now: c.now}
		if lib != nil {
			env.Sim = lib.Sim
		}
		for _, kind := range Kinds(c.opts.Config) {
			d, ok := c.opts.Drivers.Lookup(kind)
			if !ok {
				return nil, fmt.Errorf("no driver for runtime %q", kind)
			}
			env.Log = c.log.Named(kind)
			rt, err := d.New(env)
			if err != nil {
				for _, cl := range closers {
					_ = cl()
				}
				return nil, err
			}
			rts = append(rts, rt)
			if cl, ok := rt.(io.Closer); ok {
				closers = append(closers, cl.Close)
			}
		}
	}
	sw, err := New(Options{
		Config:      c.opts.Config,
		Contracts:   c.opts.Contracts,
		ListTimeout: c.opts.Drivers.MaxCallBound(),
		GPUs:        mgr,
		Runtimes:    rts,
		Clock:       c.opts.Clock,
		Log:         c.log,
		Metrics:     c.metrics,
		FeedClient:  c.opts.FeedClient,
		Events:      c.opts.Events,
		Cluster:     c.opts.Cluster,
	})
	if err != nil {
		for _, cl := range closers {
			_ = cl()
		}
		return nil, err
	}
	c.mu.Lock()
	c.closers = closers
	c.mu.Unlock()
	return sw, nil
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
	return sw.NotReady()
}

// Stop implements the daemon's Component: the loop ends, running ops get
// until ctx, the state is written. Workloads keep running.
func (c *Component) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel, done, known, sw, closers := c.cancel, c.done, c.known, c.sw, c.closers
	c.known, c.closers = nil, nil
	c.mu.Unlock()
	if known != nil {
		known.SetKnownWorkloads(nil)
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
	for _, cl := range closers {
		_ = cl()
	}
	return err
}

// Reload applies a new config to the running switcher (see
// Switcher.Reload); ok is false while there is no switcher yet.
func (c *Component) Reload(cfg Config, contracts []Contract) (ok bool, err error) {
	sw := c.Switcher()
	if sw == nil {
		return false, nil
	}
	return true, sw.Reload(cfg, contracts)
}
