package proxy

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// lineWork is one line handed from a miner's reader goroutine to a handler.
// The reader waits on done before reading on, so a miner's lines are still
// handled one at a time and in order; only the stack they run on changes.
// Each miner owns one lineWork for its whole connection.
type lineWork struct {
	m    lineHandler
	line []byte // aliases the miner's read buffer until done
	keep bool   // set by the handler: false when the miner was dropped
	done chan struct{}
}

// lineHandler handles one line of a connection; false drops the connection.
// *miner is the one in production.
type lineHandler interface {
	handleLine(line []byte) bool
}

// handlerWork is work for a handler goroutine: a line handed over by a
// miner's reader goroutine (lineWork), or a miner whose socket the read
// loop found readable (*miner, readloop_linux.go).
type handlerWork interface{ exec() }

// exec handles the line and tells the waiting reader.
func (w *lineWork) exec() {
	w.keep = w.m.handleLine(w.line)
	w.done <- struct{}{}
}

// handlers runs miners' lines on goroutines shared by all miners.
//
// Why: a goroutine's stack grows to fit the deepest call it makes and the
// runtime only halves it at a GC, and only when a quarter of it is in use.
// Handling a share goes about 5 KiB deep (parse, validate with sha256d,
// forward, writev), so with one goroutine per miner doing everything every
// parked miner kept an 8 KiB stack: 80 MiB at 10,000 miners, measured with
// pprof. The reader goroutine now only reads, and parked in Read it fits a
// 4 KiB stack; the deep work runs here, on as many goroutines as are busy at
// once (a few, in steady state).
//
// A line goes to an idle handler if there is one, otherwise to a new
// goroutine, so a handler blocked on a slow pool or a pass-through
// authorization never holds up other miners. Up to maxIdle handlers wait
// for work; the rest exit when done. Idle handlers exit when ctx ends.
type handlers struct {
	ctx     context.Context
	work    chan handlerWork // unbuffered: a send succeeds only if a handler waits
	idle    atomic.Int32
	maxIdle int32
	// wg counts the handler goroutines. Only miners' readers start them
	// (in do), so the proxy waits for it after joining the readers.
	wg sync.WaitGroup
}

func newHandlers(ctx context.Context) *handlers {
	return &handlers{ctx: ctx, work: make(chan handlerWork), maxIdle: int32(max(16, 4*runtime.GOMAXPROCS(0)))}
}

// do handles w.line and reports whether the miner may go on.
func (h *handlers) do(w *lineWork) bool {
	h.submit(w)
	<-w.done
	return w.keep
}

// submit runs j on an idle handler, or on a new one; it never blocks.
func (h *handlers) submit(j handlerWork) {
	select {
	case h.work <- j:
	default:
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.run(j)
		}()
	}
}

// wait returns once every handler has ended: after ctx is done and no
// reader or read loop submits work any more.
func (h *handlers) wait() { h.wg.Wait() }

func (h *handlers) run(j handlerWork) {
	for {
		j.exec()
		if h.idle.Add(1) > h.maxIdle {
			h.idle.Add(-1)
			return
		}
		select {
		case j = <-h.work:
			h.idle.Add(-1)
		case <-h.ctx.Done():
			h.idle.Add(-1)
			return
		}
	}
}
