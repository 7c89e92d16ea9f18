package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Tests of the bounds on what one Stratum client can make proxyd store or
// do (issue 12): worker names per connection, the retired-worker table,
// pass-through authorizations and the /api/v1/workers page (the write
// queue's are in queuebound_test.go).

// rpcCode is the Stratum error code of err, or 0 when err is not an answer.
func rpcCode(err error) int {
	var re *stratumtest.RPCError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

// authCounter counts a test pool's mining.authorize calls by user.
type authCounter struct {
	mu     sync.Mutex
	calls  map[string]int
	refuse func(user string) bool
	gate   func(user string) <-chan struct{} // nil, or blocks the answer until closed
}

func (c *authCounter) authorize(user, _ string) bool {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[user]++
	gate, refuse := c.gate, c.refuse
	c.mu.Unlock()
	if gate != nil {
		if g := gate(user); g != nil {
			select {
			case <-g:
			case <-time.After(20 * time.Second):
			}
		}
	}
	return refuse == nil || !refuse(user)
}

func (c *authCounter) count(match func(string) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for u, k := range c.calls {
		if match(u) {
			n += k
		}
	}
	return n
}

// One connection presenting new worker names: past
// max_workers_per_connection each is refused with error 24, counted as a
// protocol error (so max_protocol_errors disconnects it) and in the limit
// metric; proxyd keeps no more names than the bound. (Before: every name
// was accepted and kept, without bound.)
func TestWorkerNamesPerConnectionBounded(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "max_workers_per_connection = 4\nmax_protocol_errors = 3", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.n0"})
	ctx := ctxFor(t, 30*time.Second)
	accepted, refused24 := 1, 0 // the handshake authorized acct.n0
	var lastErr error
	for i := 1; i <= 10_000; i++ {
		_, err := m.Call(ctx, "mining.authorize", []any{fmt.Sprintf("acct.n%d", i), "x"})
		switch code := rpcCode(err); {
		case err == nil:
			accepted++
			continue
		case code == 24:
			refused24++
			continue
		case code != 0:
			t.Fatalf("name %d: error %v, want 24", i, err)
		}
		lastErr = err
		break
	}
	if lastErr == nil {
		t.Fatal("10,000 new worker names on one connection and it was never disconnected")
	}
	if accepted != 4 {
		t.Errorf("%d names authorized on one connection, want max_workers_per_connection = 4", accepted)
	}
	if refused24 > 3 {
		t.Errorf("%d names refused before the disconnect, want at most max_protocol_errors = 3", refused24)
	}
	if got := metricValue(t, px, "proxyd_stratum_limit_hits_total", `limit="workers_per_connection"`); got != 3 {
		t.Errorf("limit hits counted %v, want 3", got)
	}
	for i := 0; i < 500 && metricValue(t, px, "proxyd_miner_disconnects_total", `reason="protocol_errors"`) < 1; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if metricValue(t, px, "proxyd_miner_disconnects_total", `reason="protocol_errors"`) != 1 {
		t.Error("the connection was not dropped for protocol errors")
	}
	// close counts the disconnect before it retires the connection's
	// workers: wait for the table to settle.
	var live, retired int
	for i := 0; i < 500; i++ {
		px.workers.mu.Lock()
		live, retired = len(px.workers.live), len(px.workers.retired)
		px.workers.mu.Unlock()
		if live == 0 && retired == 4 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if live != 0 || retired != 4 {
		t.Errorf("worker table holds %d live and %d retired names, want 0 and 4", live, retired)
	}
}

// pageAll walks GET /api/v1/workers with ?limit=, following next_after.
func pageAll(t *testing.T, px *testProxy, limit int) (all []WorkerView, pages []WorkersPage) {
	t.Helper()
	mux := http.NewServeMux()
	px.RegisterAPI(mux)
	after := ""
	for range 100 {
		rec := httptest.NewRecorder()
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if after != "" {
			q.Set("after", after)
		}
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/workers?"+q.Encode(), nil))
		if rec.Code != 200 {
			t.Fatalf("page after %q: %d %s", after, rec.Code, rec.Body)
		}
		var pg WorkersPage
		if err := json.Unmarshal(rec.Body.Bytes(), &pg); err != nil {
			t.Fatalf("page after %q: %v\n%s", after, err, rec.Body)
		}
		pages = append(pages, pg)
		all = append(all, pg.Workers...)
		if pg.NextAfter == nil {
			return all, pages
		}
		after = *pg.NextAfter
	}
	t.Fatal("paging did not end")
	return nil, nil
}

// Closed connections' names are kept up to max_retired_workers, the oldest
// evicted first into an "evicted" bucket, and the workers' views plus that
// bucket still add up to the share ledger.
func TestRetiredWorkersEvictOldestAndTheLedgerBalances(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "max_retired_workers = 3", "")
	ctx := ctxFor(t, time.Minute)
	connected := func() float64 { return metricValue(t, px, "proxyd_miners_connected", `server="farm"`) }
	for i := range 5 {
		m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: fmt.Sprintf("acct.r%d", i)})
		if _, err := m.SubmitShares(ctx, 2); err != nil {
			t.Fatal(err)
		}
		checkAccounting(t, px.Proxy) // every verdict in before the close
		m.Close()
		for j := 0; j < 500 && connected() > 0; j++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	live := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.live"})
	if _, err := live.SubmitShares(ctx, 1); err != nil {
		t.Fatal(err)
	}
	acct := checkAccounting(t, px.Proxy)

	all, pages := pageAll(t, px, 2)
	var names []string
	var accepted, poolAccepted uint64
	for _, w := range all {
		names = append(names, w.Name)
		accepted += w.Live.Accepted
		poolAccepted += w.Live.PoolAccepted
		if w.Disconnected != nil {
			accepted += w.Disconnected.Accepted
			poolAccepted += w.Disconnected.PoolAccepted
		}
	}
	ev := pages[len(pages)-1].Evicted
	if got, want := strings.Join(names, ","), "acct.live,acct.r2,acct.r3,acct.r4"; got != want {
		t.Errorf("workers %s, want %s (the two oldest retired evicted)", got, want)
	}
	if pages[0].Total != 4 || ev.Workers != 2 {
		t.Errorf("total %d, evicted %d names; want 4 and 2", pages[0].Total, ev.Workers)
	}
	if accepted+ev.Accepted != acct.Valid || poolAccepted+ev.PoolAccepted != acct.PoolAccepted || acct.Valid != 11 {
		t.Errorf("views (%d accepted, %d pool-accepted) + evicted (%d, %d) do not add up to the ledger %+v",
			accepted, poolAccepted, ev.Accepted, ev.PoolAccepted, acct)
	}
	if got := metricValue(t, px, "proxyd_stratum_limit_hits_total", `limit="retired_workers"`); got != 2 {
		t.Errorf("evictions counted %v, want 2", got)
	}
	if got := metricValue(t, px, "proxyd_retired_workers", `server="farm"`); got != 3 {
		t.Errorf("proxyd_retired_workers = %v, want 3", got)
	}
}

