package stratumsim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
)

// testDiff keeps shares cheap under the race detector (~4,300 hashes).
const testDiff = 1e-6

// bound is the generous bound for waits that only fail on real hangs.
const bound = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	t.Cleanup(cancel)
	return ctx
}

func newTestPool(t *testing.T, opts PoolOptions) *Pool {
	t.Helper()
	if opts.InitialDifficulty == 0 {
		opts.InitialDifficulty = testDiff
	}
	return NewPool(t, opts)
}

// checkAccepted verifies, from the pool's side, that every result the
// miner got true for is an accepted pool share whose hash meets the target.
func checkAccepted(t *testing.T, p *Pool, results []SubmitResult) {
	t.Helper()
	byHash := map[[32]byte]Share{}
	for _, s := range p.AcceptedShares() {
		byHash[s.Hash] = s
	}
	for _, r := range results {
		if r.Verdict != VerdictAccepted {
			continue
		}
		s, ok := byHash[r.Hash]
		if !ok {
			t.Errorf("share %d (%s) accepted by the miner but not recorded by the pool", r.Seq, r.Hash)
			continue
		}
		if h := blockchain.HashToBig(&s.Hash); h.Cmp(DifficultyTarget(s.Target)) > 0 {
			t.Errorf("pool accepted %s above target %g", s.Hash, s.Target)
		}
		if s.Version != r.Version || s.Nonce != r.Nonce || s.Extranonce2 != r.Extranonce2 {
			t.Errorf("pool header fields %08x/%08x/%s differ from miner's %08x/%08x/%s",
				s.Version, s.Nonce, s.Extranonce2, r.Version, r.Nonce, r.Extranonce2)
		}
	}
	if p.Unaccounted(results, 0) != nil {
		t.Errorf("unaccounted shares: %v", p.Unaccounted(results, 0))
	}
}

