package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// monoClock converts time.Time values that carry Go's monotonic reading
// (every time.Now() does) into nanoseconds of the machine-wide
// CLOCK_MONOTONIC. Go's own monotonic readings are private to a process;
// these values compare directly between the tool's processes (pool,
// miner processes), and no wall-clock step can move them.
type monoClock struct {
	base   time.Time // a time.Now() taken next to baseNS
	baseNS int64     // CLOCK_MONOTONIC at base
}

// newMonoClock pairs time.Now() with clock_gettime(CLOCK_MONOTONIC). One
// pairing is exact only to the gap between its reads, and a process
// descheduled in that gap (common on a loaded 2-core box, and under -race)
// would be off by milliseconds; so it keeps the tightest of several.
func newMonoClock() (monoClock, error) {
	var best monoClock
	bestGap := time.Duration(-1)
	for i := 0; i < 50; i++ {
		var ts unix.Timespec
		t0 := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return monoClock{}, fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
		}
		t1 := time.Now()
		if gap := t1.Sub(t0); bestGap < 0 || gap < bestGap {
			bestGap = gap
			best = monoClock{base: t0.Add(gap / 2), baseNS: ts.Nano()}
		}
	}
	return best, nil
}

// ns returns t on the machine-wide monotonic clock, or 0 for the zero time.
func (c monoClock) ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return c.baseNS + int64(t.Sub(c.base))
}

// now returns the current machine-wide monotonic time in nanoseconds.
func (c monoClock) now() int64 { return c.ns(time.Now()) }
