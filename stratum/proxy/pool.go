package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/stratum"
)

// Pool-side tuning.
const (
	// Dial backoff, per pool: after the first failed attempt the next waits
	// 1–2 s; each further failure doubles that range, up to 15–30 s. The
	// wait is drawn at random within the range so proxies restarting
	// together do not dial in step; it is never below backoffMin nor above
	// backoffMax. A working session that is lost is redialled at once, with
	// one dial: a one-off drop should cost no time.
	backoffMin = time.Second
	backoffMax = 30 * time.Second
	// flapWindow: a session lost sooner than this after it became ready
	// counts as a failed attempt, so a pool that drops every session right
	// after the handshake is redialled with backoff, not in a loop.
	flapWindow = time.Second
	// idleSessionGrace: an extra session with no miners is closed after this.
	idleSessionGrace = time.Minute
	// janitorEvery: how often verdict timeouts and idle sessions are checked.
	janitorEvery = 250 * time.Millisecond
	// rehomeTimeout bounds how long a miner whose session died (or that
	// routing moves) waits for a new one before it is disconnected, so its
	// firmware can fail over.
	rehomeTimeout = 10 * time.Second
)

// backoffDelay is the wait after failures consecutive failed attempts
// (failures >= 1): uniform in [d/2, d], where d is 2×backoffMin doubled for
// each failure after the first and capped at backoffMax. rnd(n) returns a
// value in [0, n) (rand.Int64N; tests inject the extremes).
func backoffDelay(failures int, rnd func(n int64) int64) time.Duration {
	d := min(2*backoffMin<<min(max(failures, 1)-1, 5), backoffMax)
	return d/2 + time.Duration(rnd(int64(d/2)+1))
}

// pool manages one listener's sessions to one configured pool: it opens
// sessions as miners need prefixes, keeps one open whether or not miners
// need it (keep), reconnects with backoff, closes idle extras and moves
// miners when a session ends.
type pool struct {
	proxy *Proxy
	srv   *server
	cfg   PoolOptions
	addr  string
	tls   *tls.Config // nil: plain TCP
	log   *zap.Logger
	wake  chan struct{} // nudges keep: a session ended

	// mu guards the fields below. It is a leaf: nothing else is locked
	// while it is held (a session's state is read atomically, isActive).
	mu          sync.Mutex
	sessions    []*upstream
	nextID      uint64
	failures    int // consecutive failed attempts; reset by a session that becomes ready
	lastFailAt  time.Time
	nextAttempt time.Time
	// probing: a session ended that we did not close, and none has become
	// ready since. The pool may be gone: one dial at a time until one works.
	probing   bool
	lastErr   error
	mask      uint32 // the last version-rolling mask a session of this pool got
	maskKnown bool
	lostAt    time.Time // when the last working session ended with no other left
	waiting   int       // miners in acquire waiting for a session still connecting

	// capacity is the capacity of this pool's last subscribed session
	// (0 before any): with miners_per_session = "auto" it is what a session
	// still connecting will most likely carry.
	capacity atomic.Int64
}

// stormGuess is how many miners a session still connecting is taken to
// carry with miners_per_session = "auto" before any session of the pool has
// subscribed: the old fixed default, so that a cold start against a pool
// with a short extranonce2 still opens sessions side by side.
const stormGuess = 256

// splitPolicy is what this pool's sessions may do with their extranonce.
func (pl *pool) splitPolicy() SplitPolicy {
	return SplitPolicy{
		MinerExtranonce2Size:    pl.srv.cfg.Extranonce2Size,
		MinMinerExtranonce2Size: pl.srv.cfg.MinMinerExtranonce2Size,
		MinersPerSession:        pl.cfg.MinersPerSession,
	}
}

// perSession is how many miners one session of this pool is expected to
// carry, for opening sessions in a connect storm.
func (pl *pool) perSession() int {
	if n := pl.cfg.MinersPerSession; n > 0 {
		return n
	}
	if c := pl.capacity.Load(); c > 0 {
		return int(c)
	}
	return stormGuess
}

