package proxy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/internal/logkeep"
)

// Routing: each listener carries its hashrate on one failover level at a time,
// the lowest level with a healthy pool. Within the level, miners are placed
// so that each pool's share of the hashrate follows its weight.
//
// Health and alerts are kept apart on purpose. A pool is unhealthy only when
// it cannot give miners work: it has no working session (a dial, handshake or
// session failed) or it sends no job for no_job_timeout. Each of those states
// ends by itself, with or without miners: the pool's keeper redials with
// backoff, and a session that sends no job is replaced by a fresh one (see
// pool.keep and pool.janitor). A pool that rejects or leaves unanswered too
// many shares still gives work: that is a reject alert. An alert moves miners
// only to a healthier pool (one without an alert, on the same level or
// another); with nowhere better to go they stay and keep hashing.

// Reject alert tuning.
const (
	// rejectWindow is how many recent verdicts the reject ratio looks at,
	// and minRejectSample how many it needs before it judges.
	rejectWindow    = 50
	minRejectSample = 20
	// rejectMaxAge: older verdicts no longer count. A pool its miners were
	// moved away from gets no verdicts; its alert clears once its last ones
	// are this old, and fail-back may then try it again.
	rejectMaxAge = 5 * time.Minute
	// alertHold: an alert is raised or cleared at most once in this long, so
	// a ratio hovering at max_reject_rate cannot flood the journal or move
	// miners back and forth.
	alertHold = 30 * time.Second
)

// Routing tuning.
const (
	// rebalanceTolerance: a pool within this fraction of its target share is left alone.
	rebalanceTolerance = 0.02
	// maxMovesFraction bounds how many miners one rebalance round moves.
	maxMovesFraction = 0.05
	// lostGrace: a pool without a session stays up this long while it reconnects.
	lostGrace = time.Second
)

// healthCause is why a pool is or is not healthy. Routing and metrics use
// it; the words in poolHealth.reason are for people and never parsed.
type healthCause int

const (
	causeStarting   healthCause = iota // a session is up, no job yet
	causeHealthy                       // a working session delivering jobs
	causeNoJob                         // no job for no_job_timeout
	causeConnection                    // no working session
)

// String is the cause's metric label (bounded values).
func (c healthCause) String() string {
	switch c {
	case causeHealthy:
		return "healthy"
	case causeNoJob:
		return "no_job"
	case causeConnection:
		return "connection"
	}
	return "starting"
}

// verdictWindow is a ring of a pool's most recent verdicts on forwarded
// shares, with when each came.
type verdictWindow struct {
	ring [rejectWindow]verdictRecord
	n    int // filled slots
	next int
}

type verdictRecord struct {
	at  time.Time
	bad bool // rejected, or never answered within submit_timeout
}

func (w *verdictWindow) add(at time.Time, bad bool) {
	w.ring[w.next] = verdictRecord{at: at, bad: bad}
	w.next = (w.next + 1) % rejectWindow
	w.n = min(w.n+1, rejectWindow)
}

