package stratum

import (
	"bytes"
	"fmt"
	"io"
)

// DefaultMaxLineBytes is the line cap used when NewReader is given none. Real
// messages stay under about 4 KiB (a notify with 13 merkle branches and a
// long coinbase); anything past 16 KiB is treated as hostile.
const DefaultMaxLineBytes = 16 << 10

// minMaxLineBytes keeps a misconfigured cap from refusing every real message.
const minMaxLineBytes = 512

// initialReadBuffer holds any miner-side message (submit, subscribe,
// configure) without growing.
const initialReadBuffer = 512

// Reader splits a Stratum stream into lines terminated by "\n" or "\r\n".
// Its buffer starts small (a miner's lines are a few hundred bytes, and a
// farm proxy holds one Reader per ASIC) and doubles as longer lines arrive,
// never beyond the line cap: a line longer than the cap fails with
// ErrLineTooLong after at most the cap has been read from the underlying
// reader, whatever the peer sends.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	r          io.Reader
	buf        []byte
	max        int // the line cap; len(buf) <= max
	start, end int // unread data is buf[start:end]
	scanned    int // buf[start:start+scanned] is known to hold no '\n'
	read       uint64
	err        error
	shrinkTo   int // > 0: back to a buffer this small once it is empty
}

// NewReader returns a Reader over r whose lines, terminator included, may be
// at most maxLineBytes long. maxLineBytes <= 0 means DefaultMaxLineBytes;
// values below 512 are raised to 512.
func NewReader(r io.Reader, maxLineBytes int) *Reader {
	if maxLineBytes <= 0 {
		maxLineBytes = DefaultMaxLineBytes
	}
	maxLineBytes = max(maxLineBytes, minMaxLineBytes)
	return &Reader{r: r, buf: make([]byte, min(initialReadBuffer, maxLineBytes)), max: maxLineBytes}
}

// NewCompactReader is NewReader for a connection that sits idle between
// short lines, one per ASIC in a farm proxy: its buffer starts at initial
// bytes (at least 64, at most the cap), grows for a longer line or a burst
// of lines up to the cap, as NewReader's does, and goes back to initial
// bytes as soon as everything read has been handed out, before the next
// read of the underlying reader. A miner parked between shares then holds
// initial bytes, whatever it sent once. Lines are capped and refused
// exactly as with NewReader.
func NewCompactReader(r io.Reader, initial, maxLineBytes int) *Reader {
	cr := NewReader(r, maxLineBytes)
	cr.shrinkTo = min(max(initial, 64), cr.max)
	cr.buf = make([]byte, cr.shrinkTo)
	return cr
}

// BytesRead returns how many bytes the Reader has taken from the underlying
// reader so far, so callers can count traffic without wrapping it.
func (r *Reader) BytesRead() uint64 { return r.read }

// MaxLineBytes returns the reader's line cap.
func (r *Reader) MaxLineBytes() int { return r.max }

// ReadLine returns the next non-empty line without its terminator. The slice
// aliases the reader's buffer and is valid until the next call.
//
// At the end of the stream it returns io.EOF; a final line without a
// terminator is returned first. A line longer than the cap returns an error
// wrapping ErrLineTooLong, and every later call returns it again: the stream
// cannot be resynchronised safely, so close the connection. Errors from the
// underlying reader (including deadlines) are returned as they are; after
// one, the reader keeps returning it.
func (r *Reader) ReadLine() ([]byte, error) {
	for {
		line, err := r.next()
		if err != nil {
			return nil, err
		}
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) > 0 {
			return line, nil
		}
	}
}

// next returns the next line, possibly empty, without its '\n'.
func (r *Reader) next() ([]byte, error) {
	empty := 0
	for {
		if i := bytes.IndexByte(r.buf[r.start+r.scanned:r.end], '\n'); i >= 0 {
			i += r.start + r.scanned
			line := r.buf[r.start:i]
			r.start = i + 1
			r.scanned = 0
			return line, nil
		}
		r.scanned = r.end - r.start
		if r.err != nil {
			if r.start < r.end && r.err == io.EOF {
				line := r.buf[r.start:r.end]
				r.start, r.scanned = r.end, 0
				return line, nil
			}
			return nil, r.err
		}
		if r.end-r.start == len(r.buf) {
			if len(r.buf) >= r.max {
				r.err = fmt.Errorf("%w (%d bytes without a newline)", ErrLineTooLong, r.max)
				return nil, r.err
			}
			grown := make([]byte, min(2*len(r.buf), r.max))
			r.end = copy(grown, r.buf[r.start:r.end])
			r.start = 0
			r.buf = grown
		}
		if r.start == r.end {
			r.start, r.end = 0, 0
			if r.shrinkTo > 0 && len(r.buf) > r.shrinkTo {
				// Lines handed out alias the old buffer only until this
				// call, so it can go now.
				r.buf = make([]byte, r.shrinkTo)
			}
		} else if r.end == len(r.buf) { // make room: move the partial line to the front
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		}
		n, err := r.r.Read(r.buf[r.end:])
		if n < 0 || n > len(r.buf)-r.end {
			r.err = fmt.Errorf("stratum: underlying reader returned an invalid count %d", n)
			return nil, r.err
		}
		r.end += n
		r.read += uint64(n)
		switch {
		case err != nil:
			r.err = err
		case n == 0:
			// io.Reader discourages (0, nil); give up after a run of them
			// rather than spin, as bufio does.
			if empty++; empty >= 100 {
				r.err = io.ErrNoProgress
			}
		default:
			empty = 0
		}
	}
}
