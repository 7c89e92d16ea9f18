package proxy

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// TestThousandMinersFourSessions: 1,000 miners at 256 per session use
// exactly 4 upstream sessions, and every "true" a miner got was accepted by
// the pool (all shares meet pool difficulty here).
func TestThousandMinersFourSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Extranonce2Size: 4})
	px := startProxy(t, []*stratumtest.Pool{pool}, "extranonce2_size = 3\ninitial_difficulty = 0.000001", "miners_per_session = 256")
	fleet := stratumtest.NewFleet(t, px.addr, stratumtest.FleetOptions{
		Miners: 1000, Styles: stratumtest.AllStyles(), DialConcurrency: 64,
	})
	ctx := ctxFor(t, 3*time.Minute)
	if err := fleet.WaitFor(ctx, func(s stratumtest.FleetStats) bool { return s.Ready == 1000 }); err != nil {
		t.Fatalf("fleet not ready: %v (%+v)", err, fleet.Stats())
	}
	if got := pool.Stats().SessionsOpen; got != 4 {
		t.Fatalf("upstream sessions = %d, want exactly 4 for 1,000 miners at 256 per session", got)
	}
	results, err := fleet.SubmitEach(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var told int
	for _, r := range results {
		if r.Verdict == stratumtest.VerdictAccepted {
			told++
		}
	}
	if told != 1000 {
		t.Errorf("%d of 1000 shares accepted, want all", told)
	}
	if un := pool.Unaccounted(results, 1e-6); len(un) > 0 {
		t.Fatalf("%d shares were reported accepted to miners but never accepted by the pool; first: %+v", len(un), un[0])
	}
	a := checkAccounting(t, px.Proxy)
	if a.PoolAccepted != 1000 || a.Forwarded != 1000 {
		t.Errorf("accounting %+v, want 1000 forwarded and pool-accepted", a)
	}
}

// TestConnectStormOpensSessionsInParallel: when many miners connect at once
// to a pool that is slow to answer (a WAN pool), the sessions they need open
// side by side instead of one pool handshake after another, and no more of
// them than the miners fill.
func TestConnectStormOpensSessionsInParallel(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Extranonce2Size: 4, SubscribeDelay: time.Second})
	px := startProxy(t, []*stratumtest.Pool{pool}, "extranonce2_size = 3\ninitial_difficulty = 0.000001", "miners_per_session = 32")
	fleet := stratumtest.NewFleet(t, px.addr, stratumtest.FleetOptions{
		Miners: 128, Styles: stratumtest.AllStyles(), DialConcurrency: 128,
	})
	ctx := ctxFor(t, time.Minute)
	if err := fleet.WaitFor(ctx, func(s stratumtest.FleetStats) bool { return s.Ready == 128 }); err != nil {
		t.Fatalf("fleet not ready: %v (%+v)", err, fleet.Stats())
	}
	st := pool.Stats()
	if st.SessionsOpen != 4 {
		t.Fatalf("upstream sessions = %d, want exactly 4 for 128 miners at 32 per session", st.SessionsOpen)
	}
	// The first session opened before the miners came; the other three
	// were all needed at once and must have been in their handshake together.
	if st.MaxSubscribing < 2 {
		t.Fatalf("at most %d session(s) were handshaking at once: sessions opened one after another", st.MaxSubscribing)
	}
	checkAccounting(t, px.Proxy)
}

// TestBelowPoolDifficultyCountedNotSent: shares that satisfy the miner but
// not the pool are accepted locally and never reach the pool.
func TestBelowPoolDifficultyCountedNotSent(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-2})
	px := startProxy(t, []*stratumtest.Pool{pool}, "initial_difficulty = 0.000001", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.small"})
	res, err := m.SubmitShares(ctxFor(t, time.Minute), 20)
	if err != nil {
		t.Fatal(err)
	}
	forwarded := 0
	for _, r := range res {
		if r.Verdict != stratumtest.VerdictAccepted {
			t.Fatalf("share rejected: %d %s", r.Code, r.Message)
		}
		if r.ShareDifficulty >= 1e-2 {
			forwarded++
		}
	}
	a := checkAccounting(t, px.Proxy)
	if a.BelowPool+a.Forwarded != 20 || int(a.Forwarded) != forwarded || pool.Stats().Submits != uint64(forwarded) {
		t.Fatalf("below-pool %d forwarded %d (want %d), pool saw %d submits", a.BelowPool, a.Forwarded, forwarded, pool.Stats().Submits)
	}
}

