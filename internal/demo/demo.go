// Package demo runs a whole mining site on loopback in one process, for
// `proxyd demo`: a simulated pool and a fleet of simulated ASICs with mixed
// firmware styles (both from stratum/stratumsim: the miners really hash and
// the pool really checks every share), wired to proxyd's real daemon built
// from the binary's own component list, so the real Stratum proxy, the real
// GPU inventory (over nvml's simulated backend) and the real HTTP API and
// metrics run exactly as `proxyd run` would run them.
//
// Everything simulated says so: every summary line starts with what is
// SIMULATED, every /api/v1 response carries the X-Proxyd-Simulated header
// and, on a JSON object, "simulated": true, and GET /api/v1/demo explains
// what is simulated and why.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/components"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/internal/logging"
	"github.com/hashgate/proxyd/stratum/proxy"
	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// Defaults for Options. The simulated miners really hash: a share at
// difficulty d costs d·2^32 hashes (~156 ns each on one core), so the
// defaults (300 miners × 6 shares/min at 1e-5, ~43,000 hashes a share) cost
// about a fifth of one core.
const (
	DefaultMiners          = 300
	DefaultListen          = "127.0.0.1:8080"
	DefaultStratum         = "127.0.0.1:0"
	DefaultSummaryEvery    = 5 * time.Second
	DefaultContractAfter   = 10 * time.Second
	DefaultContractFor     = 20 * time.Second
	DefaultContractGPUs    = 2
	DefaultLogLevel        = "error"
	DefaultDifficulty      = 1e-5
	DefaultSharesPerMinute = 6.0
	DefaultBadFraction     = 0.02
	DefaultJobInterval     = 20 * time.Second
	// MaxMiners bounds Options.Miners: one process, one loopback address.
	MaxMiners = 20000
)

// poolDifficultyFactor: the simulated pool asks for shares this many times
// harder than the miners', so the proxy forwards about one valid share in
// four and answers the rest itself, as a farm proxy does.
const poolDifficultyFactor = 4

// Options configure a demo site; zero values take the defaults above.
type Options struct {
	// ContractAfter is when a SIMULATED AI contract arrives (after Start);
	// negative: never. ContractFor is how long it lasts and ContractGPUs how
	// many GPUs it asks for: the summary shows them moving to AI and back.
	ContractAfter time.Duration
	ContractFor   time.Duration
	ContractGPUs  int
	// Factories builds the daemon's components: the binary's own list
	// (internal/components.Factories()), so the demo runs what `proxyd run` runs.
	// It must include the Stratum proxy. Required.
	Factories []daemon.Factory
	// Miners is how many simulated ASICs connect (1..MaxMiners).
	Miners int
	// Listen is the HTTP address for /healthz, /readyz, /metrics and
	// /api/v1; port 0 picks a free port (Info.API says which).
	Listen string
	// Stratum is the proxy's miner listener; port 0 picks a free port.
	Stratum string
	// SummaryEvery is how often Run prints a summary.
	SummaryEvery time.Duration
	// Duration stops Run after this long; 0 runs until ctx ends.
	Duration time.Duration
	// JSON makes Run print one JSON object a line to Out (a "started" line,
	// then "summary" and "event" lines) and the banner to Log.
	JSON bool
	// Out receives the banner and summaries; nil discards them.
	Out io.Writer
	// Log receives the daemon's log lines (console format); nil discards
	// them.
	Log io.Writer
	// LogLevel is the daemon's log level: debug, info, warn or error
	// (default error: Run prints the journal's events with each summary).
	LogLevel string
	// Difficulty is the miners' share difficulty (vardiff may lower it,
	// never raise it); the simulated pool's is four times higher.
	Difficulty float64
	// SharesPerMinute is each miner's average share rate.
	SharesPerMinute float64
	// BadFraction of the shares are deliberately bad (low difficulty,
	// stale, duplicate), so rejections show; negative means none.
	BadFraction float64
	// JobInterval is how often the simulated pool sends a new job.
	JobInterval time.Duration
	// Seed makes the pool's jobs and the miners' schedule reproducible.
	Seed uint64
}

