package proxy

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hashgate/proxyd/internal/apijson"
)

// retired keeps the counters of connections that have closed, per worker
// name, so a worker's totals survive reconnects. Bounded: past maxRetired
// names, the rest are summed under "(other)".
type retired struct {
	mu     sync.Mutex // guards byName
	byName map[string]*WorkerTotals
}

const maxRetired = 65536

// WorkerTotals are a worker's share counters.
type WorkerTotals struct {
	Accepted     uint64            `json:"accepted"`
	PoolAccepted uint64            `json:"pool_accepted"`
	PoolRejected uint64            `json:"pool_rejected"`
	Rejected     map[string]uint64 `json:"rejected_by_reason"`
	LastShare    *time.Time        `json:"last_share,omitempty"`
}

func (t *WorkerTotals) add(w *workerStats) {
	t.Accepted += w.accepted
	t.PoolAccepted += w.poolAccepted
	t.PoolRejected += w.poolRejected
	for k, v := range w.rejected {
		if t.Rejected == nil {
			t.Rejected = map[string]uint64{}
		}
		t.Rejected[k] += v
	}
	if !w.lastShare.IsZero() && (t.LastShare == nil || w.lastShare.After(*t.LastShare)) {
		ls := w.lastShare
		t.LastShare = &ls
	}
}

func (p *Proxy) retire(m *miner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.workers.mu.Lock()
	defer p.workers.mu.Unlock()
	if p.workers.byName == nil {
		p.workers.byName = map[string]*WorkerTotals{}
	}
	for name, ws := range m.workers {
		t := p.workers.byName[name]
		if t == nil {
			if len(p.workers.byName) >= maxRetired {
				name = "(other)"
				t = p.workers.byName[name]
			}
			if t == nil {
				t = &WorkerTotals{}
				p.workers.byName[name] = t
			}
		}
		t.add(ws)
	}
}

// ConnectionView is one live miner connection in GET /api/v1/workers.
type ConnectionView struct {
	ID             uint64            `json:"id"`
	Server         string            `json:"server"`
	Remote         string            `json:"remote"`
	UserAgent      string            `json:"user_agent"`
	ConnectedSince time.Time         `json:"connected_since"`
	Difficulty     float64           `json:"difficulty"`
	HashrateHs     float64           `json:"hashrate_hs"`
	Accepted       uint64            `json:"accepted"`
	Rejected       map[string]uint64 `json:"rejected_by_reason"`
	LastShare      *time.Time        `json:"last_share,omitempty"`
	VersionMask    string            `json:"version_mask"`
	Pool           string            `json:"pool,omitempty"`
	Session        uint64            `json:"session,omitempty"`
	Extranonce1    string            `json:"extranonce1,omitempty"`
	Subscribed     bool              `json:"subscribed"`
	ExtranonceSub  bool              `json:"extranonce_subscribe"`
}

// WorkerView is one worker name in GET /api/v1/workers.
type WorkerView struct {
	Name         string           `json:"name"`
	HashrateHs   float64          `json:"hashrate_hs"`
	Live         WorkerTotals     `json:"live"`
	Disconnected *WorkerTotals    `json:"disconnected,omitempty"`
	Connections  []ConnectionView `json:"connections"`
}

