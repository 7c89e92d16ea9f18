package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/stratum"
)

// flushOnStop bounds how long Stop waits for answers to reach miners.
const flushOnStop = 2 * time.Second

// Proxy is the farm proxy component. Build it with New, then Start and Stop
// it (the daemon does).
type Proxy struct {
	log        *zap.Logger
	metrics    *metrics
	live       func(name string, maxAge time.Duration) (beat, done func())
	clock      Clock
	minerStall time.Duration  // Options.MinerWriteStall, defaulted
	flushers   sync.WaitGroup // miners' write-queue flushers, joined by Stop
	events     *events.Log
	servers    []*server

	// ctx bounds the pool sessions. It is the proxy's own, not the daemon's:
	// on shutdown the sessions must outlive the daemon's cancellation until
	// in-flight shares have their verdicts.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // listeners, routers, janitor, pool keepers, pool sessions
	tasks  taskGroup      // miner moves and reconnect grace periods
	// serving counts the miners' reader goroutines (miner.serve). Only the
	// accept loops add to it, so it is waited for after p.wg.
	serving sync.WaitGroup

	handlers *handlers // run miners' lines (shares, handshakes)

	jobSeq   atomic.Uint64
	connSeq  atomic.Uint64
	stopping atomic.Bool
	acct     accounting
	workers  *workerTable
	// authTimeout (ns) bounds a miner's wait for a pass-through
	// authorization: workerAuthTimeout; tests shorten it.
	authTimeout atomic.Int64
}

// New builds the proxy from its listeners and pools; nil, nil when there is
// no listener. It binds nothing yet.
func New(o Options) (*Proxy, error) {
	if len(o.Servers) == 0 {
		return nil, nil
	}
	if len(o.Pools) == 0 {
		return nil, errors.New("stratum: [[server]] is configured but no [[pool]]: miners would have nowhere to hash")
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, fmt.Errorf("stratum metrics: %w", err)
	}
	p := &Proxy{log: o.Log.With(zap.String("component", "stratum")), metrics: m, live: o.Liveness, events: o.Events,
		workers: newWorkerTable(), clock: o.Clock}
	if p.clock == nil {
		p.clock = wallClock{}
	}
	p.minerStall = o.MinerWriteStall
	if p.minerStall <= 0 {
		p.minerStall = stallAfter
	}
	p.authTimeout.Store(int64(workerAuthTimeout))
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.handlers = newHandlers(p.ctx)
	byName := map[string]PoolOptions{}
	for _, pc := range o.Pools {
		byName[pc.Name] = pc
	}
	for _, sc := range o.Servers {
		s := &server{p: p, cfg: sc, log: p.log.With(zap.String("server", sc.Name)),
			limits: newConnLimits(sc.MaxConnections, sc.MaxConnectionsPerIP), miners: map[*miner]struct{}{}}
		m.routeLevel.WithLabelValues(sc.Name).Set(-1)
		names := sc.Pools
		if len(names) == 0 {
			for _, pc := range o.Pools {
				names = append(names, pc.Name)
			}
		}
		for _, n := range names {
			pc, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("server %s routes to pool %q, which is not configured", sc.Name, n)
			}
			pl, err := newPool(p, s, pc)
			if err != nil {
				return nil, err
			}
			s.pools = append(s.pools, pl)
			// Series that exist from the start, so rate() and increase()
			// see the first event and dashboards show 0, not "no data".
			m.blockCandidates.WithLabelValues(sc.Name, pl.cfg.Name).Add(0)
		}
		s.router = newRouter(s)
		for _, reason := range disconnectReasons {
			m.disconnects.WithLabelValues(sc.Name, reason).Add(0)
		}
		p.servers = append(p.servers, s)
	}
	if err := o.Metrics.Register(hashrateCollector{p}); err != nil {
		return nil, err
	}
	return p, nil
}

// Name is the component name in logs, /readyz and metrics.
func (p *Proxy) Name() string { return "stratum" }

// Start binds every listener and opens a first session to each pool.
func (p *Proxy) Start(context.Context) error {
	for i, s := range p.servers {
		ln, err := net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			for _, prev := range p.servers[:i] {
				_ = prev.ln.Close()
			}
			return fmt.Errorf("server %s: listening on %s: %w", s.cfg.Name, s.cfg.Listen, err)
		}
		s.ln = ln
		s.log.Info("stratum listening", zap.String("addr", ln.Addr().String()), zap.Int("extranonce2_size", s.cfg.Extranonce2Size),
			zap.Float64("initial_difficulty", s.cfg.InitialDifficulty))
	}
	for _, s := range p.servers {
		s.router.start(p.ctx)
		for _, pl := range s.pools {
			pl.start(p.ctx)
		}
		p.wg.Add(1)
		go s.accept()
	}
	p.wg.Add(1)
	go p.janitor()
	return nil
}

// janitor runs the periodic work on the proxy's clock: verdict timeouts and
// idle sessions, then each listener's router tick (routing, rebalancing).
// It waits for each router to finish its tick, so a tick's routing sees the
// verdicts the same tick expired.
func (p *Proxy) janitor() {
	defer p.wg.Done()
	beat := func() {}
	if p.live != nil {
		var done func()
		beat, done = p.live("stratum-janitor", 10*time.Second)
		defer done()
	}
	t := p.clock.NewTimer(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C():
			t.Reset(janitorEvery)
			now := p.clock.Now()
			beat()
			for _, s := range p.servers {
				for _, pl := range s.pools {
					pl.janitor(now)
				}
				s.router.ask(routerMsg{kind: msgTick, at: now})
			}
		}
	}
}

