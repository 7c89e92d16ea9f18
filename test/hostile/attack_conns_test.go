//go:build linux

package hostile

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Findings 2 and 5: connections per IP and the log lines they cause.
const (
	// idleConnections is the attack of finding 2: idle connections from
	// one IP.
	idleConnections = 5_000
	// maxConnectionsPerIP is [[server]] max_connections_per_ip's default,
	// as configs/proxyd.toml documents it.
	maxConnectionsPerIP = 64
	// maxGoroutinesPerConnection: a miner connection runs a reader and a
	// writer goroutine; 4 leaves room for a timer or a pending pool call.
	maxGoroutinesPerConnection = 4
	// goroutineSlack covers the daemon's own goroutines that come and go
	// (HTTP scrapes, janitors, timers) during a window.
	goroutineSlack = 40
	// maxIdleAttackGrowthKiB: 64 accepted idle connections at the README's
	// ~8 KiB each is 0.5 MiB; the rest is the Go heap's headroom for the
	// garbage of thousands of refused connections.
	maxIdleAttackGrowthKiB = 16 << 10

	// refusedFlood is how many connect-and-close cycles the log-flood
	// attack makes past the per-IP limit (finding 5 saw 4,936 lines in
	// 0.5 s from one client), bounded by refusedFloodFor.
	refusedFlood    = 20_000
	refusedFloodFor = 6 * time.Second
	// protocolErrorConns each send garbage until proxyd disconnects them
	// (max_protocol_errors): one log line per disconnect unthrottled.
	protocolErrorConns = 300
	// logRateLimit is [log] rate_limit_per_second's default: lines per
	// second per message and reason.
	logRateLimit = 10
	// maxLogLinesPerSecond bounds everything proxyd logs in any one second
	// of an attack: the rate limit for each of the few distinct messages
	// an attack can trigger (refusal, protocol error, subscribe timeout,
	// disconnect), the "suppressed" summaries and the daemon's own lines.
	maxLogLinesPerSecond = 8 * logRateLimit
	// suppressedWithin: a rate-limited message is summarised by a
	// "suppressed" line within this long (the limiter's report period plus
	// a margin).
	suppressedWithin = 15 * time.Second
)

// maxErrorBytes bounds an error answer (a Stratum error line or an API
// error body) to a hostile input: issue 12 asks that errors echo at most a
// short prefix of what was sent.
const maxErrorBytes = 512

// needFiles fails the test, saying why, when this process may not open n
// more files (Go raises the soft RLIMIT_NOFILE to the hard one at start).
func needFiles(t *testing.T, n int) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if rl.Cur < uint64(n)+1024 {
		t.Fatalf("this attack holds %d connections, but RLIMIT_NOFILE is %d (hard %d): raise it (ulimit -Hn) to run the suite", n, rl.Cur, rl.Max)
	}
}