func (o *Options) setDefaults() error {
	if len(o.Factories) == 0 {
		return errors.New("no component factories: pass the binary's component list")
	}
	if o.Miners == 0 {
		o.Miners = DefaultMiners
	}
	if o.Miners < 1 || o.Miners > MaxMiners {
		return fmt.Errorf("%d miners: use 1 to %d", o.Miners, MaxMiners)
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.Listen, DefaultListen)
	def(&o.Stratum, DefaultStratum)
	def(&o.LogLevel, DefaultLogLevel)
	if o.SummaryEvery <= 0 {
		o.SummaryEvery = DefaultSummaryEvery
	}
	if o.ContractAfter == 0 {
		o.ContractAfter = DefaultContractAfter
	}
	if o.ContractFor <= 0 {
		o.ContractFor = DefaultContractFor
	}
	if o.ContractGPUs <= 0 {
		o.ContractGPUs = DefaultContractGPUs
	}
	if o.Duration < 0 {
		return fmt.Errorf("duration %s is negative (0 runs until interrupted)", o.Duration)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Difficulty == 0 {
		o.Difficulty = DefaultDifficulty
	}
	if !(o.Difficulty > 0 && o.Difficulty <= 1e-3) {
		return fmt.Errorf("difficulty %g: use a value in (0, 0.001]; the simulated miners really hash", o.Difficulty)
	}
	if o.SharesPerMinute == 0 {
		o.SharesPerMinute = DefaultSharesPerMinute
	}
	if !(o.SharesPerMinute >= 0.1 && o.SharesPerMinute <= 600) {
		return fmt.Errorf("%g shares per minute: use 0.1 to 600", o.SharesPerMinute)
	}
	switch {
	case o.BadFraction == 0:
		o.BadFraction = DefaultBadFraction
	case o.BadFraction < 0:
		o.BadFraction = 0
	case o.BadFraction > 1:
		return fmt.Errorf("bad fraction %g: use 0 to 1", o.BadFraction)
	}
	if o.JobInterval <= 0 {
		o.JobInterval = DefaultJobInterval
	}
	return nil
}

// AddrInUseError reports that an address the demo must listen on is taken.
type AddrInUseError struct {
	// What is "http" (Options.Listen) or "stratum" (Options.Stratum).
	What string
	Addr string
	Err  error
}

func (e *AddrInUseError) Error() string {
	return fmt.Sprintf("%s address %s is already in use (another proxyd or demo running?): %v", e.What, e.Addr, e.Err)
}

func (e *AddrInUseError) Unwrap() error { return e.Err }

// Info says where a running site's parts are, for the banner and scripts.
type Info struct {
	// API is the base URL of the HTTP listener, "http://127.0.0.1:8080".
	API string `json:"api"`
	// Token is the bearer token for /api/v1; TokenFile holds it (0600,
	// removed by Close).
	Token     string `json:"token"`
	TokenFile string `json:"token_file"`
	// Stratum is the proxy's miner listener, host:port.
	Stratum string `json:"stratum"`
	// Pool is the simulated pool's URL.
	Pool string `json:"pool"`
	// Miners is how many simulated miners connected (of Options.Miners).
	Miners    int      `json:"miners"`
	Simulated []string `json:"simulated"`
}

// Site is a running demo site. Build it with Start, print from it with Run
// or Summary, and always Close it.
type Site struct {
	opts      Options
	log       *zap.Logger
	token     string
	tokenDir  string
	pool      *stratumsim.Pool
	d         *daemon.Daemon
	comps     []daemon.Component // the daemon's components, captured as built
	proxy     *proxy.Proxy
	fleet     *stratumsim.Fleet
	started   time.Time
	stopD     context.CancelFunc
	daemonErr error         // Run's result, set before daemonEnd is closed
	daemonEnd chan struct{} // closed when the daemon's Run returns

	mu       sync.Mutex   // guards the fields below
	samples  []diffSample // proxyd_share_difficulty_sum over the last minute, oldest first
	last     *Summary     // the latest Summary, for GET /api/v1/demo
	eventSeq uint64       // the last journal event printed

	closeOnce sync.Once
	closeErr  error
}

// Start brings a site up: the API token, the simulated pool, the daemon
// with o.Factories (plus the demo's own /api/v1/demo component) on a config
// generated in memory, then the simulated miners, connected to the proxy.
// It returns once every miner has connected (or failed to). ctx bounds the
// start only. On error nothing is left running.
func Start(ctx context.Context, o Options) (_ *Site, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	s := &Site{opts: o}
	defer func() {
		if err != nil {
			_ = s.Close(context.Background())
		}
	}()
	if err := s.writeToken(); err != nil {
		return nil, err
	}
	s.pool, err = stratumsim.StartPool(stratumsim.PoolOptions{
		InitialDifficulty: o.Difficulty * poolDifficultyFactor,
		JobInterval:       o.JobInterval,
		KeepShares:        -1, // counters only: a long demo keeps no share records
		Seed:              o.Seed,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the simulated pool: %w", err)
	}
	cfg, err := siteConfig{
		HTTPListen:      o.Listen,
		TokenFile:       s.tokenFile(),
		StratumListen:   o.Stratum,
		PoolURL:         s.pool.URL(),
		LogLevel:        o.LogLevel,
		Difficulty:      o.Difficulty,
		SharesPerMin:    o.SharesPerMinute,
		MinersPerSess:   256,
		ShutdownTimeout: "5s",
	}.parse()
	if err != nil {
		return nil, err
	}
	// The real switcher on the simulated GPUs and runtime; its state lives
	// in the demo's private temporary directory.
	cfg.Switcher = components.DemoSwitcher(filepath.Join(s.tokenDir, "switcher"))
	// Its state dies with the temporary directory: the events journal stays
	// in memory (the API says "durable": false).
	cfg.Log.EventsFileMiB = 0
	log, level, err := logging.New(cfg.Log, o.Log)
	if err != nil {
		return nil, fmt.Errorf("logger: %w", err)
	}
	s.log = log

	ready := make(chan struct{})
	var readyOnce sync.Once
	factories := make([]daemon.Factory, 0, len(o.Factories)+1)
	for _, f := range o.Factories {
		factories = append(factories, s.capture(f))
	}
	factories = append(factories, func(daemon.Env) (daemon.Component, error) { return &component{site: s}, nil })
	s.d, err = daemon.New(cfg, log, daemon.Options{
		Factories: factories,
		Notify: func(state string) {
			if state == "READY=1" { // sd_notify's ready state: every component has started
				readyOnce.Do(func() { close(ready) })
			}
		},
		Level:         &level,
		APIMiddleware: labelSimulated,
	})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, &AddrInUseError{What: "http", Addr: o.Listen, Err: err}
		}
		return nil, fmt.Errorf("building the daemon: %w", err)
	}
	dctx, stop := context.WithCancel(context.Background())
	s.stopD, s.daemonEnd = stop, make(chan struct{})
	go func() {
		s.daemonErr = s.d.Run(dctx, nil)
		close(s.daemonEnd)
	}()
	select {
	case <-ready:
	case <-s.daemonEnd:
		if errors.Is(s.daemonErr, syscall.EADDRINUSE) {
			return nil, &AddrInUseError{What: "stratum", Addr: o.Stratum, Err: s.daemonErr}
		}
		return nil, fmt.Errorf("starting the daemon: %w", s.daemonErr)
	case <-ctx.Done():
		return nil, fmt.Errorf("starting the daemon: %w", ctx.Err())
	}
	for _, c := range s.comps {
		if p := components.ProxyOf(c); p != nil {
			s.proxy = p
		}
	}
	if s.proxy == nil {
		return nil, errors.New("the daemon's component list built no Stratum proxy (is components.Proxy in internal/components.Factories?)")
	}
	addr := s.proxy.Addrs()[ServerName]
	if addr == "" {
		return nil, fmt.Errorf("the proxy has no listener named %q", ServerName)
	}
	// The proxy refuses miners until a pool session is up; wait for it as
	// /readyz would.
	if err := waitReady(ctx, s.proxy); err != nil {
		return nil, err
	}

	styles := minerStyles()
	s.fleet, err = stratumsim.StartFleet(ctx, addr, stratumsim.FleetOptions{
		Miners: o.Miners,
		Miner: stratumsim.MinerOptions{
			SuggestDifficulty: o.Difficulty,
			AutoReconnect:     true,
		},
		Styles: styles,
		UserFunc: func(i int) string {
			return fmt.Sprintf("sim.%s-%03d", styles[i%len(styles)], i+1)
		},
		SharesPerMinute: o.SharesPerMinute,
		BadFraction:     o.BadFraction,
		Seed:            o.Seed,
		ContinueOnError: true,
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // interrupted while dialing: the miners that connected are not the site asked for
	}
	if err != nil {
		return nil, fmt.Errorf("connecting the simulated miners: %w", err)
	}
	if s.fleet.Len() == 0 {
		errs := s.fleet.DialErrors()
		return nil, fmt.Errorf("no simulated miner could connect to the proxy at %s (first errors: %w)", addr, errors.Join(errs[:min(len(errs), 3)]...))
	}
	s.started = time.Now()
	s.mu.Lock()
	s.samples = []diffSample{{at: s.started, diff: s.diffSum()}}
	s.mu.Unlock()
	return s, nil
}

// readyTimeout bounds the wait for the proxy's first pool session.
const readyTimeout = 30 * time.Second

// waitReady polls c.Ready until it reports nil, ctx ends or readyTimeout
// passes.
func waitReady(ctx context.Context, c daemon.Component) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := c.Ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the %s component to be ready (%v): %w", c.Name(), err, ctx.Err())
		case <-t.C:
		}
	}
}

