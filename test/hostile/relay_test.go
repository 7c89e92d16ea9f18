//go:build linux

package hostile

import (
	"net"
	"sync"
	"testing"
	"time"
)

// relay sits between proxyd and the test pool, so the suite can count
// every connection proxyd opens towards its pool (accepts, including the
// ones that fail), stall the link in both directions and let it recover,
// or play a dead pool whose port still accepts each connection, holds it
// for deadHold without a word and closes it.
// Its mutex guards the mode and the connection set; each relayed
// connection has two copy goroutines, joined by close.
type relay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	stop   chan struct{} // closed by close: ends the dead pool's holds

	mu      sync.Mutex
	dead    bool          // accept, hold deadHold, close
	gate    chan struct{} // closed while the link flows; open (unclosed) while stalled
	conns   map[net.Conn]struct{}
	accepts []time.Time
	closed  bool
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target, stop: make(chan struct{}), gate: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(r.gate)
	r.wg.Add(1)
	go r.acceptLoop()
	t.Cleanup(r.close)
	return r
}

// URL is the pool URL to give proxyd.
func (r *relay) URL() string { return "stratum+tcp://" + r.ln.Addr().String() }

func (r *relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.accepts = append(r.accepts, time.Now())
		if r.closed {
			r.mu.Unlock()
			_ = c.Close()
			continue
		}
		if r.dead {
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				t := time.NewTimer(deadHold)
				defer t.Stop()
				select {
				case <-t.C:
				case <-r.stop:
				}
				_ = c.Close()
			}()
			continue
		}
		r.conns[c] = struct{}{}
		r.mu.Unlock()
		up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			r.drop(c)
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			_ = up.Close()
			r.drop(c)
			continue
		}
		r.conns[up] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(c, up)
		go r.pipe(up, c)
	}
}

// pipe copies src to dst, holding each chunk while the link is stalled.
func (r *relay) pipe(src, dst net.Conn) {
	defer r.wg.Done()
	defer r.drop(src)
	defer r.drop(dst)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			gate := r.gate
			r.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *relay) drop(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	_ = c.Close()
}

// stall holds every byte in both directions until resume.
func (r *relay) stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.gate:
		r.gate = make(chan struct{})
	default:
	}
}

// resume lets the held bytes and everything after them through.
func (r *relay) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.gate:
	default:
		close(r.gate)
	}
}

// deadHold is how long the dead pool holds each connection before closing
// it, like a hung pool process (or a balancer in front of a dead one): long
// enough that a proxy which dials without waiting for its first failure
// shows every dial.
const deadHold = 200 * time.Millisecond

// kill drops every relayed connection and from then on holds and closes
// each new one: the pool is dead, its port still answers.
func (r *relay) kill() {
	r.mu.Lock()
	r.dead = true
	cs := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// acceptsBetween counts the connections proxyd opened in [from, to).
func (r *relay) acceptsBetween(from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.accepts {
		if !a.Before(from) && a.Before(to) {
			n++
		}
	}
	return n
}

func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	r.resume()
	_ = r.ln.Close()
	r.kill()
	r.wg.Wait()
}
