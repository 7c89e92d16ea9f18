package proxy

import (
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/events"
)

// Routing: each listener carries its hashrate on one failover level at a time,
// the lowest level with a healthy pool. Within the level, miners are placed
// so that each pool's share of the hashrate follows its weight.

// rejectWindow is how many recent verdicts the reject-rate check looks at,
// and minRejectSample how many it needs before it judges.
const (
	rejectWindow    = 50
	minRejectSample = 20
	// rebalanceTolerance: a pool within this fraction of its target share is left alone.
	rebalanceTolerance = 0.02
	// maxMovesFraction bounds how many miners one rebalance round moves.
	maxMovesFraction = 0.05
	// lostGrace: a pool without a session stays up this long while it reconnects.
	lostGrace = time.Second
)

// poolHealth is one pool's health as one listener sees it. Guarded by the
// pool's mu.
type poolHealth struct {
	up        bool
	reason    string
	changedAt time.Time
	verdicts  [rejectWindow]bool // true: rejected
	nVerdicts int
	next      int
	hashrate  float64 // estimate at the last evaluation
	miners    int
}

// noteVerdict feeds the reject-rate check.
func (pl *pool) noteVerdict(rejected bool) {
	pl.mu.Lock()
	h := &pl.health
	h.verdicts[h.next] = rejected
	h.next = (h.next + 1) % rejectWindow
	h.nVerdicts = min(h.nVerdicts+1, rejectWindow)
	pl.mu.Unlock()
}

func (h *poolHealth) rejectRate() (float64, int) {
	if h.nVerdicts == 0 {
		return 0, 0
	}
	r := 0
	for i := 0; i < h.nVerdicts; i++ {
		if h.verdicts[i] {
			r++
		}
	}
	return float64(r) / float64(h.nVerdicts), h.nVerdicts
}

// evaluate recomputes the pool's health; it reports a change.
func (pl *pool) evaluate(now time.Time) (changed bool) {
	var active []*upstream
	for _, u := range pl.snapshot() {
		if u.isActive() {
			active = append(active, u)
		}
	}
	up, reason := true, ""
	if len(active) == 0 {
		// Between a lost session and its replacement the pool keeps its
		// verdict for a moment: a one-off TCP drop is not a failover. A
		// failed reconnect, or a second without a session, is.
		pl.mu.Lock()
		failing := pl.failures > 0 || pl.lostAt.IsZero() || now.Sub(pl.lostAt) >= lostGrace
		if pl.lastErr != nil {
			reason = pl.lastErr.Error()
		} else {
			reason = "lost its session to the pool"
		}
		wasUp := pl.health.up
		pl.mu.Unlock()
		if !failing && wasUp {
			return false
		}
		up = false
	} else {
		var lastJob, activeSince time.Time
		for _, u := range active {
			u.mu.Lock()
			if u.lastJobAt.After(lastJob) {
				lastJob = u.lastJobAt
			}
			if activeSince.IsZero() || u.connectedAt.Before(activeSince) {
				activeSince = u.connectedAt
			}
			u.mu.Unlock()
		}
		limit := pl.cfg.NoJobTimeout.D()
		switch {
		case lastJob.IsZero() && now.Sub(activeSince) > limit:
			up, reason = false, fmt.Sprintf("authorized but sent no job in %s", limit)
		case !lastJob.IsZero() && now.Sub(lastJob) > limit:
			up, reason = false, fmt.Sprintf("no new job for %s", now.Sub(lastJob).Round(time.Second))
		case lastJob.IsZero():
			up, reason = false, "waiting for the first job"
		}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if up {
		if rate, n := pl.health.rejectRate(); n >= minRejectSample && rate > pl.cfg.MaxRejectRate {
			up, reason = false, fmt.Sprintf("rejects %.0f%% of the last %d shares (max_reject_rate %.0f%%)", rate*100, n, pl.cfg.MaxRejectRate*100)
		}
	}
	return pl.setHealthLocked(up, reason, now)
}

// markDown records an immediate failure (a session lost with no other
// active one), without waiting for the next evaluation.
func (pl *pool) markDown(reason string, now time.Time) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.setHealthLocked(false, reason, now)
}

