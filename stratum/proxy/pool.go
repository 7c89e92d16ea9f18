package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
)

// Pool-side tuning.
const (
	backoffMin = time.Second
	backoffMax = 30 * time.Second
	// idleSessionGrace: an extra session with no miners is closed after this.
	idleSessionGrace = time.Minute
	// janitorEvery: how often verdict timeouts and idle sessions are checked.
	janitorEvery = 250 * time.Millisecond
	// rehomeTimeout bounds how long a miner whose session died waits for a
	// new one before it is disconnected (so its firmware can fail over).
	rehomeTimeout = 10 * time.Second
)

// pool manages one listener's sessions to one configured pool: it opens
// sessions as miners need prefixes, reconnects with backoff, closes idle
// extras and moves miners when a session ends.
type pool struct {
	proxy *Proxy
	srv   *server
	cfg   config.Pool
	addr  string
	log   *zap.Logger

	mu          sync.Mutex // guards the fields below; taken before any session's mu
	sessions    []*upstream
	nextID      uint64
	failures    int
	nextAttempt time.Time
	lastErr     error
	mask        uint32 // the last version-rolling mask a session of this pool got
	maskKnown   bool
	health      poolHealth
	lostAt      time.Time // when the last working session ended with no other left
	waiting     int       // miners in acquire waiting for a session still connecting
}

func newPool(p *Proxy, srv *server, cfg config.Pool) (*pool, error) {
	addr, _, err := config.ParsePoolURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	return &pool{proxy: p, srv: srv, cfg: cfg, addr: addr,
		log: p.log.With(zap.String("server", srv.cfg.Name), zap.String("pool", cfg.Name))}, nil
}

// start keeps one session open from the beginning, so the first miners do not
// wait for a pool handshake and /readyz can tell whether the pool works.
func (pl *pool) start(ctx context.Context) {
	pl.mu.Lock()
	pl.startSessionLocked(ctx)
	pl.mu.Unlock()
}

// startSessionLocked opens a new session unless the backoff forbids it; it
// returns nil then. pl.mu must be held.
func (pl *pool) startSessionLocked(ctx context.Context) *upstream {
	if ctx.Err() != nil || time.Now().Before(pl.nextAttempt) {
		return nil
	}
	pl.nextID++
	u := newUpstream(pl, pl.nextID)
	pl.sessions = append(pl.sessions, u)
	pl.proxy.metrics.upstreamSess.WithLabelValues(pl.cfg.Name).Inc()
	pl.proxy.wg.Add(1)
	go func() {
		defer pl.proxy.wg.Done()
		u.run(ctx)
	}()
	go func() { // a session that completes its handshake resets the backoff
		select {
		case <-u.ready:
		case <-ctx.Done():
			return
		}
		if u.isActive() {
			pl.mu.Lock()
			pl.failures = 0
			pl.nextAttempt = time.Time{}
			pl.lastErr = nil
			pl.mu.Unlock()
		}
	}()
	return u
}

func (pl *pool) noteFailureLocked(err error) {
	pl.failures++
	d := backoffMin << min(pl.failures-1, 5)
	d = min(d, backoffMax)
	d = d/2 + rand.N(d/2+1) // jitter: farms restart together, pools should not see a stampede
	pl.nextAttempt = time.Now().Add(d)
	pl.lastErr = err
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
		pl.mu.Lock()
		var wait *upstream
		connecting := 0
		for _, u := range pl.sessions {
			if prefix, ok := u.attach(m); ok {
				pl.mu.Unlock()
				return u, prefix, nil
			}
			if !u.isActive() && !isDone(u.done) {
				connecting++
				if wait == nil {
					wait = u // a session still connecting may have room
				}
			}
		}
		// Open another session when the miners already waiting would fill
		// every session still connecting. In a reconnect storm sessions then
		// open in parallel, one per miners_per_session miners waiting, rather
		// than one pool handshake after another; no spare session is opened.
		if wait == nil || pl.waiting >= connecting*pl.cfg.MinersPerSession {
			if u := pl.startSessionLocked(pl.proxy.ctx); u != nil {
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
		t := time.NewTimer(min(time.Until(retryAt), 100*time.Millisecond))
		select {
		case <-t.C:
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
func (pl *pool) sessionEnded(u *upstream, miners map[*miner]struct{}) {
	pl.mu.Lock()
	for i, s := range pl.sessions {
		if s == u {
			pl.sessions = append(pl.sessions[:i], pl.sessions[i+1:]...)
			break
		}
	}
	u.mu.Lock()
	failedEarly := u.connectedAt.IsZero() || u.prefixes == nil
	err := u.err
	u.mu.Unlock()
	if failedEarly {
		pl.noteFailureLocked(err)
	}
	pl.mu.Unlock()
	pl.proxy.metrics.upstreamSess.WithLabelValues(pl.cfg.Name).Dec()
	if pl.proxy.ctx.Err() != nil {
		return
	}
	// Judge the pool now rather than at the next tick when this was its last
	// working session or a reconnect just failed, so miners are moved to
	// wherever routing sends them before they look for a new home.
	if !pl.hasActive() {
		now := time.Now()
		if !failedEarly {
			pl.mu.Lock()
			pl.lostAt = now
			pl.mu.Unlock()
		}
		if pl.evaluate(now) {
			pl.srv.evaluateRouting(now)
		}
	}
	for m := range miners {
		go m.relocate(u, nil, "pool session ended")
	}
	// Keep one session to the pool open (it also measures the pool's health).
	pl.mu.Lock()
	if len(pl.sessions) == 0 {
		if time.Now().Before(pl.nextAttempt) {
			wait := time.Until(pl.nextAttempt)
			time.AfterFunc(wait, func() { pl.ensureOne() })
		} else {
			pl.startSessionLocked(pl.proxy.ctx)
		}
	}
	pl.mu.Unlock()
}

func (pl *pool) ensureOne() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if len(pl.sessions) == 0 {
		if pl.startSessionLocked(pl.proxy.ctx) == nil && pl.proxy.ctx.Err() == nil {
			time.AfterFunc(time.Until(pl.nextAttempt)+10*time.Millisecond, func() { pl.ensureOne() })
		}
	}
}

// janitor expires overdue verdicts and closes idle extra sessions.
func (pl *pool) janitor(now time.Time) {
	pl.mu.Lock()
	sessions := append([]*upstream(nil), pl.sessions...)
	pl.mu.Unlock()
	timeout := pl.cfg.SubmitTimeout.D()
	active := 0
	for _, u := range sessions {
		u.expire(now, timeout)
		if u.isActive() {
			active++
		}
	}
	for _, u := range sessions {
		if active <= 1 {
			break
		}
		u.mu.Lock()
		idle := u.state == stateActive && len(u.miners) == 0 && !u.emptySince.IsZero() &&
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

// readiness reports whether the pool is healthy, and why not.
func (pl *pool) readiness() error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.health.up {
		return nil
	}
	if pl.health.reason != "" {
		return fmt.Errorf("pool %s: %s", pl.cfg.Name, pl.health.reason)
	}
	if pl.lastErr != nil {
		return fmt.Errorf("pool %s: %v", pl.cfg.Name, pl.lastErr)
	}
	return fmt.Errorf("pool %s: connecting", pl.cfg.Name)
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