// A verdict that arrives after its connection closed lands in the retired
// totals (or the evicted bucket), never nowhere.
func TestLateVerdictCountsInTheWorkerTable(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.late"})
	ctx := ctxFor(t, 30*time.Second)
	if _, err := m.SubmitOne(ctx); err != nil {
		t.Fatal(err)
	}
	pool.DelayResponses(500 * time.Millisecond)
	if _, err := m.Submit(ctx, stratumtest.SubmitRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500 && px.Accounting().InFlight == 0; i++ {
		time.Sleep(time.Millisecond)
	}
	m.Close() // before the pool's verdict
	acct := checkAccounting(t, px.Proxy)
	all, _ := pageAll(t, px, 10)
	if len(all) != 1 || all[0].Disconnected == nil || all[0].Disconnected.PoolAccepted != acct.PoolAccepted || acct.PoolAccepted != 2 {
		t.Fatalf("the late verdict is not in the worker's totals: %+v, ledger %+v", all, acct)
	}
}

// With identity = "passthrough", a name the pool refused is refused again
// locally, without asking the pool.
func TestPassthroughRefusedNameIsRefusedLocally(t *testing.T) {
	c := &authCounter{refuse: func(u string) bool { return strings.HasSuffix(u, ".bad") }}
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, Authorize: c.authorize})
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, nil, "", `identity = "passthrough"`)
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "site.rig0"})
	ctx := ctxFor(t, 30*time.Second)
	for i := range 3 {
		if _, err := m.Call(ctx, "mining.authorize", []any{"site.bad", "x"}); rpcCode(err) != 24 {
			t.Fatalf("try %d: %v, want the pool's refusal (24)", i, err)
		}
	}
	if n := c.count(func(u string) bool { return u == "acct.farm.bad" }); n != 1 {
		t.Errorf("the pool was asked %d times about a name it refused, want once", n)
	}
	if got := metricValue(t, px, "proxyd_upstream_authorizations_total", `result="refused_locally"`); got != 2 {
		t.Errorf("refused_locally = %v, want 2", got)
	}
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("the miner's own worker stopped working: %v %+v", err, r)
	}
}

