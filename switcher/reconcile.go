package switcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// Bounds of ops that have no workload-specific timeout.
const (
	statusOpTimeout = workload.ProbeTimeout + 30*time.Second
	powerOpTimeout  = 30 * time.Second
)

// pass is one turn of the loop: look at every GPU, derive what the
// contracts want, and move every GPU one step toward it.
func (s *Switcher) pass(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	reconciled := s.reconciled
	s.mu.Unlock()
	if !reconciled {
		s.reconcileOnStart(ctx)
		return
	}
	views := s.gpus.GPUs()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	now := s.clock.Now()
	s.pruneLocked(now)
	s.observeLocked(views, now)
	pl := s.placeLocked(now)
	s.driveLocked(pl, now)
	s.persistLocked()
	s.publishKnownLocked()
	s.startPendingLocked()
}

// observeLocked takes in the GPUs' latest telemetry and health: it learns
// the idle memory baseline, quarantines unhealthy GPUs and notices
// processes on idle GPUs. Callers hold mu.
func (s *Switcher) observeLocked(views []nvml.GPU, now time.Time) {
	for i := range views {
		v := &views[i]
		g := s.recs[v.UUID]
		if g == nil {
			continue
		}
		g.health, g.tel = v.Health, v.Telemetry
		fresh := v.Telemetry != nil && v.Telemetry.Seq > g.lastSeq
		if t := v.Telemetry; t != nil {
			procs, known := t.Processes()
			idle := known && len(procs) == 0 && (t.UtilizationGPU == nil || *t.UtilizationGPU == 0)
			if idle && t.MemoryUsedBytes != nil && (g.IdleMemoryBytes == 0 || *t.MemoryUsedBytes < g.IdleMemoryBytes) {
				g.IdleMemoryBytes = *t.MemoryUsedBytes
			}
			if g.State == StateIdle && !g.busy && g.Handle == nil && fresh {
				g.lastSeq = t.Seq
				// proxyd's own workload that landed here from another GPU
				// is that GPU's business (wrong_gpu), not a foreign process.
				alien := s.notProxyds(procs)
				if known && len(alien) > 0 {
					g.foreignPolls++
				} else {
					g.foreignPolls = 0
				}
				if g.foreignPolls >= s.cfg.FreePolls {
					s.enterWith(g, StateQuarantined, ReasonForeignProcess, fmt.Sprintf("%s on an idle GPU that proxyd did not start: "+
						"left running and untouched; find its owner (nvidia-smi), then resume the GPU", describeProcs(alien)), alien)
				}
			}
		}
		if v.Health.State == nvml.Unhealthy && g.State != StateQuarantined {
			s.enter(g, StateQuarantined, ReasonUnhealthy, "GPU is unhealthy, its work is drained: "+v.Health.Summary()+
				" (POST /api/v1/gpus/"+g.UUID+"/resume after the fix)")
		}
	}
	// Every GPU's sample is in: forget workloads that stopped and left.
	for _, g := range s.order {
		s.settleHandleLocked(g)
	}
}

func describeProcs(procs []nvml.Process) string {
	parts := make([]string, 0, len(procs))
	for i, p := range procs {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(procs)-5))
			break
		}
		var about []string
		if !p.MemoryUnknown {
			about = append(about, mib(p.UsedMemoryBytes))
		}
		if p.Owner.Class != "" {
			about = append(about, p.Owner.String())
		}
		if len(about) == 0 {
			parts = append(parts, fmt.Sprintf("pid %d", p.PID))
		} else {
			parts = append(parts, fmt.Sprintf("pid %d (%s)", p.PID, strings.Join(about, ", ")))
		}
	}
	return fmt.Sprintf("%d process(es): %s", len(procs), strings.Join(parts, ", "))
}

func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }

