package switcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/gpuproc"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/internal/logkeep"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// Clock tells the time; tests pass a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// GPUSource is what the switcher needs from NVML: the GPUs' published
// state (inventory, telemetry, health) and power-limit control.
// *nvml.Manager implements it.
type GPUSource interface {
	GPUs() []nvml.GPU
	SnapshotPower(ctx context.Context, uuid string) (nvml.PowerSnapshot, error)
	SetPowerLimit(ctx context.Context, uuid string, mw uint32) (nvml.PowerChange, error)
	RestorePower(ctx context.Context, snap nvml.PowerSnapshot) (nvml.PowerChange, error)
}

// healthNotifier is implemented by sources that announce health changes
// (*nvml.Manager): the loop then reacts at once instead of at its next tick.
type healthNotifier interface {
	Subscribe() *nvml.Subscription
}

// DefaultListTimeout bounds a runtime's List when Options.ListTimeout is 0
// (twice the docker runtime's default API timeout).
const DefaultListTimeout = time.Minute

// Options build a Switcher.
type Options struct {
	Config Config
	// Contracts are the contracts declared in the config file.
	Contracts []Contract
	GPUs      GPUSource
	// Runtimes run the workloads, one per kind; every runtime a configured
	// workload names must be here.
	Runtimes []workload.Runtime
	Clock    Clock
	Log      *zap.Logger
	Metrics  *Metrics
	// ListTimeout bounds each runtime's List when the switcher reconciles
	// its state with the GPUs (0: DefaultListTimeout).
	ListTimeout time.Duration
	// FeedClient polls the demand feed (nil: a client with a 10 s timeout).
	FeedClient *http.Client
	// Cluster, if set, is the demand of a cluster this node lends GPUs to
	// ([switcher.kubernetes]); it is served by the lending workload
	// ClusterWorkload.
	Cluster ClusterDemand
	// Events is the journal decisions and transitions go to (the daemon's,
	// served at GET /api/v1/events?component=switcher); nil: a journal of
	// the switcher's own.
	Events *events.Log
}

// Switcher moves each GPU between mining and AI contracts, one guarded
// step at a time, toward the owner the active contracts want for it. Its
// state is owned by the reconcile loop under one mutex; everything that
// talks to a runtime or to NVML runs in a goroutine of its own ("an op",
// at most one per GPU) and hands its result back to the loop, so the loop
// never waits on a container engine or a driver.
//
// Build it with New, then Run it (the daemon component does); tests drive
// it with step.
type Switcher struct {
	gpus        GPUSource
	rts         map[string]workload.Runtime
	clock       Clock
	log         *zap.Logger
	metrics     *Metrics
	store       *store
	feedClient  *http.Client
	journal     *events.Log
	listTimeout time.Duration
	cluster     ClusterDemand

	results chan opResult // ops → loop; capacity ≥ GPUs (one op per GPU)
	wake    chan struct{} // capacity 1: "reconcile now"
	ops     sync.WaitGroup
	opCtx   context.Context
	stopOps context.CancelFunc

	// mu guards every field below and every gpuRec. Runtimes and NVML are
	// never called with mu held.
	mu           sync.Mutex
	cfg          Config
	specs        map[string]workload.Spec // AI workloads by name
	mining       *workload.Spec
	cfgContracts []Contract
	apiContracts map[string]Contract
	feed         *feedSnapshot
	feedErr      error
	recs         map[string]*gpuRec
	order        []*gpuRec         // by index
	shortfall    map[string]string // contract → why fewer GPUs than wanted
	failures     map[string]string // contract → its workload's last failure
	refusals     map[string]string // contract → refusal already announced
	reconciled   bool
	clusterGPUs  int       // the cluster's last demand (ClusterDemand)
	clusterPin   []string  // and its pin
	clusterSince time.Time // when it last went from 0 GPUs to some
	holdReason   error     // why the switcher does not act (reconcile failed)
	persistErr   error
	stopped      bool
	pending      []func() // ops launched in this pass, started after the state is written

	// known is the snapshot KnownWorkloads reads (written under mu, read
	// without it by NVML's sampling goroutine).
	known atomic.Pointer[[]gpuproc.Known]
}

