package kubeagent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hashgate/proxyd/internal/logkeep"
	"github.com/hashgate/proxyd/switcher/workload"
)

// ErrEvictionFailed: proxyd could not evict the claims on a GPU it wants
// back for mining (the dry run got no answer, or the eviction did not end
// within eviction_timeout). The GPU stays lent; no miner starts.
var ErrEvictionFailed = fmt.Errorf("the eviction for mining did not complete: the GPU stays lent (%w)", workload.ErrInUse)

// evictionPoll is how often an eviction re-reads its rule's status.
const evictionPoll = 250 * time.Millisecond

// evictPhase is the step of an eviction a rule's status is judged for.
type evictPhase int

const (
	// phaseDryRun: the rule's effect is None; the eviction controller
	// reports what NoExecute would evict.
	phaseDryRun evictPhase = iota
	// phaseEvict: the effect is NoExecute; the controller evicts.
	phaseEvict
)

func (p evictPhase) String() string {
	if p == phaseDryRun {
		return "dry run (effect None)"
	}
	return "eviction (effect NoExecute)"
}

// evictVerdict is what one look at the rule says.
type evictVerdict int

const (
	evictWait evictVerdict = iota
	evictDone
	evictFailed
)

// judgeEviction decides one step of an eviction from the rule as the API
// server has it (nil: gone), the generation proxyd wrote, the claims the
// API server shows allocated on the device (evict phase only) and the
// time left. It returns the verdict and, for done or failed, what to
// tell the operator. Only a status condition that observed the very
// generation proxyd wrote counts: an older one is about another spec.
func judgeEviction(phase evictPhase, r *resourcev1.DeviceTaintRule, gen int64, held []string, now, deadline time.Time,
	timeout time.Duration) (evictVerdict, string) {
	if r == nil {
		return evictFailed, "the rule was deleted by someone else during the " + phase.String()
	}
	if r.Generation != gen {
		return evictFailed, fmt.Sprintf("the rule was changed by someone else during the %s (generation %d, proxyd wrote %d)",
			phase, r.Generation, gen)
	}
	c := evictionCondition(r, gen)
	switch {
	case phase == phaseDryRun && c != nil:
		return evictDone, conditionText(c)
	case phase == phaseEvict && c != nil && c.Status == metav1.ConditionFalse && len(held) == 0:
		return evictDone, conditionText(c)
	case now.Before(deadline):
		return evictWait, ""
	case phase == phaseDryRun:
		return evictFailed, fmt.Sprintf("the dry run (effect None, generation %d) got no %s status within %s: "+
			"is kube-controller-manager's device taint eviction controller running?", gen, resourcev1.DeviceTaintConditionEvictionInProgress, timeout)
	}
	status := "no " + resourcev1.DeviceTaintConditionEvictionInProgress + " status for generation " + fmt.Sprint(gen)
	if c != nil {
		status = conditionText(c)
	}
	why := fmt.Sprintf("the eviction (effect NoExecute) did not end within %s: %s", timeout, status)
	if len(held) > 0 {
		why += "; claim(s) " + strings.Join(held, ", ") + " still hold the device"
	}
	return evictFailed, why
}

// evictionCondition is the rule's EvictionInProgress condition if it
// observed generation gen.
func evictionCondition(r *resourcev1.DeviceTaintRule, gen int64) *metav1.Condition {
	for i := range r.Status.Conditions {
		c := &r.Status.Conditions[i]
		if c.Type == resourcev1.DeviceTaintConditionEvictionInProgress && c.ObservedGeneration == gen {
			return c
		}
	}
	return nil
}

func conditionText(c *metav1.Condition) string {
	s := fmt.Sprintf("%s=%s", c.Type, c.Status)
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	if c.Message != "" {
		s += ": " + c.Message
	}
	return s
}