// Ready is nil while every listener has a healthy pool.
func (p *Proxy) Ready() error {
	var errs []error
	for _, s := range p.servers {
		if !s.noPool() {
			continue
		}
		var why []string
		for _, pl := range s.pools {
			if err := s.readiness(pl); err != nil {
				why = append(why, err.Error())
			}
		}
		errs = append(errs, fmt.Errorf("server %s has no healthy pool (%s)", s.cfg.Name, strings.Join(why, "; ")))
	}
	return errors.Join(errs...)
}

// ReadyNotes lists what an operator should know that does not make the proxy
// unready: pools in reject alert (they still carry when nothing better is
// there). The daemon shows them in /readyz.
func (p *Proxy) ReadyNotes() []string {
	var notes []string
	for _, s := range p.servers {
		for _, pl := range s.pools {
			if n := s.alertNote(pl); n != "" {
				notes = append(notes, "server "+s.cfg.Name+": "+n)
			}
		}
	}
	return notes
}

// event records a routing decision in the daemon's journal.
func (p *Proxy) event(e events.Event) {
	if p.events != nil {
		e.Component = "stratum"
		e.Time = p.clock.Now() // the decision's time on the clock that made it
		p.events.Add(e)
	}
}

// Stop stops accepting miners, waits (within ctx) for the verdicts of shares
// already forwarded, then closes every connection.
func (p *Proxy) Stop(ctx context.Context) error {
	p.stopping.Store(true)
	for _, s := range p.servers {
		if s.ln != nil {
			_ = s.ln.Close()
		}
	}
	var err error
	t := time.NewTicker(20 * time.Millisecond)
	for p.inFlight() > 0 {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("%d forwarded shares still without a verdict: %w", p.inFlight(), ctx.Err())
		case <-t.C:
			continue
		}
		break
	}
	t.Stop()
	// Let the last answers (the verdicts just relayed) reach the miners
	// before their connections close: writes to miners are asynchronous.
	flushBy := time.Now().Add(flushOnStop)
	for _, s := range p.servers {
		for _, m := range s.snapshot() {
			for !m.wq.idle() && time.Now().Before(flushBy) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	p.cancel()
	for _, s := range p.servers {
		for _, m := range s.snapshot() {
			m.close("shutdown", nil)
		}
	}
	// Miner tasks end with their miner (or the proxy's context); join them
	// before the sessions, whose endings may still start some (refused now).
	p.tasks.stopAndWait()
	p.wg.Wait()
	// With the accept loops gone no reader starts; with every miner closed
	// each reader ends, and with the readers gone no line reaches a
	// handler: the idle handlers end with p.ctx.
	p.serving.Wait()
	p.handlers.wait()
	// Nothing sends to a miner any more and every miner's connection is
	// closed, so each write-queue flusher fails its write and ends.
	p.flushers.Wait()
	acct := p.acct.snapshot()
	p.log.Info("stratum proxy stopped", zap.Uint64("shares_received", acct.Received), zap.Uint64("forwarded", acct.Forwarded),
		zap.Uint64("pool_accepted", acct.PoolAccepted), zap.Uint64("no_verdict", acct.NoVerdict))
	return err
}

func (p *Proxy) inFlight() int {
	n := 0
	for _, s := range p.servers {
		for _, pl := range s.pools {
			n += pl.pendingCount()
		}
	}
	return n
}

// Addrs returns the bound listener addresses by server name (tests, demo).
func (p *Proxy) Addrs() map[string]string {
	out := map[string]string{}
	for _, s := range p.servers {
		if s.ln != nil {
			out[s.cfg.Name] = s.ln.Addr().String()
		}
	}
	return out
}

// Accounting returns the share ledger.
func (p *Proxy) Accounting() Accounting { return p.acct.snapshot() }

// poolReason names a pool's reject for metrics and stats (bounded values).
func poolReason(e *stratum.Error) string {
	if e == nil {
		return "other"
	}
	switch e.Code {
	case stratum.CodeJobNotFound:
		return "pool_stale"
	case stratum.CodeDuplicateShare:
		return "pool_duplicate"
	case stratum.CodeLowDifficulty:
		return "pool_low_difficulty"
	case stratum.CodeUnauthorized:
		return "pool_unauthorized"
	case stratum.CodeNotSubscribed:
		return "pool_not_subscribed"
	}
	return "pool_other"
}

// taskGroup runs the short-lived goroutines that act for one miner (a move
// to another session, a reconnect's grace period) and joins them at
// shutdown. Each task also ends when its miner closes (miner.ctx). Once
// stopped, spawn refuses: the caller does the task's work inline or not at
// all.
type taskGroup struct {
	mu      sync.Mutex // guards stopped and wg.Add, so no Add races Wait
	stopped bool
	wg      sync.WaitGroup
}

// spawn runs f on a new goroutine and reports whether it did.
func (g *taskGroup) spawn(f func()) bool {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return false
	}
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// stopAndWait refuses new tasks and waits for the running ones.
func (g *taskGroup) stopAndWait() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.wg.Wait()
}
