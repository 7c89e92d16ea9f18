package proxy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// routerQueue bounds the messages waiting for a listener's router. A full
// queue makes a sender wait (never drop): the router never waits on anyone,
// so the wait is short.
const routerQueue = 1024

// router owns one listener's routing: every pool's health and reject alert
// as this listener sees it, the carrying failover level and pools, the
// weighted split's load cache, and the session set (which pool session each
// miner is on). Only its goroutine (run) reads or writes that state; the
// rest of the proxy talks to it by messages (routerMsg) and reads the view
// it publishes after each decision (routeView), so a share or a new miner
// never waits on a router round trip.
//
// The router holds no lock while it works. It reads a pool's facts with
// pool.observe (the pool's and its sessions' locks, one at a time) and a
// miner's routing hashrate under that miner's lock alone; what it decides
// to move it moves on Proxy.tasks, so it never waits on a miner, and a
// miner never waits on it except to hand in a message.
type router struct {
	s  *server
	in chan routerMsg

	view atomic.Pointer[routeView] // the last published decision; never nil

	// inbox holds each pool's verdicts until the router next runs; the map
	// is built by newRouter and never changes, each inbox has its own lock.
	inbox map[*pool]*verdictInbox

	// Owned by run (or by a test driving a router that is not started).
	health        map[*pool]*poolHealth
	route         routerState
	everRouted    bool // a level has carried before
	lastRebalance time.Time
	placed        map[*miner]session // the session set
}

// routerMsgKind says what a routerMsg tells the router.
type routerMsgKind int

const (
	// msgSessionLost: pool lost its last working session, or a reconnect
	// failed, at at: judge the pool and route now rather than at the next
	// tick. The sender waits, so the session's miners relocate afterwards.
	msgSessionLost routerMsgKind = iota
	// msgTick: the janitor's tick at at (the proxy's clock): re-evaluate,
	// and rebalance every rebalance_interval.
	msgTick
	// msgPlaced: miner m is on session u.
	msgPlaced
	// msgUnplaced: miner m left session u.
	msgUnplaced
)

type routerMsg struct {
	kind routerMsgKind
	at   time.Time
	pool *pool
	m    *miner
	u    session
	done chan struct{} // closed once handled; nil: the sender does not wait
}

// routeView is what the router decided last: immutable once published.
type routeView struct {
	level int     // carrying failover level; -1: no healthy pool
	carry []*pool // the pools new work goes to, in config order
	pools map[*pool]poolView
}

// poolView is one pool's health and load as of a routeView.
type poolView struct {
	up        bool
	reason    string
	changedAt time.Time // when up last changed
	alert     string    // the reject alert's reason; "" without one
	hashrate  float64   // damped routing estimate at the last rebalance
	miners    int
}

func newRouter(s *server) *router {
	r := &router{s: s, in: make(chan routerMsg, routerQueue), health: map[*pool]*poolHealth{},
		route: routerState{level: -1}, placed: map[*miner]session{}, inbox: map[*pool]*verdictInbox{}}
	for _, pl := range s.pools {
		r.health[pl] = &poolHealth{}
		r.inbox[pl] = &verdictInbox{}
	}
	r.publish()
	return r
}

// start runs the router's goroutine; Stop joins it (Proxy.wg).
func (r *router) start(ctx context.Context) {
	r.s.p.wg.Add(1)
	go r.run(ctx)
}

// run handles messages until ctx ends.
func (r *router) run(ctx context.Context) {
	defer r.s.p.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-r.in:
			r.handle(msg)
		}
	}
}

// handle applies one message. Router goroutine only.
func (r *router) handle(msg routerMsg) {
	r.collect()
	switch msg.kind {
	case msgSessionLost:
		if r.evaluatePool(msg.pool, msg.at) {
			r.evaluate(msg.at)
		}
		r.publish()
	case msgTick:
		r.evaluate(msg.at)
		if msg.at.Sub(r.lastRebalance) >= r.s.cfg.RebalanceInterval {
			r.lastRebalance = msg.at
			r.rebalance(msg.at)
		}
	case msgPlaced:
		if isDone(msg.m.closed) {
			break // it closed meanwhile; its msgUnplaced may have come first
		}
		r.placed[msg.m] = msg.u
		// Placed on a pool that stopped carrying between the miner's pick
		// and now: move it like the others moved off that pool.
		if r.route.level >= 0 && !slices.Contains(r.route.carry, msg.u.home()) {
			m, up := msg.m, msg.u
			r.s.p.tasks.spawn(func() { m.move(up, fmt.Sprintf("failover: pool %s no longer carries", up.home().cfg.Name)) })
		}
	case msgUnplaced:
		if r.placed[msg.m] == msg.u {
			delete(r.placed, msg.m)
		}
	}
	if msg.done != nil {
		close(msg.done)
	}
}