// notFree says why a sample does not prove the GPU free ("" if it does):
// no process, memory back near the idle baseline, utilisation 0.
func (s *Switcher) notFree(g *gpuRec, t *nvml.Telemetry) string {
	procs, known := t.Processes()
	switch {
	case !known:
		return "NVML cannot list the GPU's processes, so it cannot be proven free"
	case len(procs) > 0:
		return describeProcs(procs) + " still on the GPU"
	case t.MemoryUsedBytes == nil:
		return "NVML cannot read the GPU's memory use, so it cannot be proven free"
	}
	slack := uint64(s.cfg.FreeMemorySlackMiB) << 20
	if used := *t.MemoryUsedBytes; used > g.IdleMemoryBytes+slack {
		return fmt.Sprintf("%s of memory used with no process, above the idle baseline %s + %d MiB slack (a zombie context holding memory?)",
			mib(used), mib(g.IdleMemoryBytes), s.cfg.FreeMemorySlackMiB)
	}
	if t.UtilizationGPU != nil && *t.UtilizationGPU > 0 {
		return fmt.Sprintf("utilisation %d%% with no process listed", *t.UtilizationGPU)
	}
	return ""
}

// miningWantedLocked reports whether g should mine when no contract wants it.
func (s *Switcher) miningWantedLocked(g *gpuRec, now time.Time) bool {
	return s.mining != nil && g.Cordon == nil && g.health.State != nvml.Unhealthy && !now.Before(g.Backoff[workload.MiningWorkload])
}

func (s *Switcher) backoffLocked(g *gpuRec, key string, now time.Time) {
	if s.cfg.RetryBackoff <= 0 {
		return
	}
	if g.Backoff == nil {
		g.Backoff = map[string]time.Time{}
	}
	g.Backoff[key] = now.Add(s.cfg.RetryBackoff)
	for k, until := range g.Backoff {
		if !now.Before(until) {
			delete(g.Backoff, k)
		}
	}
}

// begin is a paced transition: it needs one of max_parallel's slots.
type begin struct {
	g    *gpuRec
	prio int // lower first
	do   func()
}

// Priorities of paced transitions when slots are scarce.
const (
	prioForced  = iota // operator's forced cordon
	prioAIStart        // a contract's GPU leaves mining or idle
	prioAIStop         // a GPU leaves a contract that ended
	prioRepair         // a workload exited
	prioMining         // a GPU goes back to mining
	prioMiningOff
)

// driveLocked moves every GPU one step toward what pl wants. Continuing
// steps run at once; a GPU leaving a resting state needs a slot (at most
// max_parallel GPUs in transition). Callers hold mu.
func (s *Switcher) driveLocked(pl placement, now time.Time) {
	inTransition := 0
	for _, g := range s.order {
		if g.State.InTransition() {
			inTransition++
		}
	}
	var begins []begin
	for _, g := range s.order {
		if g.busy {
			continue
		}
		if len(g.Strays) > 0 {
			s.killStrayLocked(g, now)
			continue
		}
		if b, ok := s.stepLocked(g, pl.want[g.UUID], now); ok {
			begins = append(begins, b)
		}
	}
	slots := s.cfg.MaxParallel - inTransition
	if s.holdLocked() != nil {
		slots = 0
	}
	sort.SliceStable(begins, func(i, j int) bool { return begins[i].prio < begins[j].prio })
	for _, b := range begins {
		if slots <= 0 {
			break
		}
		b.do()
		slots--
		// Launch the new state's entry op in this same pass.
		if !b.g.busy {
			_, _ = s.stepLocked(b.g, pl.want[b.g.UUID], now)
		}
	}
}