// Workers lists every worker with its live connections and the totals of
// its closed ones.
func (p *Proxy) Workers() []WorkerView {
	now := time.Now()
	views := map[string]*WorkerView{}
	get := func(name string) *WorkerView {
		v := views[name]
		if v == nil {
			v = &WorkerView{Name: name, Connections: []ConnectionView{}}
			views[name] = v
		}
		return v
	}
	for _, s := range p.servers {
		for _, m := range s.snapshot() {
			m.mu.Lock()
			for name, ws := range m.workers {
				cv := ConnectionView{
					ID: m.id, Server: s.cfg.Name, Remote: m.conn.RemoteAddr().String(), UserAgent: m.userAgent,
					ConnectedSince: m.connectedAt.UTC(), Difficulty: m.diff, HashrateHs: ws.meter.hashrate(now),
					Accepted: ws.accepted, Rejected: copyCounts(ws.rejected), VersionMask: fmt.Sprintf("%08x", m.mask),
					Extranonce1: hex.EncodeToString(m.e1), Subscribed: m.subscribed, ExtranonceSub: m.xnsub,
				}
				if !ws.lastShare.IsZero() {
					ls := ws.lastShare.UTC()
					cv.LastShare = &ls
				}
				if m.up != nil {
					cv.Pool, cv.Session = m.up.pool.cfg.Name, m.up.id
				}
				v := get(name)
				v.Connections = append(v.Connections, cv)
				v.HashrateHs += cv.HashrateHs
				v.Live.add(ws)
			}
			m.mu.Unlock()
		}
	}
	p.workers.mu.Lock()
	for name, t := range p.workers.byName {
		c := *t
		c.Rejected = copyCounts(t.Rejected)
		get(name).Disconnected = &c
	}
	p.workers.mu.Unlock()
	out := make([]WorkerView, 0, len(views))
	for _, v := range views {
		sort.Slice(v.Connections, func(i, j int) bool { return v.Connections[i].ID < v.Connections[j].ID })
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func copyCounts(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// SessionView is one upstream session in GET /api/v1/pools.
type SessionView struct {
	ID              uint64  `json:"id"`
	State           string  `json:"state"`
	Extranonce1     string  `json:"extranonce1"`
	PrefixBytes     int     `json:"prefix_bytes"`
	MinerE2Size     int     `json:"miner_extranonce2_size"`
	Capacity        int     `json:"capacity"`
	Miners          int     `json:"miners"`
	Difficulty      float64 `json:"difficulty"`
	VersionMask     string  `json:"version_mask"`
	Accepted        uint64  `json:"accepted"`
	Rejected        uint64  `json:"rejected"`
	NoVerdict       uint64  `json:"no_verdict"`
	Pending         int     `json:"pending"`
	LastJobAgeS     float64 `json:"last_job_age_s"`
	SubmitLatencyMs float64 `json:"submit_latency_ms"`
	Error           string  `json:"error,omitempty"`
}

// PoolView is one pool of one listener in GET /api/v1/pools.
type PoolView struct {
	Server   string  `json:"server"`
	Pool     string  `json:"pool"`
	URL      string  `json:"url"`
	User     string  `json:"user"`
	Identity string  `json:"identity"`
	Level    int     `json:"level"`
	Weight   float64 `json:"weight"`
	// Healthy and Reason are the pool's health for this listener.
	Healthy      bool       `json:"healthy"`
	Reason       string     `json:"reason,omitempty"`
	HealthySince *time.Time `json:"healthy_since,omitempty"`
	// Carrying: the pool is on the level that carries the hashrate.
	Carrying bool `json:"carrying"`
	// TargetShare and ActualShare are the pool's share of the carrying
	// level's hashrate: by weight, and as estimated now.
	TargetShare float64       `json:"target_share"`
	ActualShare float64       `json:"actual_share"`
	HashrateHs  float64       `json:"hashrate_hs"`
	Miners      int           `json:"miners"`
	Failures    int           `json:"consecutive_failures"`
	Sessions    []SessionView `json:"sessions"`
}

// Pools lists every pool session by listener.
func (p *Proxy) Pools() []PoolView {
	now := time.Now()
	var out []PoolView
	for _, s := range p.servers {
		loads := s.poolLoad(now)
		carrying := s.carrying()
		var levelHash, levelWeight float64
		for _, pl := range carrying {
			levelHash += loads[pl].hashrate
			levelWeight += pl.cfg.Weight
		}
		for _, pl := range s.pools {
			v := PoolView{Server: s.cfg.Name, Pool: pl.cfg.Name, URL: pl.cfg.URL, User: pl.cfg.User, Identity: pl.cfg.Identity,
				Level: pl.cfg.Level, Weight: pl.cfg.Weight, Sessions: []SessionView{},
				HashrateHs: loads[pl].hashrate, Miners: len(loads[pl].miners)}
			for _, c := range carrying {
				if c == pl {
					v.Carrying = true
					v.TargetShare = pl.cfg.Weight / levelWeight
					if levelHash > 0 {
						v.ActualShare = loads[pl].hashrate / levelHash
					}
				}
			}
			pl.mu.Lock()
			v.Failures = pl.failures
			v.Healthy, v.Reason = pl.health.up, pl.health.reason
			if pl.health.up {
				hs := pl.health.changedAt.UTC()
				v.HealthySince = &hs
				v.Reason = ""
			}
			pl.mu.Unlock()
			for _, u := range pl.snapshot() {
				u.mu.Lock()
				sv := SessionView{
					ID: u.id, State: u.state.String(), Extranonce1: hex.EncodeToString(u.e1),
					PrefixBytes: u.split.PrefixBytes, MinerE2Size: u.split.MinerExtranonce2Size, Capacity: u.split.Capacity,
					Miners: len(u.miners), Difficulty: u.nextDiff, VersionMask: fmt.Sprintf("%08x", u.mask),
					Accepted: u.accepted, Rejected: u.rejected, NoVerdict: u.noVerdict, Pending: len(u.pending),
					SubmitLatencyMs: float64(u.latency.Microseconds()) / 1000,
				}
				if !u.lastJobAt.IsZero() {
					sv.LastJobAgeS = now.Sub(u.lastJobAt).Seconds()
				}
				if u.err != nil {
					sv.Error = u.err.Error()
				}
				u.mu.Unlock()
				v.Sessions = append(v.Sessions, sv)
			}
			out = append(out, v)
		}
	}
	return out
}

// RegisterAPI implements daemon.APIProvider.
func (p *Proxy) RegisterAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/workers", func(w http.ResponseWriter, _ *http.Request) {
		apijson.Write(w, http.StatusOK, map[string]any{"workers": p.Workers()})
	})
	mux.HandleFunc("GET /api/v1/pools", func(w http.ResponseWriter, _ *http.Request) {
		apijson.Write(w, http.StatusOK, map[string]any{"pools": p.Pools()})
	})
	mux.HandleFunc("GET /api/v1/stratum", func(w http.ResponseWriter, _ *http.Request) {
		conns := map[string]int{}
		for _, s := range p.servers {
			conns[s.cfg.Name] = s.limits.count()
		}
		apijson.Write(w, http.StatusOK, map[string]any{"connections": conns, "accounting": p.Accounting()})
	})
}