// minerStyles are the firmware families the simulated fleet mixes,
// assigned round-robin.
func minerStyles() []stratumsim.Style {
	return []stratumsim.Style{stratumsim.StyleAntminer, stratumsim.StyleWhatsminer, stratumsim.StyleBraiinsOS,
		stratumsim.StyleBitaxe, stratumsim.StyleNiceHash}
}

// capture wraps a factory so the site keeps the component it builds (the
// daemon builds them in order, on Start's goroutine).
func (s *Site) capture(f daemon.Factory) daemon.Factory {
	return func(env daemon.Env) (daemon.Component, error) {
		c, err := f(env)
		if err == nil && c != nil {
			s.comps = append(s.comps, c)
		}
		return c, err
	}
}

// writeToken creates a fresh random API token in a private temporary
// directory (0700, the file 0600).
func (s *Site) writeToken() error {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	dir, err := os.MkdirTemp("", "proxyd-demo-")
	if err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	s.tokenDir, s.token = dir, hex.EncodeToString(b[:])
	if err := os.WriteFile(s.tokenFile(), []byte(s.token+"\n"), 0o600); err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	return nil
}

func (s *Site) tokenFile() string { return filepath.Join(s.tokenDir, "api-token") }

// Info says where the site's parts are.
func (s *Site) Info() Info {
	return Info{
		API:       "http://" + s.d.Addr().String(),
		Token:     s.token,
		TokenFile: s.tokenFile(),
		Stratum:   s.proxy.Addrs()[ServerName],
		Pool:      s.pool.URL(),
		Miners:    s.fleet.Len(),
		Simulated: simulatedParts(),
	}
}