func TestStylesHandshakeAndShares(t *testing.T) {
	tests := []struct {
		style     Style
		methods   []string // first methods the pool must see, in order
		rolling   bool
		xnsub     bool
		subParams string
	}{
		{StylePlain, []string{"mining.subscribe", "mining.authorize"}, false, false, `["cpuminer/2.5.1"]`},
		{StyleAntminer, []string{"mining.configure", "mining.subscribe", "mining.authorize"}, true, false, `["bmminer/2.0.0"]`},
		{StyleWhatsminer, []string{"mining.suggest_difficulty", "mining.subscribe", "mining.authorize", "mining.configure"}, true, false, `["whatsminer/v1.0",null]`},
		{StyleBraiinsOS, []string{"mining.subscribe", "mining.configure", "mining.authorize"}, true, false, ""},
		{StyleBitaxe, []string{"mining.subscribe", "mining.configure", "mining.authorize", "mining.suggest_difficulty"}, true, false, `["bitaxe/BM1366/v2.4.0"]`},
		{StyleNiceHash, []string{"mining.configure", "mining.subscribe", "mining.extranonce.subscribe", "mining.authorize"}, true, true, `["NiceHash/1.0.0"]`},
	}
	for _, tc := range tests {
		t.Run(tc.style.String(), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			p := newTestPool(t, PoolOptions{Seed: 1})
			m := NewMiner(t, p.Addr(), MinerOptions{Style: tc.style, User: "acct." + tc.style.String(), Seed: 2})
			if err := m.WaitJob(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := m.SubmitShares(ctx, 5)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Verdict != VerdictAccepted {
					t.Fatalf("share %d: %s %d %s", r.Seq, r.Verdict, r.Code, r.Message)
				}
				if r.ShareDifficulty < testDiff {
					t.Fatalf("share difficulty %g below %g", r.ShareDifficulty, testDiff)
				}
			}
			checkAccepted(t, p, res)
			if st := p.Stats(); st.Accepted != 5 || st.Rejected != 0 {
				t.Fatalf("pool stats %+v", st)
			}
			if u := p.Users()["acct."+tc.style.String()]; u.Accepted != 5 {
				t.Fatalf("pool user stats %+v", u)
			}

			ss := p.Sessions()
			if len(ss) != 1 {
				t.Fatalf("sessions %v", ss)
			}
			s := ss[0]
			if !slices.Equal(s.Methods[:len(tc.methods)], tc.methods) {
				t.Errorf("method order %v, want prefix %v", s.Methods, tc.methods)
			}
			if tc.subParams != "" && s.SubscribeParams != tc.subParams {
				t.Errorf("subscribe params %s, want %s", s.SubscribeParams, tc.subParams)
			}
			if tc.style == StyleBraiinsOS && s.SubscribeParams != fmt.Sprintf(`["bosminer-plus-tuner/23.12",null,"%s",null]`, p.Addr()) {
				t.Errorf("braiins subscribe params %s", s.SubscribeParams)
			}
			if s.VersionRolling != tc.rolling || s.ExtranonceSubscribed != tc.xnsub {
				t.Errorf("session %+v", s)
			}
			hs := m.Handshake()
			if hs.Extranonce1 != s.Extranonce1 || hs.Extranonce2Size != 8 || hs.VersionRolling != tc.rolling {
				t.Errorf("handshake %+v vs session %+v", hs, s)
			}
			if tc.rolling {
				if hs.VersionMask != DefaultVersionMask {
					t.Errorf("mask %08x", hs.VersionMask)
				}
				// Version bits reach the pool, inside the mask.
				rolled := 0
				for _, sh := range p.AcceptedShares() {
					if !sh.HasVersionBits || sh.VersionBits&^DefaultVersionMask != 0 {
						t.Errorf("share version bits %08x (sent %v)", sh.VersionBits, sh.HasVersionBits)
					}
					if sh.VersionBits != 0 && sh.Version != DefaultJobVersion|sh.VersionBits {
						t.Errorf("header version %08x for bits %08x", sh.Version, sh.VersionBits)
					}
					if sh.VersionBits != 0 {
						rolled++
					}
				}
				if rolled == 0 {
					t.Error("no rolled version bits reached the pool")
				}
			} else {
				for _, sh := range p.AcceptedShares() {
					if sh.HasVersionBits || sh.Version != DefaultJobVersion {
						t.Errorf("non-rolling miner sent version %08x", sh.Version)
					}
				}
			}
			// Events: set_difficulty before the first notify.
			evs := m.Events()
			var kinds []EventKind
			for _, e := range evs {
				kinds = append(kinds, e.Kind)
			}
			iDiff, iNotify := slices.Index(kinds, EventSetDifficulty), slices.Index(kinds, EventNotify)
			if iDiff < 0 || iNotify < iDiff {
				t.Errorf("events %v", kinds)
			}
			if n := evs[iNotify]; !n.Clean || n.PoolJobSeq != p.CurrentJob().Seq || n.Difficulty != testDiff {
				t.Errorf("notify event %+v, pool job %+v", n, p.CurrentJob())
			}
		})
	}
}

func TestBadSharesRejected(t *testing.T) {
	for _, style := range []Style{StyleAntminer, StylePlain} {
		t.Run(style.String(), func(t *testing.T) {
			ctx := testCtx(t)
			p := newTestPool(t, PoolOptions{})
			m := NewMiner(t, p.Addr(), MinerOptions{Style: style})
			if err := m.WaitJob(ctx); err != nil {
				t.Fatal(err)
			}
			kinds := append([]ShareKind{ShareGood}, BadKinds()...)
			res, err := m.SubmitKinds(ctx, kinds)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if !r.AsExpected() {
					t.Errorf("%s: verdict %s code %d %q, want code %d", r.Kind, r.Verdict, r.Code, r.Message, r.Expect)
				}
			}
			st := m.Stats()
			if st.Unexpected != 0 || st.Accepted != 1 || st.Rejected != uint64(len(BadKinds())) {
				t.Errorf("miner stats %+v", st)
			}
			codes := p.RejectsByCode()
			want := map[int]uint64{20: 2, 21: 1, 22: 1, 23: 1, 24: 1}
			for c, n := range want {
				if codes[c] != n {
					t.Errorf("pool rejects by code %v, want %v", codes, want)
					break
				}
			}
		})
	}
}

