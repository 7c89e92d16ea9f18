package daemon

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/events"
)

// Component is one long-running part of proxyd: the Stratum proxy, the GPU
// inventory, the switcher. The daemon starts components in order, asks them
// whether they are ready, offers them config reloads and stops them in reverse
// order.
type Component interface {
	// Name is the short, stable name used in logs, /readyz and metrics.
	Name() string
	// Start binds listeners and opens what the component needs, then returns;
	// its work continues in goroutines until Stop. An error aborts startup.
	Start(ctx context.Context) error
	// Ready reports nil when the component can do its job, else why it cannot,
	// in words an operator understands ("no pool connected").
	Ready() error
	// Stop stops accepting new work, drains what is in flight and returns,
	// at the latest when ctx expires (the shutdown timeout).
	Stop(ctx context.Context) error
}

// APIProvider is a Component that serves routes under /api/v1/. The daemon
// registers them behind bearer-token authentication; patterns are Go 1.22
// ServeMux patterns with the full path, e.g. "GET /api/v1/workers".
type APIProvider interface {
	RegisterAPI(mux *http.ServeMux)
}

// ReadyNoter is a Component that can be ready and still have something an
// operator should see (a pool in reject alert that keeps carrying because
// nothing better is healthy). /readyz lists the notes without failing.
type ReadyNoter interface {
	ReadyNotes() []string
}

// Reloader is a Component that can take a new config on SIGHUP. It applies
// what can change live and returns the keys that need a restart; an error
// means it kept its old config.
type Reloader interface {
	Reload(cfg *config.Config) (needRestart []string, err error)
}

// Env is what a component is built from: the daemon's config, the root logger
// (a component adds zap.String("component", name) to every line it logs), the
// Prometheus registerer (metric names start with "proxyd_") and the liveness
// board its loops beat on.
type Env struct {
	Config   *config.Config
	Log      *zap.Logger
	Metrics  prometheus.Registerer
	Liveness *Liveness
	// Events is the daemon's journal of decisions, served at GET /api/v1/events.
	Events *events.Log
}

// Factory builds a component from the config. It returns (nil, nil) when the
// config leaves the component disabled.
type Factory func(env Env) (Component, error)