// TestPoolRejectReachesMinerWithItsCode and accounting counts it as a pool reject.
func TestPoolRejectReachesMinerWithItsCode(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleBraiinsOS, User: "acct.r"})
	if _, err := m.SubmitOne(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	pool.RejectNext(1, 23, "Low difficulty share (pool says)")
	r, err := m.SubmitOne(ctxFor(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r.Verdict != stratumtest.VerdictRejected || r.Code != 23 || r.Message != "Low difficulty share (pool says)" {
		t.Fatalf("miner got %v %d %q, want the pool's own 23 and message", r.Verdict, r.Code, r.Message)
	}
	a := checkAccounting(t, px.Proxy)
	if a.PoolRejected != 1 || a.PoolAccepted != 1 {
		t.Errorf("accounting %+v", a)
	}
}

// TestVersionBitsReachThePool: the miner's rolled bits arrive as the 6th
// param and the pool's header hash equals the miner's.
func TestVersionBitsReachThePool(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, VersionMask: 0x1fffe000})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.vr", VersionMask: 0x1fffe000})
	if hs := m.Handshake(); hs.VersionMask != 0x1fffe000 {
		t.Fatalf("granted mask %08x, want 1fffe000", hs.VersionMask)
	}
	res, err := m.SubmitShares(ctxFor(t, time.Minute), 8)
	if err != nil {
		t.Fatal(err)
	}
	byHash := map[string]stratumtest.Share{}
	for _, s := range pool.AcceptedShares() {
		byHash[s.Hash.String()] = s
	}
	rolled := 0
	for _, r := range res {
		s, ok := byHash[r.Hash.String()]
		if !ok {
			t.Fatalf("pool has no accepted share with the miner's hash %s", r.Hash)
		}
		if !s.HasVersionBits || s.Version != r.Version {
			t.Fatalf("pool hashed version %08x (bits present %v), miner hashed %08x", s.Version, s.HasVersionBits, r.Version)
		}
		if r.Version&0x1fffe000 != 0 {
			rolled++
		}
	}
	if rolled == 0 {
		t.Error("no share carried rolled version bits")
	}
	// A mask narrowed by the pool reaches the miner at once.
	pool.SetVersionMask(0x00ffe000)
	if err := m.WaitEvents(ctxFor(t, 10*time.Second), stratumtest.EventSetVersionMask, 1); err != nil {
		t.Fatal(err)
	}
	if hs := m.Handshake(); hs.VersionMask != 0x00ffe000 {
		t.Errorf("mask after the pool narrowed it: %08x", hs.VersionMask)
	}
	checkAccounting(t, px.Proxy)
}

// TestGrantOnlyWhatThePoolAllows: a pool without version rolling means the
// miner is refused version rolling, never granted bits the pool did not give.
func TestGrantOnlyWhatThePoolAllows(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, NoVersionRolling: true})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.novr"})
	if hs := m.Handshake(); hs.VersionRolling || hs.GrantedMask != 0 {
		t.Fatalf("granted %08x although the pool allows no version rolling", hs.GrantedMask)
	}
	res, err := m.SubmitShares(ctxFor(t, time.Minute), 2)
	if err != nil || res[0].Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("%v %+v", err, res)
	}
	checkAccounting(t, px.Proxy)
}

// TestBadSharesRejectedLocally: each deliberately bad share gets the right
// code and never reaches the pool.
func TestBadSharesRejectedLocally(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.bad"})
	if _, err := m.SubmitOne(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	before := pool.Stats().Submits
	res, err := m.SubmitKinds(ctxFor(t, time.Minute), stratumtest.BadKinds())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.AsExpected() {
			t.Errorf("%v share: got %v code %d %q, want code %d", r.Kind, r.Verdict, r.Code, r.Message, r.Expect)
		}
	}
	if got := pool.Stats().Submits; got != before {
		t.Errorf("%d bad shares reached the pool", got-before)
	}
	a := checkAccounting(t, px.Proxy)
	if a.Rejected != uint64(len(res)) {
		t.Errorf("rejected %d, want %d: %+v", a.Rejected, len(res), a.RejectedBy)
	}
}