// stepLocked takes one step for one GPU, or proposes a paced transition.
// Callers hold mu.
func (s *Switcher) stepLocked(g *gpuRec, want string, now time.Time) (begin, bool) {
	forced := g.Cordon != nil && g.Cordon.Force
	switch g.State {
	case "":
		s.enter(g, StateIdle, ReasonDiscovered, "first seen")
		return begin{}, false

	case StateQuarantined:
		s.stepQuarantinedLocked(g, now)

	case StateIdle:
		if !g.entered {
			g.entered = true
			if g.Power != nil {
				s.launchPowerLocked(g, "restore power", 0, false)
				return begin{}, false
			}
		}
		switch {
		case want != "":
			return begin{g: g, prio: prioAIStart, do: func() {
				g.Contract, g.Workload = want, ""
				s.enter(g, StateVerifyingFree, ReasonContractAssigned, "contract "+want+" wants this GPU; proving it free first")
			}}, true
		case s.miningWantedLocked(g, now):
			return begin{g: g, prio: prioMining, do: func() {
				g.Contract, g.Workload = "", ""
				s.enter(g, StateVerifyingFree, ReasonMiningWanted, "no contract wants this GPU: back to mining once it is proven free")
			}}, true
		}

	case StateMining:
		exited := g.status != nil && !g.status.Running
		_, wrong, wrongProcs, _ := s.proofLocked(g)
		switch {
		case exited:
			detail := g.status.Detail
			return begin{g: g, prio: prioRepair, do: func() {
				s.backoffLocked(g, workload.MiningWorkload, now)
				g.Contract = ""
				s.enter(g, StateStoppingMiner, ReasonMinerExited, "the miner exited ("+detail+"); cleaning up, retrying after "+s.cfg.RetryBackoff.String())
			}}, true
		case wrong != "":
			return begin{g: g, prio: prioRepair, do: func() {
				s.backoffLocked(g, workload.MiningWorkload, now)
				g.Contract = ""
				s.enterWith(g, StateStoppingMiner, ReasonWrongGPU, wrong+": stopping it; mining is retried after "+s.cfg.RetryBackoff.String(), wrongProcs)
			}}, true
		case want != "":
			return begin{g: g, prio: prioAIStart, do: func() {
				g.Contract = want
				s.enter(g, StateStoppingMiner, ReasonContractAssigned, "contract "+want+" wants this GPU: stopping the miner")
			}}, true
		case forced:
			return begin{g: g, prio: prioForced, do: func() {
				g.Contract = ""
				s.enter(g, StateStoppingMiner, ReasonCordonForce, "cordoned with force ("+g.Cordon.Reason+"): stopping the miner")
			}}, true
		case s.mining == nil:
			return begin{g: g, prio: prioMiningOff, do: func() {
				g.Contract = ""
				s.enter(g, StateStoppingMiner, ReasonMiningOff, "[switcher.mining] is no longer configured: stopping the miner")
			}}, true
		}
		s.statusCheckLocked(g, now, s.cfg.StatusInterval)

	case StateStoppingMiner, StateDrainingAI:
		if !g.entered {
			s.launchStopLocked(g, now)
			return begin{}, false
		}
		s.afterStopLocked(g)

	case StateVerifyingFree:
		s.stepVerifyLocked(g, want, now)

	case StateStartingAI:
		s.stepStartingLocked(g, want, forced, now)

	case StateServingAI:
		exited := g.status != nil && !g.status.Running
		_, wrong, wrongProcs, _ := s.proofLocked(g)
		switch {
		case exited:
			detail := g.status.Detail
			return begin{g: g, prio: prioRepair, do: func() {
				s.backoffLocked(g, g.Contract, now)
				s.failures[g.Contract] = fmt.Sprintf("GPU %d: the workload exited while serving (%s)", g.Index, detail)
				s.enter(g, StateDrainingAI, ReasonAIExited, "the AI workload exited while serving: "+detail)
			}}, true
		case wrong != "":
			return begin{g: g, prio: prioRepair, do: func() {
				s.backoffLocked(g, g.Contract, now)
				s.failures[g.Contract] = fmt.Sprintf("GPU %d: the workload runs on the wrong GPU (%s)", g.Index, wrong)
				s.enterWith(g, StateDrainingAI, ReasonWrongGPU, wrong+": stopping it", wrongProcs)
			}}, true
		case forced:
			return begin{g: g, prio: prioForced, do: func() {
				s.enter(g, StateDrainingAI, ReasonCordonForce, "cordoned with force ("+g.Cordon.Reason+"): draining the AI workload")
			}}, true
		case want != g.Contract && now.Before(g.takeBackAfter):
			// Refused by the GPU's other user not long ago: see takeBackAfter.
		case want != g.Contract:
			reason, msg := s.releaseReasonLocked(g, now)
			return begin{g: g, prio: prioAIStop, do: func() { s.enter(g, StateDrainingAI, reason, msg) }}, true
		}
		s.statusCheckLocked(g, now, s.cfg.StatusInterval)

	case StateRestoringMining:
		s.stepRestoringLocked(g, now)
	}
	return begin{}, false
}

