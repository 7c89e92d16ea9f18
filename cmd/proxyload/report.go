package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// Report is everything one invocation measured. Latencies are in
// milliseconds, CPU in seconds, memory in MiB or KiB as named.
type Report struct {
	Tool     string   `json:"tool"`
	Date     string   `json:"date"` // start, UTC RFC 3339
	Command  []string `json:"command,omitempty"`
	Params   Params   `json:"params"`
	Machine  Machine  `json:"machine"`
	FDs      FDLimits `json:"fd_limits"`
	Layout   Layout   `json:"layout"`
	PoolAddr string   `json:"pool_addr"`
	// ComparePoolAddr is proxy B's pool (with proxy B).
	ComparePoolAddr string       `json:"compare_pool_addr,omitempty"`
	Runs            []*RunReport `json:"runs"`
	// Added is proxied − direct (with --compare).
	Added *Added `json:"added,omitempty"`
	// Compare is proxy B against proxy A (with proxy B).
	Compare  *Comparison `json:"compare,omitempty"`
	OK       bool        `json:"ok"`
	Problems []string    `json:"problems,omitempty"` // why OK is false
	Notes    []string    `json:"notes,omitempty"`    // worth knowing, not failures
}

// Params are the parameters of the run.
type Params struct {
	Paths           []string `json:"paths"`
	Target          string   `json:"target"`
	SpawnProxyd     string   `json:"spawn_proxyd,omitempty"`
	ProxyPID        int      `json:"proxy_pid,omitempty"`
	CompareTarget   string   `json:"compare_target,omitempty"`
	CompareSpawn    string   `json:"compare_spawn_proxyd,omitempty"`
	ComparePID      int      `json:"compare_proxy_pid,omitempty"`
	Names           []string `json:"names,omitempty"` // proxy A's and B's
	Rounds          int      `json:"rounds,omitempty"`
	Miners          int      `json:"miners"`
	MinersRequested int      `json:"miners_requested"`
	SharesPerMinute float64  `json:"shares_per_minute_per_miner"`
	DurationS       float64  `json:"duration_s"`
	WarmupS         float64  `json:"warmup_s"`
	Styles          []string `json:"styles"` // the round-robin cycle
	BadFraction     float64  `json:"bad_fraction"`
	BadKinds        []string `json:"bad_kinds"`
	Difficulty      float64  `json:"difficulty"`
	PoolDiffFactor  float64  `json:"pool_difficulty_factor"` // the proxy's pool sessions get difficulty × this
	PoolSubDelayS   float64  `json:"pool_subscribe_delay_s"`
	PoolJobEveryS   float64  `json:"pool_job_interval_s,omitempty"`
	HashesPerShare  float64  `json:"hashes_per_share"` // difficulty·2^32, on average
	FanoutJobs      int      `json:"fanout_jobs"`
	FanoutIntervalS float64  `json:"fanout_interval_s"`
	SettleS         float64  `json:"settle_s"`
	DialConcurrency int      `json:"dial_concurrency"`
	HashWorkers     int      `json:"hash_workers"`
	Seed            uint64   `json:"seed"`
}

// params returns the Params of a run of miners (after any cap).
func (c *config) params(requested int, paths []pathSpec) Params {
	p := Params{
		Target: c.Target, SpawnProxyd: c.SpawnProxyd, ProxyPID: c.ProxyPID,
		Miners: c.Miners, MinersRequested: requested, SharesPerMinute: c.Rate,
		DurationS: c.Duration.Seconds(), WarmupS: c.Warmup.Seconds(),
		BadFraction: c.BadFraction, Difficulty: c.Difficulty, PoolDiffFactor: c.PoolDiffFactor, PoolSubDelayS: c.PoolSubDelay.Seconds(), PoolJobEveryS: c.PoolJobInterval.Seconds(), HashesPerShare: c.Difficulty * math.Ldexp(1, 32),
		FanoutJobs: c.FanoutJobs, FanoutIntervalS: c.FanoutInterval.Seconds(), SettleS: c.Settle.Seconds(),
		DialConcurrency: c.DialConcurrency, HashWorkers: c.HashWorkers, Seed: c.Seed,
	}
	if c.hasProxyB() {
		p.CompareTarget, p.CompareSpawn, p.ComparePID = c.CompareTarget, c.CompareSpawn, c.ComparePID
		p.Names, p.Rounds = c.Names[:], c.Rounds
	}
	for _, ps := range paths {
		p.Paths = append(p.Paths, ps.label())
	}
	for _, s := range c.Styles {
		p.Styles = append(p.Styles, s.String())
	}
	for _, k := range c.BadKinds {
		p.BadKinds = append(p.BadKinds, k.String())
	}
	return p
}

// label names a run in the table: its path, with the round when there are
// rounds.
func (rr *RunReport) label() string {
	if rr.Round > 0 {
		return fmt.Sprintf("%s#%d", rr.Path, rr.Round)
	}
	return rr.Path
}

// RunReport is one path's figures.
type RunReport struct {
	Path      string     `json:"path"`            // direct, proxied, or proxy A's or B's name
	Round     int        `json:"round,omitempty"` // with proxy B: 1..--rounds
	Target    string     `json:"target"`
	LoadStart [3]float64 `json:"loadavg_start"`
	LoadEnd   [3]float64 `json:"loadavg_end"`
	ElapsedS  float64    `json:"elapsed_s"`
	// Completed is true when every phase ran (the figures are complete).
	Completed  bool          `json:"completed"`
	Miners     MinersFig     `json:"miners"`
	Connect    ConnectFig    `json:"connect"`
	Fanout     FanoutFig     `json:"fanout"`
	Submit     SubmitFig     `json:"submit"`
	Throughput ThroughputFig `json:"throughput"`
	Bytes      BytesFig      `json:"bytes"`
	Proxy      *ProxyFig     `json:"proxy,omitempty"`
	Tool       ToolFig       `json:"tool"`
	Accounting AccountingFig `json:"accounting"`
	Problems   []string      `json:"problems,omitempty"`
	Notes      []string      `json:"notes,omitempty"`
}

