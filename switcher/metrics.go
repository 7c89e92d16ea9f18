package switcher

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the switcher's Prometheus series:
//
//	proxyd_gpu_state{uuid,state}                      1 for the GPU's switch state, 0 for the others
//	proxyd_gpu_transitions_total{from,to,reason}      transitions taken
//	proxyd_gpu_transition_seconds{from,to}            time spent in "from" before moving to "to"
//	proxyd_contract_gpus{contract,kind}               GPUs an active contract wants (desired) and has serving (serving)
//	proxyd_switcher_demand_feed_up                    1 when the last demand-feed poll worked (only with a feed)
//
// The gauges are read from the switcher at scrape time, so a contract's
// series go when it ends and never come back once it is pruned; their
// number is bounded by max_contracts.
type Metrics struct {
	transitions *prometheus.CounterVec
	seconds     *prometheus.HistogramVec
}

// NewMetrics registers the switcher's series; current returns the running
// switcher at scrape time (nil: none yet, gauges are left out).
func NewMetrics(reg prometheus.Registerer, current func() *Switcher) (*Metrics, error) {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_gpu_transitions_total",
			Help: "GPU switch-state transitions, by from, to and reason code.",
		}, []string{"from", "to", "reason"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "proxyd_gpu_transition_seconds",
			Help:    "Seconds a GPU spent in the from state before it moved to the to state.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600},
		}, []string{"from", "to"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.transitions, m.seconds, &gauges{current: current}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) transition(from, to State, reason string, spent time.Duration) {
	m.transitions.WithLabelValues(string(from), string(to), reason).Inc()
	if from != to {
		m.seconds.WithLabelValues(string(from), string(to)).Observe(spent.Seconds())
	}
}

var (
	stateDesc = prometheus.NewDesc("proxyd_gpu_state",
		"1 for the GPU's current switch state (MINING, SERVING_AI, ...), 0 for the others.", []string{"uuid", "state"}, nil)
	contractDesc = prometheus.NewDesc("proxyd_contract_gpus",
		"GPUs an active contract wants (kind=desired) and has serving (kind=serving).", []string{"contract", "kind"}, nil)
	feedDesc = prometheus.NewDesc("proxyd_switcher_demand_feed_up",
		"1 when the last poll of the demand feed worked; 0 while it fails (the last known demand is kept).", nil, nil)
)

// gauges reads the switcher's state at scrape time.
type gauges struct {
	current func() *Switcher
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- stateDesc
	ch <- contractDesc
	ch <- feedDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	s := g.current()
	if s == nil {
		return
	}
	gpus := s.GPUStatuses()
	for _, st := range gpus {
		for _, state := range States {
			v := 0.0
			if st.State == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, st.UUID, string(state))
		}
	}
	for _, c := range s.Contracts() {
		if c.State != ContractActive {
			continue
		}
		ch <- prometheus.MustNewConstMetric(contractDesc, prometheus.GaugeValue, float64(c.Desired), c.ID, "desired")
		ch <- prometheus.MustNewConstMetric(contractDesc, prometheus.GaugeValue, float64(c.Serving), c.ID, "serving")
	}
	if fs := s.FeedStatus(); fs.Configured {
		v := 0.0
		if fs.Error == "" && !fs.LastSuccess.IsZero() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(feedDesc, prometheus.GaugeValue, v)
	}
}