// holdConns dials n connections from ip with up to 32 dials at once and
// returns those that connected (the caller closes them).
func holdConns(ip, addr string, n int) ([]net.Conn, int) {
	var mu sync.Mutex // guards conns and failed
	conns := make([]net.Conn, 0, n)
	failed := 0
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, err := dialFrom(ip, addr)
				mu.Lock()
				if err != nil {
					failed++
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return conns, failed
}

// stillOpen reports, for each connection, whether the server still holds
// it open: a read that times out means open; EOF or a reset means proxyd
// closed it.
func stillOpen(conns []net.Conn, wait time.Duration) int {
	var open atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = c.SetReadDeadline(time.Now().Add(wait))
			var b [1]byte
			_, err := c.Read(b[:])
			if errors.Is(err, os.ErrDeadlineExceeded) {
				open.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(open.Load())
}

// closeAll closes with a reset (abort), so thousands of attack
// connections leave no TIME_WAIT behind to use up loopback's ports.
func closeAll(conns []net.Conn) {
	for _, c := range conns {
		abort(c)
	}
}

// abort closes c with a TCP reset.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func attackIdleConnections(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("2 %d idle connections from one IP", idleConnections),
		fmt.Sprintf("≤ %d accepted (max_connections_per_ip default); RSS +< %d MiB", maxConnectionsPerIP, maxIdleAttackGrowthKiB>>10))
	p := newTestPool(t, stratumtest.PoolOptions{})
	// The default config: max_connections_per_ip is not set.
	d := s.startDaemon(t, "idle-connections", proxyConfig{PoolURL: p.URL()}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	needFiles(t, idleConnections)
	w := s.measure(t, d, r)
	conns, failed := holdConns(attackerIP, d.stratumAddr("farm"), idleConnections)
	t.Cleanup(func() { closeAll(conns) })
	time.Sleep(time.Second) // let proxyd accept and refuse the backlog
	open := stillOpen(conns, 1500*time.Millisecond)
	connected := d.metric(t, "proxyd_miners_connected", `server="farm"`)
	refused := d.metric(t, "proxyd_connections_refused_total", `server="farm"`)
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	s.note(r, "%d dialled (%d failed), %d still open after 1 s, proxyd_miners_connected %v, refused %v", len(conns), failed, open, connected, refused)
	if open > maxConnectionsPerIP {
		t.Errorf("%d of %d idle connections from one IP are held open; the default bound is %d", open, len(conns), maxConnectionsPerIP)
	}
	if limit := float64(maxConnectionsPerIP + goodMinerCount); connected > limit {
		t.Errorf("proxyd_miners_connected = %v; at most %v can be (%d per IP + %d well-behaved)", connected, limit, maxConnectionsPerIP, goodMinerCount)
	}
	if want := float64(len(conns) - maxConnectionsPerIP); refused < want {
		t.Errorf("proxyd_connections_refused_total = %v, want at least %v", refused, want)
	}
	if g := r.RSSPeak - r.RSSBase; g >= maxIdleAttackGrowthKiB {
		t.Errorf("proxyd's RSS grew by %.1f MiB; the bound is %d MiB", float64(g)/1024, maxIdleAttackGrowthKiB>>10)
	}
	if limit := r.GorBase + maxConnectionsPerIP*maxGoroutinesPerConnection + goroutineSlack; r.GorPeak > limit {
		t.Errorf("goroutines peaked at %d (base %d); the bound is %d", r.GorPeak, r.GorBase, limit)
	}
}

// garbageUntilClosed opens one connection from ip and sends malformed
// lines until proxyd closes it (or 5 s pass).
func garbageUntilClosed(ip, addr string) error {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		for range 50 {
			if _, err := c.Write([]byte("{\"id\":1,\"method\":\"mining.subscribe\",\"params\":{}}\nnot json at all\n")); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errors.New("proxyd did not disconnect a connection that sent only malformed lines")
			}
			return nil
		}
	}
}

func attackLogFlood(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("5 %d refused connections + %d protocol-error disconnects", refusedFlood, protocolErrorConns),
		fmt.Sprintf("≤ %d log lines/s (%d/s per message: rate_limit_per_second), a \"suppressed\" line", maxLogLinesPerSecond, logRateLimit))
	p := newTestPool(t, stratumtest.PoolOptions{})
	d := s.startDaemon(t, "log-flood", proxyConfig{PoolURL: p.URL()}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	w := s.measure(t, d, r)
	addr := d.stratumAddr("farm")
	// Fill the attacker's per-IP quota, then knock on the door.
	held, _ := holdConns(attackerIP, addr, maxConnectionsPerIP)
	t.Cleanup(func() { closeAll(held) })
	var cycles atomic.Int64
	stop := time.Now().Add(refusedFloodFor)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && cycles.Add(1) <= refusedFlood {
				if c, err := dialFrom(attackerIP, addr); err == nil {
					abort(c)
				}
			}
		}()
	}
	// Meanwhile, connections that only send garbage, from another IP.
	var protoErrs atomic.Int64
	sem := make(chan struct{}, 32)
	for range protocolErrorConns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if garbageUntilClosed("127.0.0.3", addr) != nil {
				protoErrs.Add(1)
			}
		}()
	}
	wg.Wait()
	closeAll(held)
	// Wait for the limiter's summary of what it dropped.
	deadline := time.Now().Add(suppressedWithin)
	for d.countLogs("suppressed") == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	suppressedMetric := d.metric(t, "proxyd_log_suppressed_total")
	n := min(cycles.Load(), refusedFlood)
	lines := 0
	for _, l := range d.logs() {
		if !l.At.Before(w.from) && !l.At.After(w.to) {
			lines++
		}
	}
	s.note(r, "%d refused cycles, %d lines logged in %.1f s, %d \"suppressed\" line(s), proxyd_log_suppressed_total %v",
		n, lines, w.to.Sub(w.from).Seconds(), d.countLogs("suppressed"), suppressedMetric)
	if protoErrs.Load() > 0 {
		t.Errorf("%d garbage-only connections were never disconnected", protoErrs.Load())
	}
	if r.LogPeak > maxLogLinesPerSecond {
		t.Errorf("proxyd logged %d lines in one second; the bound is %d", r.LogPeak, maxLogLinesPerSecond)
	}
	if d.countLogs("suppressed") == 0 {
		t.Errorf("no \"suppressed\" summary line within %s of the flood; the last lines:\n%s", suppressedWithin, d.tail(10))
	}
	if suppressedMetric <= 0 {
		t.Errorf("proxyd_log_suppressed_total = %v after the flood", suppressedMetric)
	}
}
