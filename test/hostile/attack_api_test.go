//go:build linux

package hostile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Finding 3: API clients that ask for a large answer and never read it.
const (
	// apiHolders is the attack of finding 3: token holders that ask for
	// /api/v1/workers and never read.
	apiHolders = 10
	// workersPageLimit is /api/v1/workers' default and largest page.
	workersPageLimit = 1000
	// liveWorkerIPs × liveWorkerConnsPerIP connections with
	// maxWorkersPerConnection names each give the API ~1,000 live rows
	// (the largest kind: one per name and connection); retiredWorkerConns
	// add 2,000 names of closed connections, so the whole list is larger
	// than a page.
	liveWorkerConnsPerIP = 62
	retiredWorkerConns   = 250
	// httpWriteTimeout is set in the attack's config ([http]
	// write_timeout); the default is longer than the suite wants to wait.
	httpWriteTimeout = 2 * time.Second
	// apiHolderReadBuffer is the holders' SO_RCVBUF: a client that does
	// not read makes the kernel's buffers fill at once.
	apiHolderReadBuffer = 4096
	// apiHolderRequests: each holder pipelines this many requests. On
	// loopback the kernel grows proxyd's send buffer to a few MiB, so one
	// page would fit in it whole and proxyd would never wait on the
	// client; twenty pages of ~0.5 MiB do not.
	apiHolderRequests = 20
	// heapHeadroom: what Go holds resident is up to twice what is live
	// (GOGC=100), so a bound on held bytes is doubled for RSS.
	heapHeadroom = 2
	// maxAPIHoldSlackKiB covers the daemon's own allocations while it
	// serves and samples (metrics scrapes, the page encoder's buffers).
	maxAPIHoldSlackKiB = 8 << 10
)

var liveWorkerIPs = []string{"127.0.0.4", "127.0.0.6"}

// authorizeOn subscribes on c and authorizes names, waiting (at most d)
// for every answer; it returns how many were accepted.
func authorizeOn(c net.Conn, names []string, d time.Duration) (int, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	buf := fmt.Appendf(nil, `{"id":1,"method":"mining.subscribe","params":["hostile/1.0"]}`+"\n")
	for i, n := range names {
		buf = fmt.Appendf(buf, `{"id":%d,"method":"mining.authorize","params":[%q,"x"]}`+"\n", i+2, n)
	}
	if _, err := c.Write(buf); err != nil {
		return 0, err
	}
	accepted := 0
	answered := map[string]bool{}
	br := bufio.NewReader(c)
	for len(answered) < len(names) {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return accepted, fmt.Errorf("%d of %d authorizations answered: %w", len(answered), len(names), err)
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Result json.RawMessage `json:"result"`
		}
		if json.Unmarshal(line, &m) != nil || string(m.ID) == "1" || string(m.ID) == "null" || answered[string(m.ID)] {
			continue
		}
		answered[string(m.ID)] = true
		if string(m.Result) == "true" {
			accepted++
		}
	}
	return accepted, nil
}

// dialSmallBuffer dials addr from ip with SO_RCVBUF set to rcvbuf before
// the handshake, so a client that does not read closes its window at once
// and what it does not read stays with the server.
func dialSmallBuffer(ip, addr string, rcvbuf int) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}}
	return d.Dial("tcp", addr)
}

