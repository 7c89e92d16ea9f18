//go:build linux

package hostile

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// suite is one run of the hostile-client suite: the proxyd binary, every
// daemon started (their logs are checked together at the end) and one
// result row per attack. mu guards daemons and rows.
type suite struct {
	bin string

	mu      sync.Mutex
	daemons []*daemon
	rows    []*row
}

func (s *suite) addDaemon(d *daemon) {
	s.mu.Lock()
	s.daemons = append(s.daemons, d)
	s.mu.Unlock()
}

func (s *suite) allDaemons() []*daemon {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*daemon(nil), s.daemons...)
}

// row is one attack's line in the table.
type row struct {
	Attack   string
	Bound    string
	RSSBase  int64 // KiB, just before the attack
	RSSPeak  int64 // KiB, highest sample during it
	GorBase  int64
	GorPeak  int64
	LogPeak  int    // most lines in any one second
	Upstream string // calls proxyd made upstream, where the attack is about them
	Notes    string
	Result   string
	Took     time.Duration
	measured bool // a window was opened and closed
}

// attack is one entry of the suite, run in this order.
type attack struct {
	name string
	run  func(s *suite, t *testing.T)
}

// TestHostile runs every attack of issue 12 against the real proxyd binary
// and prints a table of bounds and measured peaks (go test -v).
func TestHostile(t *testing.T) {
	start := time.Now()
	// HOSTILE_PROXYD runs the suite against another build (say, of an
	// older commit, to see an attack fail); by default it builds the tree.
	bin := os.Getenv("HOSTILE_PROXYD")
	if bin == "" {
		dir, err := os.MkdirTemp("", "proxyd-hostile")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		if bin, err = buildProxyd(dir); err != nil {
			t.Fatal(err)
		}
		t.Logf("built proxyd in %s", time.Since(start).Round(time.Millisecond))
	} else {
		t.Logf("HOSTILE_PROXYD: testing %s", bin)
	}
	s := &suite{bin: bin}
	attacks := []attack{
		{"A01_authorize_flood", attackAuthorizeFlood},
		{"A01_passthrough_authorize_flood", attackPassthroughFlood},
		{"A01_retired_worker_table", attackRetiredWorkers},
		{"A02_idle_connections_one_ip", attackIdleConnections},
		{"A03_api_clients_never_read", attackAPINeverRead},
		{"A04_demand_url_secrets", attackDemandSecrets},
		{"A05_refused_connection_log_flood", attackLogFlood},
		{"A06_miners_never_read", attackNeverRead},
		{"A06_unknown_method_echo", attackUnknownMethod},
		{"A08_check_config_parity", attackCheckConfig},
		{"A09_contract_json", attackContractJSON},
		{"A10_contract_flood", attackContractFlood},
		{"A11_stale_reject_storm_one_pool", attackStaleStorm},
		{"A15_stalled_pool_link_recovers", attackStalledLink},
		{"A12_pool_dies_dial_burst", attackPoolDies},
		{"A16_json_log_keys_unique", attackLogKeys},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) { a.run(s, t) })
	}
	t.Logf("hostile suite: %d attacks in %s (including the build)\n%s", len(attacks), time.Since(start).Round(time.Second), s.table())
}

// table renders the rows for go test -v and docs/SECURITY.md: one line
// per attack with the measured peaks, then each attack's bound and notes.
func (s *suite) table() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "attack\tresult\tRSS base MiB\tRSS peak +MiB\tgoroutines base→peak\tlog lines/s peak\tupstream\ttook")
	for _, r := range s.rows {
		base, rss, gor, logs := "-", "-", "-", "-"
		if r.measured {
			base = fmt.Sprintf("%.1f", float64(r.RSSBase)/1024)
			rss = fmt.Sprintf("%.1f", float64(r.RSSPeak-r.RSSBase)/1024)
			gor = fmt.Sprintf("%d→%d", r.GorBase, r.GorPeak)
			logs = fmt.Sprint(r.LogPeak)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Attack, r.Result, base, rss, gor, logs,
			orDash(r.Upstream), r.Took.Round(100*time.Millisecond))
	}
	_ = tw.Flush()
	b.WriteString("\nbounds and notes:\n")
	for _, r := range s.rows {
		fmt.Fprintf(&b, "%s\n    bound: %s\n    seen:  %s\n", r.Attack, r.Bound, orDash(r.Notes))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newRow adds the attack's row; its result is filled in when the subtest
// ends.
func (s *suite) newRow(t *testing.T, attack, bound string) *row {
	r := &row{Attack: attack, Bound: bound}
	start := time.Now()
	s.mu.Lock()
	s.rows = append(s.rows, r)
	s.mu.Unlock()
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		r.Took = time.Since(start)
		r.Result = "pass"
		if t.Failed() {
			r.Result = "FAIL"
		}
	})
	return r
}