// gpuRec is the switcher's record of one GPU. Guarded by Switcher.mu.
type gpuRec struct {
	durable

	health nvml.Health
	tel    *nvml.Telemetry

	busy     bool      // an op runs for this GPU
	opKind   string    // which
	entered  bool      // the current state's entry op was launched
	stepFrom time.Time // deadlines of the current state count from here

	freePolls    int    // consecutive fresh samples proving the GPU free
	lastSeq      uint64 // last telemetry sample looked at
	notFree      string // why the last sample was not free
	foreignPolls int    // consecutive samples with processes on an idle GPU

	status     *workload.Status // last status of the workload (this state)
	statusErr  error
	lastStatus time.Time
	startErr   error
	stopErr    error
	lastKill   time.Time
	powerTried bool
	strayRetry time.Time
	// takeBackAfter: a take-back found the GPU's other user holding it
	// (workload.ErrInUse, e.g. a Kubernetes claim); the GPU serves on and
	// is not taken back for its contract's end before this time, so a
	// claim that outlives the contract costs one try per retry_backoff
	// instead of a drain, a refusal and a restart (three journal entries)
	// every pass. Not persisted: a restart tries once more.
	takeBackAfter time.Time

	// releasedID is the handle whose stop or kill reported success, from
	// the sample releasedSeq on; the handle is forgotten once a later
	// sample shows none of its processes (settleHandleLocked).
	releasedID  string
	releasedSeq uint64
	// selfBlocked: quarantined only because proxyd's own processes
	// survived a forced stop; it leaves quarantine by itself once the GPU
	// proves free.
	selfBlocked bool
	// proofWait says why a started workload is not proven yet.
	proofWait string
}

// opResult carries an op's outcome back to the loop: apply runs with
// Switcher.mu held.
type opResult struct {
	uuid  string
	apply func(g *gpuRec)
}

// New builds a switcher over the GPUs src reports and the state in
// cfg.StateDir. It reads but does not act: Run first reconciles what the
// state file says with what runs on the GPUs. An unreadable state file is
// an error (the switcher does not act on guesses).
func New(o Options) (*Switcher, error) {
	if o.GPUs == nil {
		return nil, errors.New("switcher: no GPU source")
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.FeedClient == nil {
		o.FeedClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Events == nil {
		o.Events = events.New(0)
	}
	if o.ListTimeout <= 0 {
		o.ListTimeout = DefaultListTimeout
	}
	s := &Switcher{
		gpus:         o.GPUs,
		rts:          map[string]workload.Runtime{},
		clock:        o.Clock,
		log:          o.Log,
		metrics:      o.Metrics,
		feedClient:   o.FeedClient,
		journal:      o.Events,
		listTimeout:  o.ListTimeout,
		cluster:      o.Cluster,
		wake:         make(chan struct{}, 1),
		apiContracts: map[string]Contract{},
		recs:         map[string]*gpuRec{},
		shortfall:    map[string]string{},
		failures:     map[string]string{},
		refusals:     map[string]string{},
	}
	for _, rt := range o.Runtimes {
		s.rts[rt.Kind()] = rt
	}
	if err := s.setConfig(o.Config, o.Contracts); err != nil {
		return nil, err
	}
	st, err := newStore(o.Config.StateDir)
	if err != nil {
		return nil, err
	}
	s.store = st
	removed, err := st.removeStaleTemps()
	for _, path := range removed {
		s.log.Info("removed a temporary switcher state file left by an interrupted write (kill -9 or power loss while saving)",
			zap.String("path", path))
	}
	if err != nil {
		s.log.Warn("cannot remove stale temporary switcher state files; they are harmless but take space", zap.Error(err))
	}
	p, err := st.load()
	if err != nil {
		return nil, err
	}
	saved := map[string]durable{}
	if p != nil {
		for _, c := range p.Contracts {
			s.apiContracts[c.ID] = c
		}
		s.feed = p.Feed
		for _, g := range p.GPUs {
			saved[g.UUID] = g
		}
	}
	now := s.clock.Now()
	for _, v := range o.GPUs.GPUs() {
		g := &gpuRec{}
		if d, ok := saved[v.UUID]; ok {
			g.durable = d
			delete(saved, v.UUID)
		} else {
			g.durable = durable{UUID: v.UUID, Since: now}
		}
		g.Index = v.Index
		s.recs[v.UUID] = g
		s.order = append(s.order, g)
	}
	sort.Slice(s.order, func(i, j int) bool { return s.order[i].Index < s.order[j].Index })
	for uuid, d := range saved {
		s.log.Warn("switcher state names a GPU this node no longer has; its record is dropped",
			zap.String("gpu", uuid), zap.String("state", string(d.State)), zap.String("contract", d.Contract))
	}
	s.pruneLocked(now) // a state file from weeks ago: forget what ended long since
	s.results = make(chan opResult, len(s.order)+8)
	s.opCtx, s.stopOps = context.WithCancel(context.Background())
	return s, nil
}

// setConfig installs the live-changeable config. Callers hold mu or own s.
func (s *Switcher) setConfig(cfg Config, contracts []Contract) error {
	specs := map[string]workload.Spec{}
	for name, w := range cfg.Workloads() {
		if _, ok := s.rts[w.Runtime]; !ok {
			return fmt.Errorf("switcher: workload %q uses runtime %q, which is not available", name, w.Runtime)
		}
		specs[name] = workload.Spec{Name: name, Definition: w}
	}
	var mining *workload.Spec
	if w, ok := cfg.MiningWorkload(); ok {
		if _, ok := s.rts[w.Runtime]; !ok {
			return fmt.Errorf("switcher: [switcher.mining] uses runtime %q, which is not available", w.Runtime)
		}
		mining = &workload.Spec{Name: workload.MiningWorkload, Definition: w}
	}
	cs := make([]Contract, len(contracts))
	for i, c := range contracts {
		c.Pin = slices.Clone(c.Pin)
		cs[i] = c
	}
	s.cfg, s.specs, s.mining, s.cfgContracts = cfg, specs, mining, cs
	return nil
}

// specFor returns the spec of a workload by name; ok is false for a
// workload no longer configured (a fallback that can still stop it).
func (s *Switcher) specFor(name, runtimeKind string) (workload.Spec, bool) {
	if name == workload.MiningWorkload && s.mining != nil {
		return *s.mining, true
	}
	if sp, ok := s.specs[name]; ok {
		return sp, true
	}
	return workload.Spec{Name: name, Definition: workload.Definition{Runtime: runtimeKind, StopTimeout: 30 * time.Second}}, false
}

// Wake asks the loop for a pass now.
func (s *Switcher) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run reconciles with reality, then walks the GPUs every reconcile
// interval (and on every API change, health change or finished op) until
// ctx ends. beat is called every turn (liveness). Workloads keep running
// when Run ends: a restarted proxyd adopts them.
func (s *Switcher) Run(ctx context.Context, beat func()) {
	if beat == nil {
		beat = func() {}
	}
	var healthC <-chan struct{}
	if hn, ok := s.gpus.(healthNotifier); ok {
		sub := hn.Subscribe()
		defer sub.Close()
		healthC = sub.C()
		defer func() { _ = sub.Changes() }()
	}
	if s.feedConfigured() {
		feedDone := make(chan struct{})
		go func() {
			defer close(feedDone)
			s.runFeed(ctx)
		}()
		defer func() { <-feedDone }()
	}
	s.mu.Lock()
	interval := s.cfg.ReconcileInterval
	s.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		beat()
		s.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		case <-healthC:
		case r := <-s.results:
			s.applyResult(r)
		}
		// Take every other finished op too before the next pass. Bounded:
		// the channel holds at most one result per GPU.
		for drained := false; !drained; {
			select {
			case r := <-s.results:
				s.applyResult(r)
			default:
				drained = true
			}
		}
	}
}

