//go:build linux

package hostile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Finding 1: worker names per connection and the retired-worker table.
const (
	// authorizeFloodNames is the acceptance test of issue 12: one
	// connection sending 1,000,000 distinct names.
	authorizeFloodNames = 1_000_000
	// authorizeFloodFor caps the attack's time; a fixed proxyd cuts the
	// connection after a handful of names, long before.
	authorizeFloodFor = 20 * time.Second
	// maxAuthorizeFloodGrowthKiB: "RSS grows by less than 16 MiB" (issue
	// 12, acceptance).
	maxAuthorizeFloodGrowthKiB = 16 << 10
	// maxWorkersPerConnection is [[server]] max_workers_per_connection's
	// default: real firmware authorizes one to a few names.
	maxWorkersPerConnection = 8
	// passthroughRate is [[pool]] max_authorizations_per_second's default;
	// passthroughBurst is the token bucket's burst (the same number: one
	// second's worth).
	passthroughRate  = 10
	passthroughBurst = 10
	// passthroughAttackers connect next to the 1,000,000-name connection
	// in the passthrough attack, each asking for its full quota of names
	// at once, so the rate limit, not the per-connection bound, is what
	// stands between them and the pool.
	passthroughAttackers = 40
	// maxRetiredWorkers is [[server]] max_retired_workers' default: names
	// of closed connections kept with their totals; older ones are evicted
	// into one bucket.
	maxRetiredWorkers = 10_000
	// retiredNames is how many distinct names the retired-table attack
	// leaves behind: past maxRetiredWorkers, below the old 65,536 cap.
	retiredNames = 12_000
	// attackerIP is where every attack comes from.
	attackerIP = "127.0.0.1"
)

// floodResult is what an authorize flood saw.
type floodResult struct {
	sent, accepted, refused int
	firstRefusal            string
	closedByServer          bool
	err                     error
}

// dialFrom dials addr from the given source IP.
func dialFrom(ip, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return d.Dial("tcp", addr)
}

// authorizeFlood opens one connection from attackerIP, subscribes, and
// sends up to n mining.authorize requests with distinct names, pipelined,
// for at most d, while reading every answer (a slow reader would be
// dropped for that instead).
func authorizeFlood(addr, prefix string, n int, d time.Duration) floodResult {
	c, err := dialFrom(attackerIP, addr)
	if err != nil {
		return floodResult{err: err}
	}
	defer abort(c)
	deadline := time.Now().Add(d)
	_ = c.SetDeadline(deadline)
	var res floodResult
	var mu sync.Mutex // guards res between the reader and the writer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(c)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m struct {
				ID     json.RawMessage `json:"id"`
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			id, err := strconv.ParseUint(string(m.ID), 10, 64)
			if err != nil || id < 2 {
				continue // notifications and the subscribe answer
			}
			mu.Lock()
			if string(m.Result) == "true" {
				res.accepted++
			} else {
				res.refused++
				if res.firstRefusal == "" {
					res.firstRefusal = string(m.Error)
				}
			}
			mu.Unlock()
		}
		if time.Now().Before(deadline) {
			mu.Lock()
			res.closedByServer = true
			mu.Unlock()
		}
	}()
	var buf []byte
	buf = fmt.Appendf(buf, `{"id":1,"method":"mining.subscribe","params":["hostile/1.0"]}`+"\n")
	sent := 0
	for sent < n && time.Now().Before(deadline) {
		for range 512 {
			if sent == n {
				break
			}
			buf = fmt.Appendf(buf, `{"id":%d,"method":"mining.authorize","params":["%s.rig-%07d","x"]}`+"\n", sent+2, prefix, sent)
			sent++
		}
		if _, err := c.Write(buf); err != nil {
			break
		}
		buf = buf[:0]
	}
	// Give the last answers a moment, then stop reading.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	res.sent = sent
	return res
}

