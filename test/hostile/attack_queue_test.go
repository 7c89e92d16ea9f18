//go:build linux

package hostile

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Finding 6: miners that stop reading while jobs flow and while their own
// requests' answers pile up, and echoed unknown methods.
const (
	// stalledMiners is the attack of finding 6 (50 clients that do not
	// read).
	stalledMiners = 50
	stalledIP     = "127.0.0.5"
	// stalledReadBuffer is their SO_RCVBUF, so proxyd's queue, not the
	// kernel, holds what they do not read.
	stalledReadBuffer = 4096
	// stalledJobInterval: the pool sends a job this often, with
	// stalledMerkleBranches branches (~2.5 KiB a notify): the kernel's
	// send buffer towards a stalled miner (a few MiB on loopback) fills
	// within seconds, then proxyd's queue does. Jobs are queued by
	// reference, so what a stalled miner really holds is the answers to
	// its own requests:
	stalledJobInterval    = 10 * time.Millisecond
	stalledMerkleBranches = 32
	// stalledRequests unknown-method requests of unknownMethodBytes each
	// per stalled miner (4.5 MB): answers that echo them would be 4.5 MB
	// each, past any queue bound.
	stalledRequests = 300
	// writeQueueKiB is the README's bound on a miner's write queue
	// ("its queue over 256 KiB with no write for 5 s"), the batch being
	// written included.
	writeQueueKiB = 256
	// perConnectionKiB is a connection's own buffers beyond its queue (the
	// README sizes a miner at ~8 KiB).
	perConnectionKiB = 16
	// maxHeldPerStalledKiB: what a stalled client can make proxyd hold,
	// with the Go heap's headroom.
	maxHeldPerStalledKiB = (writeQueueKiB + perConnectionKiB) * heapHeadroom
	// stalledDroppedWithin: a stalled miner is dropped 5 s after its
	// queue passed the bound, or at its 10 s write deadline. Only a hang
	// fails this.
	stalledDroppedWithin = 30 * time.Second
	// unknownMethodBytes is the method name of finding 6 (15 KB, under
	// max_line_bytes' default of 16 KiB).
	unknownMethodBytes = 15_000
)

// stallClient connects from stalledIP with a tiny receive buffer,
// subscribes and authorizes, and from then on never reads: it sends
// stalledRequests unknown-method requests (until proxyd closes the
// connection or d passes) and returns the connection for the caller to
// close.
func stallClient(addr, name string, d time.Duration) (net.Conn, error) {
	c, err := dialSmallBuffer(stalledIP, addr, stalledReadBuffer)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(d))
	hello := fmt.Sprintf(`{"id":1,"method":"mining.subscribe","params":["hostile/1.0"]}`+"\n"+
		`{"id":2,"method":"mining.authorize","params":[%q,"x"]}`+"\n", name)
	if _, err := c.Write([]byte(hello)); err != nil {
		return c, nil
	}
	var chunk []byte
	method := strings.Repeat("m", unknownMethodBytes)
	for i := range 4 {
		chunk = fmt.Appendf(chunk, `{"id":%d,"method":"%s","params":[]}`+"\n", 3+i, method)
	}
	for range stalledRequests / 4 {
		if _, err := c.Write(chunk); err != nil {
			break // proxyd closed it, or the deadline passed
		}
	}
	return c, nil
}

func attackNeverRead(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("6 %d miners stop reading while jobs flow every %s and send %d × %d-byte unknown methods",
		stalledMiners, stalledJobInterval, stalledRequests, unknownMethodBytes),
		fmt.Sprintf("≤ %d KiB held per client ((%d KiB queue + %d KiB) × %d heap headroom); dropped", maxHeldPerStalledKiB, writeQueueKiB, perConnectionKiB, heapHeadroom))
	p := newTestPool(t, stratumtest.PoolOptions{JobInterval: stalledJobInterval, MerkleBranches: stalledMerkleBranches, KeepJobs: 256})
	d := s.startDaemon(t, "never-read", proxyConfig{PoolURL: p.URL()}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	w := s.measure(t, d, r)
	var wg sync.WaitGroup
	conns := make([]net.Conn, stalledMiners)
	errs := make([]error, stalledMiners)
	for i := range stalledMiners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = stallClient(d.stratumAddr("farm"), fmt.Sprintf("stall.m%02d", i), 20*time.Second)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				abort(c)
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("stalled client %d: %v", i, err)
		}
	}
	stalledAt := time.Now()
	deadline := stalledAt.Add(stalledDroppedWithin)
	connected := float64(-1)
	for time.Now().Before(deadline) {
		connected = d.metric(t, "proxyd_miners_connected", `server="farm"`)
		if connected <= goodMinerCount {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	dropped := time.Since(stalledAt)
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	held := float64(r.RSSPeak-r.RSSBase) / stalledMiners
	s.note(r, "%.0f KiB per stalled client at the peak; all dropped %.1f s after they sent their last request (proxyd_miners_connected %v)",
		held, dropped.Seconds(), connected)
	if held > maxHeldPerStalledKiB {
		t.Errorf("proxyd held %.0f KiB per client that does not read (RSS +%.1f MiB for %d); the bound is %d KiB",
			held, float64(r.RSSPeak-r.RSSBase)/1024, stalledMiners, maxHeldPerStalledKiB)
	}
	if connected > goodMinerCount {
		t.Errorf("%v miners still connected %s after %d stopped reading; only the %d well-behaved ones should be",
			connected, stalledDroppedWithin, stalledMiners, goodMinerCount)
	}
}

func attackUnknownMethod(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("6 a %d-byte unknown method name", unknownMethodBytes),
		fmt.Sprintf("error 20 of ≤ %d bytes; the connection stays", maxErrorBytes))
	p := newTestPool(t, stratumtest.PoolOptions{})
	d := s.startDaemon(t, "unknown-method", proxyConfig{PoolURL: p.URL()}.String())
	d.waitReady(t)
	w := s.measure(t, d, r)
	c, err := dialFrom(attackerIP, d.stratumAddr("farm"))
	if err != nil {
		t.Fatal(err)
	}
	defer abort(c)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line := fmt.Sprintf(`{"id":7,"method":"%s","params":[]}`+"\n", strings.Repeat("m", unknownMethodBytes))
	if _, err := c.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	answer, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to an unknown method: %v", err)
	}
	// The connection stays: a subscribe still works.
	if _, err := c.Write([]byte(`{"id":8,"method":"mining.subscribe","params":["hostile/1.0"]}` + "\n")); err != nil {
		t.Fatal(err)
	}
	sub, err := br.ReadString('\n')
	s.end(w)
	s.note(r, "answer %d bytes", len(answer))
	if !strings.Contains(answer, `"id":7`) || !strings.Contains(answer, "20") {
		t.Errorf("the answer is not error 20 for id 7: %.300s", answer)
	}
	if len(answer) > maxErrorBytes {
		t.Errorf("the error answer is %d bytes for a %d-byte method; the bound is %d", len(answer), unknownMethodBytes, maxErrorBytes)
	}
	if err != nil || !strings.Contains(sub, `"id":8`) {
		t.Errorf("after an unknown method the connection no longer works: %q %v", sub, err)
	}
}
