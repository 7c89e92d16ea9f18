package proxy

import (
	"container/list"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/stratum"
)

// With identity = "passthrough", every worker is authorized on the upstream
// session under its own name (worker_template), and its shares are submitted
// under that name, so the pool can see and pay each ASIC. Several workers
// share one session: Stratum lets a connection authorize any number of users.
//
// What a miner can make the pool do is bounded: a connection presents at
// most max_workers_per_connection names and has at most
// max_pending_authorizations unanswered at the pool; a session sends at most
// max_authorizations_per_second new authorizations for miners (a token
// bucket holding one second's worth) and refuses locally, for
// refusalMemory, a name the pool refused, without asking the pool again.

const (
	// workerAuthTimeout bounds how long a miner's authorize waits for the pool.
	workerAuthTimeout = 10 * time.Second
	// refusalMemory is how long a session answers a name the pool refused
	// with that refusal, without asking the pool again. Then it asks again
	// (the operator may have fixed the account meanwhile).
	refusalMemory = time.Minute
	// maxRefusedNames bounds the refusals a session remembers.
	maxRefusedNames = 1024
	// minKnownNames is the least number of authorized names a session
	// remembers (see newSessionAuths).
	minKnownNames = 64
	// sweepPendingAt: with this many authorizations unanswered, expired
	// ones (older than workerAuthTimeout) are forgotten before a new one
	// is sent, so a pool that never answers cannot grow the table.
	sweepPendingAt = 16
)

// workerAuth is one upstream authorization on one session.
type workerAuth struct {
	name string
	sent time.Time
	done chan struct{} // closed when the pool answered (or the session died)
	ok   bool
	err  *stratum.Error
}

func doneAuth(name string, err *stratum.Error) *workerAuth {
	wa := &workerAuth{name: name, done: make(chan struct{}), err: err}
	close(wa.done)
	return wa
}

// authOutcome says what authorizeForMiner did.
type authOutcome int

const (
	authWait      authOutcome = iota // wa completes with the pool's answer (or has)
	authRefused                      // the pool refused the name recently; wa is done
	authRateLimit                    // nothing sent: over max_authorizations_per_second
)

// sessionAuths is one session's pass-through authorizations. It is part of
// the upstream and guarded by the session's mu.
type sessionAuths struct {
	known   *lru[*workerAuth]      // upstream names asked (pending) or authorized
	pending map[uint64]*workerAuth // by request id
	refused *lru[refusal]
	bucket  tokenBucket
}

type refusal struct {
	err *stratum.Error
	at  time.Time
}

// newSessionAuths sizes a session's tables. Names authorized on a session
// are remembered up to miners_per_session (MaxSessionCapacity with "auto")
// × max_workers_per_connection (the most its miners can be using at once),
// least recently used dropped first: a dropped name in use is authorized
// again before its next share. The table grows only with names in use.
func newSessionAuths(pl *pool) sessionAuths {
	perSession := pl.cfg.MinersPerSession
	if perSession == 0 {
		perSession = MaxSessionCapacity
	}
	known := max(minKnownNames, perSession*pl.srv.cfg.MaxWorkersPerConnection)
	return sessionAuths{
		known:   newLRU[*workerAuth](known),
		pending: map[uint64]*workerAuth{},
		refused: newLRU[refusal](maxRefusedNames),
		bucket:  newTokenBucket(pl.cfg.MaxAuthorizationsPerSecond),
	}
}

// upstreamName is how a miner's worker is named at the pool.
func (pl *pool) upstreamName(worker string) string {
	if pl.cfg.Identity != "passthrough" {
		return pl.cfg.User
	}
	suffix := worker
	if i := strings.IndexByte(worker, '.'); i >= 0 && i+1 < len(worker) {
		suffix = worker[i+1:]
	}
	return strings.NewReplacer("{user}", pl.cfg.User, "{worker}", suffix, "{name}", worker).Replace(pl.cfg.WorkerTemplate)
}

// authorizeWorker makes sure name is authorized on this session, sending
// mining.authorize once; the returned value completes with the pool's answer.
// Because the pool reads one connection in order, a submit queued after the
// authorize is judged after it. This is the share path's: a name the
// session forgot is authorized again whatever the rate, since its miner was
// authorized already (by this session or, before a move, another).
func (u *upstream) authorizeWorker(name string) *workerAuth {
	wa, _ := u.authorize(name, false)
	return wa
}

