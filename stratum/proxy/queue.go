package proxy

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// errQueueFull means a peer did not read fast enough and was given up on.
var errQueueFull = errors.New("write queue full: the peer is not reading")

// errQueueClosed means the connection is gone.
var errQueueClosed = errors.New("connection closed")

// writeQueue serialises writes to one connection without ever making the
// sender wait on the peer. Lines are queued (shared, pre-encoded lines are
// queued by reference, never copied) and written with writev by a flusher:
// either the sender itself (inline, for upstream sessions where the sender
// is a miner's goroutine and a slow pool is back-pressure) or a short-lived
// goroutine started on demand (for miners, so that one slow ASIC never delays
// the job fan-out to the others).
//
// Before any of that, a send to an idle miner queue tries the write at once,
// without waiting (rawWriter.writeNow): a healthy miner's socket has room for a job,
// so the fan-out to 10,000 miners is 10,000 writes, not 10,000 goroutines.
// Whatever does not fit (a miner not reading) is queued ahead of everything
// else, since a line must never be split by another, and the flusher takes
// over.
//
// A queue past its byte limit fails (and the caller closes the connection)
// only when the peer has also stopped taking data: no write completed for
// stallAfter. A peer that reads, just more slowly than a burst arrives, keeps
// its queue up to hardLimitFactor times the limit.
//
// Everything is guarded by mu; the write itself happens outside it.
type writeQueue struct {
	conn         net.Conn
	limit        int // queued bytes allowed
	writeTimeout time.Duration
	inline       bool
	raw          *rawWriter         // immediate writes; nil when conn has no fd (tests' pipes)
	onError      func(error)        // called once, outside mu, when a write fails
	written      prometheus.Counter // bytes written; counted here because wrapping conn would lose writev

	mu       sync.Mutex
	prio     [][]byte // block candidates: written before anything else queued
	normal   [][]byte
	queued   int
	flushing bool
	progress time.Time // last time a write completed or the queue was empty
	err      error
}

const (
	stallAfter      = 5 * time.Second
	hardLimitFactor = 16
)

func newWriteQueue(conn net.Conn, limit int, writeTimeout time.Duration, inline bool, written prometheus.Counter, onError func(error)) *writeQueue {
	q := &writeQueue{conn: conn, limit: limit, writeTimeout: writeTimeout, inline: inline, written: written, onError: onError}
	if sc, ok := conn.(syscall.Conn); ok && !inline {
		if rc, err := sc.SyscallConn(); err == nil {
			q.raw = newRawWriter(rc)
		}
	}
	return q
}

// send queues lines (in order) and makes sure they get written. prio puts
// them ahead of everything not yet written.
func (q *writeQueue) send(prio bool, lines ...[]byte) error {
	q.mu.Lock()
	if q.err != nil {
		q.mu.Unlock()
		return q.err
	}
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	if q.queued == 0 {
		q.progress = time.Now()
	}
	if over := q.queued + n; over > q.limit && (over > hardLimitFactor*q.limit || time.Since(q.progress) > stallAfter) {
		q.err = errQueueFull
		q.mu.Unlock()
		return errQueueFull
	}
	if !q.flushing && q.queued == 0 && q.raw != nil {
		// Nothing queued and nobody writing: try the write here.
		q.flushing = true
		q.mu.Unlock()
		return q.sendNow(lines, n)
	}
	if prio {
		q.prio = append(q.prio, lines...)
	} else {
		q.normal = append(q.normal, lines...)
	}
	q.queued += n
	if q.flushing {
		q.mu.Unlock()
		return nil
	}
	q.flushing = true
	q.mu.Unlock()
	if q.inline {
		return q.flush()
	}
	go q.flush()
	return nil
}

// sendNow writes lines (n bytes) without waiting and hands what is left,
// and whatever other senders queued meanwhile, to a flusher. The caller has
// set q.flushing, so no other write to the connection can start.
func (q *writeQueue) sendNow(lines [][]byte, n int) error {
	wrote, err := q.raw.writeNow(lines)
	if wrote > 0 && q.written != nil {
		q.written.Add(float64(wrote))
	}
	if err != nil {
		return q.fail(err)
	}
	q.mu.Lock()
	if wrote < n {
		if wrote > 0 {
			// A complete write needs no stamp: send stamped progress when it
			// found the queue empty, a moment ago.
			q.progress = time.Now()
		}
		// The rest goes first: a line cut short must be finished before any
		// other, even a block candidate queued meanwhile.
		rest := unwritten(lines, wrote)
		q.prio = append(rest, q.prio...)
		q.queued += n - wrote
	}
	if len(q.prio) == 0 && len(q.normal) == 0 {
		q.flushing = false
		q.mu.Unlock()
		return nil
	}
	q.mu.Unlock()
	go q.flush()
	return nil
}

// unwritten returns what of lines remains after the first wrote bytes, as
// a new slice (lines is the caller's).
func unwritten(lines [][]byte, wrote int) [][]byte {
	var rest [][]byte
	for _, l := range lines {
		switch {
		case wrote >= len(l):
			wrote -= len(l)
		case wrote > 0:
			rest = append(rest, l[wrote:])
			wrote = 0
		default:
			rest = append(rest, l)
		}
	}
	return rest
}

// flush writes until the queue is empty. Only one flusher runs at a time.
func (q *writeQueue) flush() error {
	var slab [][]byte // reused between rounds; WriteTo consumes a copy of its header
	for {
		q.mu.Lock()
		if q.err != nil || (len(q.prio) == 0 && len(q.normal) == 0) {
			if q.writeTimeout > 0 && q.raw != nil {
				// writeNow never waits but still fails on a deadline that
				// has passed: clear ours while no other write can start.
				_ = q.conn.SetWriteDeadline(time.Time{})
			}
			q.flushing = false
			err := q.err
			q.mu.Unlock()
			return err
		}
		slab = append(slab[:0], q.prio...)
		slab = append(slab, q.normal...)
		clear(q.prio)
		clear(q.normal)
		q.prio, q.normal = q.prio[:0], q.normal[:0]
		q.queued = 0
		q.mu.Unlock()

		if q.writeTimeout > 0 {
			_ = q.conn.SetWriteDeadline(time.Now().Add(q.writeTimeout))
		}
		batch := net.Buffers(slab)
		n, err := batch.WriteTo(q.conn)
		if n > 0 && q.written != nil {
			q.written.Add(float64(n))
		}
		if err == nil {
			q.mu.Lock()
			q.progress = time.Now()
			q.mu.Unlock()
		}
		clear(slab) // drop references to lines already written
		if err != nil {
			return q.fail(err)
		}
	}
}

// fail records a write error, ends the flushing role and tells the owner
// (outside mu). Returns err.
func (q *writeQueue) fail(err error) error {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.flushing = false
	q.mu.Unlock()
	if q.onError != nil {
		q.onError(err)
	}
	return err
}

// close fails every later send.
func (q *writeQueue) close() {
	q.mu.Lock()
	if q.err == nil {
		q.err = errQueueClosed
	}
	q.mu.Unlock()
}

// idle reports that nothing is queued or being written (or the queue failed).
func (q *writeQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err != nil || (!q.flushing && len(q.prio) == 0 && len(q.normal) == 0)
}
