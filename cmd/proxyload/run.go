package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// limitsError is a run that cannot fit this machine's limits (file
// descriptors, ephemeral ports): a usage problem, not a failed measurement.
type limitsError struct{ msg string }

func (e *limitsError) Error() string { return e.msg }

// pathSpec is one measured path.
type pathSpec struct {
	Name    string // "direct", "proxied", or proxy A's or B's --names
	Proxied bool   // through a proxy
	Spawn   string // a proxyd binary the tool starts for this run ("" none)
	Target  string // an external proxy's address (Proxied, Spawn "")
	PID     int    // an external proxy's PID (0 unknown)
	Pool    int    // which of the tool's pools: 0, or 1 for proxy B
	Round   int    // 1.. with proxy B, else 0
}

// paths returns the paths a config measures, in order: with proxy B,
// A and B alternately for --rounds rounds.
func (c *config) paths() []pathSpec {
	proxied := pathSpec{Name: "proxied", Proxied: true, Spawn: c.SpawnProxyd}
	if c.SpawnProxyd == "" {
		proxied.Target, proxied.PID = c.Target, c.ProxyPID
	}
	switch {
	case c.hasProxyB():
		b := pathSpec{Name: c.Names[1], Proxied: true, Spawn: c.CompareSpawn, Target: c.CompareTarget, PID: c.ComparePID, Pool: 1}
		proxied.Name = c.Names[0]
		var ps []pathSpec
		for r := 1; r <= c.Rounds; r++ {
			a, b := proxied, b
			a.Round, b.Round = r, r
			ps = append(ps, a, b)
		}
		return ps
	case c.Compare:
		return []pathSpec{{Name: "direct"}, proxied}
	case c.Target == targetDirect && c.SpawnProxyd == "":
		return []pathSpec{{Name: "direct"}}
	}
	return []pathSpec{proxied}
}

// runner holds what the paths of one invocation share: the pool, the
// clock, the layout.
type runner struct {
	cfg     config
	log     io.Writer
	prog    *progress
	clock   monoClock
	pools   []*stratumsim.Pool // [0] for direct and proxy A, [1] for proxy B
	keep    int                // each pool's KeepShares
	current []*atomic.Pointer[poolCollector]
	layout  Layout
	exe     string // this binary, for miner processes
}

// run measures the configured paths and returns the report. The error is
// for a run that could not be completed; the report then holds what was
// measured (nil when nothing was). Every wait is bounded by ctx or by the
// config's timeouts.
func run(ctx context.Context, c config, logw io.Writer) (*Report, error) {
	clock, err := newMonoClock()
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: c, log: logw, clock: clock, prog: newProgress(logw, c.Progress)}
	rep := &Report{Tool: "proxyload", Date: time.Now().UTC().Format(time.RFC3339), Machine: readMachine()}
	paths := c.paths()
	if err := r.plan(rep, paths); err != nil {
		return nil, err
	}
	rep.Params = r.cfg.params(c.Miners, paths)
	rep.Layout = r.layout
	listens := []string{c.PoolListen}
	if c.hasProxyB() {
		listens = append(listens, c.ComparePoolListen)
	}
	defer r.closePools()
	for _, addr := range listens {
		if err := r.startPool(addr, (len(paths)+len(listens)-1)/len(listens)); err != nil {
			return nil, err
		}
	}
	rep.PoolAddr = r.pools[0].Addr()
	if len(r.pools) > 1 {
		rep.ComparePoolAddr = r.pools[1].Addr()
	}
	r.prog.say("pool on %s (difficulty %g); %d miners in %s; fd limit %d (hard %d)",
		strings.Join(poolAddrs(r.pools), " and "), c.Difficulty, r.cfg.Miners, r.layout.describe(), rep.FDs.Soft, rep.FDs.Hard)
	for i, p := range paths {
		if i > 0 {
			runtime.GC() // start each path from a collected heap
		}
		rr, err := r.runPath(ctx, p)
		if rr != nil {
			rep.Runs = append(rep.Runs, rr)
		}
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return nil, err
			}
			if !p.Proxied || !c.hasProxyB() {
				rep.finish()
				return rep, fmt.Errorf("%s path: %w", p.label(), err)
			}
			// One proxy failing a round leaves the other's rounds worth
			// measuring: the report lists the problem.
			r.prog.say("%s: %v", p.label(), err)
		}
	}
	rep.finish()
	return rep, nil
}

