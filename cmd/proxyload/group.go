package main

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// groupSpec is what one group of miners runs: a contiguous range of the
// run's miners, in the tool's process or in a miner process. It travels to
// miner processes with encoding/gob.
type groupSpec struct {
	Index           int    // group number, for messages
	Target          string // host:port the miners dial
	First, Count    int    // global indices of the group's miners: [First, First+Count)
	Styles          []stratumsim.Style
	User            string // worker names are User.w<global index>
	Password        string
	SourceIPs       int // loopback source addresses shared by the whole run (0: kernel's choice)
	DialConcurrency int
	HashWorkers     int // share-hashing goroutines of the group
	BadFraction     float64
	BadKinds        []stratumsim.ShareKind
	Difficulty      float64 // suggested to miners that send mining.suggest_difficulty
	Seed            uint64
	ConnectTimeout  time.Duration // bounds all dials and handshakes of the group
	MaxHashes       uint64        // bound on one share search
}

// shareRec is the tool's record of one submit, as its miner saw it. Times
// are machine-wide CLOCK_MONOTONIC nanoseconds (monoClock).
type shareRec struct {
	Kind       stratumsim.ShareKind
	Verdict    stratumsim.Verdict
	Code       int
	Message    string // the rejection message, kept for the first rejection of each code only
	SentAt     int64
	AnsweredAt int64 // 0 when no answer
	Hash       [32]byte
	ShareDiff  float64
}

// jobArrivals are the times a pool job reached miners, first arrival per
// miner only.
type jobArrivals struct {
	Seq      uint64  // the pool's job sequence number
	At       []int64 // machine-wide monotonic arrival times
	NotClean int     // arrivals whose clean_jobs flag was false
}

// dialReport times the connections of a group; durations in nanoseconds.
type dialReport struct {
	Handshake    []int64 // per ready miner: dial start → handshake complete
	FirstJob     []int64 // per miner with a job: dial start → first mining.notify
	FirstStart   int64   // monotonic time of the first dial
	LastReady    int64   // monotonic time of the last completed handshake
	Errors       int
	ErrorSamples []string // the first few dial or handshake errors
}

// groupStatus is a cheap snapshot of a group for progress and waits.
type groupStatus struct {
	Dialed, Ready, Failed int  // dials finished, succeeded, failed
	DialDone              bool // every dial has finished
	WithJob               int  // miners that received at least one job
	// SeqCount counts, per pool job sequence number, the miners that
	// received that job.
	SeqCount map[uint64]int
	// Fleet is the miners' summed counters (zero until DialDone).
	Fleet stratumsim.FleetStats
	// MinDiff and MaxDiff bound the difficulties in force for the jobs the
	// miners received (0 before any job).
	MinDiff, MaxDiff float64
}

// groupTake is what a group hands over (and forgets) on take.
type groupTake struct {
	Results  []shareRec
	Arrivals []jobArrivals
	Dial     *dialReport // once, in the first take after DialDone
}

// groupFinal is a group's last word, from close.
type groupFinal struct {
	Fleet      stratumsim.FleetStats // after every miner closed (pending submits became lost)
	Take       groupTake             // records not taken before
	CPUSeconds float64               // CPU of the miner process (0 in-process)
	MaxRSSKiB  int64                 // peak RSS of the miner process (0 in-process)
}

// group is a set of miners driven as one, in this process or in a child
// process. Methods are called from one goroutine at a time; each is bounded
// by its ctx.
type group interface {
	// poll reports progress; full adds the fleet's counters, which cost a
	// pass over every miner.
	poll(ctx context.Context, full bool) (groupStatus, error)
	setRate(ctx context.Context, perMinute float64) error
	take(ctx context.Context) (groupTake, error)
	close(ctx context.Context) (groupFinal, error)
}

// errSamples bounds the dial errors kept per group.
const errSamples = 5

