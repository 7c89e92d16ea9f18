//go:build linux

package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hashgate/proxyd/stratum"
)

// readLoop watches the sockets of one listener's miners with an epoll
// instance, so that a miner waiting for its next share holds neither a
// goroutine nor a read buffer. At 10,000 miners a parked reader goroutine
// (its stack of at least 2 KiB, its read buffer and Reader, and their share
// of the garbage collector's headroom) was about half of proxyd's memory
// per miner (docs/PERFORMANCE.md, issue 16).
//
// Each socket is registered one-shot. run waits for readable sockets and
// hands each such miner to a handler goroutine (handlers.submit); run
// itself never reads a socket or handles a line, so a handler that waits
// (a pass-through authorization, a slow pool taking a forwarded share)
// holds up only its own miner, as with a reader goroutine per miner. The
// handler's turn (readTurn) reads what the socket holds without blocking,
// handles every whole line in order and re-arms the socket as its last
// act: a miner's lines are still handled one at a time and in order, and a
// miner whose answers pile up unread is not read until they drain. Writes
// are untouched (writeQueue). Read deadlines (subscribe_timeout,
// idle_timeout) are checked by sweep, since no read blocks.
//
// TLS connections have no socket to read raw and keep a goroutine each
// (serve), as do all miners where add fails and on other systems.
//
// run and sweep are joined by Proxy.Stop through the proxy's WaitGroup;
// they end with the proxy's context. rl.mu guards miners; rl.emu guards
// epfd.
type readLoop struct {
	s       *server
	inBytes prometheus.Counter // bytes read from this listener's miners
	// ep is the epoll instance as a file in Go's own poller, so that run
	// waits for it like for a socket (a goroutine parked in the netpoller)
	// instead of blocking a thread in epoll_wait: a thread returning from
	// a blocking system call must win a P back (about a third of proxyd's
	// CPU at 333 shares/s, measured on branch h9-perf).
	ep *os.File

	emu    sync.RWMutex // guards epfd: add and rearm use it, stop closes it
	epfd   int          // -1 once stopped
	mu     sync.Mutex   // guards miners
	miners map[uint64]*miner
}

// readBufSize is the buffer a turn reads a miner's socket into; lines
// longer than it grow a buffer of their own, up to max_line_bytes.
const readBufSize = 4096

// maxReadsPerTurn bounds the reads one readiness event gets before the
// socket is re-armed (and, if it still holds data, fires again), so a
// flooding miner cannot keep a handler to itself.
const maxReadsPerTurn = 8

// readBufs holds read buffers between turns: a buffer is held only while a
// turn reads. readBufs and readOps are caches of scratch memory, as fmt
// and encoding/json keep theirs: nothing in them is observable state.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, readBufSize); return &b }}

// readOps holds the per-turn state of a read (its closures are built once).
var readOps = sync.Pool{New: func() any { return newReadOp() }}

// newReadLoop creates the epoll instance. The caller starts run and sweep.
func newReadLoop(s *server, inBytes prometheus.Counter) (*readLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	// A non-blocking fd handed to os.NewFile joins Go's poller.
	return &readLoop{s: s, inBytes: inBytes, ep: os.NewFile(uintptr(epfd), "epoll"), epfd: epfd, miners: map[uint64]*miner{}}, nil
}

// setEventID stores a miner id in an event's 64-bit user data.
func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// add registers m's socket and reports whether the loop now reads it; on
// false the caller reads m with a goroutine of its own (serve).
func (rl *readLoop) add(m *miner) bool {
	sc, ok := m.conn.(syscall.Conn)
	if !ok {
		return false // TLS
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	m.rc = rc // before the miner is published to run (under rl.mu)
	rl.mu.Lock()
	rl.miners[m.id] = m
	rl.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&ev, m.id)
	var ctlErr error
	rl.emu.RLock()
	err = rc.Control(func(fd uintptr) {
		if rl.epfd < 0 {
			ctlErr = errReadLoopStopped
			return
		}
		ctlErr = unix.EpollCtl(rl.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	rl.emu.RUnlock()
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		rl.remove(m) // serve reads it instead; m.rc stays unused
		return false
	}
	return true
}

// errReadLoopStopped: the loop has stopped (the proxy is stopping, or the
// loop failed).
var errReadLoopStopped = errors.New("read loop stopped")

// remove forgets m (its socket's registration ends when it closes). A nil
// loop (no read loop on this server) has nothing to forget.
func (rl *readLoop) remove(m *miner) {
	if rl == nil {
		return
	}
	rl.mu.Lock()
	delete(rl.miners, m.id)
	rl.mu.Unlock()
}

// watching returns how many miners the loop reads.
func (rl *readLoop) watching() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.miners)
}

