package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// relay is a TCP relay on loopback between proxyd and a test pool. It can
// stall the link (stop forwarding in both directions, connections kept open,
// as a congested or black-holed WAN link does), play a dead pool behind a
// live address (accept, then close at once) and count every connection it
// accepts: each one is a dial proxyd made.
type relay struct {
	t      testing.TB
	ln     net.Listener
	target string
	dials  atomic.Int64

	mu      sync.Mutex    // guards everything below
	stalled chan struct{} // non-nil while stalled; closed on resume
	refuse  bool
	conns   map[net.Conn]struct{}
	closed  bool

	wg sync.WaitGroup // the accept loop and every copy loop
}

func newRelay(t testing.TB, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

// URL is what proxyd's [[pool]] url should say.
func (r *relay) URL() string { return "stratum+tcp://" + r.ln.Addr().String() }

// stall stops forwarding; bytes already in flight stay in the kernel's
// buffers, as on a stalled link.
func (r *relay) stall() {
	r.mu.Lock()
	if r.stalled == nil {
		r.stalled = make(chan struct{})
	}
	r.mu.Unlock()
}

// resume forwards again, everything held back first.
func (r *relay) resume() {
	r.mu.Lock()
	if r.stalled != nil {
		close(r.stalled)
		r.stalled = nil
	}
	r.mu.Unlock()
}

// die makes the pool look dead: every open link is cut and every new
// connection is closed as soon as it is accepted.
func (r *relay) die() {
	r.mu.Lock()
	r.refuse = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
}

// gate blocks while the relay is stalled.
func (r *relay) gate() {
	r.mu.Lock()
	ch := r.stalled
	r.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.refuse {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.t.Logf("relay accept: %v", err)
			}
			return
		}
		r.dials.Add(1)
		if !r.track(c) {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil || !r.track(up) {
			_ = c.Close()
			if up != nil {
				_ = up.Close()
			}
			continue
		}
		r.wg.Add(2)
		go r.pipe(up, c)
		go r.pipe(c, up)
	}
}

// pipe copies src to dst until either side ends, then closes both.
func (r *relay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		r.gate()
		n, err := src.Read(buf)
		if n > 0 {
			r.gate() // a read that completed during a stall is held too
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				r.t.Logf("relay: %v", err)
			}
			return
		}
	}
}

func (r *relay) close() {
	_ = r.ln.Close()
	r.resume()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