// ratio is the bad fraction of the verdicts younger than rejectMaxAge at now,
// and how many there are.
func (w *verdictWindow) ratio(now time.Time) (float64, int) {
	bad, n := 0, 0
	for i := 0; i < w.n; i++ {
		r := w.ring[i]
		if now.Sub(r.at) >= rejectMaxAge {
			continue
		}
		n++
		if r.bad {
			bad++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(bad) / float64(n), n
}

func (w *verdictWindow) reset() { *w = verdictWindow{} }

// poolHealth is one pool's health and reject alert as one listener sees
// them. Owned by the listener's router (router.go).
type poolHealth struct {
	up        bool
	cause     healthCause
	reason    string
	changedAt time.Time // when up last changed

	verdicts       verdictWindow
	alert          bool
	alertReason    string
	alertChangedAt time.Time // when alert last changed; zero: never raised

	hashrate float64 // estimate at the last evaluation
	miners   int
}

// good: healthy and without a reject alert.
func (h *poolHealth) good() bool { return h.up && !h.alert }

// goodSince is since when the pool has been good; zero when it is not.
func (h *poolHealth) goodSince() time.Time {
	if !h.good() {
		return time.Time{}
	}
	if h.alertChangedAt.After(h.changedAt) {
		return h.alertChangedAt // the alert cleared after the pool came up
	}
	return h.changedAt
}

// poolFacts is what a pool's health is judged from, read out of the pool
// and its sessions (each under its own lock, one at a time).
type poolFacts struct {
	active      int       // working sessions
	lastJob     time.Time // the newest job of any working session
	activeSince time.Time // the oldest working session's connect
	failures    int
	lostAt      time.Time
	lastErr     error
}

// observe reads the pool's facts for the router. It holds pool.mu and a
// session's mu one after the other, never both.
func (pl *pool) observe() poolFacts {
	pl.mu.Lock()
	f := poolFacts{failures: pl.failures, lostAt: pl.lostAt, lastErr: pl.lastErr}
	sessions := append([]*upstream(nil), pl.sessions...)
	pl.mu.Unlock()
	for _, u := range sessions {
		if !u.isActive() {
			continue
		}
		f.active++
		u.mu.Lock()
		if u.lastJobAt.After(f.lastJob) {
			f.lastJob = u.lastJobAt
		}
		if f.activeSince.IsZero() || u.connectedAt.Before(f.activeSince) {
			f.activeSince = u.connectedAt
		}
		u.mu.Unlock()
	}
	return f
}

// evaluatePool recomputes pl's health and reject alert from its facts; it
// reports a change of either. Router goroutine only.
func (r *router) evaluatePool(pl *pool, now time.Time) (changed bool) {
	f := pl.observe()
	h := r.health[pl]
	up, cause, reason := true, causeHealthy, ""
	keep := false // keep the current verdict for now
	if f.active == 0 {
		// Between a lost session and its replacement the pool keeps its
		// verdict for a moment: a one-off TCP drop is not a failover. A
		// failed reconnect, or a second without a session, is.
		failing := f.failures > 0 || f.lostAt.IsZero() || now.Sub(f.lostAt) >= lostGrace
		if f.lastErr != nil {
			reason = f.lastErr.Error()
		} else {
			reason = "lost its session to the pool"
		}
		keep = !failing && h.up
		up, cause = false, causeConnection
	} else {
		limit := pl.cfg.NoJobTimeout
		switch {
		case f.lastJob.IsZero() && now.Sub(f.activeSince) > limit:
			up, cause, reason = false, causeNoJob, fmt.Sprintf("authorized but sent no job in %s", limit)
		case !f.lastJob.IsZero() && now.Sub(f.lastJob) > limit:
			up, cause, reason = false, causeNoJob, fmt.Sprintf("no new job for %s", now.Sub(f.lastJob).Round(time.Second))
		case f.lastJob.IsZero():
			up, cause, reason = false, causeStarting, "waiting for the first job"
		}
	}
	if !keep {
		changed = r.setHealth(pl, h, up, cause, reason, now)
	}
	if r.evaluateAlert(pl, h, now) {
		changed = true
	}
	return changed
}

func (r *router) setHealth(pl *pool, h *poolHealth, up bool, cause healthCause, reason string, now time.Time) bool {
	if !h.changedAt.IsZero() && h.up == up {
		h.cause, h.reason = cause, reason // same state: keep the latest words
		return false
	}
	first := h.changedAt.IsZero()
	h.up, h.cause, h.reason, h.changedAt = up, cause, reason, now
	if up {
		// A recovered pool starts with a clean record: what it rejected or
		// left unanswered while it was failing says nothing about it now.
		h.verdicts.reset()
	}
	m := pl.proxy.metrics
	v := 0.0
	if up {
		v = 1
	}
	m.poolUp.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name).Set(v)
	m.poolChanges.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name, cause.String()).Inc()
	if first && !up {
		return true // still starting: not news
	}
	label := reason
	if up {
		label = "healthy"
		pl.log.Info("pool is healthy", zap.Int("pool_level", pl.cfg.Level), logkeep.Field())
	} else {
		pl.log.Warn("pool is unhealthy", zap.String("reason", reason), zap.String("cause", cause.String()),
			zap.Int("pool_level", pl.cfg.Level), logkeep.Field())
	}
	pl.proxy.event(events.Event{Kind: "pool_health", Subject: pl.srv.cfg.Name + "/" + pl.cfg.Name,
		From: upDown(!up), To: upDown(up), Reason: label})
	return true
}