// MinersFig counts the miners.
type MinersFig struct {
	Requested     int      `json:"requested"`
	Ready         int      `json:"ready"`  // handshake completed
	Failed        int      `json:"failed"` // dial or handshake failed
	ErrorSamples  []string `json:"error_samples,omitempty"`
	Dropped       int      `json:"dropped"`        // disconnected before the tool closed them
	DifficultyMin float64  `json:"difficulty_min"` // lowest difficulty in force for a job a miner received
	DifficultyMax float64  `json:"difficulty_max"`
}

// ConnectFig times the connection of all miners.
type ConnectFig struct {
	TotalS    float64 `json:"total_s"`   // first dial → last handshake complete
	Handshake Summary `json:"handshake"` // per miner: dial start → handshake complete
	FirstJob  Summary `json:"first_job"` // per miner: dial start → first mining.notify
}

// FanoutFig is the clean-job fan-out. Latency counts from the moment the
// pool created the job and started sending it (Pool.NewJob): the same
// instant on both paths, so the direct path includes the pool's own
// fan-out to every miner's session and the proxied path the pool's few
// upstream sessions plus the proxy's fan-out. FromFirstWrite counts from
// the start of the pool's first socket write of the job instead.
type FanoutFig struct {
	Miners         int         `json:"miners"` // connected when the fan-out started
	Pairs          int         `json:"pairs"`  // jobs × miners
	Latency        Summary     `json:"latency"`
	FromFirstWrite Summary     `json:"latency_from_first_write"`
	PoolQueueMaxMS float64     `json:"pool_queue_max_ms"` // the largest job created → first socket write
	Missing        int         `json:"never_arrived"`
	NotClean       int         `json:"arrived_not_clean"` // arrived with clean_jobs false
	Jobs           []JobFanout `json:"jobs"`
}

// JobFanout is one fan-out job.
type JobFanout struct {
	Seq     uint64 `json:"seq"`
	Arrived int    `json:"arrived"`
	Missing int    `json:"never_arrived"`
	// PoolQueueMS is the pool's own delay from creating the job to the
	// start of its first socket write.
	PoolQueueMS float64 `json:"pool_queue_ms"`
	Latency     Summary `json:"latency"`
}

// SubmitFig is the submit latency over the measured window.
type SubmitFig struct {
	WindowS float64 `json:"window_s"`
	// Path is miner sends → pool receives, for the good shares sent in the
	// window that the pool accepted.
	Path Summary `json:"path"`
	// RTT is miner sends → miner gets its verdict, for the same shares.
	RTT Summary `json:"rtt"`
	// Unmatched counts good shares the miner was told "true" for, sent in
	// the window, that the pool never accepted.
	Unmatched int `json:"unmatched"`
}

// ThroughputFig is shares per second over the measured window.
type ThroughputFig struct {
	OfferedPerS      float64 `json:"offered_per_s"`       // connected miners × rate / 60
	SentPerS         float64 `json:"sent_per_s"`          // submits sent
	AcceptedPerS     float64 `json:"accepted_per_s"`      // "true" verdicts received by miners
	PoolReceivedPerS float64 `json:"pool_received_per_s"` // submits the pool received
	PoolAcceptedPerS float64 `json:"pool_accepted_per_s"`
	Scheduled        uint64  `json:"scheduled"`     // submits the generator scheduled in the window
	Late             uint64  `json:"late"`          // ... and dropped because its hashing workers were busy
	SearchErrors     uint64  `json:"search_errors"` // ... whose search or send failed
}

// BytesFig compares the traffic on the pool's side and the miners' side.
type BytesFig struct {
	PoolIn       uint64  `json:"pool_in"`  // bytes the pool read
	PoolOut      uint64  `json:"pool_out"` // bytes the pool wrote
	MinerIn      uint64  `json:"miner_in"`
	MinerOut     uint64  `json:"miner_out"`
	PoolTotal    uint64  `json:"pool_total"`
	MinerTotal   uint64  `json:"miner_total"`
	ReductionPct float64 `json:"reduction_pct"` // 100·(1 − pool/miner)
	// PoolSessions is the pool's subscribed and authorized sessions at the
	// end of the measured window, every miner connected: the proxy's
	// upstream sessions (one per miner on the direct path).
	PoolSessions int `json:"pool_sessions"`
}

// ProxyFig is the proxy process's resources from /proc/PID.
type ProxyFig struct {
	PID             int     `json:"pid,omitempty"`
	RSSStartMiB     float64 `json:"rss_start_mib"`
	RSSConnectedMiB float64 `json:"rss_connected_mib"`
	RSSEndMiB       float64 `json:"rss_end_mib"`
	PeakRSSMiB      float64 `json:"peak_rss_mib"` // VmHWM over the process's life, or since its reset
	// PeakReset says whether an external proxy's VmHWM was reset before
	// the run; without it the peak may be an earlier run's.
	PeakReset bool `json:"peak_reset,omitempty"`
	// RSSPerMinerKiB is (RSS after connect − RSS at start) per connected
	// miner, PeakRSSPerMinerKiB (peak − RSS at start) per miner.
	RSSPerMinerKiB     float64 `json:"rss_per_miner_kib"`
	PeakRSSPerMinerKiB float64 `json:"peak_rss_per_miner_kib"`
	CPUConnectS        float64 `json:"cpu_connect_s"`
	CPUFanoutS         float64 `json:"cpu_fanout_s"`
	CPUWindowS         float64 `json:"cpu_window_s"`
	CPUWindowPct       float64 `json:"cpu_window_pct"` // of one core over the measured window
	CPUTotalS          float64 `json:"cpu_total_s"`
	Threads            int     `json:"threads"`
	Stop               string  `json:"stop,omitempty"` // how a spawned proxyd ended
	Error              string  `json:"error,omitempty"`
}

