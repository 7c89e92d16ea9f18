package nvml

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"go.uber.org/zap"
)

// wantedEvents are the NVML events the event loop registers for.
const wantedEvents = gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError

// resumeReq asks the event loop to register the GPU afresh.
type resumeReq struct {
	g     *gpu
	reply chan error // capacity 1
}

func (m *Manager) setEventErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil && m.eventErr == nil {
		m.log.Error("XID event monitoring is down; GPU health cannot be proven", zap.Error(err))
	} else if err == nil && m.eventErr != nil {
		m.log.Info("XID event monitoring is back")
	}
	m.eventErr = err
}

// buildEventSet creates an event set and registers every GPU not known to
// be lost, and force (the GPU being resumed) whatever its state. It returns
// a nil set when the set cannot be created, else the registration error of
// force.
func (m *Manager) buildEventSet(force *gpu) (gonvml.EventSet, error) {
	set, ret := m.lib.EventSetCreate()
	if ret != gonvml.SUCCESS {
		return nil, retErr("EventSetCreate", "", ret)
	}
	var forceErr error
	for _, g := range m.order {
		m.mu.Lock()
		dev, lost := g.dev, g.lost
		if lost && g != force {
			g.eventsMonitored = false
		}
		m.mu.Unlock()
		if lost && g != force {
			continue
		}
		err := m.register(g, dev, set)
		if g == force {
			forceErr = err
		}
	}
	return set, forceErr
}

// register adds one GPU's XID and ECC events to set. A GPU that supports
// no events is logged and left to telemetry alone; any other failure makes
// it unhealthy, since its faults would go unseen.
func (m *Manager) register(g *gpu, dev gonvml.Device, set gonvml.EventSet) error {
	op := "GetSupportedEventTypes"
	supported, ret := dev.GetSupportedEventTypes()
	if ret == gonvml.SUCCESS {
		if mask := uint64(wantedEvents) & supported; mask == 0 {
			ret = gonvml.ERROR_NOT_SUPPORTED
		} else {
			op = "RegisterEvents"
			ret = dev.RegisterEvents(mask, set)
		}
	}
	switch ret {
	case gonvml.SUCCESS:
		m.mu.Lock()
		g.eventsMonitored = true
		m.mu.Unlock()
		return nil
	case gonvml.ERROR_NOT_SUPPORTED:
		m.mu.Lock()
		g.eventsMonitored = false
		m.mu.Unlock()
		m.log.Warn("GPU does not support XID events; its health rests on telemetry alone",
			zap.String("gpu", g.info.UUID), zap.Int("index", g.info.Index))
		return nil
	}
	err := m.call(g, op, ret)
	m.mu.Lock()
	defer m.mu.Unlock()
	g.eventsMonitored = false
	if ret != gonvml.ERROR_GPU_IS_LOST {
		now := m.opts.Clock.Now()
		m.raise(g, Reason{Code: ReasonEventRegistration, Message: fmt.Sprintf(
			"cannot register for XID events (%v): faults on this GPU would go unseen; resume it to retry", err)}, false, now)
		m.recompute(g, now)
	}
	return err
}

// eventLoop owns the event set: it waits on it in bounded steps (so it
// beats and notices Stop and Resume), rebuilds it after repeated failures
// and frees it on exit.
func (m *Manager) eventLoop(ctx context.Context, set gonvml.EventSet, beat func()) {
	defer func() {
		if set != nil {
			set.Free()
		}
	}()
	waitMs := uint32(max(m.opts.EventWait/time.Millisecond, 1))
	lastBuild := time.Now()
	failures := 0
	for {
		beat()
		select {
		case <-ctx.Done():
			return
		case req := <-m.resumeReq:
			set = m.reregister(set, req)
			continue
		default:
		}
		if set == nil {
			if time.Since(lastBuild) >= eventRetry {
				lastBuild = time.Now()
				var err error
				if set, err = m.buildEventSet(nil); set == nil {
					m.setEventErr(err)
				} else {
					m.setEventErr(nil)
				}
				continue
			}
			m.pause(ctx, m.opts.EventWait)
			continue
		}
		data, ret := set.Wait(waitMs)
		switch ret {
		case gonvml.SUCCESS, gonvml.ERROR_TIMEOUT:
			if failures >= eventErrorsBeforeRebuild {
				m.setEventErr(nil)
			}
			failures = 0
			if ret == gonvml.SUCCESS {
				m.handleEvent(data)
			}
			continue
		}
		failures++
		m.mu.Lock()
		m.eventErrors++
		m.mu.Unlock()
		if failures == 1 || failures%100 == 0 {
			m.log.Warn("waiting for GPU events failed; sampling telemetry now to find a lost GPU",
				zap.Int("consecutive_failures", failures), zap.Error(retErr("EventSetWait", "", ret)))
		}
		m.kickPoll()
		if failures%eventErrorsBeforeRebuild == 0 {
			m.setEventErr(fmt.Errorf("%d consecutive event-wait failures, last %w", failures, retErr("EventSetWait", "", ret)))
			set.Free()
			lastBuild = time.Now()
			var err error
			if set, err = m.buildEventSet(nil); set == nil {
				m.setEventErr(err)
			}
		}
		m.pause(ctx, min(time.Duration(failures)*100*time.Millisecond, m.opts.EventWait))
	}
}