func TestStaleAfterCleanJob(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer})
	if err := m.WaitJob(ctx); err != nil {
		t.Fatal(err)
	}
	old, _ := m.CurrentJob()
	// A non-clean job keeps the old one valid.
	p.NewJob(false)
	if err := m.WaitEvents(ctx, EventNotify, 2); err != nil {
		t.Fatal(err)
	}
	sub, err := m.Submit(ctx, SubmitRequest{JobID: old.ID})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := sub.Wait(ctx); r.Verdict != VerdictAccepted {
		t.Fatalf("share for previous non-clean job: %+v", r)
	}
	// A clean job makes it stale.
	p.NewJob(true)
	if err := m.WaitEvents(ctx, EventNotify, 3); err != nil {
		t.Fatal(err)
	}
	if jobs := m.Jobs(); !jobs[0].Superseded || jobs[2].Superseded {
		t.Fatalf("jobs %+v", jobs)
	}
	sub, err = m.Submit(ctx, SubmitRequest{Kind: ShareStale, JobID: old.ID})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := sub.Wait(ctx); !r.AsExpected() || r.JobID != old.ID {
		t.Fatalf("stale share: %+v", r)
	}
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted {
		t.Fatalf("share for the new job: %+v %v", r, err)
	}
}

func TestDifficultyAppliesToNextJob(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleBitaxe})
	if err := m.WaitJob(ctx); err != nil {
		t.Fatal(err)
	}
	p.SetDifficulty(4 * testDiff)
	if err := m.WaitEvents(ctx, EventSetDifficulty, 2); err != nil {
		t.Fatal(err)
	}
	// The current job is still at the old difficulty for the miner.
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted || r.Difficulty != testDiff {
		t.Fatalf("%+v %v", r, err)
	}
	p.NewJob(false)
	if err := m.WaitEvents(ctx, EventNotify, 2); err != nil {
		t.Fatal(err)
	}
	r, err := m.SubmitOne(ctx)
	if err != nil || r.Verdict != VerdictAccepted || r.Difficulty != 4*testDiff || r.ShareDifficulty < 4*testDiff {
		t.Fatalf("%+v %v", r, err)
	}
	if s := p.AcceptedShares(); s[len(s)-1].Target != 4*testDiff {
		t.Fatalf("pool target %g", s[len(s)-1].Target)
	}
}

func TestSetExtranonce(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	nh := NewMiner(t, p.Addr(), MinerOptions{Style: StyleNiceHash, User: "nh"})
	am := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "am"})
	for _, m := range []*Miner{nh, am} {
		if err := m.WaitJob(ctx); err != nil {
			t.Fatal(err)
		}
	}
	oldE1 := nh.Handshake().Extranonce1
	if n := p.SetExtranonce(func(id uint64) []byte { return []byte{0xab, 0xcd, 0xef, byte(id)} }, 6); n != 1 {
		t.Fatalf("notified %d sessions, want only the subscriber", n)
	}
	if err := nh.WaitEvents(ctx, EventSetExtranonce, 1); err != nil {
		t.Fatal(err)
	}
	ev, _ := nh.LastEvent(EventSetExtranonce)
	if ev.Extranonce2Size != 6 || ev.Extranonce1[:6] != "abcdef" {
		t.Fatalf("event %+v", ev)
	}
	// Until the next notify the old extranonce is in use.
	if r, err := nh.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted || r.Extranonce1 != oldE1 {
		t.Fatalf("share before the next notify: %+v %v", r, err)
	}
	p.NewJob(false)
	if err := nh.WaitEvents(ctx, EventNotify, 2); err != nil {
		t.Fatal(err)
	}
	r, err := nh.SubmitOne(ctx)
	if err != nil || r.Verdict != VerdictAccepted || r.Extranonce1 != ev.Extranonce1 || len(r.Extranonce2) != 12 {
		t.Fatalf("share after set_extranonce: %+v %v", r, err)
	}
	s := p.AcceptedShares()
	if last := s[len(s)-1]; last.Extranonce1 != ev.Extranonce1 {
		t.Fatalf("pool used extranonce1 %s", last.Extranonce1)
	}
	if am.Count(EventSetExtranonce) != 0 {
		t.Fatal("non-subscriber got set_extranonce")
	}
}