func newPool(p *Proxy, srv *server, cfg PoolOptions) (*pool, error) {
	addr, scheme, err := stratum.ParsePoolURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	tlsCfg, err := poolTLSConfig(cfg.Name, addr, PoolTLS{Enabled: stratum.IsTLSScheme(scheme), CAFile: cfg.CAFile,
		ServerName: cfg.TLSServerName, PinSHA256: cfg.TLSPinSHA256})
	if err != nil {
		return nil, err
	}
	p.metrics.poolRejectAlert.WithLabelValues(srv.cfg.Name, cfg.Name).Set(0)
	return &pool{proxy: p, srv: srv, cfg: cfg, addr: addr, tls: tlsCfg, wake: make(chan struct{}, 1),
		log: p.log.With(zap.String("server", srv.cfg.Name), zap.String("pool", cfg.Name))}, nil
}

// start runs the pool's keeper, which opens the first session at once, so
// the first miners do not wait for a pool handshake and /readyz can tell
// whether the pool works.
func (pl *pool) start(ctx context.Context) {
	pl.proxy.wg.Add(1)
	go pl.keep(ctx)
}

// keep holds one session to the pool open whether or not miners need one:
// it is how the pool's health is measured, and how a pool that failed is
// found working again with no miner connected. It dials when the pool has
// no session and the backoff allows, and otherwise sleeps until a session
// ends or the backoff expires. It ends with ctx.
func (pl *pool) keep(ctx context.Context) {
	defer pl.proxy.wg.Done()
	t := pl.proxy.clock.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		retry := time.Duration(-1)
		pl.mu.Lock()
		if len(pl.sessions) == 0 {
			now := pl.proxy.clock.Now()
			if pl.startSessionLocked(ctx, now) == nil && ctx.Err() == nil {
				retry = max(pl.nextAttempt.Sub(now), time.Millisecond)
			}
		}
		pl.mu.Unlock()
		var expired <-chan time.Time
		if retry >= 0 {
			t.Reset(retry)
			expired = t.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-pl.wake:
		case <-expired:
		}
		t.Stop()
	}
}

// nudge wakes keep (never blocks).
func (pl *pool) nudge() {
	select {
	case pl.wake <- struct{}{}:
	default:
	}
}

// startSessionLocked opens a new session unless the backoff forbids it, or
// one is already being dialled while the pool may be failing (no working
// session, a session lost or an attempt failed since the last one became
// ready): a failing pool gets one dial at a time, not one per lost session
// or waiting miner. Sessions open side by side only while the pool works.
// It returns nil when it opens none. pl.mu must be held.
func (pl *pool) startSessionLocked(ctx context.Context, now time.Time) *upstream {
	if ctx.Err() != nil || now.Before(pl.nextAttempt) {
		return nil
	}
	// inFlight: attempts not yet ready, and attempts that ended but are not
	// yet counted by sessionEnded (their failure is about to be).
	active, inFlight := 0, 0
	for _, u := range pl.sessions {
		if u.isActive() {
			active++
		} else {
			inFlight++
		}
	}
	if inFlight > 0 && (active == 0 || pl.probing || pl.failures > 0) {
		return nil
	}
	pl.nextID++
	u := newUpstream(pl, pl.nextID)
	u.started = now
	pl.sessions = append(pl.sessions, u)
	pl.proxy.metrics.upstreamSess.WithLabelValues(pl.cfg.Name).Inc()
	pl.proxy.metrics.dials.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name).Inc()
	pl.proxy.wg.Add(1)
	go func() {
		defer pl.proxy.wg.Done()
		u.run(ctx)
	}()
	return u
}

// sessionReady: a session completed its handshake, so the pool answers:
// the backoff starts over.
func (pl *pool) sessionReady() {
	pl.mu.Lock()
	pl.failures = 0
	pl.probing = false
	pl.nextAttempt = time.Time{}
	pl.lastErr = nil
	pl.mu.Unlock()
}