func attackAuthorizeFlood(s *suite, t *testing.T) {
	r := s.newRow(t, "1 one connection, 1,000,000 authorize names",
		fmt.Sprintf("≤ %d names/connection (max_workers_per_connection), then error and disconnect; RSS +< %d MiB", maxWorkersPerConnection, maxAuthorizeFloodGrowthKiB>>10))
	p := newTestPool(t, stratumtest.PoolOptions{})
	d := s.startDaemon(t, "authorize-flood", proxyConfig{PoolURL: p.URL()}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	w := s.measure(t, d, r)
	res := authorizeFlood(d.stratumAddr("farm"), "attacker", authorizeFloodNames, authorizeFloodFor)
	time.Sleep(500 * time.Millisecond) // let the RSS of what it left behind show
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	s.note(r, "sent %d, accepted %d, refused %d, closed by proxyd: %v", res.sent, res.accepted, res.refused, res.closedByServer)
	if res.err != nil {
		t.Fatalf("attacker: %v", res.err)
	}
	if res.accepted > maxWorkersPerConnection {
		t.Errorf("one connection got %d of %d worker names authorized; the bound is %d", res.accepted, res.sent, maxWorkersPerConnection)
	}
	if !res.closedByServer || res.refused == 0 {
		t.Errorf("proxyd neither refused further names nor closed the connection: %d refused, closed by proxyd %v (sent %d in %s)",
			res.refused, res.closedByServer, res.sent, authorizeFloodFor)
	}
	if len(res.firstRefusal) > maxErrorBytes {
		t.Errorf("the refusal echoes %d bytes: %.200s", len(res.firstRefusal), res.firstRefusal)
	}
	if g := r.RSSPeak - r.RSSBase; g >= maxAuthorizeFloodGrowthKiB {
		t.Errorf("proxyd's RSS grew by %.1f MiB during the flood; the bound is %d MiB", float64(g)/1024, maxAuthorizeFloodGrowthKiB>>10)
	}
	if n := d.metric(t, "proxyd_miner_disconnects_total", `server="farm"`); n < 1 {
		t.Errorf("the flood's disconnect is not counted in proxyd_miner_disconnects_total (%v)", n)
	}
	if names := workerNames(t, d); names > maxWorkersPerConnection+goodMinerCount {
		t.Errorf("/api/v1/workers lists %d names after the flood; at most %d can be real", names, maxWorkersPerConnection+goodMinerCount)
	}
}

// workerNames returns the total number of worker names /api/v1/workers
// reports ("total" when the answer has it, else the listed names).
func workerNames(t *testing.T, d *daemon) int {
	t.Helper()
	code, b := d.get(t, "/api/v1/workers")
	if code != 200 {
		t.Fatalf("GET /api/v1/workers: %d %.300s", code, b)
	}
	var v struct {
		Total   *int              `json:"total"`
		Workers []json.RawMessage `json:"workers"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("GET /api/v1/workers: %v: %.300s", err, b)
	}
	if v.Total != nil {
		return *v.Total
	}
	return len(v.Workers)
}

// authorizeBatch opens one connection from ip, subscribes, sends names
// authorize requests at once and waits (at most d) for every answer.
// It returns how many were accepted.
func authorizeBatch(addr, ip string, names []string, d time.Duration) (accepted int, err error) {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return 0, err
	}
	defer abort(c)
	_ = c.SetDeadline(time.Now().Add(d))
	buf := fmt.Appendf(nil, `{"id":1,"method":"mining.subscribe","params":["hostile/1.0"]}`+"\n")
	for i, n := range names {
		buf = fmt.Appendf(buf, `{"id":%d,"method":"mining.authorize","params":[%q,"x"]}`+"\n", i+2, n)
	}
	if _, err := c.Write(buf); err != nil {
		return 0, err
	}
	answered := make(map[uint64]bool, len(names))
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for len(answered) < len(names) && sc.Scan() {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Result json.RawMessage `json:"result"`
		}
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		id, perr := strconv.ParseUint(string(m.ID), 10, 64)
		if perr != nil || id < 2 || answered[id] {
			continue
		}
		answered[id] = true
		if string(m.Result) == "true" {
			accepted++
		}
	}
	if len(answered) < len(names) {
		return accepted, fmt.Errorf("%d of %d authorizations answered: %v", len(answered), len(names), sc.Err())
	}
	return accepted, nil
}

func attackPassthroughFlood(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("1 passthrough: 1,000,000 names on one connection + %d connections × %d names", passthroughAttackers, maxWorkersPerConnection),
		fmt.Sprintf("upstream authorizations ≤ %d/s × duration + %d (max_authorizations_per_second)", passthroughRate, passthroughBurst))
	p := newTestPool(t, stratumtest.PoolOptions{})
	d := s.startDaemon(t, "passthrough-flood", proxyConfig{PoolURL: p.URL(), Pool: `identity = "passthrough"`}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	w := s.measure(t, d, r)
	var wg sync.WaitGroup
	var flood floodResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		flood = authorizeFlood(d.stratumAddr("farm"), "pt", authorizeFloodNames, authorizeFloodFor)
	}()
	var mu sync.Mutex // guards batchAccepted and batchErrs
	batchAccepted, batchErrs := 0, 0
	for i := range passthroughAttackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			names := make([]string, maxWorkersPerConnection)
			for j := range names {
				names[j] = fmt.Sprintf("pt%02d.rig%d", i, j)
			}
			n, err := authorizeBatch(d.stratumAddr("farm"), attackerIP, names, 15*time.Second)
			mu.Lock()
			batchAccepted += n
			if err != nil {
				batchErrs++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	secs := w.to.Sub(w.from).Seconds()
	ups := p.authsBetween(w.from, w.to)
	bound := int(passthroughRate*secs) + passthroughBurst
	s.upstream(r, "%d authorizations in %.1f s (bound %d)", ups, secs, bound)
	s.note(r, "flood: sent %d, accepted %d, refused %d, closed by proxyd %v; batches: %d names accepted, %d connections unanswered",
		flood.sent, flood.accepted, flood.refused, flood.closedByServer, batchAccepted, batchErrs)
	if flood.err != nil {
		t.Fatalf("attacker: %v", flood.err)
	}
	if ups > bound {
		t.Errorf("the pool received %d worker authorizations in %.1f s; the bound is %d/s × %.1f s + %d = %d",
			ups, secs, passthroughRate, secs, passthroughBurst, bound)
	}
	if flood.accepted > maxWorkersPerConnection {
		t.Errorf("one passthrough connection got %d names authorized; the bound is %d", flood.accepted, maxWorkersPerConnection)
	}
	if !flood.closedByServer {
		t.Errorf("proxyd did not close the 1,000,000-name connection (sent %d in %s)", flood.sent, authorizeFloodFor)
	}
	if batchErrs > 0 {
		t.Errorf("%d of %d attacker connections did not get an answer to each authorize: a refused name must be refused, not left hanging", batchErrs, passthroughAttackers)
	}
}

func attackRetiredWorkers(s *suite, t *testing.T) {
	conns := retiredNames / maxWorkersPerConnection
	r := s.newRow(t, fmt.Sprintf("1 %d connections × %d names, then closed (retired-worker table)", conns, maxWorkersPerConnection),
		fmt.Sprintf("≤ %d retired names (max_retired_workers), the rest in one evicted bucket", maxRetiredWorkers))
	p := newTestPool(t, stratumtest.PoolOptions{})
	d := s.startDaemon(t, "retired-workers", proxyConfig{PoolURL: p.URL()}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	w := s.measure(t, d, r)
	const parallel = 16 // well under max_connections_per_ip
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards accepted and errs
	accepted, errs := 0, []string{}
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				names := make([]string, maxWorkersPerConnection)
				for j := range names {
					names[j] = fmt.Sprintf("retire.c%05d-w%d", c, j)
				}
				n, err := authorizeBatch(d.stratumAddr("farm"), attackerIP, names, 10*time.Second)
				mu.Lock()
				accepted += n
				if err != nil && len(errs) < 5 {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	for c := range conns {
		next <- c
	}
	close(next)
	wg.Wait()
	// Closed connections are retired asynchronously: wait for the count to
	// settle (it only ever grows while they retire).
	var names int
	for range 50 {
		n := workerNames(t, d)
		if n == names && n > 0 {
			break
		}
		names = n
		time.Sleep(100 * time.Millisecond)
	}
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	s.note(r, "%d names authorized, %d listed afterwards", accepted, names)
	if len(errs) > 0 {
		t.Errorf("some attacker connections got no answer: %v", errs)
	}
	if accepted < maxRetiredWorkers {
		t.Fatalf("only %d names were authorized; the attack needs more than %d to test the bound", accepted, maxRetiredWorkers)
	}
	// Live: the good miners; retired: at most the bound plus the evicted bucket.
	if limit := maxRetiredWorkers + 1 + goodMinerCount; names > limit {
		t.Errorf("/api/v1/workers lists %d names after %d distinct names on closed connections; the bound is %d", names, accepted, limit)
	}
}