// ToolFig is what the load generator itself used.
type ToolFig struct {
	ToolCPUS       float64 `json:"tool_cpu_s"`       // the tool's process: pool, control, in-process miners
	ToolMaxRSSMiB  float64 `json:"tool_max_rss_mib"` // the tool's process, peak so far
	MinerCPUS      float64 `json:"miner_cpu_s"`      // miner processes
	MinerMaxRSSMiB float64 `json:"miner_max_rss_mib"`
}

// KindFig accounts for one share kind.
type KindFig struct {
	Sent       uint64            `json:"sent"`
	Accepted   uint64            `json:"accepted"`
	Rejected   uint64            `json:"rejected"`
	ByCode     map[string]uint64 `json:"rejected_by_code,omitempty"`
	NoAnswer   uint64            `json:"no_answer"`
	AsExpected uint64            `json:"as_expected"`
	Unexpected uint64            `json:"unexpected"` // answered, but not as the kind expects
	Expect     string            `json:"expect"`
}

// AccountingFig accounts for every share of the path.
type AccountingFig struct {
	Submitted      uint64              `json:"submitted"`
	Accepted       uint64              `json:"accepted"`
	Rejected       uint64              `json:"rejected"`
	NoAnswer       uint64              `json:"no_answer"` // connection ended first, or never answered
	ByKind         map[string]*KindFig `json:"by_kind"`
	MinerRejects   map[string]uint64   `json:"miner_rejects_by_code"`
	RejectMessages map[string]string   `json:"reject_messages"` // one message per code, as miners got it
	PoolSubmits    uint64              `json:"pool_submits"`
	PoolAccepted   uint64              `json:"pool_accepted"`
	PoolRejected   uint64              `json:"pool_rejected"`
	PoolRejects    map[string]uint64   `json:"pool_rejects_by_code"`
	Unexpected     uint64              `json:"unexpected"`
	GoodRejected   uint64              `json:"good_rejected"`
	// Unaccounted counts shares miners were told "true" for that the pool
	// never accepted although they met its difficulty; any fails the run.
	Unaccounted        int      `json:"unaccounted"`
	UnaccountedBy      string   `json:"unaccounted_by"`
	UnaccountedSamples []string `json:"unaccounted_samples,omitempty"`
	// PoolAcceptedNotTold counts shares the pool accepted whose miner was
	// not told "true".
	PoolAcceptedNotTold int  `json:"pool_accepted_miner_not_told"`
	RecordsMatch        bool `json:"records_match"` // a record for every submit sent
	OK                  bool `json:"ok"`
}

// Added is proxied − direct. A figure is absent when either path has no
// values for it.
type Added struct {
	ConnectTotalS float64 `json:"connect_total_s"`
	Handshake     *Delta  `json:"handshake,omitempty"`
	FirstJob      *Delta  `json:"first_job,omitempty"`
	Fanout        *Delta  `json:"fanout,omitempty"`
	// FanoutFromFirstWrite compares fan-out counted from the pool's first
	// socket write.
	FanoutFromFirstWrite *Delta `json:"fanout_from_first_write,omitempty"`
	SubmitPath           *Delta `json:"submit_path,omitempty"`
	SubmitRTT            *Delta `json:"submit_rtt,omitempty"`
}

// runData is what a path collects, before it becomes a RunReport.
type runData struct {
	target           string
	rate, difficulty float64
	poolDifficulty   float64 // the pool's difficulty for this path's sessions
	requested        int
	upstream         *stratumsim.Pool // the pool of this path
	poolSessions     int

	dial           dialReport
	readyAtConnect int
	readyAtFanout  int
	diffLo, diffHi float64
	preClose       stratumsim.FleetStats // just before closing the miners
	final          stratumsim.FleetStats // after closing them

	seqs     []uint64
	jobs     []stratumsim.JobInfo
	arrivals map[uint64]*jobArrivals
	results  []shareRec

	pool      *poolCollector
	poolDelta stratumsim.PoolStats
	poolCodes map[int]uint64

	windowStart, windowEnd        int64
	late, scheduled, searchErrors uint64

	unaccounted    []shareRec
	unaccountedHow string
	problems       []string
}

// addTake merges a group's records.
func (d *runData) addTake(t groupTake) {
	d.results = append(d.results, t.Results...)
	if d.arrivals == nil {
		d.arrivals = make(map[uint64]*jobArrivals)
	}
	for _, ja := range t.Arrivals {
		have := d.arrivals[ja.Seq]
		if have == nil {
			have = &jobArrivals{Seq: ja.Seq}
			d.arrivals[ja.Seq] = have
		}
		have.At = append(have.At, ja.At...)
		have.NotClean += ja.NotClean
	}
	if dr := t.Dial; dr != nil {
		d.dial.Handshake = append(d.dial.Handshake, dr.Handshake...)
		d.dial.FirstJob = append(d.dial.FirstJob, dr.FirstJob...)
		if dr.FirstStart != 0 && (d.dial.FirstStart == 0 || dr.FirstStart < d.dial.FirstStart) {
			d.dial.FirstStart = dr.FirstStart
		}
		d.dial.LastReady = max(d.dial.LastReady, dr.LastReady)
		d.dial.Errors += dr.Errors
		for _, s := range dr.ErrorSamples {
			if len(d.dial.ErrorSamples) < errSamples {
				d.dial.ErrorSamples = append(d.dial.ErrorSamples, s)
			}
		}
	}
}