// TestSubmitTimeoutIsAnErrorNeverAFakeSuccess.
func TestSubmitTimeoutIsAnErrorNeverAFakeSuccess(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.t"})
	pool.SuppressVerdicts(true)
	r, err := m.SubmitOne(ctxFor(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r.Verdict != stratumtest.VerdictRejected || r.Code != 20 || !strings.Contains(r.Message, "did not answer") {
		t.Fatalf("got %v %d %q, want an error saying the pool did not answer", r.Verdict, r.Code, r.Message)
	}
	a := checkAccounting(t, px.Proxy)
	if a.NoVerdict != 1 || a.PoolAccepted != 0 {
		t.Errorf("accounting %+v", a)
	}
}

// TestBlockCandidateForwardedAndLogged.
func TestBlockCandidateForwarded(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, NBits: stratumtest.EasyNBits})
	px := startProxy(t, []*stratumtest.Pool{pool}, "initial_difficulty = 0.000001", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.block"})
	r, err := m.SubmitOne(ctxFor(t, 30*time.Second))
	if err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("%v %+v", err, r)
	}
	if s := pool.Stats(); s.BlockCandidates != 1 {
		t.Fatalf("pool saw %d block candidates, want 1", s.BlockCandidates)
	}
	if n := metricValue(t, px, "proxyd_block_candidates_total", ""); n != 1 {
		t.Fatalf("proxyd_block_candidates_total = %v", n)
	}
	checkAccounting(t, px.Proxy)
}

// TestExtranonceChangePaths: a miner that subscribed to extranonce changes
// gets mining.set_extranonce and keeps mining; the other is asked to reconnect.
func TestExtranonceChangePaths(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, SetExtranonceToAll: true})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	xn := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.xn"})
	plain := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.plain", AutoReconnect: true})
	ctx := ctxFor(t, 30*time.Second)
	// Both miners hold their first job before the pool changes anything:
	// NewMiner can return before it arrives, and a first job counted after
	// the change would pass for the one that applies the new extranonce.
	for _, m := range []*stratumtest.Miner{xn, plain} {
		if err := m.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Notifies >= 1 }); err != nil {
			t.Fatal(err)
		}
	}
	before := xn.Handshake().Extranonce1
	notifies := xn.Stats().Notifies
	if n := pool.SetExtranonce(func(id uint64) []byte { return []byte{0xee, 0xee, byte(id), 0x01} }, 8); n == 0 {
		t.Fatal("pool notified no session")
	}
	pool.NewJob(true)
	if err := xn.WaitEvents(ctx, stratumtest.EventSetExtranonce, 1); err != nil {
		t.Fatal(err)
	}
	// set_extranonce applies from the next notify.
	if err := xn.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Notifies > notifies }); err != nil {
		t.Fatal(err)
	}
	if err := plain.WaitEvents(ctx, stratumtest.EventReconnect, 1); err != nil {
		t.Fatal(err)
	}
	after := xn.Handshake().Extranonce1
	if after == before || !strings.HasPrefix(after, "eeee") {
		t.Fatalf("extranonce1 %s -> %s, want the pool's new one with our prefix", before, after)
	}
	r, err := xn.SubmitOne(ctx)
	if err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after set_extranonce: %v %+v", err, r)
	}
	if err := plain.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := plain.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Handshakes >= 2 }); err != nil {
		t.Fatal(err)
	}
	r, err = plain.SubmitOne(ctx)
	if err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after reconnect: %v %+v", err, r)
	}
	checkAccounting(t, px.Proxy)
}

// TestSlowMinerDoesNotDelayOthers: a miner that stops reading is dropped
// when its queue fills, and the others keep getting every job.
func TestSlowMinerDoesNotDelayOthers(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, MerkleBranches: 32})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	slow := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.slow", SocketReadBuffer: 4096})
	fast := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.fast"})
	slow.StopReading()
	// ~2.4 KiB each: past the kernel's send buffer (up to 4 MiB on loopback),
	// the miner's 4 KiB receive buffer and our 256 KiB queue.
	const jobs = 3000
	for i := 0; i < jobs; i++ {
		pool.NewJob(false)
	}
	ctx := ctxFor(t, 60*time.Second)
	if err := fast.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Notifies >= jobs+1 }); err != nil {
		t.Fatalf("fast miner got %d of %d jobs: %v", fast.Stats().Notifies, jobs+1, err)
	}
	// The proxy gives up on the slow one (asserted on the proxy's side: the
	// miner may never see the close): at its write deadline, or when its
	// queue overflows with no write progress.
	dropped := func() float64 {
		return metricValue(t, px, "proxyd_miner_disconnects_total", `reason="write_queue_full"`) +
			metricValue(t, px, "proxyd_miner_disconnects_total", `reason="write_failed"`)
	}
	for i := 0; i < 600 && dropped() < 1; i++ {
		pool.NewJob(false) // keep offering work, as a pool would
		time.Sleep(50 * time.Millisecond)
	}
	if dropped() != 1 {
		t.Fatalf("slow miner dropped %v times, want once", dropped())
	}
	r, err := fast.SubmitOne(ctx)
	if err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("%v %+v", err, r)
	}
}