// pause sleeps d or until ctx ends.
func (m *Manager) pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// reregister builds a new event set with req's GPU registered afresh,
// drains and frees the old one, and answers req. If the new set cannot be
// created the old one stays.
func (m *Manager) reregister(old gonvml.EventSet, req resumeReq) gonvml.EventSet {
	set, err := m.buildEventSet(req.g)
	if set == nil {
		req.reply <- fmt.Errorf("creating an event set: %w", err)
		return old
	}
	if old != nil {
		// Events that reached the old set while the new one was being
		// registered are still handled.
		for range 64 {
			data, ret := old.Wait(0)
			if ret != gonvml.SUCCESS {
				break
			}
			m.handleEvent(data)
		}
		old.Free()
	}
	m.setEventErr(nil)
	req.reply <- err
	return set
}

// handleEvent applies one NVML event.
func (m *Manager) handleEvent(e gonvml.EventData) {
	g := m.attribute(e.Device)
	now := m.opts.Clock.Now()
	switch {
	case e.EventType&gonvml.EventTypeXidCriticalError != 0:
		m.recordXID(g, e.EventData, now)
	case e.EventType&gonvml.EventTypeDoubleBitEccError != 0:
		m.recordECCEvent(g, now)
		m.kickPoll()
	default:
		m.log.Debug("ignoring GPU event", zap.Uint64("type", e.EventType), zap.Uint64("data", e.EventData))
	}
}

// attribute finds the GPU an event came from: by handle, else by UUID.
func (m *Manager) attribute(dev gonvml.Device) *gpu {
	if dev == nil {
		return nil
	}
	m.mu.Lock()
	for _, g := range m.order {
		if sameDevice(g.dev, dev) {
			m.mu.Unlock()
			return g
		}
	}
	m.mu.Unlock()
	if uuid, ret := dev.GetUUID(); ret == gonvml.SUCCESS {
		return m.byUUID[uuid]
	}
	return nil
}

// sameDevice compares handles; a handle type that cannot be compared is
// never the same.
func sameDevice(a, b gonvml.Device) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// recordEvent keeps the event in the GPU's recent history. Callers hold m.mu.
func recordEvent(g *gpu, ev Event) {
	if len(g.events) >= maxRecentEvents {
		g.events = append(g.events[:0], g.events[1:]...)
	}
	g.events = append(g.events, ev)
	if ev.Kind == "xid" {
		g.lastXID = ev.XID
		g.xids[ev.XID]++
	}
}

