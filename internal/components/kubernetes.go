package components

import (
	"context"
	"io"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
	"github.com/hashgate/proxyd/switcher/kubeagent"
	"github.com/hashgate/proxyd/switcher/workload"
)

// kubeAgent is the Kubernetes node agent of [switcher.kubernetes] as the
// switcher component runs it: the agent (built with the component, so a
// bad kubeconfig or a missing node name stops startup) and its Run
// goroutine, started by start and joined by stop.
type kubeAgent struct {
	*kubeagent.Agent

	mu   sync.Mutex // guards stop
	stop func()     // ends Run and waits for it; nil while it does not run
}

// newKubeAgent builds the agent when [switcher.kubernetes] is enabled;
// nil (and no error) when it is not. The agent reads nothing from the API
// server before start. gpus is the GPU component (nil: none), whose GPUs
// are the ones proxyd taints; metrics registers the agent's series (nil:
// none).
func newKubeAgent(s config.Switcher, log *zap.Logger, journal *events.Log, metrics prometheus.Registerer,
	gpus func() *nvml.Component) (*kubeAgent, error) {
	k := s.Kubernetes
	if k == nil || !k.Enabled {
		return nil, nil
	}
	node := k.NodeName
	if node == "" {
		node = os.Getenv("NODE_NAME") // the DaemonSet sets it from the downward API
	}
	client, err := kubeagent.NewClient(k.Kubeconfig)
	if err != nil {
		return nil, err
	}
	a, err := kubeagent.New(kubeagent.Options{
		Client: client, Node: node, Driver: k.Driver, UUIDAttribute: k.UUIDAttribute,
		Selector:         kubeagent.Selector{Namespaces: k.Namespaces, DeviceClass: k.DeviceClass, MinPriority: k.MinPriority},
		IdleBeforeMining: k.IdleBeforeMining.D(), MaxLent: k.MaxLent, APITimeout: k.APITimeout.D(),
		ClusterContract: switcher.ClusterContractID,
		EvictForMining:  k.EvictForMining, EvictionTimeout: k.EvictionTimeout.D(),
		Journal: func(gpu, reason, message string) {
			if journal != nil {
				// Among the switcher's decisions about the GPU, beside
				// its transitions (GET /api/v1/events?component=switcher).
				journal.Add(events.Event{Component: "switcher", Kind: switcher.KindDecision, Subject: gpu, Reason: reason,
					Details: map[string]any{"gpu": gpu, "message": message}})
			}
		},
		GPUs:           nvmlGPUs(gpus),
		StaleRuleGrace: k.StaleRuleGrace.D(),
		Metrics:        metrics,
		Log:            log.With(zap.String("component", "switcher")).Named("kubernetes"),
	})
	if err != nil {
		return nil, err
	}
	return &kubeAgent{Agent: a}, nil
}

// nvmlGPUs lists the UUIDs of the GPUs NVML sees, for the agent: not
// known (ok false) while the backend is not open, and while it lists no
// GPU (a driver that lost every GPU for a moment must not cost every rule
// on the node).
func nvmlGPUs(gpus func() *nvml.Component) func() ([]string, bool) {
	return func() ([]string, bool) {
		if gpus == nil {
			return nil, false
		}
		c := gpus()
		if c == nil {
			return nil, false
		}
		m := c.Manager()
		if m == nil {
			return nil, false
		}
		list := m.GPUs()
		if len(list) == 0 {
			return nil, false
		}
		out := make([]string, len(list))
		for i, g := range list {
			out[i] = g.UUID
		}
		return out, true
	}
}

// start runs the agent until stop; wake is called when the cluster's
// demand may have changed.
func (k *kubeAgent) start(wake func()) {
	k.OnChange(wake)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Run(ctx)
	}()
	k.mu.Lock()
	k.stop = func() { cancel(); <-done }
	k.mu.Unlock()
}

// halt ends Run and waits for it (a no-op when it does not run).
func (k *kubeAgent) halt() {
	k.mu.Lock()
	stop := k.stop
	k.stop = nil
	k.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// register adds the agent's kinds to drivers: kubeagent.Kind, the lending
// runtime the cluster's contract (switcher.ClusterWorkload) runs on, and
// the mining runtime's driver wrapped so that a miner starts only on a GPU
// tainted for mining. Every other kind's driver stays as shipped.
func (k *kubeAgent) register(drivers map[string]workload.Driver, s config.Switcher) {
	if mining, ok := s.MiningWorkload(); ok {
		if d, ok := drivers[mining.Runtime]; ok {
			next := d.New
			d.New = func(env workload.Env) (workload.Runtime, error) {
				rt, err := next(env)
				if err != nil {
					return nil, err
				}
				guarded := k.GuardMining(rt)
				if c, ok := rt.(io.Closer); ok {
					// The switcher closes a runtime that holds connections.
					return closingRuntime{guarded, c}, nil
				}
				return guarded, nil
			}
			drivers[mining.Runtime] = d
		}
	}
	drivers[kubeagent.Kind] = workload.Driver{
		New: func(workload.Env) (workload.Runtime, error) { return k.Runtime(), nil },
		// A take-back writes the taint, re-reads the claims and may delete
		// the taint again: three API calls, each bounded by api_timeout;
		// with evict_for_mining, the eviction.
		CallBound: s.Kubernetes.StopBound(),
	}
}

// closingRuntime is a guarded runtime that still closes the one it wraps.
type closingRuntime struct {
	workload.Runtime
	io.Closer
}