// label names a path in the report: the name, and the round with proxy B.
func (p pathSpec) label() string {
	if p.Round > 0 {
		return fmt.Sprintf("%s#%d", p.Name, p.Round)
	}
	return p.Name
}

// poolAddrs lists the pools' addresses.
func poolAddrs(pools []*stratumsim.Pool) []string {
	var out []string
	for _, p := range pools {
		out = append(out, p.Addr())
	}
	return out
}

// closePools closes the tool's pools.
func (r *runner) closePools() {
	for _, p := range r.pools {
		_ = p.Close()
	}
}

// plan raises the fd limit, lays the miners out over processes and source
// addresses, and caps or refuses N when it does not fit.
func (r *runner) plan(rep *Report, paths []pathSpec) error {
	c := &r.cfg
	in := layoutInput{Miners: c.Miners, Procs: c.Procs, MinersPerSession: c.sessionsEstimate(), Spawn: c.SpawnProxyd != "", Limit: 1 << 30}
	for _, p := range paths {
		in.Direct = in.Direct || !p.Proxied
		in.Proxied = in.Proxied || p.Proxied
		in.Spawn = in.Spawn || p.Spawn != ""
	}
	ideal, _ := planLayout(in) // what the run needs with no limit
	rep.FDs = raiseFDLimit(uint64(max(ideal.ToolFDs, ideal.ProcFDs, ideal.ProxydFDs)))
	in.Limit = rep.FDs.Soft
	lay, err := planLayout(in)
	if err != nil {
		fits := maxMiners(in)
		why := fmt.Sprintf("%v (fd limit: soft %d, hard %d", err, rep.FDs.Soft, rep.FDs.Hard)
		if rep.FDs.RaiseError != "" {
			why += "; raising it failed: " + rep.FDs.RaiseError
		}
		why += ")"
		if c.FDPolicy != "cap" || fits == 0 {
			return &limitsError{fmt.Sprintf("%d miners do not fit: %s. At most %d fit here: use --miners %d or --fd-policy cap", c.Miners, why, fits, fits)}
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("--miners capped from %d to %d: %s", c.Miners, fits, why))
		r.prog.say("capping --miners from %d to %d: %s", c.Miners, fits, why)
		c.Miners, in.Miners = fits, fits
		if lay, err = planLayout(in); err != nil {
			return &limitsError{err.Error()}
		}
	}
	// Source addresses: only a loopback destination can be reached from
	// 127.x sources.
	loop := isLoopbackTarget(c.PoolListen) || c.PoolListen == ""
	if c.Target != targetDirect {
		loop = loop && isLoopbackTarget(c.Target)
	}
	if c.hasProxyB() {
		loop = loop && isLoopbackTarget(c.ComparePoolListen)
		if c.CompareTarget != "" {
			loop = loop && isLoopbackTarget(c.CompareTarget)
		}
	}
	ports := ephemeralPorts()
	k := c.SourceIPs
	switch {
	case !loop && k > 0:
		return &limitsError{"--source-ips needs loopback targets (the pool and the proxy on 127.x)"}
	case !loop:
		k = 0
	case k == 0:
		k = autoSourceIPs(c.Miners, ports)
	}
	if err := checkSourceIPs(c.Miners, k, ports); err != nil {
		return &limitsError{err.Error()}
	}
	lay.SourceIPs = k
	r.layout = lay
	if lay.Procs > 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary to start miner processes: %w", err)
		}
		r.exe = exe
	}
	return nil
}