// With identity = "passthrough", a session sends at most
// max_authorizations_per_second new authorizations (bursts of one second's
// worth); past it the miner gets an error at once, and is not dropped.
func TestPassthroughAuthorizationRate(t *testing.T) {
	c := &authCounter{}
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, Authorize: c.authorize})
	start := time.Now() // the session's bucket is full from no earlier than this
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, nil, "max_workers_per_connection = 100", "identity = \"passthrough\"\nmax_authorizations_per_second = 2")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "site.rig0"})
	ctx := ctxFor(t, 30*time.Second)
	limited := 0
	for i := 1; i <= 30; i++ {
		_, err := m.Call(ctx, "mining.authorize", []any{fmt.Sprintf("site.r%d", i), "x"})
		switch {
		case err == nil:
		case rpcCode(err) == 20 && strings.Contains(err.Error(), "max_authorizations_per_second"):
			limited++
		default:
			t.Fatalf("name %d: %v", i, err)
		}
	}
	elapsed := time.Since(start).Seconds()
	sent := c.count(func(u string) bool { return strings.HasPrefix(u, "acct.farm.") }) // the miner's handshake included
	if bound := 2 + 2*elapsed; float64(sent) > bound {
		t.Errorf("%d authorizations reached the pool in %.2fs, more than burst 2 + 2/s", sent, elapsed)
	}
	if limited == 0 || metricValue(t, px, "proxyd_stratum_limit_hits_total", `limit="authorization_rate"`) != float64(limited) {
		t.Errorf("%d authorizations refused for the rate, metric %v", limited,
			metricValue(t, px, "proxyd_stratum_limit_hits_total", `limit="authorization_rate"`))
	}
	if _, err := m.Call(ctx, "mining.ping", nil); err != nil {
		t.Fatalf("a miner refused for the pool's rate was dropped: %v", err)
	}
}

// With identity = "passthrough", a connection has at most
// max_pending_authorizations unanswered at the pool: a pool that does not
// answer cannot be sent one more name per timeout forever.
func TestPassthroughPendingAuthorizationsBounded(t *testing.T) {
	gate := make(chan struct{})
	c := &authCounter{gate: func(u string) <-chan struct{} {
		if strings.Contains(u, ".slow") {
			return gate
		}
		return nil
	}}
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, Authorize: c.authorize})
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, nil, "", `identity = "passthrough"`)
	px.authTimeout.Store(int64(300 * time.Millisecond))
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "site.rig0"})
	defer close(gate)
	ctx := ctxFor(t, 30*time.Second)
	for i := 1; i <= 2; i++ {
		_, err := m.Call(ctx, "mining.authorize", []any{fmt.Sprintf("site.slow%d", i), "x"})
		if rpcCode(err) != 20 || !strings.Contains(err.Error(), "did not answer") {
			t.Fatalf("slow%d: %v, want a timeout error", i, err)
		}
	}
	_, err := m.Call(ctx, "mining.authorize", []any{"site.slow3", "x"})
	if rpcCode(err) != 20 || !strings.Contains(err.Error(), "max_pending_authorizations") {
		t.Fatalf("third unanswered authorization: %v, want refused for max_pending_authorizations", err)
	}
	if got := metricValue(t, px, "proxyd_stratum_limit_hits_total", `limit="pending_authorizations"`); got != 1 {
		t.Errorf("pending limit hits %v, want 1", got)
	}
	px.workers.mu.Lock()
	names := len(px.workers.live)
	px.workers.mu.Unlock()
	if names != 1 {
		t.Errorf("%d live worker names, want only the handshake's", names)
	}
}