// fill computes rr's figures from d.
func (d *runData) fill(rr *RunReport, clock monoClock) {
	rr.Problems = append(rr.Problems, d.problems...)

	// Miners and connect.
	rr.Miners = MinersFig{
		Requested: d.requested, Ready: len(d.dial.Handshake), Failed: d.dial.Errors,
		ErrorSamples: d.dial.ErrorSamples, DifficultyMin: d.diffLo, DifficultyMax: d.diffHi,
		Dropped: max(0, d.preClose.Disconnects),
	}
	if d.dial.LastReady > 0 {
		rr.Connect.TotalS = float64(d.dial.LastReady-d.dial.FirstStart) / 1e9
	}
	rr.Connect.Handshake = summarize(d.dial.Handshake)
	rr.Connect.FirstJob = summarize(d.dial.FirstJob)
	if rr.Miners.Failed > 0 {
		rr.Problems = append(rr.Problems, fmt.Sprintf("%d of %d miners failed to connect (e.g. %s)", rr.Miners.Failed, d.requested, strings.Join(d.dial.ErrorSamples[:min(2, len(d.dial.ErrorSamples))], "; ")))
	}
	if rr.Miners.Dropped > 0 {
		rr.Problems = append(rr.Problems, fmt.Sprintf("%d miners were disconnected during the run", rr.Miners.Dropped))
	}
	if d.diffHi > d.difficulty*1.000001 {
		rr.Notes = append(rr.Notes, fmt.Sprintf("miners got difficulty up to %g, above the pool's %g: each share costs %.0f hashes; configure the proxy's difficulty as --difficulty", d.diffHi, d.difficulty, d.diffHi*math.Ldexp(1, 32)))
	}
	if d.diffLo > 0 && d.diffLo < d.difficulty*0.999999 {
		rr.Notes = append(rr.Notes, fmt.Sprintf("miners got difficulty %g, below the pool's %g: a proxy forwards only shares meeting the pool's difficulty, so submit latency covers only those", d.diffLo, d.difficulty))
	}

	// Fan-out.
	rr.Fanout.Miners = d.readyAtFanout
	var all, fromWrite []int64
	for _, j := range d.jobs {
		jf := JobFanout{Seq: j.Seq}
		ja := d.arrivals[j.Seq]
		var lat []int64
		if ja != nil {
			created := clock.ns(j.CreatedAt)
			for _, at := range ja.At {
				lat = append(lat, at-created)
			}
			if !j.FirstSent.IsZero() {
				jf.PoolQueueMS = float64(j.FirstSent.Sub(j.CreatedAt)) / 1e6
				rr.Fanout.PoolQueueMaxMS = max(rr.Fanout.PoolQueueMaxMS, jf.PoolQueueMS)
				sent := clock.ns(j.FirstSent)
				for _, at := range ja.At {
					fromWrite = append(fromWrite, at-sent)
				}
			}
			jf.Arrived = len(ja.At)
			rr.Fanout.NotClean += ja.NotClean
		}
		jf.Missing = max(0, d.readyAtFanout-jf.Arrived)
		all = append(all, lat...)
		jf.Latency = summarize(lat)
		rr.Fanout.Missing += jf.Missing
		rr.Fanout.Pairs += d.readyAtFanout
		rr.Fanout.Jobs = append(rr.Fanout.Jobs, jf)
	}
	rr.Fanout.Latency = summarize(all)
	rr.Fanout.FromFirstWrite = summarize(fromWrite)
	if rr.Fanout.Missing > 0 {
		rr.Problems = append(rr.Problems, fmt.Sprintf("%d of %d fan-out notifies never arrived", rr.Fanout.Missing, rr.Fanout.Pairs))
	}
	if rr.Fanout.NotClean > 0 {
		rr.Notes = append(rr.Notes, fmt.Sprintf("%d clean jobs reached miners with clean_jobs false", rr.Fanout.NotClean))
	}

	// Submit latency and throughput over the window.
	ws, we := d.windowStart, d.windowEnd
	in := func(t int64) bool { return t >= ws && t < we }
	win := float64(we-ws) / 1e9
	rr.Submit.WindowS = win
	var path, rtt []int64
	var sent, acc uint64
	for _, s := range d.results {
		if in(s.SentAt) {
			sent++
		}
		if s.Verdict == stratumsim.VerdictAccepted && in(s.AnsweredAt) {
			acc++
		}
		if s.Kind != stratumsim.ShareGood || s.Verdict != stratumsim.VerdictAccepted || !in(s.SentAt) {
			continue
		}
		at, ok := d.pool.acc[s.Hash]
		if !ok {
			rr.Submit.Unmatched++
			continue
		}
		path = append(path, at-s.SentAt)
		rtt = append(rtt, s.AnsweredAt-s.SentAt)
	}
	rr.Submit.Path = summarize(path)
	rr.Submit.RTT = summarize(rtt)
	var precv, pacc uint64
	for _, t := range d.pool.recv {
		if in(t) {
			precv++
		}
	}
	for _, t := range d.pool.accAt {
		if in(t) {
			pacc++
		}
	}
	perS := func(n uint64) float64 {
		if win <= 0 {
			return 0
		}
		return float64(n) / win
	}
	rr.Throughput = ThroughputFig{
		OfferedPerS: float64(d.readyAtFanout) * d.rate / 60, SentPerS: perS(sent), AcceptedPerS: perS(acc),
		PoolReceivedPerS: perS(precv), PoolAcceptedPerS: perS(pacc),
		Scheduled: d.scheduled, Late: d.late, SearchErrors: d.searchErrors,
	}
	if d.readyAtFanout == 0 {
		rr.Throughput.OfferedPerS = float64(d.readyAtConnect) * d.rate / 60
	}
	if d.late > 0 {
		rr.Notes = append(rr.Notes, fmt.Sprintf("the generator fell behind: %d of %d scheduled submits were dropped because its hashing workers were busy; shares/s is the generator's limit, not the target's (lower --difficulty or --rate, or add --hash-workers)", d.late, d.scheduled))
	}

	// Bytes.
	b := BytesFig{PoolIn: d.poolDelta.BytesIn, PoolOut: d.poolDelta.BytesOut, MinerIn: d.final.BytesIn, MinerOut: d.final.BytesOut}
	b.PoolTotal, b.MinerTotal = b.PoolIn+b.PoolOut, b.MinerIn+b.MinerOut
	b.PoolSessions = d.poolSessions
	if b.MinerTotal > 0 {
		b.ReductionPct = 100 * (1 - float64(b.PoolTotal)/float64(b.MinerTotal))
	}
	rr.Bytes = b

	d.account(rr)
}

