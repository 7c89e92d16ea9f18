package proxy

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// End-to-end tests of the bound on what proxyd holds for a client that
// does not read (issue 12, finding 6), over real TCP on 127.0.0.1.

// testStall is the write-queue stall the bound tests run with: long enough
// that a reading peer always makes progress within it, short enough that
// the tests do not wait 5 s of wall time for each drop.
const testStall = time.Second

// A real TCP client that never reads: once proxyd holds more than the
// queue limit for it (the batch being written included) and nothing was
// written for the stall time, it is dropped as write_queue_full, even if
// nothing more is sent to it; the other miners keep every job. (Before:
// the batch being written was not counted, and such a client held it
// until the 10 s write deadline: write_failed.)
func TestNonReadingMinerDroppedAtTheQueueBound(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, MerkleBranches: 32})
	px := startProxyOn(t, startHow{stall: testStall}, []string{pool.URL()}, nil, "")
	slow := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.slow", SocketReadBuffer: 4096})
	fast := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.fast"})
	wq := slowConn(t, px, "acct.slow")
	slow.StopReading()
	// ~2.4 KiB each, once: past the socket buffers and the 256 KiB limit,
	// within the 4 MiB hard limit; then nothing more.
	const jobs = 400
	for range jobs {
		pool.NewJob(false)
	}
	ctx := ctxFor(t, 60*time.Second)
	if err := fast.WaitFor(ctx, func(s stratumtest.MinerStats) bool { return s.Notifies >= jobs+1 }); err != nil {
		t.Fatalf("fast miner got %d of %d jobs: %v", fast.Stats().Notifies, jobs+1, err)
	}
	full := func() float64 {
		return metricValue(t, px, "proxyd_miner_disconnects_total", `reason="write_queue_full"`)
	}
	failed := func() float64 { return metricValue(t, px, "proxyd_miner_disconnects_total", `reason="write_failed"`) }
	peak := 0
	for ctx.Err() == nil && full()+failed() < 1 {
		peak = max(peak, wq.held())
		time.Sleep(5 * time.Millisecond)
	}
	if full() != 1 || failed() != 0 {
		t.Fatalf("slow miner dropped as write_queue_full %v, write_failed %v; want write_queue_full", full(), failed())
	}
	if peak > hardLimitFactor*minerQueueLimit {
		t.Errorf("held %d bytes for a miner that does not read", peak)
	}
	t.Logf("peak held for the non-reading miner: %d bytes", peak)
}

// slowConn finds the proxy's connection of worker and shrinks its kernel
// send buffer (loopback autotunes one up to 4 MiB), so what the client does
// not take stays in proxyd's queue, where the test can see it.
func slowConn(t *testing.T, px *testProxy, worker string) *writeQueue {
	t.Helper()
	for _, m := range px.servers[0].snapshot() {
		m.mu.Lock()
		_, ok := m.workers[worker]
		m.mu.Unlock()
		if ok {
			if err := m.conn.(*net.TCPConn).SetWriteBuffer(8 << 10); err != nil {
				t.Fatal(err)
			}
			return m.wq
		}
	}
	t.Fatalf("no connection of %s", worker)
	return nil
}

// A client that sends requests and never reads the answers: proxyd stops
// taking its requests while their answers fill the queue limit, so it holds
// about the limit, not the hard limit, until it is dropped. (Before, each
// request's answer was queued until 16 × the limit.)
func TestRequestFloodWithoutReadingHoldsTheLimit(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxyOn(t, startHow{stall: testStall}, []string{pool.URL()}, nil, "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.flood", SocketReadBuffer: 4096})
	wq := slowConn(t, px, "acct.flood")
	m.StopReading()
	var flood []byte
	for i := range 150_000 { // ~6 MB of requests, ~5 MB of answers
		flood = fmt.Appendf(flood, "{\"id\":%d,\"method\":\"mining.ping\",\"params\":[]}\n", 1000+i)
	}
	go func() { _ = m.SendRaw(flood) }() // blocks once proxyd stops reading; fails when it drops us
	ctx := ctxFor(t, 60*time.Second)
	dropped := func() float64 {
		return metricValue(t, px, "proxyd_miner_disconnects_total", `reason="write_queue_full"`) +
			metricValue(t, px, "proxyd_miner_disconnects_total", `reason="write_failed"`)
	}
	peak := 0
	for ctx.Err() == nil && dropped() < 1 {
		peak = max(peak, wq.held())
		time.Sleep(time.Millisecond)
	}
	// Dropped by the stall rule once over the limit; or, when the kernel
	// stops carrying its requests first (the client's own socket is full
	// both ways), by the 10 s write deadline with less than the limit held.
	if dropped() != 1 {
		t.Fatalf("flooding client dropped %v times, want once", dropped())
	}
	if slack := 16 << 10; peak > minerQueueLimit+slack {
		t.Errorf("held %d bytes of unread answers, want at most the %d-byte limit (+%d)", peak, minerQueueLimit, slack)
	}
	t.Logf("peak held for the flooding client: %d bytes", peak)
}

// An unknown method is answered with error 20 naming a short prefix of it,
// not the whole (client-chosen, up to max_line_bytes) name.
func TestUnknownMethodEchoesAPrefix(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.u"})
	name := "mining." + strings.Repeat("z", 10_000)
	_, err := m.Call(ctxFor(t, 10*time.Second), name, nil)
	var re *stratumtest.RPCError
	if !errors.As(err, &re) || re.Code != 20 || !strings.Contains(re.Message, name[:maxEchoBytes]) || len(re.Message) > 80 {
		t.Fatalf("unknown method answered %.200v; want error 20 with at most a %d-byte prefix", err, maxEchoBytes)
	}
}