// TestHostileInputIsolated: garbage, oversized lines and floods are answered
// or disconnected without affecting a well-behaved miner.
func TestHostileInputIsolated(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "max_protocol_errors = 3\nmax_line_bytes = 4096", "")
	good := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleWhatsminer, User: "acct.good"})
	ctx := ctxFor(t, 60*time.Second)

	garbage := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.garbage"})
	if err := garbage.SendGarbage(10); err != nil {
		t.Fatal(err)
	}
	if err := garbage.WaitDisconnected(ctx); err != nil {
		t.Fatalf("garbage sender not disconnected: %v", err)
	}

	big := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.big"})
	_ = big.SendOversized(1 << 20)
	if err := big.WaitDisconnected(ctx); err != nil {
		t.Fatalf("oversized line not refused: %v", err)
	}

	flood := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.flood"})
	if err := flood.Flood(5000, "mining.ping", []any{}); err != nil {
		t.Fatal(err)
	}
	// Unknown methods are answered with error 20 and the miner stays.
	raw, err := flood.Call(ctx, "mining.nonsense", []any{})
	if err == nil || !strings.Contains(err.Error(), "unknown method") {
		t.Errorf("unknown method: %s, %v; want error 20 naming it", raw, err)
	}
	r, err := good.SubmitOne(ctx)
	if err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("good miner disturbed: %v %+v", err, r)
	}
	if metricValue(t, px, "proxyd_miner_disconnects_total", `reason="protocol_errors"`) < 1 ||
		metricValue(t, px, "proxyd_miner_disconnects_total", `reason="line_too_long"`) < 1 {
		t.Error("disconnect reasons not counted")
	}
	checkAccounting(t, px.Proxy)
}

// TestConnectionLimits: max_connections_per_ip refuses the extra connection
// with a counted reason; the admitted ones keep working.
func TestConnectionLimits(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "max_connections = 10\nmax_connections_per_ip = 2", "")
	a := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.a"})
	_ = stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.b"})
	if _, err := stratumtest.DialMiner(ctxFor(t, 5*time.Second), px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.c"}); err == nil {
		t.Fatal("third connection from one IP was served")
	}
	if metricValue(t, px, "proxyd_connections_refused_total", `reason="max_connections_per_ip"`) != 1 {
		t.Error("refusal not counted")
	}
	other := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.d", LocalAddr: "127.0.0.2"})
	for _, m := range []*stratumtest.Miner{a, other} {
		if r, err := m.SubmitOne(ctxFor(t, 30*time.Second)); err != nil || r.Verdict != stratumtest.VerdictAccepted {
			t.Fatalf("%v %+v", err, r)
		}
	}
}

// TestWhatsminerSuggestFirstGetsItsDifficulty: suggest_difficulty before
// subscribe is answered and honoured within bounds.
func TestWhatsminerSuggestFirstGetsItsDifficulty(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-3})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleWhatsminer, User: "acct.ws", SuggestDifficulty: 2e-6, StrictConfigure: true})
	if err := m.WaitEvents(ctxFor(t, 10*time.Second), stratumtest.EventSetDifficulty, 1); err != nil {
		t.Fatal(err)
	}
	if d := m.Difficulty(); d != 2e-6 {
		t.Fatalf("difficulty %g, want the suggested 2e-6", d)
	}
	if r, err := m.SubmitOne(ctxFor(t, 30*time.Second)); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("%v %+v", err, r)
	}
	checkAccounting(t, px.Proxy)
}