func (m *Manager) recordXID(g *gpu, xid uint64, now time.Time) {
	app := m.appXID[xid]
	ev := Event{At: now, Kind: "xid", XID: xid, Application: app, Description: XIDDescription(xid)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if g == nil {
		if app {
			m.log.Info("application XID from a GPU NVML did not name; not a GPU fault", zap.Uint64("xid", xid))
			return
		}
		// A device fault we cannot place: every GPU is suspect, as in
		// NVIDIA's device plugin, until an operator resumes it.
		m.log.Error("critical XID from a GPU NVML did not name; marking every GPU unhealthy",
			zap.Uint64("xid", xid), zap.String("xid_text", XIDDescription(xid)))
		for _, g := range m.order {
			recordEvent(g, ev)
			m.raise(g, Reason{Code: ReasonXIDUnattributed, XID: xid, Message: fmt.Sprintf(
				"%s on a GPU NVML did not name: every GPU on the node is suspect; find the faulty one in dmesg, "+
					"then resume the others", xidLabel(xid))}, true, now)
			m.recompute(g, now)
		}
		return
	}
	recordEvent(g, ev)
	if app {
		m.log.Info("application XID: the application on this GPU faulted, the GPU did not",
			zap.String("gpu", g.info.UUID), zap.Int("index", g.info.Index), zap.Uint64("xid", xid),
			zap.String("xid_text", XIDDescription(xid)))
		return
	}
	m.raise(g, Reason{Code: ReasonXID, XID: xid, Message: fmt.Sprintf("%s: a device fault; drain the GPU, "+
		"check dmesg, reset it (nvidia-smi -r) or reboot, then resume it", xidLabel(xid))}, true, now)
	m.recompute(g, now)
}

func (m *Manager) recordECCEvent(g *gpu, now time.Time) {
	ev := Event{At: now, Kind: "ecc_uncorrected", Description: "uncorrected (double-bit) ECC error"}
	m.mu.Lock()
	defer m.mu.Unlock()
	targets := m.order
	if g != nil {
		targets = []*gpu{g}
	}
	for _, g := range targets {
		recordEvent(g, ev)
		m.raise(g, Reason{Code: ReasonECCUncorrected, Message: "the driver reported an uncorrected ECC error: " +
			"the GPU's memory is not trustworthy; drain it, reset it (nvidia-smi -r) or reboot, then resume it"}, true, now)
		m.recompute(g, now)
	}
}

// Resume returns an unhealthy GPU to service, but only after a probe: a
// fresh device handle, a fresh event registration and a clean telemetry
// read (no read errors, not lost, no row-remap failure, no new uncorrected
// ECC errors). On success every unhealthy reason seen before the probe is
// cleared, the uncorrected-ECC baseline moves to the current count, and the
// returned Health is recomputed from the probe's sample (it may still be
// degraded). On failure the GPU stays unhealthy and the error, matching
// ErrProbeFailed, says why. A GPU that is not unhealthy is left as it is.
func (m *Manager) Resume(ctx context.Context, uuid string) (Health, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return Health{}, err
	}
	m.mu.Lock()
	running, health, mark := m.running, g.health.clone(), m.reasonSeq
	m.mu.Unlock()
	if !running {
		return health, ErrNotRunning
	}
	if health.State != Unhealthy {
		return health, nil
	}
	m.log.Info("probing GPU before resuming it", zap.String("gpu", uuid), zap.String("health", health.Summary()))
	fail := func(why ...string) (Health, error) {
		err := fmt.Errorf("%w: %s: %s", ErrProbeFailed, g.label(), strings.Join(why, "; "))
		m.log.Warn("GPU stays unhealthy: probe failed", zap.String("gpu", uuid), zap.Error(err))
		h, _ := m.Health(uuid)
		return h, err
	}

	dev, ret := m.lib.DeviceGetHandleByUUID(uuid)
	if ret != gonvml.SUCCESS {
		return fail(fmt.Sprintf("getting a fresh handle: %v", retErr("DeviceGetHandleByUUID", "", ret)))
	}
	m.mu.Lock()
	g.dev = dev
	m.mu.Unlock()

	reply := make(chan error, 1)
	select {
	case m.resumeReq <- resumeReq{g: g, reply: reply}:
	case <-m.stopped:
		return health, ErrNotRunning
	case <-ctx.Done():
		return health, ctx.Err()
	}
	select {
	case err := <-reply:
		if errors.Is(err, ErrGPULost) {
			return fail(fmt.Sprintf("the GPU is still lost: %v", err))
		}
		if err != nil {
			return fail(fmt.Sprintf("registering for events: %v", err))
		}
	case <-ctx.Done():
		return health, ctx.Err()
	}

	m.sampleMu.Lock()
	defer m.sampleMu.Unlock()
	t, lost := readTelemetry(dev, m.opts.Clock.Now())
	m.mu.Lock()
	var why []string
	switch {
	case lost:
		why = append(why, "the GPU is still lost")
	case len(t.Errors) > 0:
		why = append(why, "NVML reads failing: "+errorList(t.Errors))
	}
	if t.RowRemap != nil && t.RowRemap.Failure {
		why = append(why, "the row-remap failure persists (the GPU needs service)")
	}
	if t.ECC != nil && t.ECC.Uncorrected > max(g.eccSeen, g.eccBaseline) {
		why = append(why, fmt.Sprintf("new uncorrected ECC errors (%d now)", t.ECC.Uncorrected))
	}
	if len(why) > 0 {
		m.apply(g, t, lost)
		m.mu.Unlock()
		return fail(why...)
	}
	kept := g.sticky[:0]
	for _, r := range g.sticky {
		if r.seq > mark {
			kept = append(kept, r)
		}
	}
	g.sticky = kept
	g.lost = false
	if t.ECC != nil {
		g.eccBaseline, g.eccSeen = t.ECC.Uncorrected, t.ECC.Uncorrected
	}
	m.apply(g, t, false)
	h := g.health.clone()
	m.mu.Unlock()
	m.log.Info("GPU resumed after a clean probe", zap.String("gpu", uuid), zap.String("health", h.Summary()))
	if h.State == Unhealthy {
		return h, fmt.Errorf("%w: %s: new faults arrived during the probe: %s", ErrProbeFailed, g.label(), h.Summary())
	}
	return h, nil
}

func errorList(errs map[string]string) string {
	parts := make([]string, 0, len(errs))
	for f, e := range errs {
		parts = append(parts, f+": "+e)
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