// releaseReasonLocked says why a GPU leaves its contract. Callers hold mu.
func (s *Switcher) releaseReasonLocked(g *gpuRec, now time.Time) (string, string) {
	for _, c := range s.contractsLocked() {
		if c.ID != g.Contract {
			continue
		}
		switch {
		case c.refused != "":
			return ReasonContractReleased, "contract " + c.ID + " is refused now (" + c.refused + "): draining"
		case !now.Before(c.End):
			return ReasonContractEnded, "contract " + c.ID + " ended at " + c.End.UTC().Format(time.RFC3339) + ": draining"
		case !c.ActiveAt(now):
			return ReasonContractReleased, "contract " + c.ID + " is not active now: draining"
		}
		if g.Workload != "" && c.Workload != g.Workload && (g.State == StateStartingAI || g.State == StateServingAI) {
			return ReasonContractReleased, "contract " + c.ID + " now wants workload " + c.Workload + " instead of " + g.Workload +
				": draining, the GPU starts the new one after a proof of free"
		}
		if len(c.Pin) > 0 && !slices.Contains(c.Pin, g.UUID) {
			return ReasonContractReleased, "contract " + c.ID + " is now pinned to other GPUs: draining"
		}
		return ReasonContractReleased, "contract " + c.ID + " needs fewer GPUs now: draining"
	}
	return ReasonContractEnded, "contract " + g.Contract + " was removed: draining"
}

// statusCheckLocked asks the runtime about g's workload every interval.
// Callers hold mu.
func (s *Switcher) statusCheckLocked(g *gpuRec, now time.Time, every time.Duration) {
	if g.Handle == nil || (!g.lastStatus.IsZero() && now.Sub(g.lastStatus) < every) {
		return
	}
	rt := s.rts[g.Handle.Runtime]
	if rt == nil {
		return
	}
	g.lastStatus = now
	h := *g.Handle
	spec, _ := s.specFor(h.Workload, h.Runtime)
	state := g.State
	s.launch(g, "status", statusOpTimeout, func(ctx context.Context) func(*gpuRec) {
		st, err := rt.Status(ctx, spec, h)
		return func(g *gpuRec) {
			if g.State != state || g.Handle == nil || g.Handle.ID != h.ID {
				return // the GPU moved on meanwhile
			}
			if err != nil {
				g.statusErr = err
				s.log.Warn("cannot check a workload's status", toFields(g, err)...)
				return
			}
			g.status, g.statusErr = &st, nil
		}
	})
}

// launchStopLocked stops g's workload (STOPPING_MINER, DRAINING_AI),
// lowering the power limit first when what comes next needs less.
// Callers hold mu.
func (s *Switcher) launchStopLocked(g *gpuRec, now time.Time) {
	g.entered = true
	timeout := s.cfg.Timeouts.StopMiner
	if g.State == StateDrainingAI {
		timeout = s.cfg.Timeouts.DrainAI
	}
	// What comes next decides the limit to lower to before the load moves.
	next := uint32(0)
	switch {
	case g.State == StateStoppingMiner && g.Contract != "":
		if c, ok := s.contractByIDLocked(g.Contract); ok {
			next = s.powerTarget(c.Workload)
		}
	case g.State == StateDrainingAI && s.miningWantedLocked(g, now):
		next = s.powerTarget(workload.MiningWorkload)
	}
	plan := s.powerPlanLocked(g, next, true)
	var h *workload.Handle
	var spec workload.Spec
	var rt workload.Runtime
	if g.Handle != nil {
		hh := *g.Handle
		h = &hh
		spec, _ = s.specFor(h.Workload, h.Runtime)
		rt = s.rts[h.Runtime]
	}
	s.launch(g, "stop", timeout+powerOpTimeout, func(ctx context.Context) func(*gpuRec) {
		pw := s.doPower(ctx, plan)
		var err error
		switch {
		case h == nil:
		case rt == nil:
			err = fmt.Errorf("runtime %q is not configured any more: stop %s by hand", h.Runtime, h.Instance)
		default:
			sctx, cancel := context.WithTimeout(ctx, timeout)
			err = rt.Stop(sctx, spec, *h, false)
			cancel()
		}
		return func(g *gpuRec) {
			s.applyPowerLocked(g, pw)
			g.stopErr = err
			if err == nil && h != nil {
				// Kept until a sample shows it gone: a stop that reports
				// success while the workload runs on is escalated.
				s.markReleasedLocked(g, *h)
			}
		}
	})
}