// noteFailureLocked records u's failed attempt. Attempts started before the
// last recorded failure (sessions that were open or dialling side by side
// when the pool went away) fail together: they count once, so a pool that
// dies under many sessions gets the first backoff step, not the fifth.
func (pl *pool) noteFailureLocked(u *upstream, err error, now time.Time) {
	pl.lastErr = err
	if !u.started.After(pl.lastFailAt) {
		return
	}
	pl.lastFailAt = now
	pl.failures++
	d := backoffDelay(pl.failures, rand.Int64N)
	pl.nextAttempt = now.Add(d)
	pl.log.Warn("pool session failed; retrying with backoff", zap.Error(err), zap.Duration("retry_in", d), zap.Int("failures", pl.failures))
}

// errNoSession means no session could be had in time.
var errNoSession = errors.New("no pool session available")

// errNotCarrying means the pool stopped carrying hashrate while a miner
// waited for a session on it; the miner should ask routing again.
var errNotCarrying = errors.New("pool no longer carries hashrate")

// acquire finds m a session with a free prefix, opening one if all are full.
// wanted, when set, is checked whenever acquire wakes: once it is false,
// acquire gives up with errNotCarrying.
func (pl *pool) acquire(ctx context.Context, m *miner, wanted func() bool) (*upstream, uint32, error) {
	for {
		if wanted != nil && !wanted() {
			return nil, 0, errNotCarrying
		}
		var wait *upstream
		connecting := 0
		// Each session's lock alone, not under the pool's: the sessions are
		// tried on a copy of the list.
		pl.mu.Lock()
		sessions, seen := append([]*upstream(nil), pl.sessions...), pl.nextID
		pl.mu.Unlock()
		for _, u := range sessions {
			if prefix, ok := u.attach(m); ok {
				return u, prefix, nil
			}
			if !u.isActive() && !isDone(u.done) {
				connecting++
				if wait == nil {
					wait = u // a session still connecting may have room
				}
			}
		}
		pl.mu.Lock()
		if pl.nextID != seen {
			// A session opened while this miner tried the others: try it
			// before deciding to open one more.
			pl.mu.Unlock()
			continue
		}
		// Open another session when the miners already waiting would fill
		// every session still connecting. In a reconnect storm sessions then
		// open in parallel, one per miners_per_session miners waiting, rather
		// than one pool handshake after another; no spare session is opened.
		if wait == nil || pl.waiting >= connecting*pl.perSession() {
			if u := pl.startSessionLocked(pl.proxy.ctx, pl.proxy.clock.Now()); u != nil {
				wait = u
			}
		}
		retryAt := pl.nextAttempt
		lastErr := pl.lastErr
		if wait != nil {
			pl.waiting++
		}
		pl.mu.Unlock()

		if wait != nil {
			err := waitSession(ctx, wait)
			pl.mu.Lock()
			pl.waiting--
			pl.mu.Unlock()
			if err != nil {
				return nil, 0, fmt.Errorf("%w: %s still connecting", errNoSession, pl.cfg.Name)
			}
			continue
		}
		t := pl.proxy.clock.NewTimer(min(retryAt.Sub(pl.proxy.clock.Now()), 100*time.Millisecond))
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			if lastErr != nil {
				return nil, 0, fmt.Errorf("%w: %s: %v", errNoSession, pl.cfg.Name, lastErr)
			}
			return nil, 0, fmt.Errorf("%w: %s", errNoSession, pl.cfg.Name)
		}
	}
}

