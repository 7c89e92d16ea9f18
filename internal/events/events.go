package events

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"
)

// Event is one decision or transition.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Component string    `json:"component"`         // "stratum", "switcher", ...
	Kind      string    `json:"kind"`              // e.g. "failover", "transition", "contract_refused"
	Subject   string    `json:"subject,omitempty"` // what it is about: a pool, a GPU UUID, a contract id
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	Reason    string    `json:"reason"`
	// Details carries small, decision-specific facts (a contract id, a share
	// of hashrate). Values must be JSON-encodable.
	Details map[string]any `json:"details,omitempty"`
	// Boot identifies the process start that recorded the event (Add sets
	// it): events of earlier boots come back from a durable journal.
	Boot string `json:"boot"`
}

// Log is a bounded, concurrency-safe journal of events, in memory (New) or
// on disk (Open). The zero value is not usable.
type Log struct {
	// mu guards every field below and is the only way to the durable
	// journal's files: appends, rotations, reads for List and Close all
	// happen with it held, so the files have exactly one writer.
	mu   sync.Mutex
	seq  uint64
	boot string
	now  func() time.Time

	// In memory (disk == nil): a ring of events.
	ring []Event
	next int // index the next event goes to
	full bool

	// Durable: the segment files and their index.
	disk *journal
}

// DefaultSize is how many events New(0) keeps.
const DefaultSize = 4096

// New returns an in-memory log keeping the last size events (DefaultSize
// when size <= 0).
func New(size int) *Log {
	if size <= 0 {
		size = DefaultSize
	}
	return &Log{ring: make([]Event, size), now: time.Now, boot: newBootID()}
}

// newBootID is 8 random bytes in hex: one per process start (per Log).
func newBootID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// Boot is this process's boot id, the one Add stamps on every event.
func (l *Log) Boot() string { return l.boot }

// Durable reports whether events survive a restart (the log is on disk and
// its last write succeeded).
func (l *Log) Durable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.disk != nil && l.disk.healthy()
}

// Add records e, stamping its sequence number, its boot id and, if unset,
// its time. In a durable log the event is on its way to disk (in the
// kernel's page cache) when Add returns; a failed write keeps it in memory
// and shows in Status.
func (l *Log) Add(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	e.Boot = l.boot
	if l.disk != nil {
		l.disk.append(e)
		return e
	}
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	return e
}

// Query selects events: Component and Subject filter when set; events with
// Seq <= After are skipped; at most Limit (newest) are returned, oldest first.
type Query struct {
	Component string
	Subject   string
	After     uint64
	Limit     int
}

func (q Query) match(seq uint64, component, subject string) bool {
	return seq > q.After && (q.Component == "" || component == q.Component) && (q.Subject == "" || subject == q.Subject)
}

// List returns the matching events, oldest first.
func (l *Log) List(q Query) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.disk != nil {
		return l.disk.list(q)
	}
	n := l.next
	start := 0
	if l.full {
		n = len(l.ring)
		start = l.next
	}
	out := make([]Event, 0, min(n, 256))
	for i := 0; i < n; i++ {
		e := l.ring[(start+i)%len(l.ring)]
		if !q.match(e.Seq, e.Component, e.Subject) {
			continue
		}
		out = append(out, e)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}

// Status describes the journal for the API and the logs.
type Status struct {
	// Durable: events survive a restart. False for an in-memory log, and
	// for a durable one whose last write failed (LastError says why).
	Durable bool   `json:"durable"`
	Boot    string `json:"boot"`
	// Dir holds the segment files ("" in memory).
	Dir string `json:"dir,omitempty"`
	// MaxBytes bounds the files together; Bytes is what they hold now.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	Bytes    int64 `json:"bytes,omitempty"`
	// Events is how many events the journal holds now.
	Events int `json:"events"`
	// OldestSeq is the smallest sequence number still held (0: none).
	OldestSeq uint64 `json:"oldest_seq,omitempty"`
	// WriteErrors counts appends that did not reach the file.
	WriteErrors uint64 `json:"write_errors,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	// Recovered is what Open found on disk.
	Recovered *Recovery `json:"recovered,omitempty"`
}

// Recovery is what Open read back.
type Recovery struct {
	// Events read back from earlier boots.
	Events int `json:"events"`
	// TornBytes were cut off the segments' tails: a record that was being
	// written when the process or the machine stopped, or garbage.
	TornBytes int64 `json:"torn_bytes"`
	// Took is how long reading the files back took.
	Took time.Duration `json:"took_ns"`
}

// Status reports what the journal holds and whether it is durable.
func (l *Log) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Status{Boot: l.boot}
	if l.disk != nil {
		l.disk.status(&st)
		return st
	}
	st.Events = l.next
	if l.full {
		st.Events = len(l.ring)
	}
	if st.Events > 0 {
		st.OldestSeq = l.ring[(l.next-st.Events+len(l.ring))%len(l.ring)].Seq
	}
	return st
}

// Close flushes a durable journal to disk (one fsync) and closes its files;
// later Adds stay in memory only. In memory, Close does nothing.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.disk == nil {
		return nil
	}
	return l.disk.close()
}

// decodeEvent decodes one record's payload.
func decodeEvent(raw []byte) (Event, error) {
	var e Event
	err := json.Unmarshal(raw, &e)
	return e, err
}
