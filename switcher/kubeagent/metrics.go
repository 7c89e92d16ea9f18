package kubeagent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The agent's Prometheus series (Options.Metrics):
//
//	proxyd_kubernetes_api_up                         1 once the API server answered the last probe, 0 before and while it does not
//	proxyd_kubernetes_rules                          proxyd's DeviceTaintRules on this node (its watch cache; absent until listed)
//	proxyd_kubernetes_gpus_lent                      GPUs lent to the cluster (no proxyd rule, the switcher runs the lending workload)
//	proxyd_kubernetes_rule_writes_total{op,result}   writes of proxyd's rules: op create|update|delete, result ok|error
//	proxyd_kubernetes_stale_rules_deleted_total      rules deleted because no GPU proxyd sees and the driver publishes wanted them
//	proxyd_kubernetes_evictions_total{result}        evictions for mining: result evicted|failed|deferred (a failed one's backoff)
//
// Every label value is one of those listed: the series are bounded and
// all exist (at 0) from the start.
const (
	opCreate = "create"
	opUpdate = "update"
	opDelete = "delete"

	evictEvicted  = "evicted"
	evictFailedR  = "failed"
	evictDeferred = "deferred"
)

type metrics struct {
	writes       *prometheus.CounterVec
	evictions    *prometheus.CounterVec
	staleDeleted prometheus.Counter
}

var (
	apiUpDesc = prometheus.NewDesc("proxyd_kubernetes_api_up",
		"1 when the Kubernetes API server answered proxyd's last probe; 0 before the first answer and while it does not answer.", nil, nil)
	rulesDesc = prometheus.NewDesc("proxyd_kubernetes_rules",
		"proxyd's DeviceTaintRules on this node, from its watch cache (absent until the rules are listed).", nil, nil)
	lentDesc = prometheus.NewDesc("proxyd_kubernetes_gpus_lent",
		"GPUs of this node lent to the Kubernetes cluster (proxyd's taint removed).", nil, nil)
)

func newMetrics() *metrics {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_kubernetes_rule_writes_total",
			Help: "Writes of proxyd's DeviceTaintRules to the API server, by op (create, update, delete) and result (ok, error).",
		}, []string{"op", "result"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_kubernetes_evictions_total",
			Help: "Evictions of claims from a GPU for mining (evict_for_mining), by result (evicted, failed, deferred: a failed one's backoff refused another try).",
		}, []string{"result"}),
		staleDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyd_kubernetes_stale_rules_deleted_total",
			Help: "proxyd's DeviceTaintRules deleted because their device is no longer published for this node or is no GPU proxyd sees.",
		}),
	}
	for _, op := range []string{opCreate, opUpdate, opDelete} {
		for _, res := range []string{"ok", "error"} {
			m.writes.WithLabelValues(op, res)
		}
	}
	for _, res := range []string{evictEvicted, evictFailedR, evictDeferred} {
		m.evictions.WithLabelValues(res)
	}
	return m
}

func (m *metrics) write(op string, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.writes.WithLabelValues(op, res).Inc()
}

// register adds the agent's series to reg.
func (a *Agent) registerMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{a.metrics.writes, a.metrics.evictions, a.metrics.staleDeleted, gauges{a}} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// gauges reads the agent's state at scrape time.
type gauges struct{ a *Agent }

func (gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- apiUpDesc
	ch <- rulesDesc
	ch <- lentDesc
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	a := g.a
	a.mu.Lock()
	up := a.apiAnswered && a.apiErr == nil
	lent := len(a.leases)
	a.mu.Unlock()
	v := 0.0
	if up {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(apiUpDesc, prometheus.GaugeValue, v)
	ch <- prometheus.MustNewConstMetric(lentDesc, prometheus.GaugeValue, float64(lent))
	if a.rulesSynced() {
		ch <- prometheus.MustNewConstMetric(rulesDesc, prometheus.GaugeValue, float64(len(a.ownedRules())))
	}
}
