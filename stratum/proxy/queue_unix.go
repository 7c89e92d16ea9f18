//go:build unix

package proxy

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawWriter writes to a socket without waiting: the socket is non-blocking
// (the Go runtime sets it so), and the callback never asks the runtime to
// wait for it to become writable. Not safe for concurrent use: the
// writeQueue's flushing flag gives one writer at a time.
type rawWriter struct{ rc syscall.RawConn }

func newRawWriter(rc syscall.RawConn) *rawWriter { return &rawWriter{rc: rc} }

// writeOp is one write's state. Its callback is built once per pooled
// writeOp so that a write allocates nothing (a closure capturing its results
// would, on every write of every fan-out). Pooling it rather than keeping
// one per connection saves 190 bytes a miner: only the writes in progress
// at one moment hold one.
type writeOp struct {
	lines [][]byte
	held  [4][]byte // lines is copied here, so the caller's slice does not escape
	n     int
	err   error
	fn    func(fd uintptr) bool
}

// writeOps is a cache of scratch state, as fmt and encoding/json keep
// theirs: nothing in it outlives a write or is observable.
var writeOps = sync.Pool{New: func() any {
	w := &writeOp{}
	w.fn = w.write
	return w
}}

func (w *writeOp) write(fd uintptr) bool {
	for {
		if len(w.lines) == 1 {
			w.n, w.err = unix.Write(int(fd), w.lines[0])
		} else {
			w.n, w.err = unix.Writev(int(fd), w.lines)
		}
		if !errors.Is(w.err, unix.EINTR) {
			break
		}
	}
	if w.n < 0 {
		w.n = 0
	}
	if errors.Is(w.err, unix.EAGAIN) {
		w.err = nil
	}
	return true
}

// writeNow writes as much of lines as the socket takes at once. n is the
// bytes written; err is nil when the socket was full (n short), and a real
// error when the connection failed. RawConn.Write holds the fd's write
// lock, like any other write.
func (r *rawWriter) writeNow(lines [][]byte) (n int, err error) {
	w := writeOps.Get().(*writeOp)
	w.lines, w.n, w.err = append(w.held[:0], lines...), 0, nil
	cerr := r.rc.Write(w.fn)
	n, err = w.n, w.err
	clear(w.held[:]) // hold no line past the write
	w.lines, w.err = nil, nil
	writeOps.Put(w)
	if cerr != nil {
		return 0, cerr
	}
	return n, err
}