// waitSession waits until u is ready (or failed), at most 100ms so the
// caller re-checks routing; it fails only when ctx ends.
func waitSession(ctx context.Context, u *upstream) error {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-u.ready:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sessionEnded removes u and moves its miners: to another session when the
// miner takes mining.set_extranonce, else by asking it to reconnect to us.
// A session that never became ready, or was lost within flapWindow of it,
// is a failed attempt: the next dial waits for the backoff.
func (pl *pool) sessionEnded(u *upstream, miners map[*miner]struct{}) {
	now := pl.proxy.clock.Now()
	shutdown := pl.proxy.ctx.Err() != nil
	u.mu.Lock()
	readyAt := u.readyAt
	err := u.err
	retired := u.retired
	u.mu.Unlock()
	pl.mu.Lock()
	for i, s := range pl.sessions {
		if s == u {
			pl.sessions = append(pl.sessions[:i], pl.sessions[i+1:]...)
			break
		}
	}
	if !shutdown && !retired {
		pl.probing = true
	}
	if !shutdown {
		switch {
		case readyAt.IsZero():
			pl.noteFailureLocked(u, err, now)
		case now.Sub(readyAt) < flapWindow:
			pl.noteFailureLocked(u, fmt.Errorf("session lost %s after its handshake: %w", now.Sub(readyAt).Round(time.Millisecond), err), now)
		}
	}
	pl.mu.Unlock()
	pl.proxy.metrics.upstreamSess.WithLabelValues(pl.cfg.Name).Dec()
	pl.nudge() // the keeper redials if this was the last session
	if shutdown {
		return
	}
	// Have the router judge the pool now rather than at the next tick when
	// this was its last working session or a reconnect just failed, and
	// wait for it, so miners are moved to wherever routing sends them
	// before they look for a new home.
	if !pl.hasActive() {
		if !readyAt.IsZero() {
			pl.mu.Lock()
			pl.lostAt = now
			pl.mu.Unlock()
		}
		pl.srv.router.ask(routerMsg{kind: msgSessionLost, pool: pl, at: now})
	}
	for m := range miners {
		pl.proxy.tasks.spawn(func() { m.relocate(u, nil, "pool session ended") })
	}
}

// janitor expires overdue verdicts and closes idle extra sessions.
func (pl *pool) janitor(now time.Time) {
	pl.mu.Lock()
	sessions := append([]*upstream(nil), pl.sessions...)
	pl.mu.Unlock()
	timeout := pl.cfg.SubmitTimeout
	stale := 2 * pl.cfg.NoJobTimeout
	active := 0
	for _, u := range sessions {
		u.expire(now, timeout)
		if !u.isActive() {
			continue
		}
		// A session that has sent no job for twice no_job_timeout (the
		// pool went unhealthy at once) is replaced by a fresh one: the
		// pool may have lost it on its side, or the link may have been
		// black-holed. The fresh session probes the pool without needing
		// a miner.
		if since, silent := u.silentSince(now, stale); silent {
			pl.log.Warn("pool session sent no job; replacing it with a fresh session",
				zap.Uint64("session", u.id), zap.Duration("silent_for", now.Sub(since).Round(time.Second)))
			u.close()
			continue
		}
		active++
	}
	for _, u := range sessions {
		if active <= 1 {
			break
		}
		u.mu.Lock()
		idle := u.state == stateActive && !u.draining && len(u.miners) == 0 && !u.emptySince.IsZero() &&
			now.Sub(u.emptySince) >= idleSessionGrace && len(u.pending) == 0
		u.mu.Unlock()
		if idle {
			pl.log.Info("closing idle extra pool session", zap.Uint64("session", u.id))
			u.close()
			active--
		}
	}
}

func (pl *pool) noteMask(mask uint32) {
	pl.mu.Lock()
	pl.mask, pl.maskKnown = mask, true
	pl.mu.Unlock()
}

func (pl *pool) snapshot() []*upstream {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return append([]*upstream(nil), pl.sessions...)
}

func (pl *pool) pendingCount() int {
	n := 0
	for _, u := range pl.snapshot() {
		n += u.pendingCount()
	}
	return n
}

func (pl *pool) hasActive() bool {
	for _, u := range pl.snapshot() {
		if u.isActive() {
			return true
		}
	}
	return false
}