// afterStopLocked moves a GPU whose stop op finished on to the proof of
// free (which decides, whatever the stop said). Callers hold mu.
func (s *Switcher) afterStopLocked(g *gpuRec) {
	what := "the miner"
	reason := ReasonMinerStopped
	failReason := ReasonMinerStopFailed
	if g.State == StateDrainingAI {
		if errors.Is(g.stopErr, workload.ErrInUse) {
			// The GPU's other user took it meanwhile: no miner starts, and
			// no second try before retry_backoff.
			g.takeBackAfter = s.clock.Now().Add(s.cfg.RetryBackoff)
			s.enter(g, StateStartingAI, ReasonClaimedMeanwhile, fmt.Sprintf("%v; it stays with contract %s and is not taken back before %s",
				g.stopErr, g.Contract, g.takeBackAfter.UTC().Format(time.RFC3339)))
			return
		}
		what, reason, failReason = "the AI workload", ReasonAIStopped, ReasonAIStopFailed
		g.Contract = ""
	}
	if g.stopErr != nil {
		s.enter(g, StateVerifyingFree, failReason, fmt.Sprintf("stopping %s failed (%v); proving the GPU free anyway, "+
			"proxyd kills what it owns if it is not", what, g.stopErr))
		return
	}
	g.Workload = ""
	s.enter(g, StateVerifyingFree, reason, what+" stopped; proving the GPU free")
}

// stepVerifyLocked counts fresh samples that prove the GPU free and,
// once enough do, starts what comes next. If processes of the GPU's own
// workload are still there its stop_timeout after the stop (or anything
// holds the GPU at verify_free while proxyd's workload is not known gone),
// the runtime's forced stop runs once and the proof gets verify_free
// again; then the GPU is quarantined, naming every process with its owner.
// Callers hold mu.
func (s *Switcher) stepVerifyLocked(g *gpuRec, want string, now time.Time) {
	if t := g.tel; t != nil && t.Seq > g.lastSeq {
		g.lastSeq = t.Seq
		if why := s.notFree(g, t); why == "" {
			g.freePolls++
			g.notFree = ""
		} else {
			g.freePolls, g.notFree = 0, why
		}
	}
	if g.freePolls >= s.cfg.FreePolls {
		s.provenFreeLocked(g)
		proof := fmt.Sprintf("free for %d consecutive samples", g.freePolls)
		switch {
		case want != "":
			c, _ := s.contractByIDLocked(want)
			g.Contract, g.Workload = want, c.Workload
			s.enter(g, StateStartingAI, ReasonGPUFree, proof+": starting "+c.Workload+" for contract "+want)
		case s.miningWantedLocked(g, now):
			g.Contract, g.Workload = "", workload.MiningWorkload
			s.enter(g, StateRestoringMining, ReasonGPUFree, proof+": starting the miner")
		default:
			g.Contract, g.Workload = "", ""
			why := "no contract wants it and mining is not configured"
			if g.Cordon != nil {
				why = "cordoned (" + g.Cordon.Reason + ")"
			} else if s.mining != nil {
				why = "no contract wants it and mining waits for its retry backoff"
			}
			s.enter(g, StateIdle, ReasonGPUFree, proof+": idle, "+why)
		}
		return
	}
	elapsed, verify := now.Sub(g.stepFrom), s.cfg.Timeouts.VerifyFree
	if !g.Escalated && g.Handle != nil {
		h := *g.Handle
		spec, _ := s.specFor(h.Workload, h.Runtime)
		where := s.whereLocked(h)
		var lingering []nvml.Process
		for _, r := range s.order {
			lingering = append(lingering, where[r]...)
		}
		grace := min(spec.StopTimeout, verify)
		if elapsed >= verify || (len(lingering) > 0 && elapsed >= grace) {
			g.Escalated = true
			g.stepFrom = now
			msg := fmt.Sprintf("not free after %s (%s): forced stop of proxyd's %s", elapsed.Round(time.Millisecond), orUnknown(g.notFree), h.Instance)
			if len(lingering) > 0 {
				msg = fmt.Sprintf("proxyd's %s still runs %s after its stop (%s): forced stop", h.Instance,
					elapsed.Round(time.Millisecond), describeProcs(lingering))
			}
			s.event(Event{GPU: g.UUID, From: g.State, To: g.State, Reason: ReasonKillOwned, Contract: g.Contract,
				Message: msg, Processes: processOwners(lingering)})
			s.launchKillLocked(g, h)
			return
		}
	}
	if elapsed < verify {
		return
	}
	s.quarantineNotReleasedLocked(g)
}

