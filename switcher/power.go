package switcher

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/nvml"
)

// Power profiles. A workload's power_limit_w is applied while it runs; 0
// means the GPU's own limit from before the switcher first changed it.
// That limit is snapshotted (and persisted) before the first change and
// restored exactly. Limits are lowered before the load moves (in the op
// that stops the old workload) and raised only after the old load is
// proven gone (in the op that starts the new one). Power control is
// best effort: a GPU or a user that cannot set limits still switches, and
// every failure is an event.

// powerTarget is the limit, in mW, a workload runs under (0: baseline).
// Callers hold mu.
func (s *Switcher) powerTarget(workload string) uint32 {
	spec, ok := s.specFor(workload, "")
	if !ok {
		return 0
	}
	return uint32(spec.PowerLimitW) * 1000
}

// powerPlan is the power step of an op, decided under mu.
type powerPlan struct {
	uuid string
	// snap is the baseline (nil: not taken yet).
	snap *nvml.PowerSnapshot
	// targetMW is the limit to set; 0 restores the baseline.
	targetMW uint32
	// onlyLower skips the step unless it lowers the limit.
	onlyLower bool
}

// powerOutcome is what the power step did, applied under mu.
type powerOutcome struct {
	took    *nvml.PowerSnapshot // a baseline snapshot taken now
	dropped bool                // the baseline was restored exactly
	note    string              // an event message, "" for nothing
	failed  bool
}

func (s *Switcher) powerPlanLocked(g *gpuRec, target uint32, onlyLower bool) powerPlan {
	p := powerPlan{uuid: g.UUID, targetMW: target, onlyLower: onlyLower}
	if g.Power != nil {
		snap := *g.Power
		p.snap = &snap
	}
	return p
}

// doPower carries out a plan; it runs in an op, without mu.
func (s *Switcher) doPower(ctx context.Context, p powerPlan) powerOutcome {
	var out powerOutcome
	if p.targetMW == 0 && p.snap == nil {
		return out // baseline wanted and never left
	}
	cur, err := s.gpus.SnapshotPower(ctx, p.uuid)
	if err != nil {
		if errors.Is(err, nvml.ErrNotSupported) {
			return out
		}
		out.note, out.failed = fmt.Sprintf("cannot read the power limit: %v", err), true
		return out
	}
	if p.targetMW == 0 {
		if p.onlyLower && p.snap.LimitMW >= cur.LimitMW {
			return out // a raise waits until the old load is gone
		}
		ch, err := s.gpus.RestorePower(ctx, *p.snap)
		if err != nil {
			out.note, out.failed = fmt.Sprintf("restoring the power limit to %s failed: %v", watts(p.snap.LimitMW), err), true
			return out
		}
		out.dropped = true
		if ch.PreviousMW != ch.AppliedMW {
			out.note = fmt.Sprintf("power limit restored from %s to %s (read back %s)", watts(ch.PreviousMW), watts(ch.AppliedMW), watts(ch.ReadBackMW))
		}
		return out
	}
	if p.onlyLower && p.targetMW >= cur.LimitMW {
		return out
	}
	if cur.LimitMW == p.targetMW {
		return out
	}
	if p.snap == nil {
		// Persist the baseline before the first change: a crash right
		// after the change must still know what to restore.
		if err := s.saveSnapshot(p.uuid, cur); err != nil {
			out.note, out.failed = fmt.Sprintf("power limit left at %s: %v", watts(cur.LimitMW), err), true
			return out
		}
		out.took = &cur
	}
	ch, err := s.gpus.SetPowerLimit(ctx, p.uuid, p.targetMW)
	if err != nil {
		out.note, out.failed = fmt.Sprintf("setting the power limit to %s failed: %v", watts(p.targetMW), err), true
		return out
	}
	out.note = fmt.Sprintf("power limit %s from %s to %s (read back %s)", map[bool]string{true: "lowered", false: "raised"}[ch.AppliedMW < ch.PreviousMW],
		watts(ch.PreviousMW), watts(ch.AppliedMW), watts(ch.ReadBackMW))
	if ch.Clamped {
		out.note += fmt.Sprintf(", clamped from the requested %s to the GPU's range", watts(ch.RequestedMW))
	}
	return out
}

// saveSnapshot records and persists a baseline before a first change.
func (s *Switcher) saveSnapshot(uuid string, snap nvml.PowerSnapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.recs[uuid]
	if g == nil {
		return fmt.Errorf("unknown GPU %s", uuid)
	}
	if g.Power == nil {
		g.Power = &snap
		s.persistLocked()
	}
	if s.persistErr != nil {
		return fmt.Errorf("its baseline cannot be persisted: %w", s.persistErr)
	}
	return nil
}

// applyPowerLocked records a power step's outcome. Callers hold mu.
func (s *Switcher) applyPowerLocked(g *gpuRec, out powerOutcome) {
	if out.took != nil && g.Power == nil {
		g.Power = out.took
	}
	if out.dropped {
		g.Power = nil
	}
	if out.note != "" {
		reason := "power_limit"
		if out.failed {
			reason = "power_limit_failed"
		}
		s.event(Event{GPU: g.UUID, From: g.State, To: g.State, Reason: reason, Message: out.note, Contract: g.Contract})
	}
}

// launchPowerLocked runs a power step alone (idle, quarantine). Callers
// hold mu.
func (s *Switcher) launchPowerLocked(g *gpuRec, what string, target uint32, onlyLower bool) {
	plan := s.powerPlanLocked(g, target, onlyLower)
	s.launch(g, what, powerOpTimeout, func(ctx context.Context) func(*gpuRec) {
		out := s.doPower(ctx, plan)
		return func(g *gpuRec) { s.applyPowerLocked(g, out) }
	})
}

func watts(mw uint32) string {
	if mw%1000 == 0 {
		return fmt.Sprintf("%d W", mw/1000)
	}
	return fmt.Sprintf("%.3f W", float64(mw)/1000)
}

func toFields(g *gpuRec, err error) []zap.Field {
	f := []zap.Field{zap.String("gpu", g.UUID), zap.Int("index", g.Index), zap.String("state", string(g.State))}
	if g.Handle != nil {
		f = append(f, zap.String("workload", g.Handle.Workload), zap.String("runtime", g.Handle.Runtime))
	}
	if err != nil {
		f = append(f, zap.Error(err))
	}
	return f
}
