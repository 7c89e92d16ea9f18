// Package fakeclock is a clock tests move by hand: Now stands still until
// Advance, and AfterFunc callbacks run inside Advance, in due order, on the
// caller's goroutine.
package fakeclock

import (
	"sort"
	"sync"
	"time"
)

// Clock is a fake clock. The zero value is not usable: use New.
type Clock struct {
	mu     sync.Mutex // guards the fields below; never held while a callback runs
	now    time.Time
	seq    int
	timers map[int]*timer
}

type timer struct {
	at  time.Time
	seq int
	f   func()
}

// New returns a clock standing at start.
func New(start time.Time) *Clock {
	return &Clock{now: start, timers: map[int]*timer{}}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc runs f once the clock has advanced by d (at once, inside the
// next Advance, when d <= 0). stop cancels it and reports whether it was
// still pending.
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	id := c.seq
	c.timers[id] = &timer{at: c.now.Add(d), seq: id, f: f}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[id]
		delete(c.timers, id)
		return pending
	}
}

// Advance moves the clock forward by d, running every callback that falls
// due on the way, each with Now at its due time.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	// Bounded: each turn removes one timer, and callbacks scheduling new
	// timers at or before end are bounded by what the test does.
	for range 1_000_000 {
		c.mu.Lock()
		var due []*timer
		for _, t := range c.timers {
			if !t.at.After(end) {
				due = append(due, t)
			}
		}
		if len(due) == 0 {
			c.now = end
			c.mu.Unlock()
			return
		}
		sort.Slice(due, func(i, j int) bool {
			if !due[i].at.Equal(due[j].at) {
				return due[i].at.Before(due[j].at)
			}
			return due[i].seq < due[j].seq
		})
		t := due[0]
		delete(c.timers, t.seq)
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
	}
	panic("fakeclock: more than a million timers fired in one Advance")
}

// Pending is how many callbacks wait.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