// Shutdown cancels the ops still running, waits for them within ctx and
// writes the state a last time. Workloads keep running.
func (s *Switcher) Shutdown(ctx context.Context) error {
	s.stopOps()
	done := make(chan struct{})
	go func() {
		s.ops.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("switcher: operations still running at shutdown (a container engine or command not answering): %w", ctx.Err())
	}
	s.drainResults()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.persistLocked()
	return errors.Join(err, s.persistErr)
}

// step runs one pass, waits for the ops it started and applies their
// results: a deterministic turn of the loop for tests.
func (s *Switcher) step(ctx context.Context) {
	s.pass(ctx)
	s.ops.Wait()
	s.drainResults()
}

func (s *Switcher) drainResults() {
	for {
		select {
		case r := <-s.results:
			s.applyResult(r)
		default:
			return
		}
	}
}

func (s *Switcher) applyResult(r opResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.recs[r.uuid]
	if g == nil {
		return
	}
	g.busy, g.opKind = false, ""
	if r.apply != nil {
		r.apply(g)
	}
	s.persistLocked()
	s.publishKnownLocked()
}

// launch queues fn as an op for g: it starts once the pass has written
// the state, so that the file records an intent (STARTING_AI, say) before
// any side effect of it. fn must not touch g (capture what it needs first);
// the closure it returns is applied under mu. Callers hold mu.
func (s *Switcher) launch(g *gpuRec, kind string, timeout time.Duration, fn func(ctx context.Context) func(g *gpuRec)) {
	g.busy, g.opKind = true, kind
	uuid := g.UUID
	s.ops.Add(1)
	s.pending = append(s.pending, func() {
		ctx, cancel := context.WithTimeout(s.opCtx, timeout)
		go func() {
			defer s.ops.Done()
			defer cancel()
			apply := fn(ctx)
			s.results <- opResult{uuid: uuid, apply: apply}
		}()
	})
}