func TestVersionMaskChange(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{VersionMask: 0x1fffe000})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, VersionMask: 0x1fffe000})
	if err := m.WaitJob(ctx); err != nil {
		t.Fatal(err)
	}
	if n := p.SetVersionMask(0x00ffe000); n != 1 {
		t.Fatalf("notified %d", n)
	}
	if err := m.WaitEvents(ctx, EventSetVersionMask, 1); err != nil {
		t.Fatal(err)
	}
	if hs := m.Handshake(); hs.VersionMask != 0x00ffe000 {
		t.Fatalf("mask %08x", hs.VersionMask)
	}
	res, err := m.SubmitShares(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Verdict != VerdictAccepted || r.VersionBits&^0x00ffe000 != 0 {
			t.Fatalf("%+v", r)
		}
	}
}

func TestGrantIsIntersection(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{VersionMask: 0x1fffe000})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, VersionMask: 0x00fff000})
	if hs := m.Handshake(); hs.GrantedMask != 0x00ffe000 || hs.VersionMask != 0x00ffe000 {
		t.Fatalf("%+v", hs)
	}
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted {
		t.Fatalf("%+v %v", r, err)
	}
	q := newTestPool(t, PoolOptions{NoVersionRolling: true})
	m2 := NewMiner(t, q.Addr(), MinerOptions{Style: StyleWhatsminer})
	if hs := m2.Handshake(); hs.VersionRolling || string(hs.ConfigureResult) != `{"version-rolling":false}` {
		t.Fatalf("%+v", hs)
	}
	if r, err := m2.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted || r.HasVersionBits {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestReconnect(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	other := newTestPool(t, PoolOptions{})
	stay := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "stay"})
	follow := NewMiner(t, p.Addr(), MinerOptions{Style: StyleBraiinsOS, User: "follow", FollowRedirect: true})
	ignore := NewMiner(t, p.Addr(), MinerOptions{Style: StylePlain, User: "ignore", IgnoreReconnect: true})

	if n := p.SendReconnect("127.0.0.1", other.Port(), 0); n != 3 {
		t.Fatalf("sent to %d", n)
	}
	for _, m := range []*Miner{stay, follow} {
		if err := m.WaitHandshakes(ctx, 2); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitJob(ctx); err != nil {
			t.Fatal(err)
		}
		if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted || r.Conn != 2 {
			t.Fatalf("%s after reconnect: %+v %v", m.User(), r, err)
		}
	}
	if err := ignore.WaitEvents(ctx, EventReconnect, 1); err != nil {
		t.Fatal(err)
	}
	if ignore.Stats().Connects != 1 {
		t.Fatal("ignoring miner reconnected")
	}
	if stay.Addr() != p.Addr() || follow.Addr() != other.Addr() {
		t.Fatalf("addrs %s %s", stay.Addr(), follow.Addr())
	}
	if ev, _ := follow.LastEvent(EventReconnect); ev.Host != "127.0.0.1" || ev.Port != other.Port() {
		t.Fatalf("event %+v", ev)
	}
	if other.Users()["follow"].Accepted != 1 || p.Users()["stay"].Accepted != 1 {
		t.Fatalf("users %v %v", p.Users(), other.Users())
	}
	// Reconnect with no params: back to the same pool.
	stay2 := NewMiner(t, other.Addr(), MinerOptions{Style: StyleWhatsminer, User: "w"})
	e1 := stay2.Handshake().Extranonce1
	other.SendReconnect("", 0, 0)
	if err := stay2.WaitHandshakes(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Whatsminer offers its previous extranonce1 as session id.
	found := false
	for _, s := range other.Sessions() {
		if len(s.Users) > 0 && s.Users[0] == "w" && s.SubscribeParams == fmt.Sprintf(`["whatsminer/v1.0","%s"]`, e1) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no resumed whatsminer session: %v", other.Sessions())
	}
}

