package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/events"
)

// Options is everything New needs. The caller (proxyd's wiring, a test)
// has validated and defaulted the values: New checks only what it cannot
// run without.
type Options struct {
	// Servers are the listeners miners connect to; none leaves the proxy
	// disabled (New returns nil, nil).
	Servers []ServerOptions
	// Pools are the upstream accounts, referred to by name from
	// ServerOptions.Pools.
	Pools []PoolOptions

	Log     *zap.Logger           // the proxy adds component=stratum
	Metrics prometheus.Registerer // metric names start with proxyd_stratum_
	// Events, when set, records routing decisions (failover, fail-back,
	// reject alerts) for the operator.
	Events *events.Log
	// Liveness, when set, registers a loop that must beat at least every
	// maxAge; the proxy calls beat each round and done when the loop ends.
	Liveness func(name string, maxAge time.Duration) (beat, done func())
	// Clock is the proxy's time source (see Clock); nil is the wall clock.
	Clock Clock
	// MinerWriteStall is how long a miner's write queue may hold more than
	// its 256 KiB limit with nothing written before the miner is dropped
	// (write_queue_full); 0 is 5 s. Socket write deadlines follow it, so
	// it runs on the wall clock.
	MinerWriteStall time.Duration
}

// ServerOptions is one listener (a [[server]] table).
type ServerOptions struct {
	Name                string
	Listen              string // host:port
	Extranonce2Size     int
	InitialDifficulty   float64
	MinDifficulty       float64
	MaxDifficulty       float64
	SharesPerMinute     float64
	MaxConnections      int // 0: unlimited
	MaxConnectionsPerIP int // 0: unlimited
	MaxLineBytes        int
	SubscribeTimeout    time.Duration
	IdleTimeout         time.Duration
	MaxProtocolErrors   int
	NtimeWindow         time.Duration
	// Pools names the pools this listener routes to; empty means all.
	Pools []string
	// FailbackDelay is how long a better failover level must stay healthy
	// before miners move back to it (hysteresis against flapping).
	FailbackDelay time.Duration
	// NoPoolGrace is how long miners stay connected with no healthy pool
	// before they are disconnected so their firmware fails over.
	NoPoolGrace time.Duration
	// RebalanceInterval is how often the weighted split is corrected.
	RebalanceInterval time.Duration
	// MaxWorkersPerConnection bounds the distinct worker names one
	// connection may present in mining.authorize (accepted or not).
	MaxWorkersPerConnection int
	// MaxRetiredWorkers bounds the per-name totals kept for closed
	// connections; past it the oldest are folded into one "evicted" bucket.
	MaxRetiredWorkers int
	// MaxPendingAuthorizations bounds, per connection, the pass-through
	// authorizations sent to the pool and not yet answered.
	MaxPendingAuthorizations int
	// MinMinerExtranonce2Size is the fewest extranonce2 bytes a miner is
	// left when the pool gives too few for Extranonce2Size and a prefix.
	MinMinerExtranonce2Size int
}

// PoolOptions is one upstream pool account (a [[pool]] table).
type PoolOptions struct {
	Name string
	// URL is stratum+tcp://host:port, or stratum+ssl:// / stratum+tls://
	// for TLS (see stratum.ParsePoolURL).
	URL           string
	User          string
	Password      string
	SubmitTimeout time.Duration
	// MinersPerSession is at most this many miners per upstream session;
	// 0 is "auto": as many as the pool's extranonce allows.
	MinersPerSession int
	// Level is the failover tier: the lowest level with a healthy pool
	// carries the hashrate.
	Level int
	// Weight is the share of hashrate among healthy pools of the same level.
	Weight float64
	// Identity is "aggregate" (the pool's user for every share) or "passthrough".
	Identity string
	// WorkerTemplate names each worker upstream with Identity "passthrough".
	WorkerTemplate string
	// NoJobTimeout: a pool that sends no job for this long is unhealthy; a
	// session silent for twice this long is replaced by a fresh one.
	NoJobTimeout time.Duration
	// MaxRejectRate is the reject alert threshold (see poolHealth).
	MaxRejectRate float64
	// CAFile, TLSServerName and TLSPinSHA256 apply to a TLS URL.
	CAFile        string
	TLSServerName string
	TLSPinSHA256  []string
	// MaxAuthorizationsPerSecond rate-limits, per upstream session, the
	// pass-through mining.authorize requests miners' authorizations cause.
	MaxAuthorizationsPerSecond float64
}