// localGroup runs a Fleet in this process. Its miners report through the
// fleet's hooks; one mutex guards the records.
type localGroup struct {
	spec   groupSpec
	clock  monoClock
	cancel context.CancelFunc // aborts the dials
	done   chan struct{}      // closed when StartFleet has returned

	mu        sync.Mutex // guards every field below
	fleet     *stratumsim.Fleet
	startErr  error
	starts    []int64  // dial start per local miner
	lastSeq   []uint64 // newest pool job seq recorded per local miner
	dialed    int
	ready     int
	failed    int
	withJob   int
	dial      dialReport
	dialTaken bool
	minDiff   float64 // lowest difficulty in force at a job's arrival
	maxDiff   float64 // highest
	seqCount  map[uint64]int
	arrivals  map[uint64]*jobArrivals
	results   []shareRec
	codeSeen  map[int]bool
}

// startLocal starts dialing spec's miners in the background.
func startLocal(spec groupSpec, clock monoClock) *localGroup {
	g := &localGroup{
		spec:     spec,
		clock:    clock,
		done:     make(chan struct{}),
		starts:   make([]int64, spec.Count),
		lastSeq:  make([]uint64, spec.Count),
		seqCount: make(map[uint64]int),
		arrivals: make(map[uint64]*jobArrivals),
		codeSeen: make(map[int]bool),
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.ConnectTimeout)
	g.cancel = cancel
	go g.dialAll(ctx)
	return g
}

func (g *localGroup) dialAll(ctx context.Context) {
	defer close(g.done)
	defer g.cancel()
	s := g.spec
	opts := stratumsim.FleetOptions{
		Miners: s.Count,
		Miner: stratumsim.MinerOptions{
			Password:          s.Password,
			HistoryLimit:      -1, // the hooks record what the tool needs
			SuggestDifficulty: s.Difficulty,
			MaxHashesPerShare: s.MaxHashes,
			DialTimeout:       min(s.ConnectTimeout, 30*time.Second),
		},
		UserFunc:        func(i int) string { return fmt.Sprintf("%s.w%d", s.User, s.First+i) },
		DialConcurrency: s.DialConcurrency,
		ContinueOnError: true,
		Workers:         s.HashWorkers,
		BadFraction:     s.BadFraction,
		BadKinds:        s.BadKinds,
		Seed:            s.Seed + uint64(s.Index)*0x9e3779b97f4a7c15,
		MinerFunc:       g.minerOptions,
		OnDialed:        g.onDialed,
	}
	f, err := stratumsim.StartFleet(ctx, s.Target, opts)
	g.mu.Lock()
	g.fleet, g.startErr = f, err
	g.mu.Unlock()
}

// minerOptions is the fleet's MinerFunc: it runs in miner i's dialing
// goroutine right before the dial, so its time is the dial start.
func (g *localGroup) minerOptions(i int, o *stratumsim.MinerOptions) {
	gi := g.spec.First + i
	if len(g.spec.Styles) > 0 {
		o.Style = g.spec.Styles[gi%len(g.spec.Styles)]
	}
	o.LocalAddr = minerSourceIP(gi, g.spec.SourceIPs)
	o.OnEvent = func(_ *stratumsim.Miner, ev stratumsim.Event) { g.onEvent(i, ev) }
	o.OnVerdict = func(_ *stratumsim.Miner, r stratumsim.SubmitResult) { g.onVerdict(r) }
	now := g.clock.now()
	g.mu.Lock()
	g.starts[i] = now
	if g.dial.FirstStart == 0 || now < g.dial.FirstStart {
		g.dial.FirstStart = now
	}
	g.mu.Unlock()
}

// onDialed records the end of miner i's dial and handshake.
func (g *localGroup) onDialed(i int, _ *stratumsim.Miner, err error) {
	now := g.clock.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dialed++
	if err != nil {
		g.failed++
		g.dial.Errors++
		if len(g.dial.ErrorSamples) < errSamples {
			g.dial.ErrorSamples = append(g.dial.ErrorSamples, fmt.Sprintf("miner %d: %v", g.spec.First+i, err))
		}
		return
	}
	g.ready++
	g.dial.Handshake = append(g.dial.Handshake, now-g.starts[i])
	g.dial.LastReady = max(g.dial.LastReady, now)
}

