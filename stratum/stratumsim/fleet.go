package stratumsim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// FleetOptions configures a Fleet.
type FleetOptions struct {
	// Miners is how many miners to connect.
	Miners int
	// Miner is the template for every miner. Its SharesPerMinute is
	// ignored (see SharesPerMinute below); HistoryLimit defaults to 16 in
	// a fleet to keep memory per miner small (use -1 and the OnEvent /
	// OnVerdict callbacks for long load runs).
	Miner MinerOptions
	// Styles, when set, are assigned round-robin by miner index
	// (AllStyles() gives a realistic mix); empty uses Miner.Style.
	Styles []Style
	// UserFunc names miner i; default Miner.User + ".w<i>" (Miner.User
	// defaulting to "stratumtest").
	UserFunc func(i int) string
	// DialConcurrency bounds concurrent dials and handshakes; default 64.
	DialConcurrency int
	// ContinueOnError keeps the miners that connected when some fail
	// (see DialErrors); by default StartFleet fails and closes them all.
	ContinueOnError bool
	// Workers is the number of goroutines that hash and submit for the
	// scheduler; default GOMAXPROCS.
	Workers int
	// SharesPerMinute is each miner's average submit rate (exponential
	// gaps, one shared scheduler); 0 submits only on demand.
	SharesPerMinute float64
	// BadFraction of the scheduled shares are deliberately bad, of a kind
	// drawn uniformly from BadKinds (default ShareLowDifficulty,
	// ShareStale, ShareDuplicate).
	BadFraction float64
	BadKinds    []ShareKind
	// Seed drives scheduling and is mixed into each miner's seed.
	Seed uint64
	// MinerFunc, when set, adjusts miner i's options right before it dials
	// (after User, Seed and Style are set, once a DialConcurrency slot is
	// free), for example to give each miner its own LocalAddr or OnEvent.
	// It is called from the dialing goroutines, concurrently for different
	// miners; a SharesPerMinute set here is ignored, as in Miner above.
	MinerFunc func(i int, o *MinerOptions)
	// OnDialed, when set, is called from miner i's dialing goroutine as
	// soon as its dial and handshake have finished, with the miner (nil
	// when err is not nil). With MinerFunc it times each connection.
	OnDialed func(i int, m *Miner, err error)
}

// Fleet drives many Miners cheaply: one reader goroutine per miner, one
// scheduler goroutine and Workers hashing goroutines for all of them, and
// one parsed-notify cache shared by all miners (identical notify lines are
// parsed once).
type Fleet struct {
	opts   FleetOptions // immutable after StartFleet
	miners []*Miner     // immutable after StartFleet
	errs   []error      // dial errors, immutable after StartFleet
	cache  *jobCache
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	work   chan fleetTask
	rateCh chan float64

	late          atomic.Uint64 // scheduled shares skipped: workers busy
	scheduled     atomic.Uint64
	searchErrors  atomic.Uint64
	scheduledBad  atomic.Uint64
	closeOnce     sync.Once
	schedulerDone chan struct{}
}

type fleetTask struct {
	m    *Miner
	kind ShareKind
}

// FleetStats sums the miners' counters. The embedded MinerStats.Ready is
// true when every miner is ready (Ready, the int, counts them).
type FleetStats struct {
	Miners    int // miners in the fleet
	Connected int // with an open connection
	Ready     int // with a completed handshake on it
	MinerStats
	Scheduled    uint64 // shares the scheduler handed to workers
	ScheduledBad uint64 // of which deliberately bad
	Late         uint64 // scheduled shares dropped because workers were busy
	SearchErrors uint64 // scheduled shares whose search or send failed
}