// holdAPI pipelines apiHolderRequests requests for path on a connection
// whose receive buffer is tiny, and never reads.
func holdAPI(base, path string) (net.Conn, error) {
	host := base[len("http://"):]
	c, err := dialSmallBuffer(attackerIP, host, apiHolderReadBuffer)
	if err != nil {
		return nil, err
	}
	req := strings.Repeat(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", path, host, apiToken), apiHolderRequests)
	if _, err := c.Write([]byte(req)); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// readHeld reads what a holder was sent: how many answers came whole, the
// status of the first and the bytes of all, and what ended the reading (a
// cut-off connection, when fewer than apiHolderRequests came whole).
func readHeld(c net.Conn) (complete, status int, n int64, err error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for complete < apiHolderRequests {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return complete, status, n, err
		}
		if status == 0 {
			status = resp.StatusCode
		}
		m, err := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		n += m
		if err != nil {
			return complete, status, n, err
		}
		complete++
	}
	return complete, status, n, nil
}

func attackAPINeverRead(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("3 %d token holders pipeline %d × /api/v1/workers and never read", apiHolders, apiHolderRequests),
		fmt.Sprintf("pages of ≤ %d workers; cut off by [http] write_timeout (%s here); RSS +≤ %d × page × %d + %d MiB",
			workersPageLimit, httpWriteTimeout, apiHolders, heapHeadroom, maxAPIHoldSlackKiB>>10))
	p := newTestPool(t, stratumtest.PoolOptions{})
	d := s.startDaemon(t, "api-never-read", proxyConfig{PoolURL: p.URL(),
		HTTP: fmt.Sprintf("write_timeout = %q", httpWriteTimeout)}.String())
	d.waitReady(t)
	addr := d.stratumAddr("farm")
	// ~1,000 live rows, drained so proxyd keeps them.
	var live []net.Conn
	var wg sync.WaitGroup // the live connections' readers
	t.Cleanup(func() { closeAll(live); wg.Wait() })
	for _, ip := range liveWorkerIPs {
		for c := range liveWorkerConnsPerIP {
			conn, err := dialFrom(ip, addr)
			if err != nil {
				t.Fatal(err)
			}
			live = append(live, conn)
			names := make([]string, maxWorkersPerConnection)
			for j := range names {
				names[j] = fmt.Sprintf("live-%s-c%03d.w%d", ip, c, j)
			}
			if _, err := authorizeOn(conn, names, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, conn) }()
		}
	}
	// 2,000 names of closed connections.
	for c := range retiredWorkerConns {
		names := make([]string, maxWorkersPerConnection)
		for j := range names {
			names[j] = fmt.Sprintf("gone-c%03d.w%d", c, j)
		}
		if _, err := authorizeBatch(addr, attackerIP, names, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	good := startGoodMiners(t, addr, goodMinerCount)
	// What one page weighs, read by a well-behaved client.
	code, page := d.get(t, "/api/v1/workers")
	if code != 200 {
		t.Fatalf("GET /api/v1/workers: %d %.300s", code, page)
	}
	total := workerNames(t, d)
	w := s.measure(t, d, r)
	var holders []net.Conn
	t.Cleanup(func() { closeAll(holders) })
	for i := range apiHolders {
		path := "/api/v1/workers"
		if i%2 == 1 {
			path += fmt.Sprintf("?limit=%d", workersPageLimit)
		}
		c, err := holdAPI(d.httpBase, path)
		if err != nil {
			t.Fatal(err)
		}
		holders = append(holders, c)
	}
	time.Sleep(httpWriteTimeout + 3*time.Second)
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{})
	cut := 0
	var got []string
	for _, c := range holders {
		complete, status, n, err := readHeld(c)
		if complete < apiHolderRequests {
			cut++
		}
		got = append(got, fmt.Sprintf("%d/%d/%dB/%v", complete, status, n, err))
	}
	s.note(r, "%d names listed, one page %d KiB, %d of %d holders cut off", total, len(page)>>10, cut, apiHolders)
	if total < 2*workersPageLimit {
		t.Fatalf("only %d workers listed; the attack needs more than a page", total)
	}
	var pv struct {
		Workers []json.RawMessage `json:"workers"`
	}
	if err := json.Unmarshal(page, &pv); err != nil {
		t.Fatalf("GET /api/v1/workers: %v", err)
	}
	if len(pv.Workers) > workersPageLimit {
		t.Errorf("GET /api/v1/workers without a limit returned %d workers; a page is at most %d", len(pv.Workers), workersPageLimit)
	}
	if cut != apiHolders {
		t.Errorf("%d of %d clients that never read were cut off after the write timeout (%s); what each saw (complete answers/status/bytes/err): %v",
			cut, apiHolders, httpWriteTimeout, got)
	}
	bound := int64(apiHolders*len(page)*heapHeadroom)>>10 + maxAPIHoldSlackKiB
	if g := r.RSSPeak - r.RSSBase; g > bound {
		t.Errorf("proxyd's RSS grew by %.1f MiB while %d clients held answers; the bound is %.1f MiB (%d × %d KiB page × %d + %d MiB)",
			float64(g)/1024, apiHolders, float64(bound)/1024, apiHolders, len(page)>>10, heapHeadroom, maxAPIHoldSlackKiB>>10)
	}
	after := d.metric(t, "go_goroutines")
	if limit := float64(r.GorBase + goroutineSlack); after > limit {
		t.Errorf("%v goroutines after the holders were cut off (base %d): handlers still hang", after, r.GorBase)
	}
}
