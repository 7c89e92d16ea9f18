package nvml

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"go.uber.org/zap"
)

// Health rules, in one place:
//
//   - Unhealthy (sticky: only Resume clears it): a critical XID (any XID not
//     in AppXIDs), an uncorrected ECC error (event, or the volatile counter
//     above the last accepted baseline, which is 0 at start: the counter
//     only counts since the driver loaded or the GPU was reset), a row-remap
//     failure, ERROR_GPU_IS_LOST from any call, a failed event registration.
//   - Degraded (live: recomputed on every sample): a thermal slowdown or a
//     hardware slowdown lasting SlowdownSustain, a pending row remap,
//     retired pages pending, NVML reads failing.
//   - Healthy otherwise. ERROR_NOT_SUPPORTED never counts against a GPU.

const (
	thermalBits = gonvml.ClocksThrottleReasonSwThermalSlowdown | gonvml.ClocksThrottleReasonHwThermalSlowdown
	hwSlowBits  = gonvml.ClocksThrottleReasonHwSlowdown | gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown
)

// apply publishes a sample and re-evaluates health. Callers hold m.mu.
func (m *Manager) apply(g *gpu, t *Telemetry, lost bool) {
	now := t.SampledAt
	g.seq++
	t.Seq = g.seq
	g.tel = t
	if lost {
		g.lost = true
		m.raise(g, lostReason(t), false, now)
	}
	if t.ECC != nil && t.ECC.Uncorrected > max(g.eccBaseline, g.eccSeen) {
		g.eccSeen = t.ECC.Uncorrected
		m.raise(g, Reason{Code: ReasonECCUncorrected, Message: fmt.Sprintf(
			"%d uncorrected ECC error(s) since the driver loaded or the GPU was last reset: "+
				"its memory is not trustworthy; drain it, reset it (nvidia-smi -r) or reboot, then resume it",
			t.ECC.Uncorrected-g.eccBaseline)}, true, now)
	}
	if t.RowRemap != nil && t.RowRemap.Failure {
		m.raise(g, Reason{Code: ReasonRowRemapFailure, Message: "row remapping failed: the GPU's memory " +
			"cannot be repaired in the field; take it out of service (RMA)"}, false, now)
	}
	g.live = m.liveReasons(g, t, lost, now)
	m.recompute(g, now)
}

func lostReason(t *Telemetry) Reason {
	var where []string
	for f, e := range t.Errors {
		if e == gonvml.ERROR_GPU_IS_LOST.String() {
			where = append(where, f)
		}
	}
	sort.Strings(where)
	return Reason{Code: ReasonGPULost, Message: fmt.Sprintf("GPU stopped answering (ERROR_GPU_IS_LOST reading %s): "+
		"it fell off the bus; check dmesg for XID 79, reboot or reset the GPU, then resume it", strings.Join(where, ", "))}
}

