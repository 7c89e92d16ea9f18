package events

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Bounds of a durable journal's size (both segment files together).
const (
	MinFileBytes = 64 << 10
	MaxFileBytes = 256 << 20
	// DefaultFileBytes is the size the config defaults to: some 10,000
	// switcher transitions.
	DefaultFileBytes = 4 << 20
)

// SegmentNames are the journal's files in its directory.
var SegmentNames = [2]string{"events-0.journal", "events-1.journal"}

// journal is a durable Log's disk side. Log.mu guards all of it.
type journal struct {
	dir    string
	max    int64 // both segments together
	segMax int64 // one segment: max/2
	segs   [2]segment
	active int // the segment appends go to; the other holds older events

	closed    bool
	writeErrs uint64
	lastErr   error // of the last append; nil once one succeeds again
	recovered Recovery
}

// segment is one file and the records it holds.
type segment struct {
	path string
	f    *os.File
	// end is where the next record is written: the end of what is valid
	// on disk (0 before the header is written).
	end int64
	// used counts the bytes of the records held in memory, written or not
	// (a failed write keeps its event in memory): it decides rotation, so
	// memory stays bounded even while the disk refuses writes.
	used int64
	recs []record
}

func (s *segment) lastSeq() uint64 {
	if len(s.recs) == 0 {
		return 0
	}
	return s.recs[len(s.recs)-1].seq
}

// Open opens the durable journal in dir (created if missing), reads back
// what earlier boots wrote, cuts off a torn tail, and returns a Log whose
// sequence numbers continue after the newest event on disk. maxBytes bounds
// both segment files together (MinFileBytes..MaxFileBytes) and, roughly,
// the memory the journal holds. Only one process may have a journal
// directory open at a time. Close it when done.
func Open(dir string, maxBytes int64) (*Log, error) {
	if maxBytes < MinFileBytes || maxBytes > MaxFileBytes {
		return nil, fmt.Errorf("events journal size %d bytes is out of range (%d to %d)", maxBytes, MinFileBytes, MaxFileBytes)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("events journal directory: %w", err)
	}
	t0 := time.Now()
	j := &journal{dir: dir, max: maxBytes, segMax: maxBytes / 2}
	ok := false
	defer func() {
		if !ok {
			j.closeFiles()
		}
	}()
	for i := range j.segs {
		s := &j.segs[i]
		s.path = filepath.Join(dir, SegmentNames[i])
		f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("events journal: %w", err)
		}
		s.f = f
		if i == 0 {
			// The lock lives as long as the file is open: a kill -9 releases it.
			if err := lockFile(f); err != nil {
				return nil, fmt.Errorf("events journal %s is in use by another process (another proxyd with the same "+
					"state_dir?): %w", s.path, err)
			}
		}
		data, err := readSegment(f)
		if err != nil {
			return nil, fmt.Errorf("events journal %s: %w", s.path, err)
		}
		recs, valid, err := decodeSegment(data)
		if err != nil {
			return nil, fmt.Errorf("events journal %s is not a journal proxyd wrote: %w; move it aside (the "+
				"events it may hold are then not served) and start again", s.path, err)
		}
		if valid < headerSize {
			valid = 0 // an empty or torn header: the header is written again before the next record
		}
		if torn := int64(len(data)) - valid; torn > 0 {
			j.recovered.TornBytes += torn
			if err := f.Truncate(valid); err != nil {
				return nil, fmt.Errorf("events journal %s: cutting off a torn tail of %d bytes: %w", s.path, torn, err)
			}
		}
		s.end, s.recs = valid, recs
	}
	// The active segment holds the newest event; the other one keeps only
	// what is older than the active's first (after a crash in a rotation
	// it may hold a stale copy of nothing newer).
	if j.segs[1].lastSeq() > j.segs[0].lastSeq() {
		j.active = 1
	}
	act, old := &j.segs[j.active], &j.segs[1-j.active]
	if len(act.recs) > 0 {
		first := act.recs[0].seq
		n := len(old.recs)
		for n > 0 && old.recs[n-1].seq >= first {
			n--
		}
		old.recs = old.recs[:n]
	}
	for i := range j.segs {
		s := &j.segs[i]
		s.used = headerSize
		for _, r := range s.recs {
			s.used += r.size()
		}
		j.recovered.Events += len(s.recs)
	}
	j.recovered.Took = time.Since(t0)
	l := &Log{now: time.Now, boot: newBootID(), disk: j, seq: max(j.segs[0].lastSeq(), j.segs[1].lastSeq())}
	ok = true
	return l, nil
}

