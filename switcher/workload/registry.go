package workload

import (
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// Env is what a Driver builds its runtime from, once the GPUs are up.
type Env struct {
	// Log is the switcher's logger, named after the kind.
	Log *zap.Logger
	// Now tells the time (the switcher's clock).
	Now func() time.Time
	// Sim is the simulated GPU server when the GPU backend is simulated;
	// nil on real GPUs.
	Sim *nvmlsim.Server
}

// Driver makes the runtime of one kind.
type Driver struct {
	// New builds the runtime. A runtime that holds connections implements
	// io.Closer; the switcher closes it at shutdown.
	New func(Env) (Runtime, error)
	// CallBound is how long one call into the runtime may block beyond
	// the switcher's own bounds (an engine API timeout); the switcher's
	// liveness allows for it.
	CallBound time.Duration
	// SimulatedOnly: the runtime runs on simulated GPUs only.
	SimulatedOnly bool
}

// Registry maps runtime kinds to their drivers. The wiring builds one,
// registers every kind it ships (internal/components) and hands it to the
// switcher; there is no package-level registry. A Registry is filled
// before use and only read afterwards, so it needs no lock.
type Registry struct {
	drivers map[string]Driver
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{drivers: map[string]Driver{}} }

// Register adds a kind. A kind is registered once, with a New func.
func (r *Registry) Register(kind string, d Driver) error {
	switch {
	case kind == "":
		return fmt.Errorf("workload: registering a driver without a kind")
	case d.New == nil:
		return fmt.Errorf("workload: driver %q has no New func", kind)
	}
	if _, dup := r.drivers[kind]; dup {
		return fmt.Errorf("workload: runtime kind %q registered twice", kind)
	}
	r.drivers[kind] = d
	return nil
}

// Lookup returns the driver of a kind.
func (r *Registry) Lookup(kind string) (Driver, bool) {
	d, ok := r.drivers[kind]
	return d, ok
}

// Kinds lists the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	kinds := make([]string, 0, len(r.drivers))
	for k := range r.drivers {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}

// MaxCallBound is the longest CallBound of the registered drivers.
func (r *Registry) MaxCallBound() time.Duration {
	var m time.Duration
	for _, d := range r.drivers {
		m = max(m, d.CallBound)
	}
	return m
}