// window measures one attack on one daemon, from begin to end.
type window struct {
	d        *daemon
	smp      *sampler
	row      *row
	from, to time.Time
}

// measure starts sampling d, waits for a baseline and opens the window.
func (s *suite) measure(t *testing.T, d *daemon, r *row) *window {
	smp := startSampler(d)
	t.Cleanup(smp.close)
	// Two goroutine samples before the window, for a baseline.
	time.Sleep(2*goroutineEvery + 50*time.Millisecond)
	w := &window{d: d, smp: smp, row: r, from: time.Now()}
	s.mu.Lock()
	r.RSSBase = smp.rssNow()
	r.GorBase = smp.goroutinesAt(w.from)
	s.mu.Unlock()
	return w
}

// minWindow is the shortest measuring window: the well-behaved miners must
// show verdicts in each half of it, and on a loaded machine a share can
// take a while.
const minWindow = 3 * time.Second

// end closes the window (no sooner than minWindow after it opened) and
// fills the row's peaks.
func (s *suite) end(w *window) {
	// One more goroutine sample inside the window.
	time.Sleep(max(goroutineEvery+50*time.Millisecond, time.Until(w.from.Add(minWindow))))
	w.to = time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w.row.measured = true
	w.row.RSSPeak = max(w.smp.peakRSS(w.from, w.to), w.row.RSSBase)
	w.row.GorPeak = w.smp.peakGoroutines(w.from, w.to)
	w.row.LogPeak = w.d.peakLogRate(w.from, w.to)
}

// note appends to the row's notes.
func (s *suite) note(r *row, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Notes != "" {
		r.Notes += "; "
	}
	r.Notes += fmt.Sprintf(format, args...)
}

func (s *suite) upstream(r *row, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Upstream = fmt.Sprintf(format, args...)
}

// Test pool defaults: every share at the miners' difficulty is also at the
// pool's, so every share is forwarded and its verdict is the pool's own.
const (
	testDifficulty  = 1e-6 // ~4,300 hashes a share: cheap under -race
	testJobInterval = 400 * time.Millisecond
)

// testPool is a stratumtest pool that counts mining.authorize calls (the
// "upstream calls" of the passthrough attacks), with their times.
type testPool struct {
	*stratumtest.Pool
	auths atomic.Int64

	mu       sync.Mutex // guards authAt
	authAt   []time.Time
	poolUser string
}

func newTestPool(t *testing.T, opts stratumtest.PoolOptions) *testPool {
	t.Helper()
	if opts.InitialDifficulty == 0 {
		opts.InitialDifficulty = testDifficulty
	}
	if opts.JobInterval == 0 {
		opts.JobInterval = testJobInterval
	}
	if opts.KeepJobs == 0 {
		opts.KeepJobs = 32
	}
	tp := &testPool{poolUser: poolUser}
	// Authorize runs under the pool's lock: it only counts.
	opts.Authorize = func(user, _ string) bool {
		if user != tp.poolUser {
			tp.auths.Add(1)
			tp.mu.Lock()
			tp.authAt = append(tp.authAt, time.Now())
			tp.mu.Unlock()
		}
		return true
	}
	tp.Pool = stratumtest.NewPool(t, opts)
	return tp
}

// authsBetween counts worker authorizations (not proxyd's own session
// user) the pool received in [from, to].
func (p *testPool) authsBetween(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, a := range p.authAt {
		if !a.Before(from) && !a.After(to) {
			n++
		}
	}
	return n
}

// poolUser is the [[pool]] user of every config.
const poolUser = "acct.farm"

// proxyConfig is a proxyd config with one [[server]] "farm" and one
// [[pool]] "primary"; the string fields are extra lines for their section.
type proxyConfig struct {
	PoolURL string
	Top     string
	Log     string
	HTTP    string
	Server  string
	Pool    string
	Extra   string // more sections, after [[pool]]; [gpu] backend is "off" unless Extra sets [gpu]
}

func (c proxyConfig) String() string {
	gpu := "[gpu]\nbackend = \"off\"\n"
	if strings.Contains(c.Extra, "[gpu]") {
		gpu = ""
	}
	return fmt.Sprintf(`shutdown_timeout = "5s"
%s
[log]
level = "info"
%s
[http]
listen = "127.0.0.1:0"
api_token_file = @TOKEN_FILE@
%s
[[server]]
name = "farm"
listen = "127.0.0.1:0"
initial_difficulty = %g
min_difficulty = %g
max_difficulty = %g
%s
[[pool]]
name = "primary"
url = %q
user = %q
password = "x"
%s
%s%s`, c.Top, c.Log, c.HTTP, testDifficulty, testDifficulty, testDifficulty, c.Server, c.PoolURL, poolUser, c.Pool, gpu, c.Extra)
}