// liveReasons computes the degraded reasons of a sample. Callers hold m.mu.
func (m *Manager) liveReasons(g *gpu, t *Telemetry, lost bool, now time.Time) []Reason {
	if lost {
		g.thermalSince, g.hwSlowSince = time.Time{}, time.Time{}
		return nil
	}
	var live []Reason
	add := func(code, msg string) {
		r := Reason{Code: code, Severity: Degraded, Message: msg, Count: 1, First: now, Last: now}
		if i := slices.IndexFunc(g.live, func(o Reason) bool { return o.Code == code }); i >= 0 {
			r.First, r.Count = g.live[i].First, g.live[i].Count+1
		}
		live = append(live, r)
	}
	var throttle uint64
	if t.ThrottleReasons != nil {
		throttle = *t.ThrottleReasons
	}
	hot := t.TemperatureC != nil && t.SlowdownTemperatureC != nil && *t.SlowdownTemperatureC > 0 &&
		*t.TemperatureC >= *t.SlowdownTemperatureC
	if d, ok := sustained(&g.thermalSince, throttle&thermalBits != 0 || hot, now, m.opts.SlowdownSustain); ok {
		add(ReasonThermalSlowdown, fmt.Sprintf("thermal slowdown for %s (%s): check cooling, airflow and fans",
			d.Round(time.Second), tempDetail(t)))
	}
	if d, ok := sustained(&g.hwSlowSince, throttle&hwSlowBits != 0, now, m.opts.SlowdownSustain); ok {
		add(ReasonHWSlowdown, fmt.Sprintf("hardware slowdown for %s (%s): check power supply and cabling",
			d.Round(time.Second), strings.Join(ThrottleReasonNames(throttle&hwSlowBits), ", ")))
	}
	if t.RowRemap != nil && t.RowRemap.Pending && !t.RowRemap.Failure {
		add(ReasonRowRemapPending, "a row remap is pending: reset the GPU (nvidia-smi -r) before its next handoff")
	}
	if t.RetiredPagesPending != nil && *t.RetiredPagesPending {
		add(ReasonRetiredPages, "retired pages are pending: reset the GPU (nvidia-smi -r) before its next handoff")
	}
	if len(t.Errors) > 0 {
		add(ReasonTelemetryErrors, "NVML reads failing ("+errorList(t.Errors)+
			"): proxyd cannot see everything about this GPU")
	}
	return live
}

// sustained tracks how long cond has held in *since and reports the
// duration once it reaches sustain.
func sustained(since *time.Time, cond bool, now time.Time, sustain time.Duration) (time.Duration, bool) {
	if !cond {
		*since = time.Time{}
		return 0, false
	}
	if since.IsZero() {
		*since = now
	}
	d := now.Sub(*since)
	return d, d >= sustain
}

func tempDetail(t *Telemetry) string {
	var parts []string
	if t.TemperatureC != nil {
		parts = append(parts, fmt.Sprintf("%d C", *t.TemperatureC))
	}
	if t.SlowdownTemperatureC != nil {
		parts = append(parts, fmt.Sprintf("slowdown at %d C", *t.SlowdownTemperatureC))
	}
	if t.ThrottleReasons != nil {
		parts = append(parts, ThrottleReasonNames(*t.ThrottleReasons&thermalBits)...)
	}
	return strings.Join(parts, ", ")
}

// raise records a sticky (unhealthy) reason. An event (bump) counts again
// each time; a condition seen again only refreshes Last. Callers hold m.mu
// and call recompute afterwards.
func (m *Manager) raise(g *gpu, r Reason, bump bool, now time.Time) {
	r.Severity = Unhealthy
	i := slices.IndexFunc(g.sticky, func(o Reason) bool { return o.Code == r.Code && o.XID == r.XID })
	if i >= 0 {
		old := &g.sticky[i]
		old.Last, old.Message = now, r.Message
		if bump {
			old.Count++
			m.reasonSeq++
			old.seq = m.reasonSeq
		}
		return
	}
	if len(g.sticky) >= maxStickyReasons {
		m.log.Error("too many distinct unhealthy reasons; dropping one", zap.String("gpu", g.info.UUID),
			zap.String("code", r.Code), zap.String("reason", r.Message))
		return
	}
	m.reasonSeq++
	r.Count, r.First, r.Last, r.seq = 1, now, now, m.reasonSeq
	g.sticky = append(g.sticky, r)
}