// StartFleet connects opts.Miners miners to addr (bounded by ctx) and
// starts the scheduler when SharesPerMinute > 0.
func StartFleet(ctx context.Context, addr string, opts FleetOptions) (*Fleet, error) {
	if opts.DialConcurrency <= 0 {
		opts.DialConcurrency = 64
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if len(opts.BadKinds) == 0 {
		opts.BadKinds = []ShareKind{ShareLowDifficulty, ShareStale, ShareDuplicate}
	}
	if opts.Miner.HistoryLimit == 0 {
		opts.Miner.HistoryLimit = 16
	}
	if opts.UserFunc == nil {
		base := opts.Miner.User
		if base == "" {
			base = "stratumtest"
		}
		opts.UserFunc = func(i int) string { return fmt.Sprintf("%s.w%d", base, i) }
	}
	f := &Fleet{
		opts:          opts,
		miners:        make([]*Miner, opts.Miners),
		cache:         newJobCache(256),
		work:          make(chan fleetTask, 2*opts.Workers),
		rateCh:        make(chan float64, 1),
		schedulerDone: make(chan struct{}),
	}
	f.ctx, f.stop = context.WithCancel(context.Background())

	errs := make([]error, opts.Miners)
	sem := make(chan struct{}, opts.DialConcurrency)
	var dialWG sync.WaitGroup
	for i := range opts.Miners {
		mo := opts.Miner
		mo.SharesPerMinute = 0
		mo.User = opts.UserFunc(i)
		mo.Seed = opts.Seed ^ (uint64(i+1) * 0x9e3779b97f4a7c15)
		if len(opts.Styles) > 0 {
			mo.Style = opts.Styles[i%len(opts.Styles)]
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			defer func() { <-sem }()
			if opts.MinerFunc != nil {
				opts.MinerFunc(i, &mo)
				mo.SharesPerMinute = 0
			}
			m, err := dialMiner(ctx, addr, mo, f.cache)
			f.miners[i], errs[i] = m, err
			if opts.OnDialed != nil {
				opts.OnDialed(i, m, err)
			}
		}()
	}
	dialWG.Wait()
	var kept []*Miner
	for i, m := range f.miners {
		if m != nil {
			kept = append(kept, m)
		}
		if errs[i] != nil {
			f.errs = append(f.errs, fmt.Errorf("miner %d: %w", i, errs[i]))
		}
	}
	f.miners = kept
	if len(f.errs) > 0 && !opts.ContinueOnError {
		_ = f.Close()
		return nil, fmt.Errorf("stratumsim: fleet: %d of %d miners failed: %w", len(f.errs), opts.Miners, errors.Join(f.errs[:min(len(f.errs), 5)]...))
	}
	for range opts.Workers {
		f.wg.Add(1)
		go f.worker()
	}
	f.wg.Add(1)
	go f.scheduler(opts.SharesPerMinute)
	return f, nil
}

// Miners returns the connected miners (index order, failed dials left
// out). The slice is shared: do not modify it.
func (f *Fleet) Miners() []*Miner { return f.miners }

// Len returns the number of miners.
func (f *Fleet) Len() int { return len(f.miners) }

// DialErrors returns the dial/handshake errors (with ContinueOnError).
func (f *Fleet) DialErrors() []error { return f.errs }

// SetRate changes every miner's average submit rate (0 stops scheduling).
func (f *Fleet) SetRate(sharesPerMinute float64) {
	for {
		select {
		case f.rateCh <- sharesPerMinute:
			return
		case <-f.ctx.Done():
			return
		default:
		}
		select { // replace a rate not yet taken
		case <-f.rateCh:
		default:
		}
	}
}

// SubmitEach makes every ready miner submit n good shares (hashing on
// Workers goroutines) and waits for all verdicts. It returns the results
// of all submissions that were sent and the first error.
func (f *Fleet) SubmitEach(ctx context.Context, n int) ([]SubmitResult, error) {
	type item struct {
		sub *Submission
		err error
	}
	jobs := make(chan *Miner)
	out := make(chan item, f.opts.Workers*4)
	var wg sync.WaitGroup
	for range f.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				for range n {
					s, err := m.Submit(ctx, SubmitRequest{})
					out <- item{s, err}
					if err != nil {
						break
					}
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for _, m := range f.miners {
			if !m.Ready() {
				continue
			}
			select {
			case jobs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(out) }()
	var subs []*Submission
	var firstErr error
	for it := range out {
		if it.err != nil && firstErr == nil {
			firstErr = it.err
		}
		if it.sub != nil {
			subs = append(subs, it.sub)
		}
	}
	res := make([]SubmitResult, 0, len(subs))
	for _, s := range subs {
		r, err := s.Wait(ctx)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		res = append(res, r)
	}
	return res, firstErr
}

// Stats sums the miners' counters.
func (f *Fleet) Stats() FleetStats {
	var s FleetStats
	s.Miners = len(f.miners)
	s.RejectedByCode = make(map[int]uint64)
	for _, m := range f.miners {
		m.mu.Lock()
		ms := m.statsLocked()
		connected := m.cur != nil
		m.mu.Unlock()
		if connected {
			s.Connected++
		}
		if ms.Ready {
			s.Ready++
		}
		s.Connects += ms.Connects
		s.Disconnects += ms.Disconnects
		s.Handshakes += ms.Handshakes
		s.Notifies += ms.Notifies
		s.CleanNotifies += ms.CleanNotifies
		s.SetDifficulties += ms.SetDifficulties
		s.SetExtranonces += ms.SetExtranonces
		s.SetVersionMasks += ms.SetVersionMasks
		s.Reconnects += ms.Reconnects
		s.ShowMessages += ms.ShowMessages
		s.OtherMessages += ms.OtherMessages
		s.Submitted += ms.Submitted
		s.Accepted += ms.Accepted
		s.Rejected += ms.Rejected
		for c, n := range ms.RejectedByCode {
			s.RejectedByCode[c] += n
		}
		s.Lost += ms.Lost
		s.Pending += ms.Pending
		s.Unexpected += ms.Unexpected
		s.Hashes += ms.Hashes
		s.SearchFailures += ms.SearchFailures
		s.UnexpectedResponses += ms.UnexpectedResponses
		s.Malformed += ms.Malformed
		s.BytesIn += ms.BytesIn
		s.BytesOut += ms.BytesOut
	}
	s.Ready = min(s.Ready, s.Connected)
	s.MinerStats.Ready = s.Ready == s.Miners
	s.Scheduled = f.scheduled.Load()
	s.ScheduledBad = f.scheduledBad.Load()
	s.Late = f.late.Load()
	s.SearchErrors = f.searchErrors.Load()
	return s
}

// WaitFor polls the fleet's stats (every 20ms) until cond holds or ctx
// ends.
func (f *Fleet) WaitFor(ctx context.Context, cond func(FleetStats) bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st := f.Stats()
		if cond(st) {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("stratumsim: fleet wait (ready %d/%d, submitted %d, accepted %d): %w",
				st.Ready, st.Miners, st.Submitted, st.Accepted, ctx.Err())
		}
	}
}

// Close stops the scheduler and workers and closes every miner, waiting for
// all goroutines. Idempotent; returns nil.
func (f *Fleet) Close() error {
	f.closeOnce.Do(func() {
		f.stop()
		f.wg.Wait()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, m := range f.miners {
			if m == nil {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				_ = m.Close()
			}()
		}
		wg.Wait()
	})
	return nil
}

// worker hashes and submits scheduled shares.
func (f *Fleet) worker() {
	defer f.wg.Done()
	for {
		select {
		case <-f.ctx.Done():
			return
		case t := <-f.work:
			ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
			if _, err := t.m.Submit(ctx, SubmitRequest{Kind: t.kind}); err != nil {
				f.searchErrors.Add(1)
			}
			cancel()
		}
	}
}

// scheduler owns the due-time heap and the fleet's random source.
func (f *Fleet) scheduler(rate float64) {
	defer f.wg.Done()
	rng := rand.New(rand.NewPCG(f.opts.Seed, 0xbb67ae8584caa73b))
	var h dueHeap
	reset := func(r float64) {
		rate = r
		h = h[:0]
		if rate <= 0 {
			return
		}
		now := time.Now()
		mean := float64(time.Minute) / rate
		for _, m := range f.miners {
			h = append(h, due{now.Add(time.Duration(rng.ExpFloat64() * mean)), m})
		}
		heap.Init(&h)
	}
	reset(rate)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var wake <-chan time.Time
		if len(h) > 0 {
			timer.Reset(time.Until(h[0].at))
			wake = timer.C
		}
		select {
		case <-f.ctx.Done():
			return
		case r := <-f.rateCh:
			reset(r)
			continue
		case <-wake:
		}
		now := time.Now()
		mean := float64(time.Minute) / rate
		for len(h) > 0 && !h[0].at.After(now) {
			d := &h[0]
			kind := ShareGood
			if f.opts.BadFraction > 0 && rng.Float64() < f.opts.BadFraction {
				kind = f.opts.BadKinds[rng.IntN(len(f.opts.BadKinds))]
			}
			select {
			case f.work <- fleetTask{d.m, kind}:
				f.scheduled.Add(1)
				if kind != ShareGood {
					f.scheduledBad.Add(1)
				}
			default:
				f.late.Add(1)
			}
			d.at = d.at.Add(time.Duration(rng.ExpFloat64() * mean))
			if d.at.Before(now) {
				d.at = now.Add(time.Duration(rng.ExpFloat64() * mean))
			}
			heap.Fix(&h, 0)
		}
	}
}

type due struct {
	at time.Time
	m  *Miner
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// jobCache maps a raw mining.notify line to its parsed job, so a fleet
// parses each distinct notify once. Bounded FIFO; safe for concurrent use.
type jobCache struct {
	mu   sync.Mutex // guards m, ring, next
	m    map[string]*jobData
	ring []string
	next int
}

func newJobCache(n int) *jobCache {
	return &jobCache{m: make(map[string]*jobData, n), ring: make([]string, n)}
}

func (c *jobCache) get(line []byte) *jobData {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[string(line)]
}

func (c *jobCache) put(line []byte, jd *jobData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := string(line)
	if _, ok := c.m[k]; ok {
		return
	}
	if old := c.ring[c.next]; old != "" {
		delete(c.m, old)
	}
	c.ring[c.next] = k
	c.next = (c.next + 1) % len(c.ring)
	c.m[k] = jd
}
