// Package events is proxyd's journal of decisions: every routing switch,
// GPU transition and contract decision is recorded with when, what, from,
// to and why, so an operator can ask the daemon to explain itself
// (GET /api/v1/events). It is a bounded ring in memory; the logs keep the
// full history.
package events

import (
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
}

// Log is a bounded, concurrency-safe ring of events. The zero value is not
// usable: call New.
type Log struct {
	mu   sync.Mutex // guards all below
	ring []Event
	next int // index the next event goes to
	full bool
	seq  uint64
	now  func() time.Time
}

// DefaultSize is how many events New(0) keeps.
const DefaultSize = 4096

// New returns a log keeping the last size events (DefaultSize when size <= 0).
func New(size int) *Log {
	if size <= 0 {
		size = DefaultSize
	}
	return &Log{ring: make([]Event, size), now: time.Now}
}

// Add records e, stamping its sequence number and, if unset, its time.
func (l *Log) Add(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
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

// List returns the matching events, oldest first.
func (l *Log) List(q Query) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.next
	start := 0
	if l.full {
		n = len(l.ring)
		start = l.next
	}
	out := make([]Event, 0, min(n, 256))
	for i := 0; i < n; i++ {
		e := l.ring[(start+i)%len(l.ring)]
		if e.Seq <= q.After || (q.Component != "" && e.Component != q.Component) || (q.Subject != "" && e.Subject != q.Subject) {
			continue
		}
		out = append(out, e)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}