// evict takes a GPU that claims hold back for mining: its rule goes to
// effect None (the dry run) and the eviction controller's report of what
// NoExecute would evict is logged and journaled; then to NoExecute, until
// the controller reports EvictionInProgress=False and the API server shows
// no claim allocated on the device; then to NoSchedule, the usual mining
// rule. All within EvictionTimeout (and ctx). If it does not get there,
// the rule is deleted again (the GPU is lent: no rule), the GPU is not
// tried again for EvictionTimeout, and Stop fails with ErrEvictionFailed.
// While it runs the lease is marked evicting, so the rule keeper leaves
// the rule to it; writeMu is held only for each write, never across a
// wait.
func (a *Agent) evict(ctx context.Context, uuid string, ref deviceRef, held []string) error {
	now := a.o.Clock.Now()
	a.mu.Lock()
	le := a.leases[uuid]
	if le == nil {
		le = &lease{since: now}
		a.leases[uuid] = le
	}
	if now.Before(le.evictAgain) {
		again := le.evictAgain
		a.mu.Unlock()
		a.metrics.evictions.WithLabelValues(evictDeferred).Inc()
		return fmt.Errorf("GPU %s: claim(s) %s hold it and the last eviction failed; the next one is not before %s: %w",
			uuid, strings.Join(held, ", "), again.UTC().Format(time.RFC3339), ErrEvictionFailed)
	}
	le.evicting = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		le.evicting = false
		a.mu.Unlock()
		a.notify()
	}()
	name := a.ruleName(ref)
	deadline := now.Add(a.o.EvictionTimeout)
	// The clock's deadline decides (judgeEviction says why); the context
	// bounds a read that hangs, a little later.
	ectx, cancel := context.WithTimeout(ctx, a.o.EvictionTimeout+a.o.APITimeout)
	defer cancel()
	log := a.log.With(zap.String("gpu", uuid), zap.String("device", ref.String()), zap.String("rule", name),
		zap.Strings("claims", held))
	log.Info("taking a GPU that claims hold back for mining (evict_for_mining): dry run first, tainting it with effect None",
		logkeep.Field())

	// The dry run.
	gen, err := a.writeEffect(ectx, uuid, ref, resourcev1.DeviceTaintEffectNone, 0)
	if err != nil {
		return a.evictFailed(ctx, uuid, ref, held, "writing the dry run's rule: "+err.Error())
	}
	verdict, msg := a.awaitEviction(ectx, phaseDryRun, name, ref, gen, deadline)
	if verdict != evictDone {
		return a.evictFailed(ctx, uuid, ref, held, msg)
	}
	log.Info("the eviction dry run reports what NoExecute will evict; evicting", zap.String("dry_run", msg), logkeep.Field())
	a.o.Journal(uuid, "eviction_dry_run", fmt.Sprintf("taking GPU %s (device %s) back for mining from claim(s) %s: the dry run of rule %s reports %s",
		uuid, ref, strings.Join(held, ", "), name, msg))

	// The eviction.
	gen, err = a.writeEffect(ectx, uuid, ref, resourcev1.DeviceTaintEffectNoExecute, gen)
	if err != nil {
		return a.evictFailed(ctx, uuid, ref, held, "writing NoExecute: "+err.Error())
	}
	verdict, msg = a.awaitEviction(ectx, phaseEvict, name, ref, gen, deadline)
	if verdict != evictDone {
		return a.evictFailed(ctx, uuid, ref, held, msg)
	}

	// Evicted: the usual mining rule, and one more look at the claims.
	if why := a.settleEvicted(ctx, uuid, ref); why != "" {
		return a.evictFailed(ctx, uuid, ref, held, why)
	}
	a.mu.Lock()
	delete(a.leases, uuid)
	a.mu.Unlock()
	took := a.o.Clock.Now().Sub(now).Round(time.Millisecond)
	log.Info("evicted the claims on a GPU for mining: tainted NoSchedule, mining resumes", zap.String("eviction", msg),
		zap.Duration("took", took), logkeep.Field())
	note := fmt.Sprintf("evicted claim(s) %s from GPU %s (device %s) for mining in %s (%s): tainted %s=%s:NoSchedule, mining resumes",
		strings.Join(held, ", "), uuid, ref, took, msg, TaintKey, TaintValue)
	a.metrics.evictions.WithLabelValues(evictEvicted).Inc()
	a.o.Journal(uuid, "evicted_for_mining", note)
	a.event(ctx, "GPUEvicted", "Evict", note)
	return nil
}

// settleEvicted turns the evicted GPU's rule into the mining rule
// (NoSchedule) and re-reads the claims; it says what went wrong ("" when
// nothing did).
func (a *Agent) settleEvicted(ctx context.Context, uuid string, ref deviceRef) string {
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	if err := a.ensureRule(ctx, uuid, ref); err != nil {
		return "tainting NoSchedule after the eviction: " + err.Error()
	}
	again, err := a.freshClaimsOn(ctx, ref)
	switch {
	case err != nil:
		return "re-reading the claims after the eviction: " + err.Error()
	case len(again) > 0:
		return fmt.Sprintf("claim(s) %s were allocated on the device right after the eviction", strings.Join(again, ", "))
	}
	return ""
}