// quarantineNotReleasedLocked quarantines a GPU that did not prove free,
// naming every process on it with its owner. When only proxyd's own
// processes hold it (they survived the forced stop), the GPU leaves
// quarantine by itself once they are gone; foreign and unknown processes,
// and memory held with no process, need an operator. Callers hold mu.
func (s *Switcher) quarantineNotReleasedLocked(g *gpuRec) {
	c := g.Contract
	sp := s.splitLocked(g)
	procs, _ := procsOn(g)
	after := ""
	if g.Escalated || g.Handle != nil {
		after = " even after a forced stop"
	}
	self := len(sp.others) == 0 && len(sp.own)+len(sp.proxyd) > 0
	var msg string
	switch {
	case self:
		msg = fmt.Sprintf("not free within %s%s: only proxyd's own workload holds it, %s; proxyd keeps killing it and "+
			"the GPU goes back to work by itself once it is gone and the GPU proves free", s.cfg.Timeouts.VerifyFree, after, describeProcs(procs))
	case len(sp.others) > 0:
		msg = fmt.Sprintf("not free within %s%s: %s still on the GPU, not proxyd's to stop (left running and untouched); "+
			"no new work starts on it until an operator resumes it", s.cfg.Timeouts.VerifyFree, after, describeProcs(sp.others))
	default:
		msg = fmt.Sprintf("not free within %s%s: %s; no new work starts on it until an operator resumes it",
			s.cfg.Timeouts.VerifyFree, after, orUnknown(g.notFree))
	}
	s.enterWith(g, StateQuarantined, ReasonGPUNotReleased, msg, procs)
	g.selfBlocked = self
	if c != "" {
		s.failures[c] = fmt.Sprintf("GPU %d was not released by its previous work and is quarantined", g.Index)
	}
	g.Contract = ""
}

func orUnknown(s string) string {
	if s == "" {
		return "no fresh telemetry sample arrived"
	}
	return s
}

// launchKillLocked kills a workload of proxyd's on g. Callers hold mu.
func (s *Switcher) launchKillLocked(g *gpuRec, h workload.Handle) {
	g.lastKill = s.clock.Now()
	rt := s.rts[h.Runtime]
	spec, _ := s.specFor(h.Workload, h.Runtime)
	s.launch(g, "kill", spec.StopTimeout+powerOpTimeout, func(ctx context.Context) func(*gpuRec) {
		err := errors.New("its runtime " + h.Runtime + " is not configured any more")
		if rt != nil {
			err = rt.Stop(ctx, spec, h, true)
		}
		return func(g *gpuRec) {
			if err != nil {
				s.event(Event{GPU: g.UUID, From: g.State, To: g.State, Reason: "kill_failed", Contract: h.Contract,
					Message: fmt.Sprintf("killing %s failed: %v", h.Instance, err)})
				return
			}
			// Kept until a sample shows it gone (a kill_command can lie too).
			s.markReleasedLocked(g, h)
			g.Strays = slices.DeleteFunc(g.Strays, func(x workload.Handle) bool { return x.ID == h.ID })
		}
	})
}

// killStrayLocked kills the first stray workload of g (one found beside
// another after a restart), retrying every status interval. Callers hold mu.
func (s *Switcher) killStrayLocked(g *gpuRec, now time.Time) {
	if now.Before(g.strayRetry) {
		return
	}
	g.strayRetry = now.Add(s.cfg.StatusInterval)
	s.launchKillLocked(g, g.Strays[0])
}