// startPendingLocked starts the queued ops. Callers hold mu and have just
// persisted.
func (s *Switcher) startPendingLocked() {
	for _, start := range s.pending {
		start()
	}
	s.pending = s.pending[:0]
}

// persistLocked writes the state file if it changed. A failure holds new
// transitions until a write succeeds again. Callers hold mu.
func (s *Switcher) persistLocked() {
	p := persisted{Feed: s.feed, GPUs: make([]durable, len(s.order))}
	ids := make([]string, 0, len(s.apiContracts))
	for id := range s.apiContracts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p.Contracts = append(p.Contracts, s.apiContracts[id])
	}
	for i, g := range s.order {
		p.GPUs[i] = g.durable
	}
	err := s.store.save(&p)
	switch {
	case err != nil && s.persistErr == nil:
		s.log.Error("cannot write the switcher state; no new switch starts until it can", zap.Error(err))
	case err == nil && s.persistErr != nil:
		s.log.Info("switcher state written again; switching resumes", zap.String("path", s.store.path))
	}
	s.persistErr = err
}

// event records a decision or transition in the journal and logs it.
// Callers hold mu.
func (s *Switcher) event(e Event) {
	e.At = s.clock.Now()
	e = s.record(e)
	fields := []zap.Field{zap.Uint64("seq", e.Seq), zap.String("reason", e.Reason)}
	if e.GPU != "" {
		fields = append(fields, zap.String("gpu", e.GPU))
	}
	if e.From != "" || e.To != "" {
		fields = append(fields, zap.String("from", string(e.From)), zap.String("to", string(e.To)))
	}
	if e.Contract != "" {
		fields = append(fields, zap.String("contract", e.Contract))
	}
	// Decisions and transitions are never rate-limited away.
	fields = append(fields, zap.String("detail", e.Message), logkeep.Field())
	if len(e.Processes) > 0 {
		fields = append(fields, zap.Any("processes", e.Processes))
	}
	switch e.Reason {
	case ReasonGPUNotReleased, ReasonForeignProcess, ReasonUnhealthy, ReasonWrongGPU, ReasonKillOwned, ReasonAIStartFailed, ReasonAIStartTimeout,
		ReasonMinerStartFailed, ReasonMinerStopFailed, ReasonAIStopFailed, ReasonReconcileConflict:
		s.log.Warn("switcher", fields...)
	default:
		s.log.Info("switcher", fields...)
	}
}

// enter moves g to a state and resets the per-state bookkeeping. Callers
// hold mu.
func (s *Switcher) enter(g *gpuRec, to State, reason, msg string) {
	s.enterWith(g, to, reason, msg, nil)
}

// enterWith is enter for a transition caused by GPU processes: the
// journal entry lists each with its owner. Callers hold mu.
func (s *Switcher) enterWith(g *gpuRec, to State, reason, msg string, procs []nvml.Process) {
	now := s.clock.Now()
	from := g.State
	if s.metrics != nil && from != "" {
		s.metrics.transition(from, to, reason, now.Sub(g.Since))
	}
	if from != to {
		g.Since = now
	}
	g.State, g.Reason, g.Message = to, reason, msg
	g.stepFrom = now
	g.entered, g.powerTried = false, false
	g.status, g.statusErr, g.startErr, g.stopErr = nil, nil, nil, nil
	g.lastStatus, g.lastKill = time.Time{}, time.Time{}
	g.freePolls, g.notFree, g.foreignPolls = 0, "", 0
	g.selfBlocked, g.proofWait = false, ""
	if g.tel != nil {
		g.lastSeq = g.tel.Seq
	}
	g.Escalated = false
	s.event(Event{GPU: g.UUID, From: from, To: to, Reason: reason, Message: msg, Contract: g.Contract, Processes: processOwners(procs)})
}

// holdLocked says why no new work may start, or nil. Callers hold mu.
func (s *Switcher) holdLocked() error {
	switch {
	case s.stopped:
		return errors.New("the switcher is stopping")
	case s.holdReason != nil:
		return s.holdReason
	case s.persistErr != nil:
		return fmt.Errorf("cannot write its state, so it starts nothing: %w", s.persistErr)
	}
	return nil
}

// NotReady says why the switcher cannot do its job now, or nil.
func (s *Switcher) NotReady() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reconciled {
		if s.holdReason != nil {
			return s.holdReason
		}
		return errors.New("reconciling the state file with what runs on the GPUs")
	}
	return s.holdLocked()
}