func (pl *pool) setHealthLocked(up bool, reason string, now time.Time) bool {
	h := &pl.health
	if !h.changedAt.IsZero() && h.up == up {
		h.reason = reason // same state: keep the latest words
		return false
	}
	first := h.changedAt.IsZero()
	h.up, h.reason, h.changedAt = up, reason, now
	if up {
		h.nVerdicts, h.next = 0, 0 // a recovered pool starts with a clean record
	}
	m := pl.proxy.metrics
	v := 0.0
	if up {
		v = 1
	}
	m.poolUp.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name).Set(v)
	m.poolChanges.WithLabelValues(pl.srv.cfg.Name, pl.cfg.Name, stateReason(up, reason)).Inc()
	if first && !up {
		return true // still starting: not news
	}
	label := reason
	if up {
		label = "healthy"
		pl.log.Info("pool is healthy", zap.Int("level", pl.cfg.Level))
	} else {
		pl.log.Warn("pool is unhealthy", zap.String("reason", reason), zap.Int("level", pl.cfg.Level))
	}
	pl.proxy.event(events.Event{Kind: "pool_health", Subject: pl.srv.cfg.Name + "/" + pl.cfg.Name,
		From: upDown(!up), To: upDown(up), Reason: label})
	return true
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// stateReason maps a health reason to a bounded metric label.
func stateReason(up bool, reason string) string {
	switch {
	case up:
		return "healthy"
	case len(reason) >= 10 && reason[:10] == "authorized":
		return "no_job"
	case len(reason) >= 6 && reason[:6] == "no new":
		return "no_job"
	case len(reason) >= 7 && reason[:7] == "rejects":
		return "reject_rate"
	case reason == "waiting for the first job":
		return "starting"
	}
	return "connection"
}

func (pl *pool) isUp() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.health.up
}

// router is one listener's routing state, guarded by its own mutex (taken
// after no other lock).
type routerState struct {
	level       int // carrying failover level; -1: no healthy pool
	since       time.Time
	noPoolSince time.Time
}

