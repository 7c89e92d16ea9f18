package daemon

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Liveness tracks the heartbeats of the daemon's loops: /healthz and the
// systemd watchdog are healthy only while every registered loop has beaten
// within its allowed age. A stuck loop (deadlock, blocked syscall) thus turns
// into a failed watchdog and a restart, not a silent hang.
type Liveness struct {
	mu    sync.Mutex // guards beats (registration only; beats themselves are atomic)
	beats map[string]*Beat
	now   func() time.Time
}

// Beat is one loop's heartbeat.
type Beat struct {
	name   string
	maxAge time.Duration
	last   atomic.Int64 // unix nanoseconds
	now    func() time.Time
}

// NewLiveness returns an empty board.
func NewLiveness() *Liveness {
	return &Liveness{beats: map[string]*Beat{}, now: time.Now}
}

// Register adds a loop that must beat at least every maxAge. Registering the
// same name again returns the existing beat.
func (l *Liveness) Register(name string, maxAge time.Duration) *Beat {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.beats[name]; ok {
		return b
	}
	b := &Beat{name: name, maxAge: maxAge, now: l.now}
	b.Beat()
	l.beats[name] = b
	return b
}

// Unregister removes a loop that ended on purpose.
func (l *Liveness) Unregister(b *Beat) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.beats[b.name] == b {
		delete(l.beats, b.name)
	}
}

// Beat records that the loop turned.
func (b *Beat) Beat() { b.last.Store(b.now().UnixNano()) }

// Check returns nil when every loop is fresh, else which are stale and for how long.
func (l *Liveness) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var stale []string
	for name, b := range l.beats {
		age := now.Sub(time.Unix(0, b.last.Load()))
		if age > b.maxAge {
			stale = append(stale, fmt.Sprintf("%s silent for %s (allowed %s)", name, age.Round(time.Millisecond), b.maxAge))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	sort.Strings(stale)
	return fmt.Errorf("stale loops: %v", stale)
}

// Names lists the registered loops, sorted.
func (l *Liveness) Names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.beats))
	for n := range l.beats {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
