package proxy

import (
	"errors"
	"fmt"
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
// What the queue holds for the peer is everything not yet written: the lines
// queued and the batch being written (at most maxBatchBytes, plus one line
// when a single line is larger). Past the byte limit, a send fails (and the
// caller closes the connection) when the peer has also stopped taking data:
// nothing written for stall (stallAfter by default). A peer that reads, just more slowly than a
// burst arrives, may be held up to hardLimitFactor times the limit; a send
// that would pass that fails at once. While it holds more than the limit,
// the write in progress has a deadline of stall past the last progress
// (not only writeTimeout), so a peer that stopped reading is given up on
// then even if nothing more is sent to it.
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

	now   func() time.Time // the clock: time.Now except in tests
	stall time.Duration    // stallAfter unless the owner sets another before use
	// flushers, when the owner sets it before use, counts this queue's
	// flusher goroutines so the owner can join them (Proxy.Stop does).
	flushers *sync.WaitGroup

	mu       sync.Mutex
	prio     [][]byte // block candidates: written before anything else queued
	normal   [][]byte
	queued   int // bytes in prio and normal
	writing  int // bytes of the batch being written
	flushing bool
	progress time.Time // last time bytes were written, or the queue was empty
	err      error
	room     chan struct{} // closed when held drops to the limit or the queue fails; nil if nobody waits
}

const (
	stallAfter      = 5 * time.Second // the default stall
	hardLimitFactor = 16
	// maxBatchBytes bounds one flush write, so progress (and the write
	// deadline) is measured in steps a slow but reading peer can make.
	maxBatchBytes = 64 << 10
)

func newWriteQueue(conn net.Conn, limit int, writeTimeout time.Duration, inline bool, written prometheus.Counter, onError func(error)) *writeQueue {
	q := &writeQueue{conn: conn, limit: limit, writeTimeout: writeTimeout, inline: inline, written: written, onError: onError, now: time.Now, stall: stallAfter}
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
	held := q.queued + q.writing
	now := q.now()
	if held == 0 {
		q.progress = now
	}
	if over := held + n; over > q.limit && (over > hardLimitFactor*q.limit || now.Sub(q.progress) > q.stall) {
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
		if q.writing > 0 && held <= q.limit && held+n > q.limit {
			q.armDeadlineLocked() // just went over the limit: the stall deadline applies now
		}
		q.mu.Unlock()
		return nil
	}
	q.flushing = true
	q.mu.Unlock()
	if q.inline {
		return q.flush()
	}
	q.startFlush()
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
			q.progress = q.now()
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
	q.startFlush()
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

// startFlush runs flush on a goroutine of its own, counted in q.flushers
// when the owner set one.
func (q *writeQueue) startFlush() {
	if q.flushers == nil {
		go q.flush()
		return
	}
	q.flushers.Add(1)
	go func() {
		defer q.flushers.Done()
		_ = q.flush()
	}()
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
		slab = slab[:0]
		size := 0
		q.prio = takeBatch(q.prio, &slab, &size)
		if len(q.prio) == 0 {
			q.normal = takeBatch(q.normal, &slab, &size)
		}
		q.queued -= size
		q.writing = size
		q.armDeadlineLocked()
		q.mu.Unlock()

		batch := net.Buffers(slab)
		n, err := batch.WriteTo(q.conn)
		if n > 0 && q.written != nil {
			q.written.Add(float64(n))
		}
		q.mu.Lock()
		if err != nil && isTimeout(err) && q.queued+q.writing > q.limit {
			err = fmt.Errorf("%w (%d bytes held, nothing written for %s)", errQueueFull, q.queued+q.writing, q.stall)
		}
		q.writing = 0
		if n > 0 {
			q.progress = q.now()
		}
		q.signalRoomLocked()
		q.mu.Unlock()
		clear(slab) // drop references to lines already written
		if err != nil {
			return q.fail(err)
		}
	}
}

// armDeadlineLocked sets the deadline of the write in progress: writeTimeout
// from now or, while more than the limit is held, stall past the last
// progress if that is sooner. Set under mu, so a later call always reflects
// what is held now. q.mu held.
func (q *writeQueue) armDeadlineLocked() {
	var d time.Time
	wall := time.Now()
	if q.writeTimeout > 0 {
		d = wall.Add(q.writeTimeout)
	}
	if q.queued+q.writing > q.limit {
		if s := wall.Add(q.stall - q.now().Sub(q.progress)); d.IsZero() || s.Before(d) {
			d = s
		}
	}
	if !d.IsZero() {
		_ = q.conn.SetWriteDeadline(d)
	}
}

// takeBatch moves lines from the front of src to batch while the batch stays
// within maxBatchBytes (always at least one line), adding their bytes to
// size, and returns what is left of src, moved to its front (nil when
// nothing is).
func takeBatch(src [][]byte, batch *[][]byte, size *int) [][]byte {
	i := 0
	for ; i < len(src); i++ {
		if *size > 0 && *size+len(src[i]) > maxBatchBytes {
			break
		}
		*batch = append(*batch, src[i])
		*size += len(src[i])
	}
	n := copy(src, src[i:])
	clear(src[n:])
	if n == 0 {
		// Emptied: let the array go rather than keep it for a miner that
		// may idle for minutes; the rare next overflow allocates again.
		return nil
	}
	return src[:n]
}

// held is what the queue holds for the peer: queued and being written.
func (q *writeQueue) held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued + q.writing
}

// fail records a write error, ends the flushing role and tells the owner
// (outside mu). Returns err.
func (q *writeQueue) fail(err error) error {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.signalRoomLocked()
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
	q.signalRoomLocked()
	q.mu.Unlock()
}

// waitRoom returns nil while the queue holds at most its limit; otherwise a
// channel closed once it holds no more than that, or fails. A miner's reader
// waits on it before taking another request, so a client that does not read
// its answers cannot grow its queue by asking more: only what the pool
// sends can take it past the limit, and the stall deadline then drops it.
func (q *writeQueue) waitRoom() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil || q.queued+q.writing <= q.limit {
		return nil
	}
	if q.room == nil {
		q.room = make(chan struct{})
	}
	return q.room
}

// signalRoomLocked wakes waitRoom's waiters if there is room now. q.mu held.
func (q *writeQueue) signalRoomLocked() {
	if q.room != nil && (q.err != nil || q.queued+q.writing <= q.limit) {
		close(q.room)
		q.room = nil
	}
}

// idle reports that nothing is queued or being written (or the queue failed).
func (q *writeQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err != nil || (!q.flushing && len(q.prio) == 0 && len(q.normal) == 0)
}