func TestRestartSamePort(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	addr := p.Addr()
	m := NewMiner(t, addr, MinerOptions{Style: StyleAntminer, AutoReconnect: true})
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted {
		t.Fatalf("%+v %v", r, err)
	}
	oldJob := p.CurrentJob()
	p.Stop()
	if err := m.WaitEvents(ctx, EventDisconnected, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("restarted on %s, was %s", p.Addr(), addr)
	}
	if err := m.WaitHandshakes(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitJob(ctx); err != nil {
		t.Fatal(err)
	}
	if j := p.CurrentJob(); j.Seq == oldJob.Seq || !j.Clean || j.PrevHash == oldJob.PrevHash {
		t.Fatalf("job after restart %+v (before %+v)", j, oldJob)
	}
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted {
		t.Fatalf("%+v %v", r, err)
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitHandshakes(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.SessionsTotal != 3 || st.SessionsOpen != 1 || st.Accepted != 2 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

func TestNoJobs(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{NoJobs: true})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer})
	if !m.Ready() || m.Handshake().Authorized != true {
		t.Fatal("handshake incomplete")
	}
	p.NewJob(true)
	// Round trip: once ping is answered, anything sent before it arrived.
	if res, err := m.Call(ctx, "mining.ping", nil); err != nil || string(res) != `"pong"` {
		t.Fatalf("ping: %s %v", res, err)
	}
	if m.Count(EventNotify) != 0 {
		t.Fatal("NoJobs pool sent a job")
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := m.Submit(short, SubmitRequest{}); !errors.Is(err, ErrNoJob) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("submit without job: %v", err)
	}
	if st := p.Stats(); st.SessionsReady != 1 || st.NotifiesSent != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestRejectNextAndRejectFunc(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer})
	p.RejectNext(2, 23, "forced low")
	res, err := m.SubmitShares(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Code != 23 || res[1].Message != "forced low" || res[2].Verdict != VerdictAccepted {
		t.Fatalf("%+v", res)
	}
	shares := p.Shares()
	if !shares[0].Forced || !shares[0].Hashed || shares[2].Forced {
		t.Fatalf("%+v", shares)
	}
	var seen []Share
	p.SetRejectFunc(func(s Share) (int, string, bool) {
		seen = append(seen, s) // called from the one session goroutine
		return 29, "custom", s.Nonce%2 == 0
	})
	res, err = m.SubmitShares(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if want := r.Nonce%2 == 0; (r.Code == 29) != want {
			t.Fatalf("nonce %d: %+v", r.Nonce, r)
		}
	}
	p.SetRejectFunc(nil)
	if len(seen) != 6 {
		t.Fatalf("reject func saw %d shares", len(seen))
	}
}

func TestDelayAndSuppress(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer})
	p.DelayResponses(150 * time.Millisecond)
	r, err := m.SubmitOne(ctx)
	if err != nil || r.Verdict != VerdictAccepted || r.Latency() < 150*time.Millisecond {
		t.Fatalf("%+v %v (latency %v)", r, err, r.Latency())
	}
	// Other traffic is not delayed behind the verdict.
	p.DelayResponses(time.Hour)
	sub, err := m.Submit(ctx, SubmitRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Call(ctx, "mining.ping", nil); err != nil {
		t.Fatal(err)
	}
	p.DelayResponses(0)
	p.SuppressVerdicts(true)
	sub2, err := m.Submit(ctx, SubmitRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitSubmits(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.Pending != 2 {
		t.Fatalf("%+v", st)
	}
	if sh := p.Shares(); sh[2].Answered || !sh[2].Accepted {
		t.Fatalf("%+v", sh[2])
	}
	m.Disconnect()
	for _, s := range []*Submission{sub, sub2} {
		if r, err := s.Wait(ctx); err != nil || r.Verdict != VerdictLost {
			t.Fatalf("%+v %v", r, err)
		}
	}
	if st := m.Stats(); st.Lost != 2 || st.Pending != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestAuthorizeRejected(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{Authorize: func(user, pass string) bool { return user != "bad" }})
	_, err := DialMiner(ctx, p.Addr(), MinerOptions{Style: StyleAntminer, User: "bad"})
	if !errors.Is(err, ErrAuthorizeRejected) {
		t.Fatalf("got %v", err)
	}
	m, err := DialMiner(ctx, p.Addr(), MinerOptions{Style: StyleAntminer, User: "bad", NoWait: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctx); !errors.Is(err, ErrAuthorizeRejected) {
		t.Fatalf("got %v", err)
	}
	if _, err := m.Submit(ctx, SubmitRequest{}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("got %v", err)
	}
	// The connection stays open for inspection: submit as raw bytes.
	if err := m.SendRaw([]byte(`{"id":9,"method":"mining.submit","params":["bad","1","00","00000000","00000000"]}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, func(s PoolStats) bool { return s.Rejected == 1 }); err != nil {
		t.Fatal(err)
	}
	if p.RejectsByCode()[CodeUnauthorized] != 1 {
		t.Fatalf("%v", p.RejectsByCode())
	}
	m2 := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "good"})
	if !m2.Ready() {
		t.Fatal("good user not ready")
	}
}

func TestBlockCandidates(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{NBits: EasyNBits})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer})
	if _, err := m.SubmitShares(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.BlockCandidates != 3 {
		t.Fatalf("%+v", st)
	}
	q := newTestPool(t, PoolOptions{})
	m2 := NewMiner(t, q.Addr(), MinerOptions{Style: StyleAntminer})
	if _, err := m2.SubmitShares(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.BlockCandidates != 0 || st.Accepted != 3 {
		t.Fatalf("%+v", st)
	}
}

func TestOptionsShapes(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{
		Extranonce1Size: 8, Extranonce2Size: 1, MerkleBranches: -1, KeepJobs: 2, Seed: 7,
	})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleBitaxe, ReuseSubmitID: true, Pipeline: true})
	hs := m.Handshake()
	if len(hs.Extranonce1) != 16 || hs.Extranonce2Size != 1 {
		t.Fatalf("%+v", hs)
	}
	// 300 shares on a 1-byte extranonce2 roll ntime; same-id submits are
	// matched in order.
	res, err := m.SubmitShares(ctx, 300)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Verdict != VerdictAccepted {
			t.Fatalf("%+v", r)
		}
	}
	checkAccepted(t, p, res)
	// KeepJobs=2: the job two non-clean jobs ago is stale.
	old, _ := m.CurrentJob()
	p.NewJob(false)
	p.NewJob(false)
	if err := m.WaitEvents(ctx, EventNotify, 3); err != nil {
		t.Fatal(err)
	}
	sub, err := m.Submit(ctx, SubmitRequest{JobID: old.ID})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := sub.Wait(ctx); r.Code != CodeJobNotFound {
		t.Fatalf("%+v", r)
	}
	// Same seed, same extranonce1 sequence.
	q := newTestPool(t, PoolOptions{Extranonce1Size: 8, Seed: 7})
	m2 := NewMiner(t, q.Addr(), MinerOptions{})
	if m2.Handshake().Extranonce1 != hs.Extranonce1 {
		t.Fatal("extranonce1 not deterministic by seed")
	}
}

func TestJobIntervalAndFanOutTimes(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{JobInterval: 20 * time.Millisecond})
	ms := []*Miner{
		NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "a"}),
		NewMiner(t, p.Addr(), MinerOptions{Style: StyleWhatsminer, User: "b"}),
	}
	for _, m := range ms {
		if err := m.WaitEvents(ctx, EventNotify, 4); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		for _, ev := range m.EventsOf(EventNotify) {
			j, ok := p.Job(ev.PoolJobSeq)
			if !ok || j.ID != ev.JobID || j.FirstSent.IsZero() || ev.At.Before(j.CreatedAt) {
				t.Fatalf("event %+v job %+v", ev, j)
			}
		}
	}
}