// stepStartingLocked starts the AI workload and waits for it to serve.
// Callers hold mu.
func (s *Switcher) stepStartingLocked(g *gpuRec, want string, forced bool, now time.Time) {
	// Refused by the GPU's other user not long ago (takeBackAfter): the
	// GPU serves on even if its contract is gone or wants less.
	kept := now.Before(g.takeBackAfter)
	if !g.entered {
		if s.holdLocked() != nil {
			return // nothing starts while the state cannot be written
		}
		c, ok := s.contractByIDLocked(g.Contract)
		workload := c.Workload
		if !ok && kept {
			workload = g.Workload
		}
		spec, known := s.specs[workload]
		if !known || (!kept && (!ok || want != g.Contract)) {
			reason, msg := s.releaseReasonLocked(g, now)
			s.enter(g, StateDrainingAI, reason, msg)
			return
		}
		s.launchStartLocked(g, spec, g.Contract)
		return
	}
	switch {
	case g.startErr != nil:
		s.backoffLocked(g, g.Contract, now)
		s.failures[g.Contract] = fmt.Sprintf("GPU %d: %v", g.Index, g.startErr)
		s.enter(g, StateDrainingAI, ReasonAIStartFailed, fmt.Sprintf("the AI workload did not start: %v; back to mining, "+
			"this GPU is not offered to contract %s again for %s", g.startErr, g.Contract, s.cfg.RetryBackoff))
	case forced:
		s.enter(g, StateDrainingAI, ReasonCordonForce, "cordoned with force ("+g.Cordon.Reason+"): stopping the starting AI workload")
	case want != g.Contract && !kept:
		reason, msg := s.releaseReasonLocked(g, now)
		s.enter(g, StateDrainingAI, reason, msg)
	}
	if g.State != StateStartingAI {
		return
	}
	proven, wrong, wrongProcs, wait := s.proofLocked(g)
	ready := g.status != nil && g.status.Ready
	if ready {
		g.proofWait = wait
	}
	switch {
	case wrong != "":
		s.backoffLocked(g, g.Contract, now)
		s.failures[g.Contract] = fmt.Sprintf("GPU %d: the workload started on the wrong GPU (%s)", g.Index, wrong)
		s.enterWith(g, StateDrainingAI, ReasonWrongGPU, wrong+": stopping it; this GPU is not offered to contract "+
			g.Contract+" again for "+s.cfg.RetryBackoff.String()+" (check CUDA_VISIBLE_DEVICES / --device in its command)", wrongProcs)
	case ready && proven:
		s.enter(g, StateServingAI, ReasonAIReady, fmt.Sprintf("%s serves contract %s (ready after %s)",
			g.Workload, g.Contract, now.Sub(g.stepFrom).Round(time.Second)))
		delete(s.failures, g.Contract)
	case g.status != nil && !g.status.Running:
		detail := g.status.Detail
		s.backoffLocked(g, g.Contract, now)
		s.failures[g.Contract] = fmt.Sprintf("GPU %d: the workload exited while starting (%s)", g.Index, detail)
		s.enter(g, StateDrainingAI, ReasonAIExited, "the AI workload exited before it was ready: "+detail)
	case now.Sub(g.stepFrom) >= s.cfg.Timeouts.StartAI:
		detail := "no readiness"
		if ready {
			detail = "ready, but " + wait
		} else if g.status != nil && g.status.Detail != "" {
			detail = g.status.Detail
		} else if g.statusErr != nil {
			detail = g.statusErr.Error()
		}
		s.backoffLocked(g, g.Contract, now)
		s.failures[g.Contract] = fmt.Sprintf("GPU %d: the workload was not ready within %s (%s)", g.Index, s.cfg.Timeouts.StartAI, detail)
		s.enter(g, StateDrainingAI, ReasonAIStartTimeout, fmt.Sprintf("the AI workload was not ready within %s (%s): "+
			"stopping it, back to mining; this GPU is not offered to contract %s again for %s", s.cfg.Timeouts.StartAI,
			detail, g.Contract, s.cfg.RetryBackoff))
	default:
		s.statusCheckLocked(g, now, 0)
	}
}

// stepRestoringLocked starts the miner and waits for it to run. Callers
// hold mu.
func (s *Switcher) stepRestoringLocked(g *gpuRec, now time.Time) {
	if !g.entered {
		if s.holdLocked() != nil {
			return
		}
		if s.mining == nil {
			s.enter(g, StateIdle, ReasonMiningOff, "[switcher.mining] is no longer configured")
			return
		}
		s.launchStartLocked(g, *s.mining, "")
		return
	}
	fail := func(reason, msg string) {
		s.backoffLocked(g, workload.MiningWorkload, now)
		s.enter(g, StateStoppingMiner, reason, msg+"; cleaning up, mining is retried after "+s.cfg.RetryBackoff.String())
	}
	if g.startErr != nil {
		fail(ReasonMinerStartFailed, fmt.Sprintf("the miner did not start: %v", g.startErr))
		return
	}
	proven, wrong, wrongProcs, wait := s.proofLocked(g)
	ready := g.status != nil && g.status.Ready
	if ready {
		g.proofWait = wait
	}
	switch {
	case wrong != "":
		s.backoffLocked(g, workload.MiningWorkload, now)
		s.enterWith(g, StateStoppingMiner, ReasonWrongGPU, wrong+": stopping it (check CUDA_VISIBLE_DEVICES / --device in its "+
			"command); mining is retried after "+s.cfg.RetryBackoff.String(), wrongProcs)
	case ready && proven:
		s.enter(g, StateMining, ReasonMiningStarted, "the miner runs")
	case g.status != nil && !g.status.Running:
		fail(ReasonMinerExited, "the miner exited while starting: "+g.status.Detail)
	case now.Sub(g.stepFrom) >= s.cfg.Timeouts.RestoreMining:
		why := ""
		if ready {
			why = " (its status says it runs, but " + wait + ")"
		}
		fail(ReasonMinerStartTimeout, fmt.Sprintf("the miner was not running within %s%s", s.cfg.Timeouts.RestoreMining, why))
	default:
		s.statusCheckLocked(g, now, 0)
	}
}

