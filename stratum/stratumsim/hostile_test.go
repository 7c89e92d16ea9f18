package stratumsim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMisbehaviours(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{MaxLineBytes: 16 << 10})

	t.Run("garbage", func(t *testing.T) {
		m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "garbage"})
		before := p.Stats().Malformed
		if err := m.SendGarbage(5); err != nil {
			t.Fatal(err)
		}
		if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted {
			t.Fatalf("%+v %v", r, err)
		}
		if got := p.Stats().Malformed - before; got != 5 {
			t.Fatalf("malformed %d", got)
		}
		if m.Stats().UnexpectedResponses != 5 { // the pool's id:null error answers
			t.Fatalf("%+v", m.Stats())
		}
	})
	t.Run("flood", func(t *testing.T) {
		m := NewMiner(t, p.Addr(), MinerOptions{Style: StylePlain, User: "flood"})
		if err := m.Flood(2000, "mining.ping", nil); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitFor(ctx, func(s MinerStats) bool { return s.UnexpectedResponses >= 2000 }); err != nil {
			t.Fatal(err)
		}
		if res, err := m.Call(ctx, "mining.bogus", []any{1}); !isCode(err, CodeOther) {
			t.Fatalf("unknown method: %s %v", res, err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		m := NewMiner(t, p.Addr(), MinerOptions{Style: StylePlain, User: "big"})
		_ = m.SendOversized(1 << 20) // fails once the pool hangs up
		if err := m.WaitDisconnected(ctx); err != nil {
			t.Fatal(err)
		}
		if m.Connected() {
			t.Fatal("still connected")
		}
	})
	t.Run("slow reader", func(t *testing.T) {
		q := newTestPool(t, PoolOptions{MaxQueuedLines: 64})
		m := NewMiner(t, q.Addr(), MinerOptions{Style: StylePlain, User: "slow", SocketReadBuffer: 4096})
		if err := m.WaitJob(ctx); err != nil {
			t.Fatal(err)
		}
		m.StopReading()
		id := q.sessionOf(t, "slow")
		text := strings.Repeat("x", 8<<10)
		for i := 0; i < 100_000 && q.hasUser("slow"); i++ {
			q.SendTo(id, "client.show_message", []any{text})
			if i%32 == 31 {
				time.Sleep(time.Millisecond) // let the writer fill the socket
			}
		}
		if q.hasUser("slow") {
			t.Fatal("pool kept a session that stopped reading")
		}
		if q.Stats().BytesOut < 8<<10 {
			t.Fatalf("pool wrote only %d bytes", q.Stats().BytesOut)
		}
		// The kernel may drop the pool's orphaned socket without telling
		// this side, so do not wait for a disconnect here.
		m.ResumeReading()
	})
	t.Run("idle and abort", func(t *testing.T) {
		before := p.Stats().SessionsOpen
		idle := NewMiner(t, p.Addr(), MinerOptions{Style: StyleIdle})
		if err := p.WaitFor(ctx, func(s PoolStats) bool { return s.SessionsOpen == before+1 }); err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Sessions() {
			if len(s.Methods) == 0 && s.Subscribed {
				t.Fatal("idle session subscribed")
			}
		}
		idle.Abort()
		if err := p.WaitFor(ctx, func(s PoolStats) bool { return s.SessionsOpen == before }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("drop all", func(t *testing.T) {
		m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "drop", AutoReconnect: true})
		if n := p.DropAll(); n < 1 {
			t.Fatalf("dropped %d", n)
		}
		if err := m.WaitHandshakes(ctx, 2); err != nil {
			t.Fatal(err)
		}
		if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != VerdictAccepted {
			t.Fatalf("%+v %v", r, err)
		}
	})
	t.Run("show message and unknown", func(t *testing.T) {
		m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, User: "msg"})
		p.ShowMessage("hello")
		p.Broadcast("client.get_version", []any{})
		if err := m.WaitEvents(ctx, EventOther, 1); err != nil {
			t.Fatal(err)
		}
		if ev, _ := m.LastEvent(EventShowMessage); ev.Message != "hello" {
			t.Fatalf("%+v", ev)
		}
	})
}

func isCode(err error, code int) bool {
	var e *RPCError
	return errors.As(err, &e) && e.Code == code
}

func (p *Pool) sessionOf(t *testing.T, user string) uint64 {
	t.Helper()
	for _, s := range p.Sessions() {
		if len(s.Users) > 0 && s.Users[0] == user {
			return s.ID
		}
	}
	return 0
}

func (p *Pool) hasUser(user string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.sessions {
		if s.userSet[user] {
			return true
		}
	}
	return false
}