// onEvent records the first arrival of every pool job at miner i. Pool job
// sequence numbers only grow, so a seq above the miner's last one is new.
func (g *localGroup) onEvent(i int, ev stratumsim.Event) {
	if ev.Kind != stratumsim.EventNotify || ev.PoolJobSeq == 0 {
		return
	}
	at := g.clock.ns(ev.At)
	g.mu.Lock()
	defer g.mu.Unlock()
	if ev.PoolJobSeq <= g.lastSeq[i] {
		return
	}
	if g.lastSeq[i] == 0 {
		g.withJob++
		g.dial.FirstJob = append(g.dial.FirstJob, at-g.starts[i])
	}
	if d := ev.Difficulty; d > 0 {
		if g.minDiff == 0 || d < g.minDiff {
			g.minDiff = d
		}
		g.maxDiff = max(g.maxDiff, d)
	}
	g.lastSeq[i] = ev.PoolJobSeq
	g.seqCount[ev.PoolJobSeq]++
	ja := g.arrivals[ev.PoolJobSeq]
	if ja == nil {
		ja = &jobArrivals{Seq: ev.PoolJobSeq}
		g.arrivals[ev.PoolJobSeq] = ja
	}
	ja.At = append(ja.At, at)
	if !ev.Clean {
		ja.NotClean++
	}
}

// onVerdict records a submit's outcome (accepted, rejected or lost).
func (g *localGroup) onVerdict(r stratumsim.SubmitResult) {
	rec := shareRec{
		Kind:       r.Kind,
		Verdict:    r.Verdict,
		Code:       r.Code,
		SentAt:     g.clock.ns(r.SentAt),
		AnsweredAt: g.clock.ns(r.AnsweredAt),
		Hash:       r.Hash,
		ShareDiff:  r.ShareDifficulty,
	}
	if r.Verdict == stratumsim.VerdictLost {
		rec.AnsweredAt = 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Verdict == stratumsim.VerdictRejected && !g.codeSeen[r.Code] {
		g.codeSeen[r.Code] = true
		rec.Message = r.Message
	}
	g.results = append(g.results, rec)
}

func (g *localGroup) poll(_ context.Context, full bool) (groupStatus, error) {
	g.mu.Lock()
	st := groupStatus{
		Dialed: g.dialed, Ready: g.ready, Failed: g.failed, WithJob: g.withJob,
		SeqCount: maps.Clone(g.seqCount), MinDiff: g.minDiff, MaxDiff: g.maxDiff,
	}
	f, err := g.fleet, g.startErr
	g.mu.Unlock()
	select {
	case <-g.done:
		st.DialDone = true
	default:
	}
	if err != nil {
		return st, fmt.Errorf("group %d: %w", g.spec.Index, err)
	}
	if f != nil && full {
		st.Fleet = f.Stats()
	}
	return st, nil
}

func (g *localGroup) setRate(_ context.Context, perMinute float64) error {
	g.mu.Lock()
	f := g.fleet
	g.mu.Unlock()
	if f == nil {
		return fmt.Errorf("group %d: miners not connected yet", g.spec.Index)
	}
	f.SetRate(perMinute)
	return nil
}

func (g *localGroup) take(context.Context) (groupTake, error) {
	dialDone := false
	select {
	case <-g.done:
		dialDone = true
	default:
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := groupTake{Results: g.results}
	g.results = nil
	for _, ja := range g.arrivals {
		t.Arrivals = append(t.Arrivals, *ja)
	}
	clear(g.arrivals)
	if dialDone && !g.dialTaken {
		d := g.dial
		t.Dial = &d
		g.dialTaken = true
		g.dial.Handshake, g.dial.FirstJob = nil, nil // later first jobs are not recorded
	}
	return t, nil
}

// close aborts dials still running, closes every miner (pending submits
// become lost verdicts) and returns the last records.
func (g *localGroup) close(ctx context.Context) (groupFinal, error) {
	g.cancel()
	select {
	case <-g.done:
	case <-ctx.Done():
		return groupFinal{}, fmt.Errorf("group %d: waiting for dials to stop: %w", g.spec.Index, ctx.Err())
	}
	g.mu.Lock()
	f := g.fleet
	g.mu.Unlock()
	var fin groupFinal
	if f != nil {
		closed := make(chan struct{})
		go func() { _ = f.Close(); close(closed) }()
		select {
		case <-closed:
		case <-ctx.Done():
			return groupFinal{}, fmt.Errorf("group %d: closing miners: %w", g.spec.Index, ctx.Err())
		}
		fin.Fleet = f.Stats()
	}
	fin.Take, _ = g.take(ctx)
	return fin, nil
}
