package nvml

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// DefaultRetryInterval is how often the component retries a backend that
// failed to open (the driver's module often loads after proxyd at boot).
const DefaultRetryInterval = 30 * time.Second

// ComponentOptions build a Component.
type ComponentOptions struct {
	// Backend is BackendAuto, BackendNVML, BackendSimulated or BackendOff.
	Backend string
	// PollInterval, AppXIDs and SlowdownSustain are the Manager's Options
	// (zero values: the Manager's defaults).
	PollInterval    time.Duration
	AppXIDs         []uint64
	SlowdownSustain time.Duration
	Log             *zap.Logger
	Metrics         prometheus.Registerer
	// Heartbeat registers loops with a liveness board (see
	// Options.Heartbeat); nil: none.
	Heartbeat func(loop string, maxAge time.Duration) (beat func(), done func())
	// Library configures how backends are opened (tests substitute the
	// real library).
	Library LibraryOptions
	Clock   Clock
	// RetryInterval is how often an unavailable backend is retried;
	// 0 means DefaultRetryInterval.
	RetryInterval time.Duration
	// EventWait is Options.EventWait (0: DefaultEventWait).
	EventWait time.Duration
}

// Component is the GPU side of the daemon: it opens the configured backend,
// runs a Manager over it and serves /api/v1/gpus and the GPU metrics. A
// missing or broken NVML never stops proxyd: with backend "nvml" the
// component keeps running, Ready names what is missing and the backend is
// retried (every 30s by default); with "auto" and no library GPU features
// are off.
type Component struct {
	opts ComponentOptions
	log  *zap.Logger

	mu          sync.Mutex // guards the fields below
	lib         *Library
	mgr         *Manager
	unavailable error  // why the backend is not running; nil when it is
	off         string // why GPU features are off by configuration
	cancel      context.CancelFunc
	retryDone   chan struct{}
}

// NewComponent builds the component; nil (and no error) when the config
// turns GPU features off. Nothing is opened before Start.
func NewComponent(o ComponentOptions) (*Component, error) {
	if o.Backend == BackendOff {
		return nil, nil
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	c := &Component{opts: o, log: o.Log.With(zap.String("component", "gpu"))}
	if o.Metrics != nil {
		if err := o.Metrics.Register(newCollector(c.Manager)); err != nil {
			return nil, fmt.Errorf("gpu: registering metrics: %w", err)
		}
	}
	return c, nil
}

// Name is the component's name in logs, /readyz and metrics.
func (c *Component) Name() string { return "gpu" }

// Manager returns the running Manager, or nil while the backend is
// unavailable or GPU features are off.
func (c *Component) Manager() *Manager {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mgr
}

// Library returns the open library (its Sim field drives the simulated
// server), or nil while none is open.
func (c *Component) Library() *Library {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lib
}

// Start opens the backend and starts monitoring. It fails only on a
// programming error: an absent or broken NVML leaves proxyd running.
func (c *Component) Start(ctx context.Context) error {
	backend := c.opts.Backend
	err := c.open(ctx)
	if err == nil {
		return nil
	}
	if backend == BackendAuto && errors.Is(err, ErrLibraryNotFound) {
		c.mu.Lock()
		c.off = fmt.Sprintf("GPU features are off: no NVIDIA driver on this machine (%s not found) and [gpu] backend is \"auto\"", LibraryName)
		c.mu.Unlock()
		c.log.Info(c.off)
		return nil
	}
	c.log.Error("GPU backend unavailable; proxyd keeps running without GPU features and retries",
		zap.String("backend", backend), zap.Duration("retry_every", c.opts.RetryInterval), zap.Error(err))
	retryCtx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.unavailable = err
	c.cancel = cancel
	c.retryDone = make(chan struct{})
	c.mu.Unlock()
	go c.retry(retryCtx)
	return nil
}

// open opens the library and starts a Manager on it.
func (c *Component) open(ctx context.Context) error {
	o := c.opts
	lib, err := OpenLibrary(o.Backend, o.Library)
	if err != nil {
		return err
	}
	mgr, err := New(lib, Options{
		Backend:         lib.Backend,
		PollInterval:    o.PollInterval,
		AppXIDs:         slices.Clone(o.AppXIDs),
		SlowdownSustain: o.SlowdownSustain,
		EventWait:       o.EventWait,
		Clock:           o.Clock,
		Log:             c.log,
		Heartbeat:       o.Heartbeat,
	})
	if err == nil {
		err = mgr.Start(ctx)
	}
	if err != nil {
		_ = lib.Close()
		return fmt.Errorf("GPU backend %q: %w", o.Backend, err)
	}
	c.mu.Lock()
	c.lib, c.mgr, c.unavailable = lib, mgr, nil
	c.mu.Unlock()
	return nil
}

func (c *Component) retry(ctx context.Context) {
	defer close(c.retryDone)
	beat, done := func() {}, func() {}
	if c.opts.Heartbeat != nil {
		beat, done = c.opts.Heartbeat("gpu-backend-retry", 3*c.opts.RetryInterval)
	}
	defer done()
	t := time.NewTicker(c.opts.RetryInterval)
	defer t.Stop()
	for {
		beat()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.open(ctx)
		if err == nil {
			c.log.Info("GPU backend is up", zap.String("backend", c.opts.Backend))
			return
		}
		c.mu.Lock()
		c.unavailable = err
		c.mu.Unlock()
		c.log.Debug("GPU backend still unavailable", zap.Error(err))
	}
}

// Ready is nil while GPUs are monitored or
// GPU features are off by configuration, else why not (naming a missing
// libnvidia-ml.so.1, for one).
func (c *Component) Ready() error {
	c.mu.Lock()
	off, unavailable, mgr := c.off, c.unavailable, c.mgr
	c.mu.Unlock()
	switch {
	case off != "":
		return nil
	case unavailable != nil:
		return unavailable
	case mgr == nil:
		return errors.New("GPU backend not started")
	}
	return mgr.Ready()
}

// unavailableReason says why the API has no GPUs to show, or nil.
func (c *Component) unavailableReason() (*Manager, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.mgr != nil:
		return c.mgr, nil
	case c.off != "":
		return nil, errors.New(c.off)
	case c.unavailable != nil:
		return nil, c.unavailable
	}
	return nil, errors.New("GPU backend not started")
}

// Stop stops the retries and the
// Manager, then closes the library.
func (c *Component) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel, retryDone := c.cancel, c.retryDone
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-retryDone:
		case <-ctx.Done():
			return fmt.Errorf("GPU backend retry still inside an NVML call at shutdown: %w", ctx.Err())
		}
	}
	c.mu.Lock()
	mgr, lib := c.mgr, c.lib
	c.mgr, c.lib = nil, nil
	c.mu.Unlock()
	if mgr == nil {
		return nil
	}
	if err := mgr.Stop(ctx); err != nil {
		return err // the loops may still use the library: leave it open
	}
	return lib.Close()
}