// evaluateAlert raises or clears pl's reject alert and reports a change.
// Router goroutine only.
func (r *router) evaluateAlert(pl *pool, h *poolHealth, now time.Time) bool {
	rate, n := h.verdicts.ratio(now)
	maxRate := pl.cfg.MaxRejectRate
	m := pl.proxy.metrics
	m.poolRejectRatio.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name).Set(rate)
	held := !h.alertChangedAt.IsZero() && now.Sub(h.alertChangedAt) < alertHold
	var why string
	switch {
	case !h.alert && n >= minRejectSample && rate > maxRate && !held:
		h.alert = true
		why = fmt.Sprintf("rejected or left unanswered %.0f%% of its last %d shares (max_reject_rate %.0f%%)", rate*100, n, maxRate*100)
	case h.alert && n < minRejectSample:
		h.alert = false // no recent evidence either way (miners left it, or it reconnected)
		why = fmt.Sprintf("fewer than %d shares judged in the last %s", minRejectSample, rejectMaxAge)
	case h.alert && rate <= maxRate && !held:
		h.alert = false
		why = fmt.Sprintf("rejected or left unanswered %.0f%% of its last %d shares (max_reject_rate %.0f%%)", rate*100, n, maxRate*100)
	default:
		return false
	}
	h.alertChangedAt = now
	v := 0.0
	if h.alert {
		v = 1
		h.alertReason = why
	} else {
		h.alertReason = ""
	}
	m.poolRejectAlert.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name).Set(v)
	from, to := "ok", "alert"
	if h.alert {
		pl.log.Warn("pool reject alert: miners move only to a healthier pool, if there is one", zap.String("reason", why),
			zap.Float64("reject_ratio", rate), zap.Int("shares", n), zap.Float64("max_reject_rate", maxRate),
			zap.Int("pool_level", pl.cfg.Level), logkeep.Field())
	} else {
		from, to = to, from
		pl.log.Info("pool reject alert cleared", zap.String("reason", why), zap.Float64("reject_ratio", rate), zap.Int("shares", n),
			zap.Int("pool_level", pl.cfg.Level), logkeep.Field())
	}
	pl.proxy.event(events.Event{Kind: "pool_reject_alert", Subject: pl.srv.cfg.Name + "/" + pl.cfg.Name, From: from, To: to, Reason: why,
		Details: map[string]any{"reject_ratio": rate, "shares": n, "max_reject_rate": maxRate}})
	return true
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// routerState is one listener's carrying level; owned by its router.
type routerState struct {
	level       int // carrying failover level; -1: no healthy pool
	since       time.Time
	noPoolSince time.Time
	carry       []*pool // the pools carrying at the last evaluation, in config order
}

// poolState is one pool's health as routing decides by it.
type poolState struct {
	pl        *pool
	up, good  bool
	upSince   time.Time
	goodSince time.Time
	reason    string
	alert     string
}

// poolStates lists the pools' health in config order. Router goroutine only.
func (r *router) poolStates() []poolState {
	out := make([]poolState, 0, len(r.s.pools))
	for _, pl := range r.s.pools {
		h := r.health[pl]
		st := poolState{pl: pl, up: h.up, good: h.good(), goodSince: h.goodSince(), reason: h.reason, alert: h.alertReason}
		if h.up {
			st.upSince = h.changedAt
		}
		out = append(out, st)
	}
	return out
}

// carryingOf returns the pools of level l that carry: its healthy pools
// without a reject alert or, when each of its healthy pools has one, all of
// them (a pool in alert still beats no work).
func carryingOf(states []poolState, l int) []*pool {
	if l < 0 {
		return nil
	}
	var good, up []*pool
	for _, st := range states {
		if st.pl.cfg.Level != l {
			continue
		}
		if st.good {
			good = append(good, st.pl)
		}
		if st.up {
			up = append(up, st.pl)
		}
	}
	if len(good) > 0 {
		return good
	}
	return up
}