// account fills the accounting and its problems.
func (d *runData) account(rr *RunReport) {
	a := AccountingFig{
		ByKind: map[string]*KindFig{}, MinerRejects: map[string]uint64{}, RejectMessages: map[string]string{},
		PoolRejects: map[string]uint64{}, PoolSubmits: d.poolDelta.Submits, PoolAccepted: d.poolDelta.Accepted,
		PoolRejected: d.poolDelta.Rejected, UnaccountedBy: d.unaccountedHow,
	}
	for code, n := range d.poolCodes {
		a.PoolRejects[strconv.Itoa(code)] = n
	}
	told := make(map[[32]byte]bool)
	for _, s := range d.results {
		kf := a.ByKind[s.Kind.String()]
		if kf == nil {
			kf = &KindFig{ByCode: map[string]uint64{}, Expect: expectText(s.Kind)}
			a.ByKind[s.Kind.String()] = kf
		}
		kf.Sent++
		a.Submitted++
		switch s.Verdict {
		case stratumsim.VerdictAccepted:
			kf.Accepted++
			a.Accepted++
			told[s.Hash] = true
		case stratumsim.VerdictRejected:
			kf.Rejected++
			a.Rejected++
			code := strconv.Itoa(s.Code)
			kf.ByCode[code]++
			a.MinerRejects[code]++
			if s.Message != "" && a.RejectMessages[code] == "" {
				a.RejectMessages[code] = s.Message
			}
		default:
			kf.NoAnswer++
			a.NoAnswer++
			continue
		}
		r := stratumsim.SubmitResult{Verdict: s.Verdict, Code: s.Code, Expect: s.Kind.ExpectedCode()}
		if r.AsExpected() {
			kf.AsExpected++
		} else {
			kf.Unexpected++
			a.Unexpected++
			if s.Kind == stratumsim.ShareGood {
				a.GoodRejected++
			}
		}
	}
	for h := range d.pool.acc {
		if !told[h] {
			a.PoolAcceptedNotTold++
		}
	}
	a.Unaccounted = len(d.unaccounted)
	for _, s := range d.unaccounted[:min(5, len(d.unaccounted))] {
		a.UnaccountedSamples = append(a.UnaccountedSamples, fmt.Sprintf("%s share %x… difficulty %.3g", s.Kind, reverse(s.Hash)[:8], s.ShareDiff))
	}
	a.RecordsMatch = a.Submitted == d.final.Submitted
	var probs []string
	if a.Unaccounted > 0 {
		probs = append(probs, fmt.Sprintf("%d shares unaccounted: miners were told \"true\" but the pool never accepted them", a.Unaccounted))
	}
	if a.NoAnswer > 0 {
		probs = append(probs, fmt.Sprintf("%d submits never got an answer", a.NoAnswer))
	}
	if a.GoodRejected > 0 {
		probs = append(probs, fmt.Sprintf("%d good shares were not accepted", a.GoodRejected))
	}
	if !a.RecordsMatch {
		probs = append(probs, fmt.Sprintf("%d submits recorded but miners sent %d", a.Submitted, d.final.Submitted))
	}
	if rr.Path == "direct" && a.Unexpected > 0 {
		probs = append(probs, fmt.Sprintf("%d unexpected verdicts on the direct path (a tool or pool bug)", a.Unexpected))
	} else if a.Unexpected > a.GoodRejected {
		rr.Notes = append(rr.Notes, fmt.Sprintf("%d bad shares were answered otherwise than the pool would (see accounting.by_kind)", a.Unexpected-a.GoodRejected))
	}
	if a.PoolAcceptedNotTold > 0 {
		rr.Notes = append(rr.Notes, fmt.Sprintf("%d shares the pool accepted were not acknowledged to their miner", a.PoolAcceptedNotTold))
	}
	a.OK = len(probs) == 0
	rr.Accounting = a
	rr.Problems = append(rr.Problems, probs...)
}

// expectText says what verdict a kind expects.
func expectText(k stratumsim.ShareKind) string {
	if c := k.ExpectedCode(); c != 0 {
		return "rejected " + strconv.Itoa(c)
	}
	return "accepted"
}