// GET /api/v1/workers pages by ?limit= and ?after=, says the total, and
// answers a bad value with a 400 naming the field and echoing little.
func TestWorkersAPIPaging(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	for _, u := range []string{"acct.e", "acct.a", "acct.d", "acct.b", "acct.c"} {
		stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: u})
	}
	all, pages := pageAll(t, px, 2)
	var names []string
	for _, w := range all {
		names = append(names, w.Name)
		if len(w.Connections) != 1 {
			t.Errorf("%s has %d connections", w.Name, len(w.Connections))
		}
	}
	if strings.Join(names, ",") != "acct.a,acct.b,acct.c,acct.d,acct.e" || len(pages) != 3 {
		t.Errorf("paged %v in %d pages, want 5 names in 3 pages", names, len(pages))
	}
	for i, pg := range pages {
		if pg.Total != 5 || pg.Limit != 2 || len(pg.Workers) > 2 {
			t.Errorf("page %d: total %d limit %d, %d workers", i, pg.Total, pg.Limit, len(pg.Workers))
		}
	}
	if _, pg := pageAll(t, px, MaxWorkersPage); len(pg) != 1 || len(pg[0].Workers) != 5 {
		t.Errorf("one page of %d: %+v", MaxWorkersPage, pg)
	}

	mux := http.NewServeMux()
	px.RegisterAPI(mux)
	for _, tc := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=-1", "limit"}, {"limit=1001", "limit"}, {"limit=ten", "limit"},
		{"limit=" + strings.Repeat("9", 5000), "limit"}, {"after=" + strings.Repeat("w", 300), "after"},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/workers?"+tc.query, nil))
		var e struct{ Error, Field string }
		if rec.Code != 400 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Field != tc.field || len(e.Error) > 120 {
			t.Errorf("?%.20s: %d %.200s, want a short 400 naming %q", tc.query, rec.Code, rec.Body, tc.field)
		}
	}
}

// writeRecorder records the size of each write to a ResponseWriter.
type writeRecorder struct {
	*httptest.ResponseRecorder
	writes []int
}

func (w *writeRecorder) Write(b []byte) (int, error) {
	w.writes = append(w.writes, len(b))
	return w.ResponseRecorder.Write(b)
}

// A large page is encoded as it is written, in bounded writes, not built
// whole in memory first.
func TestWorkersAPIStreams(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	srv := px.servers[0]
	for i := range 1500 {
		px.workers.retire(srv, map[string]*workerStats{fmt.Sprintf("acct.w%05d", i): {accepted: uint64(i)}})
	}
	mux := http.NewServeMux()
	px.RegisterAPI(mux)
	w := &writeRecorder{ResponseRecorder: httptest.NewRecorder()}
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/workers", nil))
	var pg WorkersPage
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &pg) != nil {
		t.Fatalf("%d %.300s", w.Code, w.Body)
	}
	if pg.Total != 1500 || len(pg.Workers) != MaxWorkersPage || pg.NextAfter == nil || *pg.NextAfter != "acct.w00999" ||
		pg.Workers[7].Disconnected == nil || pg.Workers[7].Disconnected.Accepted != 7 {
		t.Fatalf("page: total %d, %d workers, next %v", pg.Total, len(pg.Workers), pg.NextAfter)
	}
	largest := 0
	for _, n := range w.writes {
		largest = max(largest, n)
	}
	if body := w.Body.Len(); body < 4*(32<<10) || largest > 32<<10 {
		t.Errorf("a %d-byte body written in %d writes, the largest %d bytes; want writes of at most 32 KiB", body, len(w.writes), largest)
	}
}
