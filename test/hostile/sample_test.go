//go:build linux

package hostile

import (
	"sync"
	"time"
)

// Sampling periods. RSS is cheap to read; go_goroutines needs a /metrics
// scrape, so it is read less often (one scrape at a time).
const (
	rssEvery       = 50 * time.Millisecond
	goroutineEvery = 200 * time.Millisecond
)

type sample struct {
	at time.Time
	v  int64
}

// sampler reads a daemon's RSS and goroutines until stopped. One goroutine
// per quantity; mu guards the sample lists.
type sampler struct {
	d    *daemon
	stop chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	rss        []sample // KiB
	goroutines []sample
	scrapeErrs int
}

func startSampler(d *daemon) *sampler {
	s := &sampler{d: d, stop: make(chan struct{})}
	s.wg.Add(2)
	go s.loop(rssEvery, func(now time.Time) {
		if kib, err := rssKiB(d.pid()); err == nil {
			s.mu.Lock()
			s.rss = append(s.rss, sample{now, kib})
			s.mu.Unlock()
		}
	})
	go s.loop(goroutineEvery, func(now time.Time) {
		ms, _, err := d.metrics()
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.scrapeErrs++
			return
		}
		if v, ok := ms["go_goroutines"]; ok {
			s.goroutines = append(s.goroutines, sample{now, int64(v)})
		}
	})
	return s
}

func (s *sampler) loop(every time.Duration, f func(time.Time)) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		f(time.Now())
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// close stops sampling and waits for the sampling goroutines.
func (s *sampler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// now takes one RSS reading at once (for a baseline).
func (s *sampler) rssNow() int64 {
	kib, err := rssKiB(s.d.pid())
	if err != nil {
		return 0
	}
	return kib
}

func peak(ss []sample, from, to time.Time) int64 {
	var p int64
	for _, x := range ss {
		if !x.at.Before(from) && !x.at.After(to) {
			p = max(p, x.v)
		}
	}
	return p
}

// last returns the newest sample at or before t (0 if none).
func last(ss []sample, t time.Time) int64 {
	var v int64
	for _, x := range ss {
		if x.at.After(t) {
			break
		}
		v = x.v
	}
	return v
}

func (s *sampler) peakRSS(from, to time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return peak(s.rss, from, to)
}

func (s *sampler) peakGoroutines(from, to time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return peak(s.goroutines, from, to)
}

func (s *sampler) goroutinesAt(t time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return last(s.goroutines, t)
}