// reverse returns a hash in block-explorer byte order.
func reverse(h [32]byte) []byte {
	out := make([]byte, 32)
	for i := range h {
		out[i] = h[31-i]
	}
	return out
}

// finish collects the runs' problems and computes the comparison.
func (rep *Report) finish() {
	rep.Problems = nil
	for _, rr := range rep.Runs {
		for _, p := range rr.Problems {
			rep.Problems = append(rep.Problems, rr.label()+": "+p)
		}
	}
	if len(rep.Params.Names) == 2 {
		rep.Compare = compare(rep.Runs, rep.Params.Names[0], rep.Params.Names[1], rep.Params.Rounds)
	}
	if len(rep.Runs) == 2 && rep.Runs[0].Path == "direct" && rep.Runs[0].Completed && rep.Runs[1].Completed {
		d, p := rep.Runs[0], rep.Runs[1]
		rep.Added = &Added{
			ConnectTotalS:        p.Connect.TotalS - d.Connect.TotalS,
			Handshake:            added(d.Connect.Handshake, p.Connect.Handshake),
			FirstJob:             added(d.Connect.FirstJob, p.Connect.FirstJob),
			Fanout:               added(d.Fanout.Latency, p.Fanout.Latency),
			FanoutFromFirstWrite: added(d.Fanout.FromFirstWrite, p.Fanout.FromFirstWrite),
			SubmitPath:           added(d.Submit.Path, p.Submit.Path),
			SubmitRTT:            added(d.Submit.RTT, p.Submit.RTT),
		}
	}
	if len(rep.Runs) == 0 {
		rep.Problems = append(rep.Problems, "nothing was measured")
	}
	rep.OK = len(rep.Problems) == 0
}