// levelSince is since when level l has had a healthy pool (a good one when
// good is set) without a break: the earliest such pool's since.
func levelSince(states []poolState, l int, good bool) time.Time {
	var since time.Time
	for _, st := range states {
		t := st.upSince
		if good {
			t = st.goodSince
		}
		if st.pl.cfg.Level != l || t.IsZero() {
			continue
		}
		if since.IsZero() || t.Before(since) {
			since = t
		}
	}
	return since
}

func levelHas(states []poolState, l int, good bool) bool {
	for _, st := range states {
		if st.pl.cfg.Level != l {
			continue
		}
		if good && st.good || !good && st.up {
			return true
		}
	}
	return false
}

func samePools(a, b []*pool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func poolNames(pools []*pool) string {
	names := make([]string, len(pools))
	for i, pl := range pools {
		names[i] = pl.cfg.Name
	}
	return strings.Join(names, ",")
}

// evaluate re-derives the carrying level and pools and moves miners when
// they change. The router runs it on the janitor's tick and right after a
// pool lost its last session; it publishes the result (routeView).
//
// The level is the lowest with a good pool (healthy, no reject alert), or,
// when no pool is good, the lowest with a healthy one. Moving to a worse
// level happens at once; moving to a better one (fail-back) only after it
// has been good, and the current one has carried, for failback_delay.
func (r *router) evaluate(now time.Time) {
	s := r.s
	for _, pl := range s.pools {
		r.evaluatePool(pl, now)
	}
	states := r.poolStates()
	bestUp, bestGood := -1, -1
	for _, st := range states {
		if st.up && (bestUp == -1 || st.pl.cfg.Level < bestUp) {
			bestUp = st.pl.cfg.Level
		}
		if st.good && (bestGood == -1 || st.pl.cfg.Level < bestGood) {
			bestGood = st.pl.cfg.Level
		}
	}
	target := bestGood
	if target == -1 {
		target = bestUp
	}
	cur := r.route.level
	next := cur
	reason := ""
	switch {
	case bestUp == -1:
		next = -1
		if r.route.noPoolSince.IsZero() {
			r.route.noPoolSince = now
		}
		reason = "no pool of this listener is healthy"
	case cur == -1 || !levelHas(states, cur, false):
		next = target
		reason = fmt.Sprintf("level %d has no healthy pool", cur)
		if cur == -1 {
			reason = "a pool is healthy again"
		}
	case target > cur && !levelHas(states, cur, true):
		next = target
		reason = fmt.Sprintf("every healthy pool of level %d is in reject alert; level %d has one that is not", cur, target)
	case target < cur:
		good := target == bestGood
		if since := levelSince(states, target, good); !since.IsZero() && now.Sub(since) >= s.cfg.FailbackDelay &&
			now.Sub(r.route.since) >= s.cfg.FailbackDelay {
			next = target
			reason = fmt.Sprintf("level %d has been healthy for %s (failback_delay %s)", target, now.Sub(since).Round(time.Second), s.cfg.FailbackDelay)
		}
	}
	if bestUp != -1 {
		r.route.noPoolSince = time.Time{}
	}
	changed := next != cur
	// The first pool coming up at start is not an incident: log it at info.
	quiet := changed && cur == -1 && !r.everRouted
	if changed {
		r.route.level, r.route.since = next, now
		if next != -1 {
			r.everRouted = true
		}
	}
	prevCarry := r.route.carry
	carry := carryingOf(states, next)
	carryChanged := !samePools(prevCarry, carry)
	r.route.carry = carry
	noPoolSince := r.route.noPoolSince
	r.publish()

	switch {
	case changed:
		kind := "failover"
		if next != -1 && cur != -1 && next < cur {
			kind = "failback"
		}
		if next == -1 {
			kind = "no_pool"
		}
		log := s.log.Warn
		if quiet {
			log = s.log.Info
		}
		log("routing changed", zap.String("kind", kind), zap.Int("from_level", cur), zap.Int("to_level", next),
			zap.String("reason", reason), zap.String("carrying", poolNames(carry)), logkeep.Field())
		s.p.event(events.Event{Kind: kind, Subject: s.cfg.Name, From: levelName(cur), To: levelName(next), Reason: reason})
		s.p.metrics.routeLevel.WithLabelValues(s.cfg.Name).Set(float64(next))
		if next != -1 {
			r.moveOff(carry, kind+": "+reason)
		}
	case carryChanged && next != -1 && len(prevCarry) > 0:
		// Same level, other pools: one of them left the carrying set (it
		// went down, or into reject alert while another is fine). Its
		// miners move now; one that joins is filled by placement and
		// rebalancing.
		var left []*pool
		for _, pl := range prevCarry {
			if !slices.Contains(carry, pl) {
				left = append(left, pl)
			}
		}
		if len(left) == 0 {
			break
		}
		var why []string
		for _, st := range states {
			if slices.Contains(left, st.pl) {
				w := st.reason
				if st.up {
					w = st.alert
				}
				why = append(why, st.pl.cfg.Name+": "+w)
			}
		}
		reason = fmt.Sprintf("level %d: %s left the carrying pools (%s)", next, poolNames(left), strings.Join(why, "; "))
		s.log.Warn("routing changed", zap.String("kind", "failover"), zap.Int("from_level", cur), zap.Int("to_level", next),
			zap.String("reason", reason), zap.String("carrying", poolNames(carry)), logkeep.Field())
		s.p.event(events.Event{Kind: "failover", Subject: s.cfg.Name, From: poolNames(prevCarry), To: poolNames(carry), Reason: reason})
		r.moveOff(carry, "failover: "+reason)
	}
	// With no healthy pool: after the grace, drop the miners so their
	// firmware fails over to its own backup pools (fake work is worse). A
	// pool in reject alert is healthy: it never gets here.
	if bestUp == -1 && !noPoolSince.IsZero() && now.Sub(noPoolSince) >= s.cfg.NoPoolGrace {
		if miners := s.snapshot(); len(miners) > 0 {
			// Closed on tasks: a close tells the router the miner left,
			// and the router never waits on itself.
			s.log.Warn("no healthy pool for longer than no_pool_grace: disconnecting miners so their firmware fails over",
				zap.Int("miners", len(miners)), zap.Duration("no_pool_grace", s.cfg.NoPoolGrace), logkeep.Field())
			s.p.event(events.Event{Kind: "disconnect_all", Subject: s.cfg.Name, Reason: "no healthy pool for " + s.cfg.NoPoolGrace.String(),
				Details: map[string]any{"miners": len(miners)}})
			for _, m := range miners {
				if !s.p.tasks.spawn(func() { m.close("no_pool", nil) }) {
					return // stopping: Stop closes every miner
				}
			}
		}
	}
}

func levelName(l int) string {
	if l < 0 {
		return "none"
	}
	return fmt.Sprintf("level %d", l)
}

// moveOff moves every miner whose pool is not in carry: exactly one move
// each, to where routing places it. Router goroutine only: it reads the
// session set, not the miners.
func (r *router) moveOff(carry []*pool, why string) {
	for m, up := range r.placed {
		if !slices.Contains(carry, up.home()) {
			r.s.p.tasks.spawn(func() { m.move(up, why) })
		}
	}
}

// poolLoad is each pool's current hashrate and miners on this listener, as
// operators see it (the API, the hashrate metric). It locks each miner in
// turn, holding nothing else.
func (s *server) poolLoad(now time.Time) map[*pool]*load {
	out := map[*pool]*load{}
	for _, pl := range s.pools {
		out[pl] = &load{}
	}
	for _, m := range s.snapshot() {
		m.mu.Lock()
		if m.up != nil {
			l := out[m.up.home()]
			l.miners = append(l.miners, minerLoad{m: m, hashrate: m.hashrateLocked(now, false)})
			l.hashrate += l.miners[len(l.miners)-1].hashrate
		}
		m.mu.Unlock()
	}
	return out
}

// routingLoad is each pool's damped routing hashrate (meter.routingRate)
// and miners, from the router's session set: what the weighted split steers
// by. Router goroutine only.
func (r *router) routingLoad(now time.Time) map[*pool]*load {
	out := map[*pool]*load{}
	for _, pl := range r.s.pools {
		out[pl] = &load{}
	}
	for m, up := range r.placed {
		l := out[up.home()]
		if l == nil {
			continue
		}
		l.miners = append(l.miners, minerLoad{m: m, hashrate: m.routingHashrate(now)})
		l.hashrate += l.miners[len(l.miners)-1].hashrate
	}
	return out
}

type load struct {
	hashrate float64
	miners   []minerLoad
}

type minerLoad struct {
	m        *miner
	hashrate float64
}

// pick chooses the pool for a new miner: the healthy pool of the carrying
// level furthest below its weighted share. It reads the router's published
// view (loads cached at each rebalance): O(pools), no lock, no round trip.
func (s *server) pick() *pool {
	v := s.router.view.Load()
	pools := v.carry
	switch len(pools) {
	case 0:
		return nil
	case 1:
		return pools[0]
	}
	var total, weights float64
	miners := 0
	for _, pl := range pools {
		pv := v.pools[pl]
		total += pv.hashrate
		miners += pv.miners
		weights += pl.cfg.Weight
	}
	perMiner := 1.0
	if miners > 0 && total > 0 {
		perMiner = total / float64(miners)
	}
	var best *pool
	bestDeficit := 0.0
	for _, pl := range pools {
		pv := v.pools[pl]
		have := pv.hashrate
		if have == 0 {
			have = float64(pv.miners) * perMiner
		}
		deficit := pl.cfg.Weight/weights*(total+perMiner) - have
		if best == nil || deficit > bestDeficit {
			best, bestDeficit = pl, deficit
		}
	}
	return best
}

// rebalance moves a few miners from the pool furthest above its weighted
// share to the one furthest below, largest fitting miners first. Router
// goroutine only.
func (r *router) rebalance(now time.Time) {
	s := r.s
	pools := r.route.carry
	loads := r.routingLoad(now)
	for pl, l := range loads { // refresh the cache pick() reads
		h := r.health[pl]
		h.hashrate, h.miners = l.hashrate, len(l.miners)
	}
	r.publish()
	if len(pools) < 2 {
		return
	}
	var total, weights float64
	count := 0
	for _, pl := range pools {
		total += loads[pl].hashrate
		weights += pl.cfg.Weight
		count += len(loads[pl].miners)
	}
	if total <= 0 {
		return
	}
	var over, under *pool
	var overBy, underBy float64
	for _, pl := range pools {
		diff := loads[pl].hashrate - pl.cfg.Weight/weights*total
		if over == nil || diff > overBy {
			over, overBy = pl, diff
		}
		if under == nil || diff < underBy {
			under, underBy = pl, diff
		}
	}
	if overBy <= rebalanceTolerance*total || over == under {
		return
	}
	gap := min(overBy, -underBy)
	cands := loads[over].miners
	sort.Slice(cands, func(i, j int) bool { return cands[i].hashrate > cands[j].hashrate })
	budget := max(1, int(maxMovesFraction*float64(count)))
	moved := 0
	for _, c := range cands {
		if moved >= budget || gap <= rebalanceTolerance*total/2 {
			break
		}
		if c.hashrate <= 0 || c.hashrate > gap {
			continue
		}
		gap -= c.hashrate
		moved++
		m, why := c.m, fmt.Sprintf("rebalance: %s above its weighted share, %s below", over.cfg.Name, under.cfg.Name)
		s.p.tasks.spawn(func() { m.moveTo(under, why) })
	}
	if moved > 0 {
		s.p.event(events.Event{Kind: "rebalance", Subject: s.cfg.Name, From: over.cfg.Name, To: under.cfg.Name,
			Reason:  fmt.Sprintf("%s carries %.1f%% of the level's hashrate, target %.1f%%", over.cfg.Name, 100*loads[over].hashrate/total, 100*over.cfg.Weight/weights),
			Details: map[string]any{"miners_moved": moved}})
	}
}