// launchStartLocked sets the power limit for spec (raised only now, after
// the old load is proven gone) and starts spec on g. Callers hold mu.
func (s *Switcher) launchStartLocked(g *gpuRec, spec workload.Spec, contract string) {
	g.entered = true
	rt := s.rts[spec.Runtime]
	in := workload.Instance{Workload: spec.Name, Contract: contract, GPUUUID: g.UUID, GPUIndex: g.Index}
	plan := s.powerPlanLocked(g, s.powerTarget(spec.Name), false)
	timeout := s.cfg.Timeouts.StartAI
	if spec.Name == workload.MiningWorkload {
		timeout = s.cfg.Timeouts.RestoreMining
	}
	s.launch(g, "start", timeout+powerOpTimeout, func(ctx context.Context) func(*gpuRec) {
		pw := s.doPower(ctx, plan)
		h, err := rt.Start(ctx, spec, in)
		return func(g *gpuRec) {
			s.applyPowerLocked(g, pw)
			if err != nil {
				g.startErr = err
				return
			}
			if g.Handle != nil && g.Handle.ID != h.ID {
				// Cannot happen while ops are one per GPU; keep both known.
				g.Strays = append(g.Strays, *g.Handle)
			}
			g.Handle = &h
		}
	})
}

// stepQuarantinedLocked drains a quarantined GPU: kill what proxyd owns on
// it (retrying), then put its power limit back. A GPU quarantined only
// for proxyd's own processes goes back to work by itself once they are
// gone and the GPU proves free again. Callers hold mu.
func (s *Switcher) stepQuarantinedLocked(g *gpuRec, now time.Time) {
	if g.Handle != nil {
		if g.lastKill.IsZero() || now.Sub(g.lastKill) >= s.cfg.StatusInterval {
			s.launchKillLocked(g, *g.Handle)
		}
		return
	}
	if g.Power != nil && !g.powerTried {
		g.powerTried = true
		s.launchPowerLocked(g, "restore power", 0, false)
		return
	}
	if !g.selfBlocked || g.health.State == nvml.Unhealthy {
		return
	}
	if t := g.tel; t != nil && t.Seq > g.lastSeq {
		g.lastSeq = t.Seq
		if why := s.notFree(g, t); why == "" {
			g.freePolls++
			g.notFree = ""
		} else {
			g.freePolls, g.notFree = 0, why
			if sp := s.splitLocked(g); len(sp.others) > 0 {
				// Someone else's process arrived: now it needs an operator.
				g.selfBlocked = false
				s.event(Event{GPU: g.UUID, From: g.State, To: g.State, Reason: ReasonForeignProcess, Processes: processOwners(sp.others),
					Message: "stays quarantined until an operator resumes it: " + describeProcs(sp.others) + " appeared on it, not proxyd's"})
			}
		}
	}
	if g.freePolls >= s.cfg.FreePolls {
		s.enter(g, StateIdle, ReasonGPUFree, fmt.Sprintf("proxyd's own workload that held it is gone and the GPU was free for %d "+
			"consecutive samples: back to work without an operator", g.freePolls))
	}
}

func (s *Switcher) contractByIDLocked(id string) (sourced, bool) {
	for _, c := range s.contractsLocked() {
		if c.ID == id && c.refused == "" {
			return c, true
		}
	}
	return sourced{}, false
}