// Summary takes a snapshot of the site from the real components: the
// proxy's ledger, connections and pool sessions, its share-difficulty
// metric and the GPU inventory. Its hashrate covers the time since the
// previous call (since Start for the first).
func (s *Site) Summary() Summary {
	now := time.Now()
	acct := s.proxy.Accounting()
	sum := Summary{
		ElapsedS:       now.Sub(s.started).Seconds(),
		Simulated:      simulatedParts(),
		Miners:         s.opts.Miners,
		SharesOK:       acct.Valid,
		SharesRejected: acct.Rejected,
		RejectedBy:     acct.RejectedBy,
		Forwarded:      acct.Forwarded,
		PoolAccepted:   acct.PoolAccepted,
		PoolRejected:   acct.PoolRejected,
		GPUs:           summarizeGPUs(s.comps),
	}
	sum.MinersConnected = s.proxy.WorkerConnections()
	for _, p := range s.proxy.Pools() {
		for _, ss := range p.Sessions {
			switch ss.State {
			case "active":
				sum.UpstreamSessions++
			case "connecting":
				sum.UpstreamConnecting++
			}
		}
	}
	diff := s.diffSum()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Over the last minute (or since the start): a few seconds of shares
	// are too few to read a rate from, and the API's estimate covers at
	// least as long.
	s.samples = append(s.samples, diffSample{at: now, diff: diff})
	for len(s.samples) > 2 && now.Sub(s.samples[1].at) >= hashrateWindow {
		s.samples = s.samples[1:]
	}
	if first := s.samples[0]; now.After(first.at) && diff >= first.diff {
		sum.HashrateHs = (diff - first.diff) * 4294967296 / now.Sub(first.at).Seconds()
	}
	last := sum
	s.last = &last
	return sum
}