// run waits for readable sockets and hands their miners to handlers until
// ctx ends.
func (rl *readLoop) run(ctx context.Context) {
	defer rl.s.p.wg.Done()
	stop := context.AfterFunc(ctx, func() {
		rl.emu.Lock()
		rl.epfd = -1
		rl.emu.Unlock()
		_ = rl.ep.Close() // ends the wait below
	})
	defer stop()
	rc, err := rl.ep.SyscallConn()
	if err != nil {
		rl.fail(fmt.Errorf("no raw access to the epoll fd: %w", err))
		return
	}
	events := make([]unix.EpollEvent, 256)
	ready := make([]*miner, 0, len(events))
	var n int
	var werr error
	// Go's poller reports the epoll fd edge-triggered: wait returns (and
	// run waits again) only when epoll_wait found nothing, so events left
	// over from a full batch are taken at once, never missed.
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events, 0)
		return n > 0 || (werr != nil && !errors.Is(werr, unix.EINTR))
	}
	for {
		if err := rc.Read(wait); err != nil {
			return // closed: the proxy is stopping (or fail closed it)
		}
		if werr != nil {
			rl.fail(fmt.Errorf("epoll_wait: %w", werr))
			return
		}
		rl.mu.Lock()
		for i := range n {
			if m := rl.miners[eventID(&events[i])]; m != nil {
				ready = append(ready, m)
			}
		}
		rl.mu.Unlock()
		for i, m := range ready {
			rl.s.p.handlers.submit(m)
			ready[i] = nil
		}
		ready = ready[:0]
	}
}

// fail stops the loop for good while the proxy runs on: new miners get a
// reader goroutine each (add refuses them), and the miners the loop was
// reading are disconnected, so that they reconnect and get one too.
func (rl *readLoop) fail(err error) {
	rl.emu.Lock()
	rl.epfd = -1
	rl.emu.Unlock()
	_ = rl.ep.Close()
	rl.mu.Lock()
	miners := make([]*miner, 0, len(rl.miners))
	for _, m := range rl.miners {
		miners = append(miners, m)
	}
	rl.mu.Unlock()
	rl.s.log.Error("the read loop failed; disconnecting its miners, who will reconnect and be read by a goroutine each",
		zap.Error(err), zap.Int("miners", len(miners)))
	for _, m := range miners {
		m.close("read_error", err)
	}
}

// sweep closes miners whose read deadline (readDeadline) has passed,
// checking every interval until ctx ends.
func (rl *readLoop) sweep(ctx context.Context, interval time.Duration) {
	defer rl.s.p.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var batch []*miner // reused: the sweep allocates nothing in steady state
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		batch = batch[:0]
		rl.mu.Lock()
		for _, m := range rl.miners {
			batch = append(batch, m)
		}
		rl.mu.Unlock()
		now := rl.s.p.clock.Now() // readDeadline is on the proxy's clock
		for i, m := range batch {
			if now.After(m.readDeadline()) {
				m.readFailed(os.ErrDeadlineExceeded)
			}
			batch[i] = nil
		}
	}
}

// sweepInterval is how often deadlines are checked: a quarter of the
// shorter timeout, between 10 ms and 1 s. A miner is therefore closed up to
// that much after its deadline.
func sweepInterval(subscribe, idle time.Duration) time.Duration {
	return min(max(min(subscribe, idle)/4, 10*time.Millisecond), time.Second)
}

// rearm asks for the next readiness event of m's socket.
func (rl *readLoop) rearm(m *miner, op *readOp) {
	rl.emu.RLock()
	defer rl.emu.RUnlock()
	if rl.epfd < 0 {
		return
	}
	op.epfd = rl.epfd
	op.ev = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&op.ev, m.id)
	// Inside Control the socket cannot be closed (and its number reused).
	_ = m.rc.Control(op.ctl)
}

// readOp is one turn's read and re-arm; its closures are built once per
// pooled readOp, so a turn allocates nothing.
type readOp struct {
	p    []byte
	n    int
	err  error
	read func(fd uintptr) bool
	epfd int
	ev   unix.EpollEvent
	ctl  func(fd uintptr)
}

func newReadOp() *readOp {
	op := &readOp{}
	op.read = func(fd uintptr) bool {
		for {
			op.n, op.err = unix.Read(int(fd), op.p)
			if !errors.Is(op.err, unix.EINTR) {
				return true // never wait: the read loop says when to read
			}
		}
	}
	op.ctl = func(fd uintptr) { _ = unix.EpollCtl(op.epfd, unix.EPOLL_CTL_MOD, int(fd), &op.ev) }
	return op
}