// evaluateRouting re-derives the carrying level and moves miners when it
// changes. It runs on the janitor tick and right after a session is lost.
func (s *server) evaluateRouting(now time.Time) {
	for _, pl := range s.pools {
		pl.evaluate(now)
	}
	best := -1
	for _, pl := range s.pools {
		if pl.isUp() && (best == -1 || pl.cfg.Level < best) {
			best = pl.cfg.Level
		}
	}
	s.rmu.Lock()
	cur := s.route.level
	next := cur
	reason := ""
	switch {
	case best == -1:
		next = -1
		if s.route.noPoolSince.IsZero() {
			s.route.noPoolSince = now
		}
		reason = "no pool of this listener is healthy"
	case cur == -1 || !s.levelUp(cur):
		next = best
		reason = fmt.Sprintf("level %d has no healthy pool", cur)
		if cur == -1 {
			reason = "a pool is healthy again"
		}
	case best < cur:
		if since := s.levelHealthySince(best); !since.IsZero() && now.Sub(since) >= s.cfg.FailbackDelay.D() &&
			now.Sub(s.route.since) >= s.cfg.FailbackDelay.D() {
			next = best
			reason = fmt.Sprintf("level %d has been healthy for %s (failback_delay %s)", best, now.Sub(since).Round(time.Second), s.cfg.FailbackDelay)
		}
	}
	if best != -1 {
		s.route.noPoolSince = time.Time{}
	}
	changed := next != cur
	// The first pool coming up at start is not an incident: log it at info.
	quiet := changed && cur == -1 && !s.everRouted
	if changed {
		s.route.level, s.route.since = next, now
		if next != -1 {
			s.everRouted = true
		}
	}
	noPoolSince := s.route.noPoolSince
	s.rmu.Unlock()

	if changed {
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
		log("routing changed", zap.String("kind", kind), zap.Int("from_level", cur), zap.Int("to_level", next), zap.String("reason", reason))
		s.p.event(events.Event{Kind: kind, Subject: s.cfg.Name, From: levelName(cur), To: levelName(next), Reason: reason})
		s.p.metrics.routeLevel.WithLabelValues(s.cfg.Name).Set(float64(next))
		if next != -1 {
			s.moveOffLevel(next, kind+": "+reason)
		}
	}
	// With no healthy pool: after the grace, drop the miners so their
	// firmware fails over to its own backup pools (fake work is worse).
	if best == -1 && !noPoolSince.IsZero() && now.Sub(noPoolSince) >= s.cfg.NoPoolGrace.D() {
		if miners := s.snapshot(); len(miners) > 0 {
			s.log.Warn("no healthy pool for longer than no_pool_grace: disconnecting miners so their firmware fails over",
				zap.Int("miners", len(miners)), zap.Duration("no_pool_grace", s.cfg.NoPoolGrace.D()))
			s.p.event(events.Event{Kind: "disconnect_all", Subject: s.cfg.Name, Reason: "no healthy pool for " + s.cfg.NoPoolGrace.String(),
				Details: map[string]any{"miners": len(miners)}})
			for _, m := range miners {
				m.close("no_pool", nil)
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

// levelUp: some pool of level l is healthy.
func (s *server) levelUp(l int) bool {
	for _, pl := range s.pools {
		if pl.cfg.Level == l && pl.isUp() {
			return true
		}
	}
	return false
}

// levelHealthySince is since when level l has had a healthy pool without a
// break (the earliest up-transition among its healthy pools).
func (s *server) levelHealthySince(l int) time.Time {
	var since time.Time
	for _, pl := range s.pools {
		if pl.cfg.Level != l {
			continue
		}
		pl.mu.Lock()
		if pl.health.up && (since.IsZero() || pl.health.changedAt.Before(since)) {
			since = pl.health.changedAt
		}
		pl.mu.Unlock()
	}
	return since
}

// isCarrying: pl is one of the pools new work should go to.
func (s *server) isCarrying(pl *pool) bool {
	for _, c := range s.carrying() {
		if c == pl {
			return true
		}
	}
	return false
}

// carrying returns the healthy pools of the carrying level.
func (s *server) carrying() []*pool {
	s.rmu.Lock()
	level := s.route.level
	s.rmu.Unlock()
	if level < 0 {
		return nil
	}
	var out []*pool
	for _, pl := range s.pools {
		if pl.cfg.Level == level && pl.isUp() {
			out = append(out, pl)
		}
	}
	return out
}

// moveOffLevel moves every miner whose pool is not on level l: exactly one
// move each, to the new level.
func (s *server) moveOffLevel(l int, why string) {
	for _, m := range s.snapshot() {
		m.mu.Lock()
		up := m.up
		m.mu.Unlock()
		if up != nil && up.pool.cfg.Level != l {
			go m.move(up, why)
		}
	}
}

// poolLoad is a pool's current hashrate and miner count on this listener.
func (s *server) poolLoad(now time.Time) map[*pool]*load {
	out := map[*pool]*load{}
	for _, pl := range s.pools {
		out[pl] = &load{}
	}
	for _, m := range s.snapshot() {
		m.mu.Lock()
		if m.up != nil {
			l := out[m.up.pool]
			l.miners = append(l.miners, minerLoad{m: m, hashrate: m.hashrateLocked(now)})
			l.hashrate += l.miners[len(l.miners)-1].hashrate
		}
		m.mu.Unlock()
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
// level furthest below its weighted share. Cached loads (refreshed each
// janitor tick) keep this O(pools), not O(miners).
func (s *server) pick() *pool {
	pools := s.carrying()
	switch len(pools) {
	case 0:
		return nil
	case 1:
		return pools[0]
	}
	var total, weights float64
	miners := 0
	for _, pl := range pools {
		pl.mu.Lock()
		total += pl.health.hashrate
		miners += pl.health.miners
		pl.mu.Unlock()
		weights += pl.cfg.Weight
	}
	perMiner := 1.0
	if miners > 0 && total > 0 {
		perMiner = total / float64(miners)
	}
	var best *pool
	bestDeficit := 0.0
	for _, pl := range pools {
		pl.mu.Lock()
		have := pl.health.hashrate
		if have == 0 {
			have = float64(pl.health.miners) * perMiner
		}
		pl.mu.Unlock()
		deficit := pl.cfg.Weight/weights*(total+perMiner) - have
		if best == nil || deficit > bestDeficit {
			best, bestDeficit = pl, deficit
		}
	}
	return best
}

// rebalance moves a few miners from the pool furthest above its weighted
// share to the one furthest below, largest fitting miners first.
func (s *server) rebalance(now time.Time) {
	pools := s.carrying()
	loads := s.poolLoad(now)
	for pl, l := range loads { // refresh the cache pick() reads
		pl.mu.Lock()
		pl.health.hashrate, pl.health.miners = l.hashrate, len(l.miners)
		pl.mu.Unlock()
	}
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
		go c.m.moveTo(under, fmt.Sprintf("rebalance: %s above its weighted share, %s below", over.cfg.Name, under.cfg.Name))
	}
	if moved > 0 {
		s.p.event(events.Event{Kind: "rebalance", Subject: s.cfg.Name, From: over.cfg.Name, To: under.cfg.Name,
			Reason:  fmt.Sprintf("%s carries %.1f%% of the level's hashrate, target %.1f%%", over.cfg.Name, 100*loads[over].hashrate/total, 100*over.cfg.Weight/weights),
			Details: map[string]any{"miners_moved": moved}})
	}
}