// fakePool answers a handshake with a configure result holding an
// extension nobody asked for.
func fakePool(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var msg inMessage
					if json.Unmarshal(sc.Bytes(), &msg) != nil {
						return
					}
					var res any = true
					switch msg.Method {
					case "mining.configure":
						res = map[string]any{"version-rolling": true, "version-rolling.mask": "1fffe000", "minimum-difficulty": true}
					case "mining.subscribe":
						res = []any{[]any{}, "01020304", 8}
					}
					if _, err := c.Write(responseLine(msg.ID, res, nil)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestUnrequestedConfigureKeys(t *testing.T) {
	ctx := testCtx(t)
	addr := fakePool(t)
	_, err := DialMiner(ctx, addr, MinerOptions{Style: StyleWhatsminer})
	if !errors.Is(err, ErrUnrequestedExtension) {
		t.Fatalf("whatsminer: %v", err)
	}
	m := NewMiner(t, addr, MinerOptions{Style: StyleAntminer})
	if hs := m.Handshake(); len(hs.UnrequestedKeys) != 1 || hs.UnrequestedKeys[0] != "minimum-difficulty" || !hs.VersionRolling {
		t.Fatalf("%+v", hs)
	}
	if _, err := DialMiner(ctx, addr, MinerOptions{Style: StyleBitaxe, StrictConfigure: true}); !errors.Is(err, ErrUnrequestedExtension) {
		t.Fatalf("strict bitaxe: %v", err)
	}
}

func TestFleet200(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	f := NewFleet(t, p.Addr(), FleetOptions{Miners: 200, Styles: AllStyles(), Miner: MinerOptions{User: "farm"}, Seed: 3})
	if err := p.WaitReady(ctx, 200); err != nil {
		t.Fatal(err)
	}
	res, err := f.SubmitEach(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 200 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.Verdict != VerdictAccepted {
			t.Fatalf("%+v", r)
		}
	}
	if st := p.Stats(); st.Accepted != 200 || st.Rejected != 0 || st.SessionsOpen != 200 {
		t.Fatalf("%+v", st)
	}
	if u := p.Users(); len(u) != 200 || u["farm.w17"].Accepted != 1 {
		t.Fatalf("%d users", len(u))
	}
	if bad := p.Unaccounted(res, 0); len(bad) != 0 {
		t.Fatalf("unaccounted %v", bad)
	}
	// Fan-out: one job reaches all 200.
	j := p.NewJob(true)
	if err := f.WaitFor(ctx, func(s FleetStats) bool { return s.CleanNotifies >= 400 }); err != nil {
		t.Fatal(err)
	}
	for _, m := range f.Miners() {
		if cur, _ := m.CurrentJob(); cur.PoolJobSeq != j.Seq {
			t.Fatalf("miner %s on job %+v", m.User(), cur)
		}
	}
	if got, _ := p.Job(j.Seq); got.Sends != 200 {
		t.Fatalf("%+v", got)
	}
}

func TestFleetRate(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	f := NewFleet(t, p.Addr(), FleetOptions{
		Miners: 40, Styles: AllStyles(), SharesPerMinute: 120, BadFraction: 0.3,
		BadKinds: BadKinds(), Seed: 9,
	})
	if err := f.WaitFor(ctx, func(s FleetStats) bool { return s.Submitted >= 150 }); err != nil {
		t.Fatal(err)
	}
	f.SetRate(0)
	if err := f.WaitFor(ctx, func(s FleetStats) bool {
		return s.Pending == 0 && s.Scheduled <= s.Submitted+s.SearchErrors
	}); err != nil {
		t.Fatal(err)
	}
	st := f.Stats()
	if st.Unexpected != 0 || st.Accepted == 0 || st.Rejected == 0 || st.ScheduledBad == 0 {
		t.Fatalf("%+v", st)
	}
	if ps := p.Stats(); ps.Accepted != st.Accepted || ps.Rejected != st.Rejected {
		t.Fatalf("pool %+v fleet %+v", ps, st)
	}
	var all []SubmitResult
	for _, m := range f.Miners() {
		all = append(all, m.AcceptedSubmits()...)
	}
	checkAccepted(t, p, all)
}

func TestStandaloneRate(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer, SharesPerMinute: 3000})
	if err := m.WaitFor(ctx, func(s MinerStats) bool { return s.Accepted >= 5 }); err != nil {
		t.Fatal(err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		p, err := StartPool(PoolOptions{InitialDifficulty: testDiff, JobInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		f, err := StartFleet(ctx, p.Addr(), FleetOptions{Miners: 20, SharesPerMinute: 600, Miner: MinerOptions{AutoReconnect: true}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := DialMiner(ctx, p.Addr(), MinerOptions{Style: StyleNiceHash, SharesPerMinute: 600, AutoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		p.DelayResponses(time.Hour)
		if _, err := m.Submit(ctx, SubmitRequest{}); err != nil {
			t.Fatal(err)
		}
		if err := p.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitHandshakes(ctx, 2); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		_ = m.Close()
		_ = p.Close()
	}()
	deadline := time.Now().Add(bound)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines %d > %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