// printTable writes the human-readable report.
func (rep *Report) printTable(w io.Writer) {
	p := rep.Params
	title := strings.Join(p.Paths, " vs ")
	fmt.Fprintf(w, "proxyload %s: %s\n", rep.Date, title)
	capped := ""
	if p.MinersRequested != p.Miners {
		capped = fmt.Sprintf(" (capped from %s)", fmtInt(p.MinersRequested))
	}
	fmt.Fprintf(w, "  %s miners%s, styles %s; %g shares/min/miner; %g%% bad (%s)\n",
		fmtInt(p.Miners), capped, styleMix(p.Styles), p.SharesPerMinute, 100*p.BadFraction, strings.Join(p.BadKinds, ", "))
	fmt.Fprintf(w, "  difficulty %g (~%.0f hashes/share); %d fan-out jobs; %g s window after %g s warm-up\n",
		p.Difficulty, p.HashesPerShare, p.FanoutJobs, p.DurationS, p.WarmupS)
	if p.PoolJobEveryS > 0 {
		fmt.Fprintf(w, "  the pool sends a new job every %g s\n", p.PoolJobEveryS)
	}
	if p.PoolSubDelayS > 0 {
		fmt.Fprintf(w, "  the pool answers mining.subscribe after %g s\n", p.PoolSubDelayS)
	}
	if p.PoolDiffFactor > 1 {
		fmt.Fprintf(w, "  the proxy's pool sessions at %g × %g = %g: about 1 in %g good shares forwarded\n",
			p.PoolDiffFactor, p.Difficulty, p.PoolDiffFactor*p.Difficulty, p.PoolDiffFactor)
	}
	m := rep.Machine
	fmt.Fprintf(w, "  machine: %d × %s, %.1f GiB, Linux %s, %s; fd limit %s (hard %s)\n",
		m.NProc, m.CPUModel, m.MemTotalGiB, m.Kernel, m.GoVersion, fmtInt(int(rep.FDs.Soft)), fmtInt(int(rep.FDs.Hard)))
	fmt.Fprintf(w, "  miners in %s; pool %s\n\n", rep.Layout.describe(), rep.PoolAddr)

	var runs []*RunReport // the runs that got as far as connecting miners
	for _, rr := range rep.Runs {
		if rr.Miners.Ready > 0 {
			runs = append(runs, rr)
		}
	}
	if len(runs) > 0 {
		rep.writeRuns(w, runs)
	}
	if rep.Added != nil {
		fmt.Fprintln(w, "\n  added = proxied − direct (ms for latencies); percentiles are nearest-rank.")
	}
	if rep.Compare != nil {
		fmt.Fprintln(w)
		rep.Compare.write(w)
		fmt.Fprintf(w, "\n  %s/%s < 1: %s has less of it. Percentiles are nearest-rank; RSS per miner is over the RSS before the miners connected.\n",
			rep.Compare.B, rep.Compare.A, rep.Compare.B)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, rr := range rep.Runs {
		for _, n := range rr.Notes {
			fmt.Fprintf(w, "  note (%s): %s\n", rr.label(), n)
		}
	}
	for _, pr := range rep.Problems {
		fmt.Fprintf(w, "  PROBLEM %s\n", pr)
	}
	if rep.OK {
		fmt.Fprintln(w, "  every share accounted for: OK")
	}
}

// writeRuns writes the figures of runs side by side.
func (rep *Report) writeRuns(w io.Writer, runs []*RunReport) {
	t := &table{}
	hdr := []string{""}
	for _, rr := range runs {
		hdr = append(hdr, rr.label())
	}
	if rep.Added != nil && len(runs) == 2 {
		hdr = append(hdr, "added")
	}
	t.row(hdr...)
	col := func(f func(*RunReport) string) []string {
		out := make([]string, len(runs))
		for i, rr := range runs {
			out[i] = f(rr)
		}
		return out
	}
	add := func(label string, f func(*RunReport) string, a func(*Added) string) {
		cells := append([]string{label}, col(f)...)
		if rep.Added != nil && len(runs) == 2 {
			s := ""
			if a != nil {
				s = a(rep.Added)
			}
			cells = append(cells, s)
		}
		t.row(cells...)
	}
	add("target", func(r *RunReport) string { return r.Target }, nil)
	add("load average start → end", func(r *RunReport) string {
		return fmt.Sprintf("%.2f → %.2f", r.LoadStart[0], r.LoadEnd[0])
	}, nil)
	add("miners ready / requested", func(r *RunReport) string {
		return fmtInt(r.Miners.Ready) + " / " + fmtInt(r.Miners.Requested)
	}, nil)
	add("failed / dropped", func(r *RunReport) string { return fmt.Sprintf("%d / %d", r.Miners.Failed, r.Miners.Dropped) }, nil)
	add("connect all miners (s)", func(r *RunReport) string { return fmt.Sprintf("%.2f", r.Connect.TotalS) },
		func(a *Added) string { return fmt.Sprintf("%+.2f", a.ConnectTotalS) })
	sumRows(add, "handshake", func(r *RunReport) Summary { return r.Connect.Handshake }, func(a *Added) *Delta { return a.Handshake }, false)
	sumRows(add, "first job", func(r *RunReport) Summary { return r.Connect.FirstJob }, func(a *Added) *Delta { return a.FirstJob }, false)
	sumRows(add, "fan-out", func(r *RunReport) Summary { return r.Fanout.Latency }, func(a *Added) *Delta { return a.Fanout }, true)
	sumRows(add, "fan-out from 1st write", func(r *RunReport) Summary { return r.Fanout.FromFirstWrite }, func(a *Added) *Delta { return a.FanoutFromFirstWrite }, false)
	add("pool's own delay to 1st write ms", func(r *RunReport) string { return fmtMS(r.Fanout.PoolQueueMaxMS) }, nil)
	add("fan-out never arrived", func(r *RunReport) string {
		return fmtInt(r.Fanout.Missing) + " of " + fmtInt(r.Fanout.Pairs)
	}, nil)
	sumRows(add, "submit miner→pool", func(r *RunReport) Summary { return r.Submit.Path }, func(a *Added) *Delta { return a.SubmitPath }, true)
	sumRows(add, "submit round trip", func(r *RunReport) Summary { return r.Submit.RTT }, func(a *Added) *Delta { return a.SubmitRTT }, false)
	add("shares measured", func(r *RunReport) string { return fmtInt(r.Submit.Path.Count) }, nil)
	add("shares/s offered", func(r *RunReport) string { return fmt.Sprintf("%.0f", r.Throughput.OfferedPerS) }, nil)
	add("shares/s sent / told true", func(r *RunReport) string {
		return fmt.Sprintf("%.0f / %.0f", r.Throughput.SentPerS, r.Throughput.AcceptedPerS)
	}, nil)
	add("shares/s at pool recv / acc", func(r *RunReport) string {
		return fmt.Sprintf("%.0f / %.0f", r.Throughput.PoolReceivedPerS, r.Throughput.PoolAcceptedPerS)
	}, nil)
	add("late (generator behind)", func(r *RunReport) string { return fmtInt(int(r.Throughput.Late)) }, nil)
	add("bytes pool side in / out", func(r *RunReport) string { return fmtBytes(r.Bytes.PoolIn) + " / " + fmtBytes(r.Bytes.PoolOut) }, nil)
	add("bytes miner side in / out", func(r *RunReport) string { return fmtBytes(r.Bytes.MinerIn) + " / " + fmtBytes(r.Bytes.MinerOut) }, nil)
	add("pool sessions (upstream)", func(r *RunReport) string { return fmtInt(r.Bytes.PoolSessions) }, nil)
	add("bytes pool vs miner side", func(r *RunReport) string {
		if r.Bytes.ReductionPct < 0 {
			return fmt.Sprintf("%.1f%% more", -r.Bytes.ReductionPct)
		}
		return fmt.Sprintf("%.1f%% less", r.Bytes.ReductionPct)
	}, nil)
	add("proxy RSS start/conn/peak MiB", func(r *RunReport) string {
		if r.Proxy == nil || r.Proxy.Error != "" {
			return proxyNA(r)
		}
		return fmt.Sprintf("%.1f / %.1f / %.1f", r.Proxy.RSSStartMiB, r.Proxy.RSSConnectedMiB, r.Proxy.PeakRSSMiB)
	}, nil)
	add("proxy RSS/miner conn/peak KiB", func(r *RunReport) string {
		if r.Proxy == nil || r.Proxy.Error != "" {
			return proxyNA(r)
		}
		return fmt.Sprintf("%.1f / %.1f", r.Proxy.RSSPerMinerKiB, r.Proxy.PeakRSSPerMinerKiB)
	}, nil)
	add("proxy CPU s conn/fan/window", func(r *RunReport) string {
		if r.Proxy == nil || r.Proxy.Error != "" {
			return proxyNA(r)
		}
		return fmt.Sprintf("%.2f / %.2f / %.2f", r.Proxy.CPUConnectS, r.Proxy.CPUFanoutS, r.Proxy.CPUWindowS)
	}, nil)
	add("proxy CPU in window (% core)", func(r *RunReport) string {
		if r.Proxy == nil || r.Proxy.Error != "" {
			return proxyNA(r)
		}
		return fmt.Sprintf("%.1f", r.Proxy.CPUWindowPct)
	}, nil)
	add("tool CPU s pool+ctl / miners", func(r *RunReport) string {
		return fmt.Sprintf("%.1f / %.1f", r.Tool.ToolCPUS, r.Tool.MinerCPUS)
	}, nil)
	add("submits sent", func(r *RunReport) string { return fmtInt(int(r.Accounting.Submitted)) }, nil)
	add("told true / rejected / no answer", func(r *RunReport) string {
		a := r.Accounting
		return fmt.Sprintf("%s / %s / %s", fmtInt(int(a.Accepted)), fmtInt(int(a.Rejected)), fmtInt(int(a.NoAnswer)))
	}, nil)
	add("rejects by code, miners", func(r *RunReport) string { return codes(r.Accounting.MinerRejects) }, nil)
	add("rejects by code, pool", func(r *RunReport) string { return codes(r.Accounting.PoolRejects) }, nil)
	add("pool submits / accepted", func(r *RunReport) string {
		return fmtInt(int(r.Accounting.PoolSubmits)) + " / " + fmtInt(int(r.Accounting.PoolAccepted))
	}, nil)
	add("bad shares as expected / not", func(r *RunReport) string {
		var ok, bad uint64
		for k, kf := range r.Accounting.ByKind {
			if k != stratumsim.ShareGood.String() {
				ok += kf.AsExpected
				bad += kf.Unexpected
			}
		}
		return fmt.Sprintf("%s / %s", fmtInt(int(ok)), fmtInt(int(bad)))
	}, nil)
	add("good shares not accepted", func(r *RunReport) string { return fmtInt(int(r.Accounting.GoodRejected)) }, nil)
	add("unaccounted", func(r *RunReport) string { return fmtInt(r.Accounting.Unaccounted) }, nil)
	add("pool accepted, miner not told", func(r *RunReport) string { return fmtInt(r.Accounting.PoolAcceptedNotTold) }, nil)
	add("result", func(r *RunReport) string {
		if len(r.Problems) == 0 {
			return "OK"
		}
		return "FAILED"
	}, nil)
	t.write(w)
}

// sumRows adds the percentile rows of a Summary; long gives p50, p90, p99
// and max on separate rows, short gives "p50 / p99 / max" on one.
func sumRows(add func(string, func(*RunReport) string, func(*Added) string), label string,
	get func(*RunReport) Summary, delta func(*Added) *Delta, long bool) {
	if !long {
		add(label+" p50/p99/max ms", func(r *RunReport) string {
			s := get(r)
			if s.Count == 0 {
				return "-"
			}
			return fmtMS(s.P50) + " / " + fmtMS(s.P99) + " / " + fmtMS(s.Max)
		}, func(a *Added) string {
			d := delta(a)
			if d == nil {
				return "-"
			}
			return signed(d.P50) + " / " + signed(d.P99) + " / " + signed(d.Max)
		})
		return
	}
	for _, q := range []struct {
		name string
		s    func(Summary) float64
		d    func(Delta) float64
	}{
		{"p50", func(s Summary) float64 { return s.P50 }, func(d Delta) float64 { return d.P50 }},
		{"p90", func(s Summary) float64 { return s.P90 }, func(d Delta) float64 { return d.P90 }},
		{"p99", func(s Summary) float64 { return s.P99 }, func(d Delta) float64 { return d.P99 }},
		{"max", func(s Summary) float64 { return s.Max }, func(d Delta) float64 { return d.Max }},
	} {
		add(fmt.Sprintf("%s %s ms", label, q.name), func(r *RunReport) string {
			if get(r).Count == 0 {
				return "-"
			}
			return fmtMS(q.s(get(r)))
		}, func(a *Added) string {
			d := delta(a)
			if d == nil {
				return "-"
			}
			return signed(q.d(*d))
		})
	}
}

func proxyNA(r *RunReport) string {
	switch {
	case r.Proxy == nil:
		return "-"
	case r.Proxy.PID == 0:
		return "n/a (no --proxy-pid)"
	}
	return "n/a (see proxy.error)"
}

// table aligns rows of cells.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		b.WriteString("  ")
		for i, c := range r {
			pad := widths[i] - len([]rune(c))
			if i == 0 {
				b.WriteString(c + strings.Repeat(" ", pad))
			} else {
				b.WriteString("   " + strings.Repeat(" ", pad) + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// fmtMS formats milliseconds with a precision that suits the size.
func fmtMS(v float64) string {
	a := math.Abs(v)
	switch {
	case a < 1:
		return strconv.FormatFloat(v, 'f', 3, 64)
	case a < 100:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func signed(v float64) string {
	s := fmtMS(v)
	if v >= 0 {
		s = "+" + s
	}
	return s
}

// fmtInt formats n with thousands separators.
func fmtInt(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtBytes formats a byte count in KiB, MiB or GiB.
func fmtBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// codes formats rejects by code as "21:120 22:98".
func codes(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]int, 0, len(m))
	for k := range m {
		n, _ := strconv.Atoi(k)
		keys = append(keys, n)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d:%s", k, fmtInt(int(m[strconv.Itoa(k)]))))
	}
	return strings.Join(parts, " ")
}

// styleMix describes the style cycle as "antminer 1, bitaxe 1".
func styleMix(cycle []string) string {
	count := map[string]int{}
	var order []string
	for _, s := range cycle {
		if count[s] == 0 {
			order = append(order, s)
		}
		count[s]++
	}
	var parts []string
	for _, s := range order {
		if count[s] == 1 {
			parts = append(parts, s)
		} else {
			parts = append(parts, fmt.Sprintf("%s×%d", s, count[s]))
		}
	}
	return strings.Join(parts, ", ")
}