// readSegment reads a whole segment file. It may be larger than this
// start's segment size (the journal was configured larger before: the
// first rotations shrink it), but never larger than the largest journal's
// segment plus one record: a bigger file is not a segment and is not read
// into memory.
func readSegment(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const limit = MaxFileBytes/2 + frameHeader + MaxRecordBytes
	if st.Size() > limit {
		return nil, fmt.Errorf("%d bytes is more than any journal segment holds (%d): is this the right file?", st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, st.Size()), b); err != nil {
		return nil, err
	}
	return b, nil
}

// append writes e as one record at the active segment's end, rotating first
// when it would not fit. The event is kept in memory whether or not the
// write succeeds.
func (j *journal) append(e Event) {
	fr := frame(encodeEvent(e))
	s := &j.segs[j.active]
	if s.used+int64(len(fr)) > j.segMax && len(s.recs) > 0 {
		j.rotate()
		s = &j.segs[j.active]
	}
	s.recs = append(s.recs, record{seq: e.Seq, component: e.Component, subject: e.Subject, raw: fr[frameHeader:]})
	s.used += int64(len(fr))
	if j.closed {
		return
	}
	if s.end < headerSize {
		if _, err := s.f.WriteAt([]byte(segMagic), 0); err != nil {
			j.fail(s, err)
			return
		}
		s.end = headerSize
	}
	// pwrite at the valid end: a write that failed halfway is overwritten
	// by the next record, so garbage only ever sits after the last record.
	if _, err := s.f.WriteAt(fr, s.end); err != nil {
		j.fail(s, err)
		return
	}
	s.end += int64(len(fr))
	j.lastErr = nil
}

func (j *journal) fail(s *segment, err error) {
	j.writeErrs++
	j.lastErr = fmt.Errorf("writing %s: %w", s.path, err)
}

// rotate makes the other segment active, emptied: the oldest half of the
// journal goes.
func (j *journal) rotate() {
	j.active = 1 - j.active
	s := &j.segs[j.active]
	s.recs, s.used, s.end = nil, headerSize, 0
	if j.closed {
		return
	}
	if err := s.f.Truncate(0); err != nil {
		// end stays 0: the header (and the record) go to the start again,
		// over whatever the file held.
		j.fail(s, err)
	}
}

// list returns the matching events, oldest first: it picks newest first up
// to the limit, then decodes only those.
func (j *journal) list(q Query) []Event {
	var picked []*record
	for _, si := range [2]int{j.active, 1 - j.active} {
		recs := j.segs[si].recs
		for i := len(recs) - 1; i >= 0; i-- {
			if q.Limit > 0 && len(picked) == q.Limit {
				break
			}
			if r := &recs[i]; q.match(r.seq, r.component, r.subject) {
				picked = append(picked, r)
			}
		}
	}
	out := make([]Event, 0, len(picked))
	for i := len(picked) - 1; i >= 0; i-- {
		// Payloads were checked on open or encoded here: a failure is a
		// bug, and one event is skipped rather than the answer lost.
		if e, err := decodeEvent(picked[i].raw); err == nil {
			out = append(out, e)
		}
	}
	return out
}

func (j *journal) healthy() bool { return !j.closed && j.lastErr == nil }

func (j *journal) status(st *Status) {
	st.Durable = j.healthy()
	st.Dir, st.MaxBytes = j.dir, j.max
	for i := range j.segs {
		st.Bytes += j.segs[i].end
		st.Events += len(j.segs[i].recs)
	}
	for _, si := range [2]int{1 - j.active, j.active} {
		if recs := j.segs[si].recs; len(recs) > 0 {
			st.OldestSeq = recs[0].seq
			break
		}
	}
	st.WriteErrors = j.writeErrs
	if j.lastErr != nil {
		st.LastError = j.lastErr.Error()
	} else if j.closed {
		st.LastError = "closed: events since are kept in memory only"
	}
	rec := j.recovered
	st.Recovered = &rec
}

// close syncs both files (the one fsync of the journal's life) and closes
// them, which releases the lock.
func (j *journal) close() error {
	if j.closed {
		return nil
	}
	j.closed = true
	var errs []error
	for i := range j.segs {
		if f := j.segs[i].f; f != nil {
			if err := f.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("syncing %s: %w", j.segs[i].path, err))
			}
		}
	}
	j.closeFiles()
	return errors.Join(errs...)
}

func (j *journal) closeFiles() {
	for i := range j.segs {
		if f := j.segs[i].f; f != nil {
			_ = f.Close()
			j.segs[i].f = nil
		}
	}
}
