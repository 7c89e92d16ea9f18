//go:build linux

package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// TestIdleMinersHoldNoGoroutine: under the read loop a connected miner
// waiting for its next share has no goroutine of its own in proxyd (before
// it, each parked one in serve, with its stack and read buffer).
func TestIdleMinersHoldNoGoroutine(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, "initial_difficulty = 0.000001", "")
	const n = 40
	fleet := stratumtest.NewFleet(t, px.addr, stratumtest.FleetOptions{Miners: n, Styles: stratumtest.AllStyles()})
	ctx := ctxFor(t, time.Minute)
	if _, err := fleet.SubmitEach(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s := px.servers[0]
	s.mu.Lock()
	rl := s.rl
	s.mu.Unlock()
	if rl == nil {
		t.Fatal("no read loop on Linux")
	}
	rl.mu.Lock()
	watched := len(rl.miners)
	rl.mu.Unlock()
	if watched != n {
		t.Fatalf("the read loop watches %d miners, want %d", watched, n)
	}
	var dump strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&dump, 1); err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(dump.String(), "proxy.(*miner).serve"); c != 0 {
		t.Fatalf("%d goroutines of proxyd are parked reading a miner", c)
	}
	checkAccounting(t, px.Proxy)
}

// rawMiner is a bare TCP client for byte-level tests of the read path.
type rawMiner struct {
	t  *testing.T
	c  *net.TCPConn
	rd *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawMiner {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawMiner{t: t, c: c.(*net.TCPConn), rd: bufio.NewReader(c)}
}

func (r *rawMiner) send(s string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// answer returns the id of the next response (skipping notifications).
func (r *rawMiner) answer() (int, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := r.rd.ReadBytes('\n')
		if err != nil {
			return 0, err
		}
		var msg struct {
			ID     *int   `json:"id"`
			Method string `json:"method"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			return 0, fmt.Errorf("answer %q: %w", line, err)
		}
		if msg.Method == "" && msg.ID != nil {
			return *msg.ID, nil
		}
	}
}

func (r *rawMiner) wantAnswers(ids ...int) {
	r.t.Helper()
	for _, want := range ids {
		got, err := r.answer()
		if err != nil || got != want {
			r.t.Fatalf("answer id %d (%v), want %d", got, err, want)
		}
	}
}

// TestReadLoopLineFraming: lines split over several reads, several lines
// in one read, CRLF and empty lines, and a last line without a terminator
// before the miner stops sending, are all handled once, in order.
func TestReadLoopLineFraming(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	r := dialRaw(t, px.addr)

	sub := `{"id":1,"method":"mining.subscribe","params":["raw/1.0"]}` + "\n"
	for _, part := range []string{sub[:10], sub[10:30], sub[30:]} {
		r.send(part)
		time.Sleep(20 * time.Millisecond) // separate reads on proxyd's side
	}
	r.wantAnswers(1)

	r.send(`{"id":2,"method":"mining.authorize","params":["acct.raw","x"]}` + "\r\n\n\r\n" +
		`{"id":3,"method":"mining.extranonce.subscribe","params":[]}` + "\n" +
		`{"id":4,"method":"mining.nonsense","params":[]}` + "\r\n" +
		`{"id":5,"method":"mining.sugg`)
	r.wantAnswers(2, 3, 4)
	time.Sleep(20 * time.Millisecond)
	r.send(`est_difficulty","params":[0.001]}` + "\n" + `{"id":6,"method":"mining.nonsense","params":[]}`)
	if err := r.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r.wantAnswers(5, 6)
}

// TestReadLoopTimeouts: with no blocking read to carry a deadline, the read
// loop's sweep still closes a connection that never subscribes within
// subscribe_timeout.
func TestReadLoopTimeouts(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, `subscribe_timeout = "300ms"`, "")
	r := dialRaw(t, px.addr)
	r.send(`{"id":1,"method":"mining.subscribe","params":[]}` + "\n")
	r.wantAnswers(1)
	start := time.Now()
	if _, err := r.answer(); err == nil {
		t.Fatal("an answer came to a connection that never authorized")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("closed after %v, want about subscribe_timeout (300ms)", waited)
	}
	if metricValue(t, px, "proxyd_miner_disconnects_total", `reason="subscribe_timeout"`) != 1 {
		t.Error("disconnect not counted as subscribe_timeout")
	}
}

// TestReadLoopLineTooLong: a line longer than max_line_bytes arriving in
// pieces is refused once the cap is reached, without a terminator.
func TestReadLoopLineTooLong(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, "max_line_bytes = 8192", "")
	r := dialRaw(t, px.addr)
	r.send(`{"id":1,"method":"mining.subscribe","params":["` + strings.Repeat("a", 3000))
	time.Sleep(20 * time.Millisecond)
	r.send(strings.Repeat("b", 3000))
	// 6 KiB of an 8 KiB cap: proxyd waits for the rest of the line.
	_ = r.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := r.rd.ReadBytes('\n'); !isTimeout(err) {
		t.Fatalf("a 6 KiB partial line under an 8 KiB cap: %v, want the connection left open", err)
	}
	r.send(strings.Repeat("c", 3000))
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.rd.ReadBytes('\n'); err == nil {
		t.Fatal("the connection stayed open past max_line_bytes")
	}
	for i := 0; i < 500 && metricValue(t, px, "proxyd_miner_disconnects_total", `reason="line_too_long"`) < 1; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if metricValue(t, px, "proxyd_miner_disconnects_total", `reason="line_too_long"`) != 1 {
		t.Error("disconnect not counted as line_too_long")
	}
}

// TestReadDeadline: the read loop's sweep closes on readDeadline, so it must
// not fall back to the subscribe timeout while a miner that has worked is
// moved to another session (hasWork is false for that moment). It did: a
// rebalanced miner could be dropped as subscribe_timeout.
func TestReadDeadline(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, `subscribe_timeout = "30s"`+"\n"+`idle_timeout = "10m"`, "")
	connected := time.Now().Add(-time.Hour)
	share := time.Now().Add(-time.Minute)
	tests := []struct {
		name            string
		hasWork, worked bool
		lastShare       time.Time
		want            time.Time
	}{
		{"handshake not done", false, false, time.Time{}, connected.Add(30 * time.Second)},
		{"working, no share yet", true, true, time.Time{}, connected.Add(10 * time.Minute)},
		{"working", true, true, share, share.Add(10 * time.Minute)},
		{"being moved to another session", false, true, share, share.Add(10 * time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &miner{srv: px.servers[0], connectedAt: connected, hasWork: tc.hasWork, worked: tc.worked, lastShare: tc.lastShare}
			m.setReadByLocked() // as newMiner, startWork and a share do
			if got := m.readDeadline(); !got.Equal(tc.want) {
				t.Fatalf("deadline %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReadLoopFailureFallsBack: if the read loop ever fails, its miners are
// disconnected (their firmware reconnects) and new ones are read by a
// goroutine each, so the proxy keeps serving.
func TestReadLoopFailureFallsBack(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, "initial_difficulty = 0.000001", "")
	ctx := ctxFor(t, time.Minute)
	first := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.first"})
	if r, err := first.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("%v %+v", err, r)
	}
	s := px.servers[0]
	s.mu.Lock()
	rl := s.rl
	s.mu.Unlock()
	rl.fail(errors.New("simulated epoll failure"))
	if err := first.WaitDisconnected(ctx); err != nil {
		t.Fatalf("a miner of the failed read loop stayed connected: %v", err)
	}
	next := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.next"})
	if r, err := next.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after the read loop failed: %v %+v", err, r)
	}
	var dump strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&dump, 1); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump.String(), "proxy.(*miner).serve") {
		t.Fatal("the new miner is not read by a goroutine of its own")
	}
	checkAccounting(t, px.Proxy)
}

// TestSweepInterval: deadlines are checked often enough for the shorter
// timeout (a quarter of it), never in a busy loop, never less than once a
// second.
func TestSweepInterval(t *testing.T) {
	tests := []struct {
		subscribe, idle, want time.Duration
	}{
		{30 * time.Second, 10 * time.Minute, time.Second},
		{2 * time.Second, 10 * time.Minute, 500 * time.Millisecond},
		{300 * time.Millisecond, time.Minute, 75 * time.Millisecond},
		{time.Millisecond, time.Minute, 10 * time.Millisecond},
		{time.Minute, 400 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := sweepInterval(tt.subscribe, tt.idle); got != tt.want {
			t.Errorf("sweepInterval(%v, %v) = %v, want %v", tt.subscribe, tt.idle, got, tt.want)
		}
	}
}

// TestReadLoopRefusesConnWithoutSocket: a connection with no raw socket
// (TLS, a pipe) is not taken by the read loop, so accept gives it a reader
// goroutine of its own (serve).
func TestReadLoopRefusesConnWithoutSocket(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	s := px.servers[0]
	s.mu.Lock()
	rl := s.rl
	s.mu.Unlock()
	if rl == nil {
		t.Fatal("no read loop on Linux")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rl.add(&miner{id: 1 << 40, conn: a}) {
		t.Fatal("the read loop took a connection without a socket")
	}
	if n := rl.watching(); n != 0 {
		t.Fatalf("the read loop watches %d miners after refusing one, want 0", n)
	}
}