// diffSum reads proxyd_share_difficulty_sum, summed over its labels, from
// the daemon's registry.
func (s *Site) diffSum() float64 {
	mfs, err := s.d.Registry().Gather()
	if err != nil {
		s.log.Debug("demo: gathering metrics", zap.Error(err)) // partial results are still usable
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "proxyd_share_difficulty_sum" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// newEvents returns the journal's events since the last call (at most
// limit, the newest) and how many older ones were skipped.
func (s *Site) newEvents(limit int) ([]events.Event, uint64) {
	s.mu.Lock()
	after := s.eventSeq
	s.mu.Unlock()
	evs := s.d.Events().List(events.Query{After: after, Limit: limit})
	if len(evs) == 0 {
		return nil, 0
	}
	skipped := evs[0].Seq - after - 1
	s.mu.Lock()
	s.eventSeq = evs[len(evs)-1].Seq
	s.mu.Unlock()
	return evs, skipped
}

// describe is the body of GET /api/v1/demo. It runs on HTTP goroutines,
// which the daemon starts after every component was built (s.comps is
// complete and no longer written).
func (s *Site) describe() Description {
	s.mu.Lock()
	var last *Summary
	if s.last != nil {
		l := *s.last
		last = &l
	}
	s.mu.Unlock()
	o := s.opts
	gpus := "nvml's simulated backend (go-nvml's mock); no GPU driver is touched"
	if g := summarizeGPUs(s.comps); g.Unavailable == "" {
		gpus = fmt.Sprintf("%d × %s from nvml's %q backend (go-nvml's mock); no GPU driver is touched", g.Total, g.Model, g.Backend)
	}
	return Description{
		Simulated: true,
		SimulatedParts: map[string]string{
			"pool": fmt.Sprintf("stratumsim pool at %s: a real Stratum V1 server that checks every share independently of proxyd "+
				"(difficulty %g, a new job every %s); it is not connected to any blockchain", s.pool.URL(), o.Difficulty*poolDifficultyFactor, o.JobInterval),
			"miners": fmt.Sprintf("%d stratumsim miners (workers sim.antminer-001, sim.whatsminer-002, ...) that speak like Antminer, Whatsminer, Braiins OS, Bitaxe "+
				"and NiceHash firmware and really hash on this CPU (difficulty %g, %g shares/min each, %g%% deliberately bad)",
				o.Miners, o.Difficulty, o.SharesPerMinute, o.BadFraction*100),
			"gpus": gpus,
		},
		RealParts: []string{
			"the Stratum farm proxy (stratum/proxy): listener, vardiff, share validation, upstream sessions, accounting",
			"the GPU inventory and health monitor (nvml), reading the simulated backend",
			"the daemon (internal/daemon): /healthz, /readyz, /metrics, /api/v1 with bearer-token auth, the event journal",
		},
		Why: "proxyd demo shows a whole mining site working on one machine without pools, ASICs or GPUs. " +
			"The numbers are real measurements of simulated hardware: do not read them as a site's performance.",
		Summary: last,
	}
}

// Close stops the site: the miners first, then the daemon (which drains the
// proxy within its 5 s shutdown timeout), then the pool, and removes the
// token file. ctx bounds the wait for the daemon. It is idempotent and
// reports what did not stop cleanly.
func (s *Site) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.fleet != nil {
			_ = s.fleet.Close() // always nil
		}
		if s.stopD != nil {
			s.stopD()
			select {
			case <-s.daemonEnd:
				if s.daemonErr != nil {
					errs = append(errs, fmt.Errorf("daemon: %w", s.daemonErr))
				}
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("daemon did not stop in time: %w", ctx.Err()))
			}
		}
		if s.pool != nil {
			_ = s.pool.Close() // always nil
		}
		if s.log != nil {
			_ = s.log.Sync() // syncing a pipe or terminal fails harmlessly
		}
		if s.tokenDir != "" {
			if err := os.RemoveAll(s.tokenDir); err != nil {
				errs = append(errs, fmt.Errorf("removing the demo token: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// hashrateWindow is how far back the summary's hashrate looks.
const hashrateWindow = time.Minute

// diffSample is the accepted share difficulty seen at one moment.
type diffSample struct {
	at   time.Time
	diff float64
}