// drain handles the messages already queued, on the caller's goroutine:
// for tests driving a router that is not started.
func (r *router) drain() {
	for {
		select {
		case msg := <-r.in:
			r.handle(msg)
		default:
			r.collect()
			return
		}
	}
}

// collect moves the verdicts waiting in the inboxes into the pools' reject
// windows, oldest first. Router goroutine only.
func (r *router) collect() {
	for pl, ib := range r.inbox {
		ib.takeInto(&r.health[pl].verdicts)
	}
}

// publish stores the current decision for readers. Router goroutine only.
func (r *router) publish() {
	v := &routeView{level: r.route.level, carry: r.route.carry, pools: make(map[*pool]poolView, len(r.health))}
	for pl, h := range r.health {
		pv := poolView{up: h.up, reason: h.reason, changedAt: h.changedAt, hashrate: h.hashrate, miners: h.miners}
		if h.alert {
			pv.alert = h.alertReason
		}
		v.pools[pl] = pv
	}
	r.view.Store(v)
}

// send hands the router a message; false when the proxy is stopping (the
// router is gone or going).
func (r *router) send(msg routerMsg) bool {
	select {
	case r.in <- msg:
		return true
	case <-r.s.p.ctx.Done():
		return false
	}
}

// ask sends msg and waits until the router has handled it (or the proxy
// stops). The caller must hold no lock.
func (r *router) ask(msg routerMsg) {
	msg.done = make(chan struct{})
	if !r.send(msg) {
		return
	}
	select {
	case <-msg.done:
	case <-r.s.p.ctx.Done():
	}
}

// noteVerdict feeds pl's reject ratio: bad is a reject or a share the pool
// never answered. Block candidates are not fed: a pool may reject one as a
// share (above its share target) that the network would take.
func (r *router) noteVerdict(pl *pool, at time.Time, bad bool) {
	if ib := r.inbox[pl]; ib != nil {
		ib.add(at, bad)
	}
}

// verdictInbox holds one pool's verdicts between the router's runs. A
// verdict does not wake the router: the router judges reject ratios only on
// the janitor's tick or a lost session, and collects the inbox first. A
// message per verdict cost a goroutine wake-up per forwarded share (at
// 10,000 miners about a tenth of the proxy's CPU, docs/PERFORMANCE.md).
// Only the newest rejectWindow verdicts can count, so the inbox keeps no
// more than that: its memory is fixed whatever the share rate.
type verdictInbox struct {
	mu sync.Mutex // guards w; a leaf: taken by a session's reader and by the router, never while holding another lock
	w  verdictWindow
}

func (ib *verdictInbox) add(at time.Time, bad bool) {
	ib.mu.Lock()
	ib.w.add(at, bad)
	ib.mu.Unlock()
}

// takeInto appends the waiting verdicts to w in the order they came and
// empties the inbox.
func (ib *verdictInbox) takeInto(w *verdictWindow) {
	ib.mu.Lock()
	defer ib.mu.Unlock()
	for i := range ib.w.n {
		r := ib.w.ring[(ib.w.next-ib.w.n+i+rejectWindow)%rejectWindow]
		w.add(r.at, r.bad)
	}
	ib.w.reset()
}

// placedOn and unplaced keep the router's session set.
func (r *router) placedOn(m *miner, u session) { r.send(routerMsg{kind: msgPlaced, m: m, u: u}) }
func (r *router) unplaced(m *miner, u session) { r.send(routerMsg{kind: msgUnplaced, m: m, u: u}) }

// The queries below read the published view: no lock, no round trip.

// noPool reports that no pool of this listener is healthy.
func (s *server) noPool() bool { return s.router.view.Load().level < 0 }

// carrying returns the pools new work goes to: those of the carrying level
// without a reject alert, or all its healthy ones when each has one.
func (s *server) carrying() []*pool { return s.router.view.Load().carry }

// isCarrying: pl is one of the pools new work should go to.
func (s *server) isCarrying(pl *pool) bool { return slices.Contains(s.carrying(), pl) }

// readiness reports whether pl is healthy, and why not.
func (s *server) readiness(pl *pool) error {
	pv := s.router.view.Load().pools[pl]
	if pv.up {
		return nil
	}
	if pv.reason != "" {
		return fmt.Errorf("pool %s: %s", pl.cfg.Name, pv.reason)
	}
	pl.mu.Lock()
	lastErr := pl.lastErr
	pl.mu.Unlock()
	if lastErr != nil {
		return fmt.Errorf("pool %s: %v", pl.cfg.Name, lastErr)
	}
	return fmt.Errorf("pool %s: connecting", pl.cfg.Name)
}

// alertNote describes pl's reject alert, "" when there is none.
func (s *server) alertNote(pl *pool) string {
	pv := s.router.view.Load().pools[pl]
	if pv.alert == "" {
		return ""
	}
	return fmt.Sprintf("pool %s reject alert: %s", pl.cfg.Name, pv.alert)
}
