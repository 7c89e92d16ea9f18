package proxy

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/hashgate/proxyd/internal/apijson"
	"github.com/hashgate/proxyd/stratum"
)

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

// retire moves a closed connection's counters to the worker table. From
// here on, outcomes for its shares (verdicts still in flight) go there too.
func (p *Proxy) retire(m *miner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retired = true
	evicted, kept := p.workers.retire(m.srv, m.workers)
	if evicted > 0 {
		p.metrics.limitHits.WithLabelValues(m.srv.cfg.Name, limitRetiredWorkers).Add(float64(evicted))
	}
	p.metrics.retiredWorkers.WithLabelValues(m.srv.cfg.Name).Set(float64(kept))
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

// Paging of GET /api/v1/workers.
const (
	// MaxWorkersPage is the default and largest ?limit= of GET /api/v1/workers.
	MaxWorkersPage = 1000
)

// WorkersPage is one page of GET /api/v1/workers: worker names in order,
// those after After, at most Limit of them.
type WorkersPage struct {
	// Total is the number of worker names known (live or retired).
	Total int `json:"total"`
	Limit int `json:"limit"`
	// NextAfter is the ?after= of the next page; nil on the last page.
	NextAfter *string `json:"next_after"`
	// Evicted sums the totals of names evicted from the retired-worker
	// table (max_retired_workers), so the views still add up to the ledger.
	Evicted EvictedTotals `json:"evicted"`
	Workers []WorkerView  `json:"workers"`
}

// WorkersPage returns up to limit workers (1 to MaxWorkersPage) whose names
// sort after after ("" for the first page), with their live connections and
// the totals of their closed ones.
func (p *Proxy) WorkersPage(after string, limit int) WorkersPage {
	limit = min(max(limit, 1), MaxWorkersPage)
	names, total, more := p.workers.page(after, limit)
	pg := WorkersPage{Total: total, Limit: limit, Workers: make([]WorkerView, 0, len(names))}
	if more && len(names) > 0 {
		last := names[len(names)-1]
		pg.NextAfter = &last
	}
	now := p.clock.Now()
	views := make(map[string]*WorkerView, len(names))
	for _, name := range names {
		views[name] = &WorkerView{Name: name, Connections: []ConnectionView{}}
	}
	for _, s := range p.servers {
		for _, m := range s.snapshot() {
			m.mu.Lock()
			if m.retired { // closing: its totals are in the worker table already
				m.mu.Unlock()
				continue
			}
			for name, ws := range m.workers {
				v := views[name]
				if v == nil {
					continue
				}
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
					cv.Pool, cv.Session = m.up.home().cfg.Name, m.up.sessionID()
				}
				v.Connections = append(v.Connections, cv)
				v.HashrateHs += cv.HashrateHs
				v.Live.add(ws)
			}
			m.mu.Unlock()
		}
	}
	pg.Evicted = p.workers.disconnected(views)
	if pg.Evicted.Rejected == nil {
		pg.Evicted.Rejected = map[string]uint64{}
	}
	for _, name := range names {
		v := views[name]
		sort.Slice(v.Connections, func(i, j int) bool { return v.Connections[i].ID < v.Connections[j].ID })
		pg.Workers = append(pg.Workers, *v)
	}
	return pg
}

// WorkerConnections counts the (connection, worker name) pairs of live
// miners: each connection once per name it authorized.
func (p *Proxy) WorkerConnections() int {
	n := 0
	for _, s := range p.servers {
		for _, m := range s.snapshot() {
			m.mu.Lock()
			if !m.retired {
				n += len(m.workers)
			}
			m.mu.Unlock()
		}
	}
	return n
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
	now := p.clock.Now()
	var out []PoolView
	for _, s := range p.servers {
		loads := s.poolLoad(now)
		view := s.router.view.Load()
		carrying := view.carry
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
			pl.mu.Unlock()
			pv := view.pools[pl]
			v.Healthy, v.Reason = pv.up, pv.reason
			if pv.up {
				hs := pv.changedAt.UTC()
				v.HealthySince = &hs
				v.Reason = ""
			}
			for _, u := range pl.snapshot() {
				u.mu.Lock()
				sv := SessionView{
					ID: u.id, State: u.state.String(), Extranonce1: hex.EncodeToString(u.e1),
					PrefixBytes: u.split.PrefixBytes, MinerE2Size: u.split.MinerExtranonce2Size, Capacity: u.split.Capacity,
					Miners: len(u.miners), Difficulty: u.nextDiff, VersionMask: fmt.Sprintf("%08x", u.mask.Load()),
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
	mux.HandleFunc("GET /api/v1/workers", p.serveWorkers)
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

// serveWorkers answers GET /api/v1/workers?limit=&after= with one page,
// encoded as it is written: a client that reads slowly holds one page of
// views, never the farm's whole list as bytes.
func (p *Proxy) serveWorkers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := MaxWorkersPage
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > MaxWorkersPage {
			apijson.FieldError(w, "limit", "limit must be an integer from 1 to %d, got %s", MaxWorkersPage, quotePrefix(raw, maxEchoBytes))
			return
		}
		limit = n
	}
	after := q.Get("after")
	if len(after) > stratum.MaxWorkerLen {
		apijson.FieldError(w, "after", "after must be a worker name (at most %d bytes), got %d bytes", stratum.MaxWorkerLen, len(after))
		return
	}
	pg := p.WorkersPage(after, limit)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = writeWorkersPage(w, &pg) // the client went away; nothing useful to do
}

// writeWorkersPage writes pg as indented JSON, one worker at a time.
func writeWorkersPage(w io.Writer, pg *WorkersPage) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	field := func(name string, v any, last bool) error {
		b, err := json.MarshalIndent(v, "  ", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(bw, "  %q: %s", name, b)
		if !last {
			bw.WriteString(",")
		}
		_, err = bw.WriteString("\n")
		return err
	}
	bw.WriteString("{\n")
	for _, f := range []struct {
		name string
		v    any
	}{{"total", pg.Total}, {"limit", pg.Limit}, {"next_after", pg.NextAfter}, {"evicted", pg.Evicted}} {
		if err := field(f.name, f.v, false); err != nil {
			return err
		}
	}
	if len(pg.Workers) == 0 {
		bw.WriteString("  \"workers\": []\n}\n")
		return bw.Flush()
	}
	bw.WriteString("  \"workers\": [\n")
	for i := range pg.Workers {
		b, err := json.MarshalIndent(&pg.Workers[i], "    ", "  ")
		if err != nil {
			return err
		}
		bw.WriteString("    ")
		bw.Write(b)
		if i < len(pg.Workers)-1 {
			bw.WriteString(",")
		}
		if _, err := bw.WriteString("\n"); err != nil {
			return err
		}
	}
	bw.WriteString("  ]\n}\n")
	return bw.Flush()
}

// quotePrefix quotes at most n bytes of s, marking a cut: an error names
// what it refused without echoing a client's whole input.
func quotePrefix[T ~string | ~[]byte](s T, n int) string {
	if len(s) <= n {
		return strconv.Quote(string(s))
	}
	return strconv.Quote(string(s[:n])) + "..."
}
