package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus series. Label values are bounded:
// server and pool names come from the config, result and reason from fixed
// sets, so cardinality does not grow with the number of miners.
type metrics struct {
	minersConnected *prometheus.GaugeVec   // server
	shares          *prometheus.CounterVec // server, pool, result, reason
	shareDiffSum    *prometheus.CounterVec // server, pool
	upstreamSess    *prometheus.GaugeVec   // pool
	submitLatency   *prometheus.HistogramVec
	fanout          *prometheus.HistogramVec
	downBytes       *prometheus.CounterVec // server, direction
	upBytes         *prometheus.CounterVec // pool, direction
	connRefused     *prometheus.CounterVec // server, reason
	disconnects     *prometheus.CounterVec // server, reason
	blockCandidates *prometheus.CounterVec // server, pool
	poolUp          *prometheus.GaugeVec   // server, pool
	poolChanges     *prometheus.CounterVec // server, pool, reason
	poolRejectRatio *prometheus.GaugeVec   // server, pool
	poolRejectAlert *prometheus.GaugeVec   // server, pool
	dials           *prometheus.CounterVec // server, pool
	routeLevel      *prometheus.GaugeVec   // server
	moves           *prometheus.CounterVec // server
	limitHits       *prometheus.CounterVec // server, limit
	retiredWorkers  *prometheus.GaugeVec   // server
	upstreamAuths   *prometheus.CounterVec // pool, result
}

// Values of the limit label of proxyd_stratum_limit_hits_total: each is a
// bound on what a client can make proxyd store or do.
const (
	limitWorkersPerConnection = "workers_per_connection"
	limitPendingAuths         = "pending_authorizations"
	limitAuthRate             = "authorization_rate"
	limitRetiredWorkers       = "retired_workers"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		minersConnected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_miners_connected", Help: "Miner connections open on each listener.",
		}, []string{"server"}),
		shares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_shares_total",
			Help: "Shares by outcome. result: accepted (locally, below pool difficulty), pool_accepted, pool_rejected, rejected (locally), no_verdict (pool never answered).",
		}, []string{"server", "pool", "result", "reason"}),
		shareDiffSum: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_share_difficulty_sum", Help: "Sum of the difficulty of accepted shares (rate() of it × 2^32 is hashrate).",
		}, []string{"server", "pool"}),
		upstreamSess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_upstream_sessions", Help: "Upstream pool sessions open, by pool.",
		}, []string{"pool"}),
		submitLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "proxyd_upstream_submit_latency_seconds",
			Help:    "Round trip of a forwarded share: written to the pool until its verdict arrived.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"pool"}),
		fanout: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "proxyd_job_fanout_seconds",
			Help:    "From a pool notify received to the job written to the last miner of the session (or queued for one that is not reading).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"pool"}),
		downBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_downstream_bytes_total", Help: "Bytes exchanged with miners, by direction (in: from miners).",
		}, []string{"server", "direction"}),
		upBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_upstream_bytes_total", Help: "Bytes exchanged with pools, by direction (in: from the pool).",
		}, []string{"pool", "direction"}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_connections_refused_total", Help: "Miner connections refused, by reason (max_connections, max_connections_per_ip, no_pool).",
		}, []string{"server", "reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_miner_disconnects_total", Help: "Miner connections closed, by reason.",
		}, []string{"server", "reason"}),
		blockCandidates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_block_candidates_total", Help: "Shares whose hash met the network target (forwarded first).",
		}, []string{"server", "pool"}),
		poolUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_pool_up", Help: "1 while the pool is healthy for the listener (connected, authorized, delivering jobs). A high reject ratio does not make it unhealthy: see proxyd_pool_reject_alert.",
		}, []string{"server", "pool"}),
		poolChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_pool_state_changes_total", Help: "Pool health changes by reason (healthy, connection, no_job, starting).",
		}, []string{"server", "pool", "reason"}),
		poolRejectRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_pool_reject_ratio",
			Help: "Fraction of the pool's last 50 verdicts (none older than 5m, block candidates left out) that were rejects or timeouts.",
		}, []string{"server", "pool"}),
		poolRejectAlert: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_pool_reject_alert",
			Help: "1 while the pool's reject ratio is above max_reject_rate (judged from 20 verdicts). Miners then move only to a pool without an alert, if one is healthy.",
		}, []string{"server", "pool"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_pool_dials_total", Help: "Sessions opened (dial attempts) to each pool, failed ones included.",
		}, []string{"server", "pool"}),
		routeLevel: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_route_level", Help: "The failover level carrying the listener's hashrate; -1 when no pool is healthy.",
		}, []string{"server"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_miner_moves_total", Help: "Miners moved between pool sessions (session loss, failover, fail-back, rebalance).",
		}, []string{"server"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_stratum_limit_hits_total",
			Help: "Times a bound on client input was reached, by limit: workers_per_connection, pending_authorizations and authorization_rate (an authorize refused), retired_workers (a closed worker's totals folded into the evicted bucket).",
		}, []string{"server", "limit"}),
		retiredWorkers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxyd_retired_workers", Help: "Worker names of closed connections whose totals are kept (at most max_retired_workers).",
		}, []string{"server"}),
		upstreamAuths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_upstream_authorizations_total",
			Help: "Pass-through worker authorizations by result: sent (to the pool), accepted, refused (by the pool), no_answer, refused_locally (the pool refused the name earlier; not sent again).",
		}, []string{"pool", "result"}),
	}
	for _, c := range []prometheus.Collector{m.limitHits, m.retiredWorkers, m.upstreamAuths, m.moves, m.poolUp, m.poolChanges, m.poolRejectRatio, m.poolRejectAlert, m.dials, m.routeLevel, m.minersConnected, m.shares, m.shareDiffSum, m.upstreamSess, m.submitLatency,
		m.fanout, m.downBytes, m.upBytes, m.connRefused, m.disconnects, m.blockCandidates} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// disconnectReasons are the reasons a miner's connection is closed for
// (miner.close), pre-registered at 0 per listener.
var disconnectReasons = []string{"closed_by_miner", "idle_timeout", "line_too_long", "no_pool", "no_pool_session",
	"protocol_errors", "read_error", "reconnect", "shutdown", "subscribe_timeout", "write_failed", "write_queue_full"}