// authorizeForMiner is authorizeWorker for a miner's mining.authorize: a
// name the pool refused within refusalMemory is refused without asking it
// again, and a new authorization needs a token of the session's bucket.
func (u *upstream) authorizeForMiner(name string) (*workerAuth, authOutcome) {
	return u.authorize(name, true)
}

func (u *upstream) authorize(name string, forMiner bool) (*workerAuth, authOutcome) {
	now := u.pool.proxy.clock.Now()
	m := u.pool.proxy.metrics.upstreamAuths
	u.mu.Lock()
	a := &u.workerAuths
	if wa, ok := a.known.get(name); ok {
		u.mu.Unlock()
		return wa, authWait
	}
	if forMiner {
		if r, ok := a.refused.get(name); ok {
			if now.Sub(r.at) < refusalMemory {
				u.mu.Unlock()
				m.WithLabelValues(u.pool.cfg.Name, "refused_locally").Inc()
				return doneAuth(name, r.err), authRefused
			}
			a.refused.remove(name)
		}
		if !a.bucket.take(now) {
			u.mu.Unlock()
			return nil, authRateLimit
		}
	}
	if u.state != stateActive {
		u.mu.Unlock()
		return doneAuth(name, &stratum.Error{Code: stratum.CodeOther, Message: "pool session not active"}), authWait
	}
	expired := a.sweepLocked(now, time.Duration(u.pool.proxy.authTimeout.Load()))
	id := u.nextID
	u.nextID++
	wa := &workerAuth{name: name, sent: now, done: make(chan struct{})}
	a.known.put(name, wa)
	a.pending[id] = wa
	u.mu.Unlock()
	for _, x := range expired {
		x.err = &stratum.Error{Code: stratum.CodeOther, Message: "pool did not answer the authorization"}
		close(x.done)
		m.WithLabelValues(u.pool.cfg.Name, "no_answer").Inc()
	}
	m.WithLabelValues(u.pool.cfg.Name, "sent").Inc()
	line := stratum.AppendRequest(nil, stratum.NumberID(id), &stratum.Authorize{User: name, Password: u.pool.cfg.Password})
	if err := u.wq.send(false, line); err != nil {
		u.completeAuth(id, false, &stratum.Error{Code: stratum.CodeOther, Message: "pool connection failed: " + err.Error()}, "no_answer")
	}
	return wa, authWait
}

// sweepLocked forgets authorizations the pool left unanswered past timeout
// (their miners have given up) and returns them, to be completed outside
// the lock. u.mu held.
func (a *sessionAuths) sweepLocked(now time.Time, timeout time.Duration) []*workerAuth {
	if len(a.pending) < sweepPendingAt {
		return nil
	}
	var expired []*workerAuth
	for id, wa := range a.pending {
		if now.Sub(wa.sent) > timeout {
			delete(a.pending, id)
			if cur, ok := a.known.peek(wa.name); ok && cur == wa {
				a.known.remove(wa.name)
			}
			expired = append(expired, wa)
		}
	}
	return expired
}

// finishAuth completes a pending upstream authorization with the pool's
// answer; false when id is not one. A refusal is remembered for
// refusalMemory.
func (u *upstream) finishAuth(id uint64, ok bool, perr *stratum.Error) bool {
	if !ok && perr == nil {
		perr = &stratum.Error{Code: stratum.CodeUnauthorized, Message: "unauthorized worker"}
	}
	result := "accepted"
	if !ok {
		result = "refused"
	}
	return u.completeAuth(id, ok, perr, result)
}

// completeAuth ends pending authorization id: answered by the pool (result
// "accepted" or "refused") or not ("no_answer"). Only an accepted name stays
// known to the session; only a refused one is remembered as refused.
func (u *upstream) completeAuth(id uint64, ok bool, perr *stratum.Error, result string) bool {
	now := u.pool.proxy.clock.Now()
	u.mu.Lock()
	a := &u.workerAuths
	wa, found := a.pending[id]
	delete(a.pending, id)
	if found && !ok {
		if cur, known := a.known.peek(wa.name); known && cur == wa {
			a.known.remove(wa.name)
		}
		if result == "refused" {
			a.refused.put(wa.name, refusal{err: perr, at: now})
		}
	}
	u.mu.Unlock()
	if !found {
		return false
	}
	u.pool.proxy.metrics.upstreamAuths.WithLabelValues(u.pool.cfg.Name, result).Inc()
	wa.ok, wa.err = ok, perr
	close(wa.done)
	return true
}