// recompute derives the verdict from the reasons and tells subscribers when
// it changed. Callers hold m.mu.
func (m *Manager) recompute(g *gpu, now time.Time) {
	reasons := make([]Reason, 0, len(g.sticky)+len(g.live))
	reasons = append(append(reasons, g.sticky...), g.live...)
	state := Healthy
	switch {
	case len(g.sticky) > 0:
		state = Unhealthy
	case len(g.live) > 0:
		state = Degraded
	}
	prev := g.health
	g.health = Health{State: state, Reasons: reasons, Since: prev.Since}
	if state != prev.State {
		g.health.Since = now
	}
	if state == prev.State && sameReasons(prev.Reasons, reasons) {
		return
	}
	fields := []zap.Field{zap.String("gpu", g.info.UUID), zap.Int("index", g.info.Index),
		zap.String("from", string(prev.State)), zap.String("to", string(state)), zap.String("health", g.health.Summary())}
	switch {
	case state == Unhealthy:
		m.log.Error("GPU health changed", fields...)
	case state.rank() > prev.State.rank() || state == Degraded:
		m.log.Warn("GPU health changed", fields...)
	default:
		m.log.Info("GPU health changed", fields...)
	}
	change := HealthChange{UUID: g.info.UUID, Index: g.info.Index, From: prev.State, To: state, At: now}
	for s := range m.subs {
		s.push(change, g.health.clone())
	}
}

func sameReasons(a, b []Reason) bool {
	return slices.EqualFunc(a, b, func(x, y Reason) bool { return x.Code == y.Code && x.XID == y.XID })
}

// noteLost marks a GPU lost after a control or event call said so.
func (m *Manager) noteLost(g *gpu, op string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Clock.Now()
	g.lost = true
	m.raise(g, Reason{Code: ReasonGPULost, Message: fmt.Sprintf("GPU stopped answering (ERROR_GPU_IS_LOST from %s): "+
		"it fell off the bus; check dmesg for XID 79, reboot or reset the GPU, then resume it", op)}, false, now)
	m.recompute(g, now)
}

// call turns an NVML return into an error, marking the GPU lost on
// ERROR_GPU_IS_LOST. NVML is called by the caller, outside m.mu.
func (m *Manager) call(g *gpu, op string, ret gonvml.Return) error {
	if ret == gonvml.SUCCESS {
		return nil
	}
	if ret == gonvml.ERROR_GPU_IS_LOST {
		m.noteLost(g, op)
	}
	return retErr(op, g.label(), ret)
}

// device returns the GPU's current handle.
func (m *Manager) device(g *gpu) gonvml.Device {
	m.mu.Lock()
	defer m.mu.Unlock()
	return g.dev
}

// HealthChange says that a GPU's verdict changed from From to To. Changes
// are coalesced per GPU while a subscriber is not reading: From is the
// state before the first unread change, To and Health the latest.
type HealthChange struct {
	UUID   string    `json:"uuid"`
	Index  int       `json:"index"`
	From   State     `json:"from"`
	To     State     `json:"to"`
	Health Health    `json:"health"`
	At     time.Time `json:"at"`
}

// Subscription delivers health changes. It never blocks the Manager and
// never loses the latest state of a GPU: unread changes are coalesced.
type Subscription struct {
	m *Manager
	c chan struct{} // capacity 1: changes are pending

	mu      sync.Mutex // guards pending
	pending map[string]HealthChange
}

// Subscribe starts a subscription; Close it when done.
func (m *Manager) Subscribe() *Subscription {
	s := &Subscription{m: m, c: make(chan struct{}, 1), pending: map[string]HealthChange{}}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

func (s *Subscription) push(c HealthChange, h Health) {
	c.Health = h
	s.mu.Lock()
	if old, ok := s.pending[c.UUID]; ok {
		c.From = old.From
	}
	s.pending[c.UUID] = c
	s.mu.Unlock()
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// C receives a value when changes are pending; read them with Changes.
func (s *Subscription) C() <-chan struct{} { return s.c }

// Changes returns and clears the pending changes, by GPU index.
func (s *Subscription) Changes() []HealthChange {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]HealthChange, 0, len(s.pending))
	for _, c := range s.pending {
		out = append(out, c)
	}
	clear(s.pending)
	slices.SortFunc(out, func(a, b HealthChange) int { return a.Index - b.Index })
	return out
}

// Next waits for changes and returns them, or ctx's error.
func (s *Subscription) Next(ctx context.Context) ([]HealthChange, error) {
	for {
		if out := s.Changes(); len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.c:
		}
	}
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
}