// readNow reads what m's socket holds into p without waiting; n is 0 with
// unix.EAGAIN when it holds nothing, and with io.EOF when the miner closed.
func (m *miner) readNow(op *readOp, p []byte) (int, error) {
	op.p = p
	if err := m.rc.Read(op.read); err != nil {
		return 0, err
	}
	n, err := op.n, op.err
	op.p = nil
	switch {
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// exec runs a readiness event of m's socket on a handler goroutine
// (handlerWork).
func (m *miner) exec() {
	// Turns are ordered by the kernel (a turn re-arms the socket as its
	// last act), which Go's memory model and race detector cannot see:
	// the lock makes the order explicit, and serialises two turns should
	// one ever overlap another.
	m.turn.Lock()
	defer m.turn.Unlock()
	op := readOps.Get().(*readOp)
	m.readTurn(op)
	readOps.Put(op)
}

// readTurn reads what m's socket holds without blocking, handles every
// whole line in order, keeps a partial line for the next turn and re-arms
// the socket; m.turn is held.
func (m *miner) readTurn(op *readOp) {
	rl := m.srv.rl
	buf, pooled := m.inbuf, false
	if buf == nil {
		buf, pooled = *readBufs.Get().(*[]byte), true
	}
	drained := false // the last read was short: the socket held no more
	for reads := 0; ; {
		rest, room, ok := m.handleBuffered(buf)
		buf = buf[:copy(buf, rest)]
		switch {
		case !ok:
			m.inbuf = nil
			putReadBuf(buf, pooled)
			return
		case room != nil:
			// Answers are piling up unread: take no more requests until
			// they drain (or the stall deadline drops the miner).
			m.keepPartial(&buf, &pooled)
			m.resumeWhenRoom(room)
			return
		}
		if drained || reads == maxReadsPerTurn {
			break
		}
		if len(buf) == cap(buf) {
			if cap(buf) >= m.srv.cfg.MaxLineBytes {
				m.inbuf = nil
				putReadBuf(buf, pooled)
				m.readFailed(fmt.Errorf("%w (%d bytes without a newline)", stratum.ErrLineTooLong, m.srv.cfg.MaxLineBytes))
				return
			}
			grown := make([]byte, len(buf), min(2*cap(buf), m.srv.cfg.MaxLineBytes))
			copy(grown, buf)
			putReadBuf(buf, pooled)
			buf, pooled = grown, false
		}
		space := cap(buf) - len(buf)
		n, err := m.readNow(op, buf[len(buf):cap(buf)])
		reads++
		if n > 0 {
			buf = buf[:len(buf)+n]
			rl.inBytes.Add(float64(n))
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				// A last line without a terminator still counts.
				buf = append(buf, '\n')
				if _, _, ok := m.handleBuffered(buf); !ok {
					m.inbuf = nil
					putReadBuf(buf, pooled)
					return
				}
			}
			m.inbuf = nil
			putReadBuf(buf, pooled)
			m.readFailed(err)
			return
		}
		// A short read took all the socket held: no read just to hear
		// EAGAIN. The registration is level-triggered, so bytes that come
		// meanwhile fire it again once re-armed.
		drained = n < space
	}
	m.keepPartial(&buf, &pooled)
	rl.rearm(m, op)
}

// putReadBuf gives a pooled buffer back.
func putReadBuf(b []byte, pooled bool) {
	if pooled && cap(b) == readBufSize {
		b = b[:0]
		readBufs.Put(&b)
	}
}

// keepPartial keeps what is left of a line for the next turn: nothing (the
// usual case: the pooled buffer goes back) or a copy of the partial line.
func (m *miner) keepPartial(buf *[]byte, pooled *bool) {
	b := *buf
	switch {
	case len(b) == 0:
		m.inbuf = nil
		putReadBuf(b, *pooled)
	case *pooled:
		keep := make([]byte, len(b), max(len(b), 512))
		copy(keep, b)
		putReadBuf(b, true)
		m.inbuf = keep
	default:
		m.inbuf = b
	}
	*buf, *pooled = nil, false
}

// handleBuffered handles every whole line in buf, in order. It returns the
// bytes after the last line handled; the write queue's room channel when
// the miner must wait before more lines; and false when the miner was
// dropped.
func (m *miner) handleBuffered(buf []byte) (rest []byte, room <-chan struct{}, ok bool) {
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return buf, nil, true
		}
		line := buf[:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			buf = buf[i+1:]
			continue
		}
		if room := m.wq.waitRoom(); room != nil {
			return buf, room, true
		}
		if isDone(m.closed) || !m.handleLine(line) {
			return nil, nil, false
		}
		buf = buf[i+1:]
	}
}

// resumeWhenRoom hands m back to a handler once its write queue has room
// (or lets it go if the miner closes meanwhile).
func (m *miner) resumeWhenRoom(room <-chan struct{}) {
	if !m.p.tasks.spawn(func() {
		select {
		case <-room:
			if !isDone(m.closed) {
				m.p.handlers.submit(m)
			}
		case <-m.closed:
		}
	}) {
		m.close("shutdown", nil)
	}
}