// failAuths completes every pending authorization when the session ends.
func (u *upstream) failAuths() {
	u.mu.Lock()
	pending := u.workerAuths.pending
	u.workerAuths.pending = map[uint64]*workerAuth{}
	u.mu.Unlock()
	for _, wa := range pending {
		wa.err = &stratum.Error{Code: stratum.CodeOther, Message: "pool session ended before it answered the authorization"}
		close(wa.done)
		u.pool.proxy.metrics.upstreamAuths.WithLabelValues(u.pool.cfg.Name, "no_answer").Inc()
	}
}

// passthroughAuthorize authorizes the miner's worker at the pool and answers
// the miner with the pool's verdict: a refusal reaches this miner only. ok
// says the worker is authorized; keep is false when the miner was dropped.
func (m *miner) passthroughAuthorize(id stratum.ID, worker string) (ok, keep bool) {
	if err := m.ensureSession(); err != nil {
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, "proxy has no pool session: "+err.Error()))
		return false, true
	}
	m.mu.Lock()
	up := m.up
	m.mu.Unlock()
	if up == nil {
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, "proxy has no pool session"))
		return false, true
	}
	waits := m.authWaits[:0]
	for _, wa := range m.authWaits {
		if !isDone(wa.done) {
			waits = append(waits, wa)
		}
	}
	clear(m.authWaits[len(waits):])
	m.authWaits = waits
	if max := m.srv.cfg.MaxPendingAuthorizations; len(m.authWaits) >= max {
		m.p.metrics.limitHits.WithLabelValues(m.srv.cfg.Name, limitPendingAuths).Inc()
		return false, m.refuse(id, stratum.CodeOther,
			fmt.Sprintf("the pool has not answered %d authorizations of this connection yet (max_pending_authorizations = %d)", len(m.authWaits), max))
	}
	name := up.home().upstreamName(worker)
	wa, outcome := up.authorizeForMiner(name)
	switch outcome {
	case authRateLimit:
		m.p.metrics.limitHits.WithLabelValues(m.srv.cfg.Name, limitAuthRate).Inc()
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, fmt.Sprintf(
			"too many new workers are being authorized at the pool (max_authorizations_per_second = %g); retry later", up.home().cfg.MaxAuthorizationsPerSecond)))
		return false, true
	case authRefused:
		m.send(stratum.AppendError(nil, id, wa.err.Code, wa.err.Message))
		return false, true
	}
	if !isDone(wa.done) {
		m.authWaits = append(m.authWaits, wa)
	}
	wait := time.Duration(m.p.authTimeout.Load())
	t := m.p.clock.NewTimer(wait)
	defer t.Stop()
	select {
	case <-wa.done:
	case <-m.closed:
		return false, false
	case <-t.C():
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, fmt.Sprintf("pool did not answer the authorization of %q within %s", name, wait)))
		return false, true
	}
	if !wa.ok {
		e := wa.err
		if e == nil {
			e = &stratum.Error{Code: stratum.CodeUnauthorized, Message: "unauthorized worker"}
		}
		m.log().Warn("pool refused the worker", zap.String("upstream_worker", name), zap.Int("code", e.Code), zap.String("message", e.Message))
		m.send(stratum.AppendError(nil, id, e.Code, e.Message))
		return false, true
	}
	return true, true
}

// lru is a map of at most max entries that drops the least recently used
// one to make room. Not safe for concurrent use: its owner's lock guards it.
type lru[V any] struct {
	max   int
	items map[string]*list.Element
	order list.List // of *lruEntry[V], most recently used first
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, items: map[string]*list.Element{}}
}

// get returns key's value and marks it used.
func (c *lru[V]) get(key string) (V, bool) {
	e, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry[V]).val, true
}

// peek returns key's value without marking it used.
func (c *lru[V]) peek(key string) (V, bool) {
	e, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	return e.Value.(*lruEntry[V]).val, true
}

// put sets key's value, dropping the least recently used entry if full.
func (c *lru[V]) put(key string, v V) {
	if e, ok := c.items[key]; ok {
		e.Value.(*lruEntry[V]).val = v
		c.order.MoveToFront(e)
		return
	}
	if len(c.items) >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[V]).key)
	}
	c.items[key] = c.order.PushFront(&lruEntry[V]{key: key, val: v})
}

func (c *lru[V]) remove(key string) {
	if e, ok := c.items[key]; ok {
		c.order.Remove(e)
		delete(c.items, key)
	}
}