// TestAPIViews: /api/v1/workers and /api/v1/pools describe what runs.
func TestAPIViews(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.api"})
	if _, err := m.SubmitShares(ctxFor(t, 30*time.Second), 3); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	px.RegisterAPI(mux)
	get := func(path string, v any) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 {
			t.Fatalf("%s: %d", path, rec.Code)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatal(err)
		}
	}
	var w struct{ Workers []WorkerView }
	get("/api/v1/workers", &w)
	if len(w.Workers) != 1 || w.Workers[0].Name != "acct.api" || w.Workers[0].Live.Accepted != 3 ||
		len(w.Workers[0].Connections) != 1 || w.Workers[0].Connections[0].UserAgent != "bmminer/2.0.0" ||
		w.Workers[0].Connections[0].VersionMask != "1fffe000" || w.Workers[0].HashrateHs <= 0 {
		t.Fatalf("workers view: %+v", w.Workers)
	}
	var p struct{ Pools []PoolView }
	get("/api/v1/pools", &p)
	if len(p.Pools) != 1 || !p.Pools[0].Healthy || !p.Pools[0].Carrying || p.Pools[0].TargetShare != 1 || p.Pools[0].ActualShare != 1 || len(p.Pools[0].Sessions) != 1 || p.Pools[0].Sessions[0].Accepted != 3 ||
		p.Pools[0].Sessions[0].Miners != 1 || p.Pools[0].Sessions[0].SubmitLatencyMs <= 0 {
		t.Fatalf("pools view: %+v", p.Pools)
	}
	m.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		get("/api/v1/workers", &w)
		if len(w.Workers) == 1 && len(w.Workers[0].Connections) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(w.Workers) != 1 || w.Workers[0].Disconnected == nil || w.Workers[0].Disconnected.Accepted != 3 {
		t.Fatalf("a disconnected worker's totals must survive: %+v", w.Workers)
	}
}

// TestShutdownWaitsForVerdicts: Stop lets forwarded shares get their verdict.
func TestShutdownWaitsForVerdicts(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.bye"})
	if _, err := m.SubmitOne(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	pool.DelayResponses(300 * time.Millisecond)
	sub, err := m.Submit(ctxFor(t, 30*time.Second), stratumtest.SubmitRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for px.inFlight() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := px.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}()
	r, err := sub.Wait(ctxFor(t, 10*time.Second))
	if err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("in-flight share during shutdown: %v %+v", err, r)
	}
	wg.Wait()
	if _, err := net.DialTimeout("tcp", px.addr, time.Second); err == nil {
		t.Error("still accepting after Stop")
	}
	checkAccounting(t, px.Proxy)
}

// metricValue sums the samples of a metric family whose labels contain match.
func metricValue(t *testing.T, px *testProxy, name, match string) float64 {
	t.Helper()
	mfs, err := px.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if !strings.Contains(strings.Join(labels, ","), match) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

var _ = stratum.CodeOther

// TestSessionLossMovesMiners: when the pool drops the session, a miner that
// takes set_extranonce is moved to a fresh session on its open connection;
// the other is asked to reconnect and comes back. No share is reported
// accepted that the pool did not accept.
func TestSessionLossMovesMiners(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	xn := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.xn"})
	plain := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleBitaxe, User: "acct.bitaxe", AutoReconnect: true})
	ctx := ctxFor(t, 60*time.Second)
	var all []stratumtest.SubmitResult
	for _, m := range []*stratumtest.Miner{xn, plain} {
		r, err := m.SubmitOne(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	before := xn.Handshake().Extranonce1
	notifies := xn.Stats().Notifies
	pool.DropAll()
	if err := xn.WaitEvents(ctx, stratumtest.EventSetExtranonce, 1); err != nil {
		t.Fatal(err)
	}
	// The new extranonce applies from the next job, which follows it.
	if err := xn.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Notifies > notifies }); err != nil {
		t.Fatal(err)
	}
	if err := plain.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Handshakes >= 2 }); err != nil {
		t.Fatal(err)
	}
	if xn.Stats().Connects != 1 {
		t.Errorf("the extranonce-subscribed miner reconnected (%d connects); it should have kept its connection", xn.Stats().Connects)
	}
	for _, m := range []*stratumtest.Miner{xn, plain} {
		r, err := m.SubmitOne(ctx)
		if err != nil || r.Verdict != stratumtest.VerdictAccepted {
			t.Fatalf("after the move: %v %+v", err, r)
		}
		all = append(all, r)
	}
	if after := xn.Handshake().Extranonce1; after == before {
		t.Errorf("extranonce1 unchanged (%s) after moving to a new session", after)
	}
	if un := pool.Unaccounted(all, 1e-5); len(un) > 0 {
		t.Fatalf("reported accepted but not accepted by the pool: %+v", un)
	}
	checkAccounting(t, px.Proxy)
}
