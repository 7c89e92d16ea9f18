package config

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/hashgate/proxyd/stratum"
)

// Server is one downstream Stratum V1 listener that miners connect to.
type Server struct {
	Name                string   `toml:"name"`
	Listen              string   `toml:"listen"`
	Extranonce2Size     int      `toml:"extranonce2_size"`
	InitialDifficulty   float64  `toml:"initial_difficulty"`
	MinDifficulty       float64  `toml:"min_difficulty"`
	MaxDifficulty       float64  `toml:"max_difficulty"`
	SharesPerMinute     float64  `toml:"shares_per_minute"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	MaxLineBytes        int      `toml:"max_line_bytes"`
	SubscribeTimeout    Duration `toml:"subscribe_timeout"`
	IdleTimeout         Duration `toml:"idle_timeout"`
	MaxProtocolErrors   int      `toml:"max_protocol_errors"`
	NtimeWindow         Duration `toml:"ntime_window"`
	// Pools names the [[pool]] entries this listener routes to; empty means all.
	Pools []string `toml:"pools"`
	// FailbackDelay is how long a better failover level must stay healthy
	// before miners move back to it (hysteresis against flapping).
	FailbackDelay Duration `toml:"failback_delay"`
	// NoPoolGrace is how long miners stay connected with no healthy pool
	// before they are disconnected so their firmware fails over.
	NoPoolGrace Duration `toml:"no_pool_grace"`
	// RebalanceInterval is how often the weighted split is corrected.
	RebalanceInterval Duration `toml:"rebalance_interval"`
	// MaxWorkersPerConnection bounds the distinct worker names one
	// connection may present in mining.authorize (accepted or not).
	MaxWorkersPerConnection int `toml:"max_workers_per_connection"`
	// MaxRetiredWorkers bounds the per-name totals kept for closed
	// connections; past it the oldest are folded into one "evicted" bucket.
	MaxRetiredWorkers int `toml:"max_retired_workers"`
	// MaxPendingAuthorizations bounds, per connection, the pass-through
	// authorizations sent to the pool and not yet answered.
	MaxPendingAuthorizations int `toml:"max_pending_authorizations"`
	// MinMinerExtranonce2Size is the fewest extranonce2 bytes a miner is
	// left when the pool gives too few for Extranonce2Size and a prefix
	// (never more than Extranonce2Size); below it, one miner per session.
	MinMinerExtranonce2Size int `toml:"min_miner_extranonce2_size"`
}

// Pool is one upstream Stratum V1 pool account.
type Pool struct {
	Name          string   `toml:"name"`
	URL           string   `toml:"url"`
	User          string   `toml:"user"`
	Password      string   `toml:"password"`
	SubmitTimeout Duration `toml:"submit_timeout"`
	// MinersPerSession is "auto" (SessionAuto: as many as the pool's
	// extranonce allows, up to 65,536) or at most this many per session.
	MinersPerSession SessionSize `toml:"miners_per_session"`
	// Level is the failover tier: the lowest level with a healthy pool carries the hashrate.
	Level int `toml:"level"`
	// Weight is the share of hashrate among healthy pools of the same level.
	Weight float64 `toml:"weight"`
	// Identity is "aggregate" (the pool's user for every share) or "passthrough".
	Identity string `toml:"identity"`
	// WorkerTemplate names each worker upstream with identity = "passthrough":
	// {user} is the pool's user, {worker} the part of the miner's name after
	// its first dot (the whole name if it has none), {name} the whole name.
	WorkerTemplate string `toml:"worker_template"`
	// NoJobTimeout: a pool that sends no job for this long is unhealthy; a
	// session silent for twice this long is replaced by a fresh one.
	NoJobTimeout Duration `toml:"no_job_timeout"`
	// MaxRejectRate is the reject alert threshold: a pool that rejects (or
	// leaves unanswered past submit_timeout) more than this fraction of its
	// last 50 forwarded shares, judged from 20 and none older than 5m, is
	// in reject alert. It stays healthy: miners move off it only to a pool
	// without an alert, and with none they stay. Block candidates do not
	// count. (Before, this made the pool unhealthy.)
	MaxRejectRate float64 `toml:"max_reject_rate"`
	// CAFile, TLSServerName and TLSPinSHA256 apply to a stratum+ssl:// (or
	// stratum+tls://) url: a PEM bundle of roots to trust instead of the
	// system's, the name to verify instead of the url's host, and SHA-256
	// digests (hex) of the pool's leaf certificate or public key (SPKI), one
	// of which the pool must present on top of a verified chain.
	CAFile        string   `toml:"ca_file"`
	TLSServerName string   `toml:"tls_server_name"`
	TLSPinSHA256  []string `toml:"tls_pin_sha256"`
	// MaxAuthorizationsPerSecond rate-limits, per upstream session, the
	// pass-through mining.authorize requests that miners' authorizations
	// cause (a token bucket holding one second's worth).
	MaxAuthorizationsPerSecond float64 `toml:"max_authorizations_per_second"`
}

// Server defaults, applied to each [[server]] before validation.
const (
	DefaultExtranonce2Size   = 4
	DefaultMaxLineBytes      = 16 << 10
	DefaultMaxProtocolErrors = 5
	// DefaultMaxConnectionsPerIP applies when the key is absent; an explicit
	// 0 means unlimited.
	DefaultMaxConnectionsPerIP        = 64
	DefaultMaxWorkersPerConnection    = 8
	DefaultMaxRetiredWorkers          = 10000
	DefaultMaxPendingAuthorizations   = 2
	DefaultMaxAuthorizationsPerSecond = 10
)

// DefaultMinMinerExtranonce2Size is what most firmware rolls: NiceHash
// buyers need 4, stock Whatsminers produce duplicates below 3.
const DefaultMinMinerExtranonce2Size = 4

func (s *Server) applyDefaults() {
	setIf(&s.Extranonce2Size, DefaultExtranonce2Size)
	setIf(&s.MinMinerExtranonce2Size, DefaultMinMinerExtranonce2Size)
	setIf(&s.InitialDifficulty, 8192)
	setIf(&s.MinDifficulty, 256)
	setIf(&s.MaxDifficulty, 4194304)
	setIf(&s.SharesPerMinute, 12)
	setIf(&s.MaxConnections, 100000)
	setIf(&s.MaxLineBytes, DefaultMaxLineBytes)
	setIf(&s.MaxProtocolErrors, DefaultMaxProtocolErrors)
	setIf(&s.SubscribeTimeout, Duration(30e9))
	setIf(&s.IdleTimeout, Duration(600e9))
	setIf(&s.NtimeWindow, Duration(7200e9))
	setIf(&s.FailbackDelay, Duration(60e9))
	setIf(&s.NoPoolGrace, Duration(10e9))
	setIf(&s.RebalanceInterval, Duration(30e9))
	setIf(&s.MaxWorkersPerConnection, DefaultMaxWorkersPerConnection)
	setIf(&s.MaxRetiredWorkers, DefaultMaxRetiredWorkers)
	setIf(&s.MaxPendingAuthorizations, DefaultMaxPendingAuthorizations)
}

func (p *Pool) applyDefaults() {
	setIf(&p.MinersPerSession, SessionAuto)
	setIf(&p.SubmitTimeout, Duration(10e9))
	setIf(&p.Weight, 1)
	setIf(&p.Identity, "aggregate")
	setIf(&p.WorkerTemplate, "{user}.{worker}")
	setIf(&p.NoJobTimeout, Duration(120e9))
	setIf(&p.MaxRejectRate, 0.5)
	setIf(&p.MaxAuthorizationsPerSecond, DefaultMaxAuthorizationsPerSecond)
}

// setIf fills a zero value with its default. A key present in the file with
// a zero value is then indistinguishable from an absent one; every key here
// has a valid range that excludes zero, so validation still catches nonsense.
func setIf[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// keyDefinedPerServer reports, for each [[server]] table in src, whether it
// sets key. setIf cannot tell an explicit zero from an absent key, and
// toml.MetaData.IsDefined does not say which [[server]] a key belongs to, so
// the tables are decoded again as plain maps. src already decoded once, so
// an error here cannot happen; it reports nothing set.
func keyDefinedPerServer(src, key string) []bool {
	var shadow struct {
		Server []map[string]any `toml:"server"`
	}
	if _, err := toml.Decode(src, &shadow); err != nil {
		return nil
	}
	out := make([]bool, len(shadow.Server))
	for i, t := range shadow.Server {
		_, out[i] = t[key]
	}
	return out
}

func validateServers(v *validator, servers []Server, pools []Pool) {
	names := map[string]bool{}
	poolNames := map[string]bool{}
	for _, p := range pools {
		poolNames[p.Name] = true
	}
	perIPSet := keyDefinedPerServer(v.src, "max_connections_per_ip")
	for i := range servers {
		s := &servers[i]
		if s.MaxConnectionsPerIP == 0 && (i >= len(perIPSet) || !perIPSet[i]) {
			// Absent: the documented 64. Present, even as 0 (unlimited): as written.
			s.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
		}
		s.applyDefaults()
		k := func(key string) string { return fmt.Sprintf("server[%d].%s", i, key) }
		if s.Name == "" {
			v.addf(k("name"), "every [[server]] needs a name")
		} else if names[s.Name] {
			v.addf(k("name"), "duplicate server name %q", s.Name)
		}
		names[s.Name] = true
		v.hostPort(k("listen"), s.Listen, true)
		v.intRange(k("extranonce2_size"), int64(s.Extranonce2Size), 2, 8)
		v.intRange(k("min_miner_extranonce2_size"), int64(s.MinMinerExtranonce2Size), 1, 8)
		v.floatRange(k("min_difficulty"), s.MinDifficulty, 1e-9, 1e15)
		v.floatRange(k("max_difficulty"), s.MaxDifficulty, s.MinDifficulty, 1e15)
		v.floatRange(k("initial_difficulty"), s.InitialDifficulty, s.MinDifficulty, s.MaxDifficulty)
		v.floatRange(k("shares_per_minute"), s.SharesPerMinute, 0.1, 600)
		v.intRange(k("max_connections"), int64(s.MaxConnections), 1, 10_000_000)
		v.intRange(k("max_connections_per_ip"), int64(s.MaxConnectionsPerIP), 0, 10_000_000)
		v.intRange(k("max_line_bytes"), int64(s.MaxLineBytes), 1024, 1<<20)
		v.intRange(k("max_protocol_errors"), int64(s.MaxProtocolErrors), 1, 1000)
		v.positiveDuration(k("subscribe_timeout"), s.SubscribeTimeout)
		v.positiveDuration(k("idle_timeout"), s.IdleTimeout)
		v.positiveDuration(k("ntime_window"), s.NtimeWindow)
		v.positiveDuration(k("failback_delay"), s.FailbackDelay)
		v.positiveDuration(k("no_pool_grace"), s.NoPoolGrace)
		v.positiveDuration(k("rebalance_interval"), s.RebalanceInterval)
		v.intRange(k("max_workers_per_connection"), int64(s.MaxWorkersPerConnection), 1, 1000)
		v.intRange(k("max_retired_workers"), int64(s.MaxRetiredWorkers), 1, 1_000_000)
		v.intRange(k("max_pending_authorizations"), int64(s.MaxPendingAuthorizations), 1, 64)
		for _, pn := range s.Pools {
			if !poolNames[pn] {
				v.addf(k("pools"), "names pool %q, but no [[pool]] has that name", pn)
			}
		}
	}
}

func validatePools(v *validator, pools []Pool) {
	names := map[string]bool{}
	for i := range pools {
		p := &pools[i]
		p.applyDefaults()
		k := func(key string) string { return fmt.Sprintf("pool[%d].%s", i, key) }
		if p.Name == "" {
			v.addf(k("name"), "every [[pool]] needs a name")
		} else if names[p.Name] {
			v.addf(k("name"), "duplicate pool name %q", p.Name)
		}
		names[p.Name] = true
		_, scheme, err := ParsePoolURL(p.URL)
		if err != nil {
			v.addf(k("url"), "%v", err)
		}
		validatePoolTLS(v, k, p, IsTLSScheme(scheme))
		if p.User == "" {
			v.addf(k("user"), "must not be empty: it is the account the pool credits")
		}
		if !p.MinersPerSession.IsAuto() {
			v.intRange(k("miners_per_session"), int64(p.MinersPerSession), 1, MaxMinersPerSession)
		}
		v.positiveDuration(k("submit_timeout"), p.SubmitTimeout)
		v.intRange(k("level"), int64(p.Level), 0, 16)
		v.floatRange(k("weight"), p.Weight, 1e-9, 1e9)
		v.oneOf(k("identity"), p.Identity, "aggregate", "passthrough")
		if !strings.Contains(p.WorkerTemplate, "{worker}") && !strings.Contains(p.WorkerTemplate, "{name}") {
			v.addf(k("worker_template"), "%q must contain {worker} or {name}, or every worker would share one name upstream", p.WorkerTemplate)
		}
		v.positiveDuration(k("no_job_timeout"), p.NoJobTimeout)
		v.floatRange(k("max_reject_rate"), p.MaxRejectRate, 0.01, 1)
		v.floatRange(k("max_authorizations_per_second"), p.MaxAuthorizationsPerSecond, 0.1, 10000)
	}
}

// IsTLSScheme reports whether a pool url's scheme means TLS.
func IsTLSScheme(scheme string) bool { return stratum.IsTLSScheme(scheme) }

// validatePoolTLS checks the TLS keys of a pool: they need a TLS url, the
// CA file must be readable PEM (run would refuse it too) and every pin a
// SHA-256 digest.
func validatePoolTLS(v *validator, k func(string) string, p *Pool, tls bool) {
	if !tls {
		for key, set := range map[string]bool{"ca_file": p.CAFile != "", "tls_server_name": p.TLSServerName != "", "tls_pin_sha256": len(p.TLSPinSHA256) > 0} {
			if set {
				v.addf(k(key), "applies only to a TLS pool: write the url as stratum+ssl://host:port")
			}
		}
		return
	}
	if p.CAFile != "" {
		pem, err := os.ReadFile(p.CAFile)
		switch {
		case err != nil:
			v.addf(k("ca_file"), "cannot be read: %v", err)
		case !x509.NewCertPool().AppendCertsFromPEM(pem):
			v.addf(k("ca_file"), "%s holds no PEM certificate", p.CAFile)
		}
	}
	if strings.ContainsAny(p.TLSServerName, " /:") {
		v.addf(k("tls_server_name"), "%q is not a host name", p.TLSServerName)
	}
	for _, pin := range p.TLSPinSHA256 {
		h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(pin), ":", ""))
		if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
			v.addf(k("tls_pin_sha256"), "%q is not a SHA-256 digest (64 hex digits, colons allowed)", pin)
		}
	}
}

// ParsePoolURL checks a pool url; the Stratum library owns the grammar
// (stratum.ParsePoolURL), this keeps the config's name for it.
func ParsePoolURL(raw string) (addr string, scheme string, err error) {
	return stratum.ParsePoolURL(raw)
}