// writeEffect sets the effect of the GPU's rule (still at generation
// from, when not 0) and returns the rule's generation as written.
func (a *Agent) writeEffect(ctx context.Context, uuid string, ref deviceRef, effect resourcev1.DeviceTaintEffect, from int64) (int64, error) {
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	r, err := a.ensureRuleEffect(ctx, uuid, ref, effect, from)
	if err != nil {
		return 0, err
	}
	return r.Generation, nil
}

// awaitEviction re-reads the rule (and, evicting, the claims) from the
// API server every evictionPoll until judgeEviction says done or failed.
// A read that fails is retried until the deadline.
func (a *Agent) awaitEviction(ctx context.Context, phase evictPhase, name string, ref deviceRef, gen int64,
	deadline time.Time) (evictVerdict, string) {
	t := time.NewTimer(0)
	defer t.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			why := fmt.Sprintf("the %s did not end before the switcher's drain_ai or eviction_timeout ran out (%v)", phase, ctx.Err())
			if lastErr != nil {
				why += "; last error: " + lastErr.Error()
			}
			return evictFailed, why
		case <-t.C:
		}
		r, held, err := a.readEviction(ctx, phase, name, ref)
		if err != nil {
			lastErr = err
			if !a.o.Clock.Now().Before(deadline) {
				return evictFailed, fmt.Sprintf("the %s could not be read back within %s: %v", phase, a.o.EvictionTimeout, err)
			}
			t.Reset(evictionPoll)
			continue
		}
		v, msg := judgeEviction(phase, r, gen, held, a.o.Clock.Now(), deadline, a.o.EvictionTimeout)
		if v != evictWait {
			return v, msg
		}
		t.Reset(evictionPoll)
	}
}

// readEviction reads the rule (nil when gone) and, evicting, the claims
// allocated on the device, fresh from the API server.
func (a *Agent) readEviction(ctx context.Context, phase evictPhase, name string, ref deviceRef) (*resourcev1.DeviceTaintRule, []string, error) {
	rctx, cancel := context.WithTimeout(ctx, a.o.APITimeout)
	r, err := a.o.Client.getRule(rctx, name)
	cancel()
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("reading DeviceTaintRule %s: %w", name, err)
	}
	if phase == phaseDryRun {
		return r, nil, nil
	}
	held, err := a.freshClaimsOn(ctx, ref)
	return r, held, err
}

// evictFailed puts the GPU back as lent (its rule deleted, so nothing
// the cluster runs stays on a tainted device), keeps it from another try
// for EvictionTimeout, says why and fails Stop. ctx may have run out: the
// rule is deleted under a fresh bound.
func (a *Agent) evictFailed(ctx context.Context, uuid string, ref deviceRef, held []string, why string) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.APITimeout)
	defer cancel()
	a.writeMu.Lock()
	derr := a.deleteRule(cctx, a.ruleName(ref))
	a.writeMu.Unlock()
	now := a.o.Clock.Now()
	again := now.Add(a.o.EvictionTimeout)
	a.mu.Lock()
	if le := a.leases[uuid]; le != nil {
		le.lastHeld, le.evictAgain = now, again
	}
	a.mu.Unlock()
	a.notify()
	msg := fmt.Sprintf("could not take GPU %s (device %s) back for mining from claim(s) %s: %s; the GPU stays lent "+
		"(proxyd's rule removed again), no miner starts, next try not before %s",
		uuid, ref, strings.Join(held, ", "), why, again.UTC().Format(time.RFC3339))
	fields := []zap.Field{zap.String("gpu", uuid), zap.String("device", ref.String()), zap.Strings("claims", held), logkeep.Field()}
	if derr != nil {
		msg += "; removing the rule failed too (the rule keeper retries): " + derr.Error()
		a.log.Error(msg, fields...)
	} else {
		a.log.Warn(msg, fields...)
	}
	a.metrics.evictions.WithLabelValues(evictFailedR).Inc()
	a.o.Journal(uuid, "eviction_failed", msg)
	a.event(cctx, "EvictionFailed", "Untaint", msg)
	return fmt.Errorf("GPU %s: %s: %w", uuid, why, ErrEvictionFailed)
}