// startPool starts one of the tool's pools on addr, with share records
// sized for the paths that use it. Every pool has the same seed, so the
// proxies compared see the same jobs.
func (r *runner) startPool(addr string, paths int) error {
	c := r.cfg
	perRun := float64(c.Miners)*c.Rate/60*(c.Warmup+c.Duration+c.PhaseTimeout).Seconds()*1.5 + float64(c.Miners)
	keep := min(2*int(perRun)*paths+100_000, 20_000_000)
	cur := new(atomic.Pointer[poolCollector])
	p, err := stratumsim.StartPool(stratumsim.PoolOptions{
		Addr:              addr,
		InitialDifficulty: c.Difficulty,
		SubscribeDelay:    c.PoolSubDelay,
		JobInterval:       c.PoolJobInterval,
		KeepShares:        keep,
		Seed:              c.Seed,
		OnShare: func(s stratumsim.Share) {
			if pc := cur.Load(); pc != nil {
				pc.add(s)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("start the pool on %s: %w", addr, err)
	}
	r.pools = append(r.pools, p)
	r.current = append(r.current, cur)
	r.keep = keep
	return nil
}

// poolCollector records, for one path, the shares the pool received.
type poolCollector struct {
	clock monoClock
	mu    sync.Mutex // guards the fields below
	recv  []int64    // receive time of every share
	accAt []int64    // receive time of every accepted share
	acc   map[[32]byte]int64
}

func newPoolCollector(clock monoClock) *poolCollector {
	return &poolCollector{clock: clock, acc: make(map[[32]byte]int64)}
}

func (pc *poolCollector) add(s stratumsim.Share) {
	at := pc.clock.ns(s.ReceivedAt)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.recv = append(pc.recv, at)
	if s.Accepted {
		pc.accAt = append(pc.accAt, at)
		if _, dup := pc.acc[s.Hash]; !dup {
			pc.acc[s.Hash] = at
		}
	}
}

// runPath measures one path: connect, fan-out, submit, drain, close.
func (r *runner) runPath(ctx context.Context, p pathSpec) (rr *RunReport, err error) {
	c := r.cfg
	pool := r.pools[p.Pool]
	rr = &RunReport{Path: p.Name, Round: p.Round, LoadStart: loadavg(), Miners: MinersFig{Requested: c.Miners}}
	started := time.Now()
	cpu0, _ := selfUsage()
	d := &runData{rate: c.Rate, difficulty: c.Difficulty, poolDifficulty: c.Difficulty, requested: c.Miners, upstream: pool}
	if p.Proxied && c.PoolDiffFactor > 1 {
		// Before the proxy connects (spawned) or while it is connected
		// (external): SetDifficulty also retargets open sessions.
		d.poolDifficulty = c.Difficulty * c.PoolDiffFactor
		pool.SetDifficulty(d.poolDifficulty)
		defer pool.SetDifficulty(c.Difficulty)
	}
	defer func() {
		rr.LoadEnd = loadavg()
		rr.ElapsedS = time.Since(started).Seconds()
		cpu1, rss := selfUsage()
		rr.Tool.ToolCPUS = cpu1 - cpu0
		rr.Tool.ToolMaxRSSMiB = float64(rss) / 1024
		if err != nil {
			rr.Problems = append(rr.Problems, err.Error())
		}
	}()

	target := pool.Addr()
	pid := 0
	switch {
	case p.Spawn != "":
		addrs, err := freeLoopbackAddrs(2)
		if err != nil {
			return rr, err
		}
		listen, httpAddr := addrs[0], addrs[1]
		r.prog.say("%s: starting %s run --config (listen %s, pool %s)", p.label(), p.Spawn, listen, pool.URL())
		proxy, err := startProxyd(ctx, p.Spawn, c.proxydParams(listen, pool.URL(), httpAddr), c.ProxyStartTimeout)
		if err != nil {
			return rr, err
		}
		target, pid = proxy.Listen, proxy.PID()
		defer func() {
			status, serr := proxy.stop(15 * time.Second)
			if rr.Proxy != nil {
				rr.Proxy.Stop = status
			}
			if serr != nil {
				rr.Problems = append(rr.Problems, serr.Error())
			}
		}()
	case p.Proxied:
		target, pid = p.Target, p.PID
		fixed, listenFlag := "", "--pool-listen"
		if p.Pool == 1 {
			listenFlag = "--compare-pool-listen"
		}
		if pool.Port() != 0 && (p.Pool == 0 && strings.HasSuffix(c.PoolListen, ":0") || p.Pool == 1 && strings.HasSuffix(c.ComparePoolListen, ":0")) {
			fixed = " (this port was chosen now: a proxy started earlier cannot know it; fix it with " + listenFlag + ")"
		}
		if p.Round <= 1 {
			fmt.Fprintf(r.log, "proxyload: %s path: the proxy at %s must mine on the pool %s%s with difficulty %g for miners (initial = min = max), for example with this proxyd config:\n%s\n",
				p.label(), target, pool.URL(), fixed, c.Difficulty, indent(proxydConfig(c.proxydParams(target, pool.URL(), "127.0.0.1:8080")), "    "))
		}
		// A proxy started before the tool has been failing to reach the pool
		// and may be backing off; measuring starts once it serves a miner.
		r.prog.say("proxied path: waiting up to %v for %s to give a probe miner a job", c.ConnectTimeout, target)
		if err := waitTargetServes(ctx, target, c.User, c.ConnectTimeout); err != nil {
			return rr, err
		}
	}
	rr.Target, d.target = target, target
	ps := newProxySampler(pid)
	if p.Spawn == "" {
		// An external proxy's peak RSS would otherwise be over its life.
		ps.resetPeak()
	}
	ps.mark(phStart)

	coll := newPoolCollector(r.clock)
	r.current[p.Pool].Store(coll)
	defer r.current[p.Pool].Store(nil)
	poolBefore, codesBefore := pool.Stats(), pool.RejectsByCode()

	r.prog.say("%s path: connecting %d miners to %s", p.label(), c.Miners, target)
	groups, err := r.startGroups(ctx, target)
	if err != nil {
		return rr, err
	}
	closed := false
	defer func() {
		if !closed {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = closeGroups(cctx, groups)
		}
	}()

	// Connect: every dial done, every ready miner holding a job.
	if err := r.connect(ctx, groups, d); err != nil {
		return rr, err
	}
	ps.mark(phConnected)
	if err := sleepCtx(ctx, c.Settle); err != nil {
		return rr, err
	}

	// Fan-out: K clean jobs, one at a time.
	if err := r.fanout(ctx, groups, d); err != nil {
		return rr, err
	}
	ps.mark(phFanout)
	if err := takeAll(ctx, groups, d); err != nil {
		return rr, err
	}

	// Submit: warm-up, the measured window, then every answer.
	if err := r.submit(ctx, groups, d, ps); err != nil {
		return rr, err
	}
	d.poolSessions = pool.Stats().SessionsReady // with every miner still connected

	pre, err := pollAll(ctx, groups, true)
	if err != nil {
		return rr, err
	}
	d.preClose = pre.Fleet
	d.diffLo, d.diffHi = pre.MinDiff, pre.MaxDiff
	fins, err := closeGroups(ctx, groups)
	closed = true
	for _, f := range fins {
		d.addTake(f.Take)
		d.final = addFleet(d.final, f.Fleet)
		rr.Tool.MinerCPUS += f.CPUSeconds
		rr.Tool.MinerMaxRSSMiB = max(rr.Tool.MinerMaxRSSMiB, float64(f.MaxRSSKiB)/1024)
	}
	if err != nil {
		return rr, err
	}
	ps.mark(phEnd)

	// The pool's side.
	poolAfter, codesAfter := pool.Stats(), pool.RejectsByCode()
	d.poolDelta = stratumsim.PoolStats{
		Submits:  poolAfter.Submits - poolBefore.Submits,
		Accepted: poolAfter.Accepted - poolBefore.Accepted,
		Rejected: poolAfter.Rejected - poolBefore.Rejected,
		BytesIn:  poolAfter.BytesIn - poolBefore.BytesIn,
		BytesOut: poolAfter.BytesOut - poolBefore.BytesOut,
	}
	d.poolCodes = map[int]uint64{}
	for code, n := range codesAfter {
		if n -= codesBefore[code]; n > 0 {
			d.poolCodes[code] = n
		}
	}
	coll.mu.Lock()
	d.pool = coll
	coll.mu.Unlock()
	d.unaccounted, d.unaccountedHow = r.unaccounted(d, poolAfter.Accepted)
	for _, seq := range d.seqs {
		if j, ok := pool.Job(seq); ok {
			d.jobs = append(d.jobs, j)
		}
	}
	d.fill(rr, r.clock)
	rr.Completed = true
	if p.Proxied {
		rr.Proxy = ps.figures(rr.Miners.Ready)
		if rr.Proxy.Error != "" {
			rr.Notes = append(rr.Notes, "no proxy RSS or CPU figures: "+rr.Proxy.Error)
		} else if p.Spawn == "" && !rr.Proxy.PeakReset {
			rr.Notes = append(rr.Notes, fmt.Sprintf("could not reset the peak RSS of process %d (/proc/%d/clear_refs): its peak is over its life, not this run", pid, pid))
		}
	}
	return rr, nil
}

// startGroups starts one group per layout entry, all dialing target.
func (r *runner) startGroups(ctx context.Context, target string) ([]group, error) {
	c := r.cfg
	var gs []group
	first := 0
	for i, n := range r.layout.PerProc {
		spec := groupSpec{
			Index: i, Target: target, First: first, Count: n,
			Styles: c.Styles, User: c.User, Password: "x", SourceIPs: r.layout.SourceIPs,
			DialConcurrency: c.DialConcurrency, HashWorkers: c.HashWorkers,
			BadFraction: c.BadFraction, BadKinds: c.BadKinds, Difficulty: c.Difficulty,
			Seed: c.Seed, ConnectTimeout: c.ConnectTimeout,
			MaxHashes: maxHashes(c.Difficulty),
		}
		first += n
		if r.layout.Procs == 0 {
			gs = append(gs, startLocal(spec, r.clock))
			continue
		}
		g, err := startRemote(ctx, r.exe, spec, r.log)
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = closeGroups(cctx, gs)
			cancel()
			return nil, err
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// connect waits until every dial has finished and every ready miner has a
// job, bounded by --connect-timeout, and records the connect figures.
func (r *runner) connect(ctx context.Context, groups []group, d *runData) error {
	c := r.cfg
	deadline := time.Now().Add(c.ConnectTimeout + 5*time.Second)
	var st groupStatus
	var err error
	for {
		if st, err = pollAll(ctx, groups, false); err != nil {
			return err
		}
		if st.DialDone && st.WithJob >= st.Ready {
			break
		}
		r.prog.maybe("connect: %d/%d ready, %d failed, %d with a job", st.Ready, c.Miners, st.Failed, st.WithJob)
		if time.Now().After(deadline) {
			if !st.DialDone {
				return fmt.Errorf("connect: only %d of %d dials finished within --connect-timeout %v", st.Dialed, c.Miners, c.ConnectTimeout)
			}
			d.problems = append(d.problems, fmt.Sprintf("connect: %d of %d ready miners never got a job within --connect-timeout %v", st.Ready-st.WithJob, st.Ready, c.ConnectTimeout))
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	if err := takeAll(ctx, groups, d); err != nil {
		return err
	}
	if st.Ready == 0 {
		return fmt.Errorf("connect: none of %d miners connected to %s (%s)", c.Miners, d.target, strings.Join(d.dial.ErrorSamples[:min(2, len(d.dial.ErrorSamples))], "; "))
	}
	full, err := pollAll(ctx, groups, true)
	if err != nil {
		return err
	}
	d.readyAtConnect = full.Fleet.Ready
	r.prog.say("connected: %d/%d ready (%d failed) in %.2f s", st.Ready, c.Miners, st.Failed,
		float64(d.dial.LastReady-d.dial.FirstStart)/1e9)
	return nil
}

// fanout sends --fanout-jobs clean jobs, each after every connected miner
// got the previous one (bounded by --phase-timeout per job).
func (r *runner) fanout(ctx context.Context, groups []group, d *runData) error {
	c := r.cfg
	if c.FanoutJobs == 0 {
		return nil
	}
	st, err := pollAll(ctx, groups, true)
	if err != nil {
		return err
	}
	want := st.Fleet.Ready
	d.readyAtFanout = want
	if want == 0 {
		return fmt.Errorf("fan-out: no miner is connected any more (%d disconnected after connecting; did the target go away?)", st.Fleet.Disconnects)
	}
	r.prog.say("fan-out: %d clean jobs to %d miners", c.FanoutJobs, want)
	for k := range c.FanoutJobs {
		j := d.upstream.NewJob(true)
		issued := time.Now()
		d.seqs = append(d.seqs, j.Seq)
		for {
			st, err := pollAll(ctx, groups, false)
			if err != nil {
				return err
			}
			got := st.SeqCount[j.Seq]
			if got >= want {
				break
			}
			if time.Since(issued) > c.PhaseTimeout {
				d.problems = append(d.problems, fmt.Sprintf("fan-out job %d reached %d of %d miners within --phase-timeout %v", k+1, got, want, c.PhaseTimeout))
				break
			}
			if time.Since(issued) > time.Second {
				r.prog.maybe("fan-out: job %d/%d reached %d/%d miners", k+1, c.FanoutJobs, got, want)
			}
			// The latencies are stamped on arrival; this only paces the
			// check, lightly, because it shares the CPU with the fan-out.
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
		if k+1 < c.FanoutJobs {
			if err := sleepCtx(ctx, c.FanoutInterval); err != nil {
				return err
			}
		}
	}
	return nil
}

// submit runs the warm-up and the measured window at --rate, then stops
// submitting and waits (bounded by --phase-timeout) until every submit has
// its answer.
func (r *runner) submit(ctx context.Context, groups []group, d *runData, ps *proxySampler) error {
	c := r.cfg
	if c.Rate == 0 {
		d.windowStart = r.clock.now()
		d.windowEnd = d.windowStart
		ps.mark(phWindowStart)
		ps.mark(phWindowEnd)
		return nil
	}
	r.prog.say("submit: %g shares/min/miner, %v warm-up, %v measured", c.Rate, c.Warmup, c.Duration)
	if err := setRateAll(ctx, groups, c.Rate); err != nil {
		return err
	}
	if err := sleepCtx(ctx, c.Warmup); err != nil {
		return err
	}
	s0, err := pollAll(ctx, groups, true)
	if err != nil {
		return err
	}
	d.windowStart = r.clock.now()
	ps.mark(phWindowStart)
	end := time.Now().Add(c.Duration)
	last, lastAt := s0.Fleet.Submitted, time.Now()
	for {
		left := time.Until(end)
		if left <= 0 {
			break
		}
		if err := sleepCtx(ctx, min(left, time.Second)); err != nil {
			return err
		}
		if time.Until(end) > 0 {
			st, err := pollAll(ctx, groups, true)
			if err != nil {
				return err
			}
			f := st.Fleet
			if f.Connected == 0 {
				return fmt.Errorf("submit: every miner lost its connection (did the target go away?)")
			}
			if r.prog.maybe("submit: %.0f/%.0f s, %.0f shares/s sent, accepted %d, rejected %d, pending %d, late %d, connected %d",
				c.Duration.Seconds()-time.Until(end).Seconds(), c.Duration.Seconds(),
				float64(f.Submitted-last)/time.Since(lastAt).Seconds(), f.Accepted, f.Rejected, f.Pending, f.Late, f.Connected) {
				last, lastAt = f.Submitted, time.Now()
			}
		}
	}
	d.windowEnd = r.clock.now()
	ps.mark(phWindowEnd)
	s1, err := pollAll(ctx, groups, true)
	if err != nil {
		return err
	}
	if err := setRateAll(ctx, groups, 0); err != nil {
		return err
	}
	d.late = s1.Fleet.Late - s0.Fleet.Late
	d.scheduled = s1.Fleet.Scheduled - s0.Fleet.Scheduled
	d.searchErrors = s1.Fleet.SearchErrors - s0.Fleet.SearchErrors

	// Drain: no pending submit, nothing scheduled unsent, and nothing new
	// between two polls.
	deadline := time.Now().Add(c.PhaseTimeout)
	var prev *stratumsim.FleetStats
	for {
		st, err := pollAll(ctx, groups, true)
		if err != nil {
			return err
		}
		f := st.Fleet
		quiet := f.Pending == 0 && f.Scheduled <= f.Submitted+f.SearchErrors
		if quiet && prev != nil && prev.Submitted == f.Submitted && prev.Pending == 0 {
			break
		}
		if !quiet {
			prev = nil
		} else {
			prev = &f
		}
		if time.Now().After(deadline) {
			d.problems = append(d.problems, fmt.Sprintf("%d submits still unanswered --phase-timeout %v after the window", f.Pending, c.PhaseTimeout))
			break
		}
		r.prog.maybe("drain: %d submits awaiting an answer", f.Pending)
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return takeAll(ctx, groups, d)
}

// unaccounted asks the pool which shares miners were told "true" for that
// it never accepted although they met its difficulty. The pool's record of
// accepted hashes is bounded; when this run may exceed it, the path's own
// complete record of the pool's accepted shares decides instead.
func (r *runner) unaccounted(d *runData, poolAccepted uint64) ([]shareRec, string) {
	var res []stratumsim.SubmitResult
	var recs []shareRec
	for _, s := range d.results {
		if s.Verdict == stratumsim.VerdictAccepted {
			res = append(res, stratumsim.SubmitResult{Verdict: s.Verdict, Hash: s.Hash, ShareDifficulty: s.ShareDiff})
			recs = append(recs, s)
		}
	}
	if poolAccepted <= uint64(r.keep/2) {
		var out []shareRec
		byHash := map[[32]byte]bool{}
		for chunk := range slices.Chunk(res, 100_000) { // bounds the pool's lock hold
			for _, b := range d.upstream.Unaccounted(chunk, d.poolDifficulty) {
				byHash[b.Hash] = true
			}
		}
		for _, s := range recs {
			if byHash[s.Hash] {
				out = append(out, s)
			}
		}
		return out, "Pool.Unaccounted"
	}
	var out []shareRec
	for _, s := range recs {
		if _, ok := d.pool.acc[s.Hash]; !ok && s.ShareDiff >= d.poolDifficulty {
			out = append(out, s)
		}
	}
	return out, "the path's record of every share the pool accepted (more accepted shares than Pool.Unaccounted keeps)"
}

// pollAll polls every group and sums their status; full adds the fleets'
// counters (which cost a pass over every miner).
func pollAll(ctx context.Context, groups []group, full bool) (groupStatus, error) {
	sum := groupStatus{DialDone: true, SeqCount: map[uint64]int{}}
	for _, g := range groups {
		st, err := g.poll(ctx, full)
		if err != nil {
			return sum, err
		}
		sum.Dialed += st.Dialed
		sum.Ready += st.Ready
		sum.Failed += st.Failed
		sum.WithJob += st.WithJob
		sum.DialDone = sum.DialDone && st.DialDone
		for seq, n := range st.SeqCount {
			sum.SeqCount[seq] += n
		}
		sum.Fleet = addFleet(sum.Fleet, st.Fleet)
		if st.MinDiff > 0 && (sum.MinDiff == 0 || st.MinDiff < sum.MinDiff) {
			sum.MinDiff = st.MinDiff
		}
		sum.MaxDiff = max(sum.MaxDiff, st.MaxDiff)
	}
	return sum, nil
}

// addFleet sums the fleet counters the tool uses.
func addFleet(a, b stratumsim.FleetStats) stratumsim.FleetStats {
	a.Miners += b.Miners
	a.Connected += b.Connected
	a.Ready += b.Ready
	a.Connects += b.Connects
	a.Disconnects += b.Disconnects
	a.Submitted += b.Submitted
	a.Accepted += b.Accepted
	a.Rejected += b.Rejected
	a.Lost += b.Lost
	a.Pending += b.Pending
	a.Unexpected += b.Unexpected
	a.Hashes += b.Hashes
	a.SearchFailures += b.SearchFailures
	a.Malformed += b.Malformed
	a.UnexpectedResponses += b.UnexpectedResponses
	a.BytesIn += b.BytesIn
	a.BytesOut += b.BytesOut
	a.Scheduled += b.Scheduled
	a.ScheduledBad += b.ScheduledBad
	a.Late += b.Late
	a.SearchErrors += b.SearchErrors
	a.Reconnects += b.Reconnects
	return a
}

// setRateAll sets every group's submit rate.
func setRateAll(ctx context.Context, groups []group, perMinute float64) error {
	for _, g := range groups {
		if err := g.setRate(ctx, perMinute); err != nil {
			return err
		}
	}
	return nil
}

// takeAll moves every group's records into d.
func takeAll(ctx context.Context, groups []group, d *runData) error {
	for _, g := range groups {
		t, err := g.take(ctx)
		if err != nil {
			return err
		}
		d.addTake(t)
	}
	return nil
}

// closeGroups closes every group (concurrently), returning their finals
// and the first error.
func closeGroups(ctx context.Context, groups []group) ([]groupFinal, error) {
	fins := make([]groupFinal, len(groups))
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { fins[i], errs[i] = g.close(ctx) })
	}
	wg.Wait()
	return fins, errors.Join(errs...)
}

// maxHashes bounds one share search at 64 times the hashes a share at
// difficulty d needs on average (at least 65,536): a search that long
// fails only when the target handed miners a higher difficulty than d,
// and then fails fast instead of occupying a hashing worker for seconds.
func maxHashes(d float64) uint64 {
	return max(1<<16, uint64(64*d*(1<<32)))
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// progress prints progress lines to stderr: say always (phase changes),
// maybe at most once per interval. An interval of 0 silences both.
type progress struct {
	w     io.Writer
	every time.Duration
	start time.Time
	mu    sync.Mutex
	last  time.Time
}

func newProgress(w io.Writer, every time.Duration) *progress {
	now := time.Now()
	return &progress{w: w, every: every, start: now, last: now}
}

func (p *progress) say(format string, args ...any) {
	if p.every <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = time.Now()
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// maybe prints when an interval has passed since the last line and
// reports whether it did.
func (p *progress) maybe(format string, args ...any) bool {
	if p.every <= 0 {
		return false
	}
	p.mu.Lock()
	due := time.Since(p.last) >= p.every
	p.mu.Unlock()
	if due {
		p.say(format, args...)
	}
	return due
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// describe says where the miners run, for the progress line.
func (l Layout) describe() string {
	if l.Procs == 0 {
		return "this process"
	}
	return fmt.Sprintf("%d miner process(es) %v, %d source address(es)", l.Procs, l.PerProc, l.SourceIPs)
}
