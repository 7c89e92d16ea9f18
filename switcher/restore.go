package switcher

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// reconcileOnStart compares the state file with reality before the
// switcher acts: what proxyd's runtimes say runs (containers by label,
// exec status commands, simulated workloads) and what NVML sees on each
// GPU. The rules, per GPU:
//
//   - an unhealthy GPU is quarantined (what proxyd runs on it is killed);
//     a GPU quarantined before stays quarantined;
//   - two or more of proxyd's workloads on one GPU: all are killed and the
//     GPU is proven free again;
//   - one workload of proxyd's: adopted where the file meant it to run
//     (or there is no file), otherwise stopped;
//   - nothing of proxyd's but processes: quarantined as foreign_process
//     (nothing killed), unless the file says proxyd was freeing the GPU
//     (then the proof of free decides) or every process carries a marker
//     of proxyd's (a leftover its runtime no longer lists: the proof of
//     free decides, and an exec leftover gets a forced stop if it stays);
//   - nothing at all: idle, or heading back to its contract through the
//     proof of free.
//
// If a runtime cannot list its workloads, nothing is decided: the switcher
// reports not ready and tries again next pass.
func (s *Switcher) reconcileOnStart(ctx context.Context) {
	views := s.gpus.GPUs()
	s.mu.Lock()
	q := workload.ListQuery{Specs: map[string]workload.Spec{}}
	for _, g := range s.order {
		q.GPUs = append(q.GPUs, workload.GPURef{UUID: g.UUID, Index: g.Index})
		// Indexes can change across a reboot; UUIDs do not.
		if g.Handle != nil {
			g.Handle.GPUIndex = g.Index
			q.Known = append(q.Known, *g.Handle)
		}
		for i := range g.Strays {
			g.Strays[i].GPUIndex = g.Index
		}
		q.Known = append(q.Known, g.Strays...)
	}
	for n, sp := range s.specs {
		q.Specs[n] = sp
	}
	if s.mining != nil {
		q.Specs[workload.MiningWorkload] = *s.mining
	}
	kinds := make([]string, 0, len(s.rts))
	for k := range s.rts {
		kinds = append(kinds, k)
	}
	timeout := s.listTimeout
	s.mu.Unlock()
	sort.Strings(kinds)

	found := map[string][]workload.Listed{}
	for _, k := range kinds {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		l, err := s.rts[k].List(lctx, q)
		cancel()
		if err != nil {
			err = fmt.Errorf("cannot list proxyd's workloads through the %s runtime, so the switcher waits rather than act on a guess: %w", k, err)
			s.mu.Lock()
			if s.holdReason == nil || s.holdReason.Error() != err.Error() {
				s.log.Error("switcher cannot reconcile its state with the GPUs yet", zap.Error(err))
			}
			s.holdReason = err
			s.mu.Unlock()
			return
		}
		for _, x := range l {
			found[x.GPUUUID] = append(found[x.GPUUUID], x)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	byUUID := map[string]nvml.GPU{}
	for _, v := range views {
		byUUID[v.UUID] = v
	}
	for uuid, l := range found {
		if s.recs[uuid] == nil {
			for _, x := range l {
				s.log.Warn("a workload of proxyd's names a GPU this node does not have; left alone",
					zap.String("gpu", uuid), zap.String("id", x.ID), zap.String("workload", x.Workload))
			}
		}
	}
	now := s.clock.Now()
	for _, g := range s.order {
		v := byUUID[g.UUID]
		g.health, g.tel = v.Health, v.Telemetry
		var running []workload.Handle
		for _, x := range found[g.UUID] {
			h := x.Handle
			h.GPUIndex = g.Index
			if x.Running {
				running = append(running, h)
			} else {
				g.Strays = appendHandle(g.Strays, h) // an exited leftover: removed
			}
		}
		s.reconcileGPULocked(g, running)
		g.stepFrom = now // every waiting state gets its full time again
		if g.Handle != nil {
			switch g.State {
			case StateStartingAI, StateRestoringMining, StateServingAI, StateMining:
				g.entered = true // adopted: started already, never start it twice
			}
		}
	}
	s.reconciled, s.holdReason = true, nil
	s.persistLocked()
	s.publishKnownLocked()
	s.log.Info("switcher reconciled its state with the GPUs", zap.Int("gpus", len(s.order)), zap.Int("workloads_found", countListed(found)))
}

func countListed(m map[string][]workload.Listed) int {
	n := 0
	for _, l := range m {
		n += len(l)
	}
	return n
}

func appendHandle(hs []workload.Handle, h workload.Handle) []workload.Handle {
	for _, x := range hs {
		if x.ID == h.ID {
			return hs
		}
	}
	return append(hs, h)
}

// reconcileGPULocked applies the rules of reconcileOnStart to one GPU.
// Callers hold mu.
func (s *Switcher) reconcileGPULocked(g *gpuRec, running []workload.Handle) {
	prev := g.State
	prevContract := g.Contract
	headingAI := prevContract != "" && (prev == StateStoppingMiner || prev == StateVerifyingFree ||
		prev == StateStartingAI || prev == StateServingAI)
	procs, known := g.tel.Processes()
	unhealthy := g.health.State == nvml.Unhealthy
	// The file's handle is replaced by what was found.
	g.Handle = nil
	g.Escalated = false

	set := func(to State, reason, msg string) {
		if prev == to && reason == ReasonAdopted && g.Reason != "" {
			// Same state, adopted: keep the record's own account.
			s.event(Event{GPU: g.UUID, From: prev, To: to, Reason: reason, Message: msg, Contract: g.Contract})
			return
		}
		s.enter(g, to, reason, msg)
	}
	switch {
	case len(running) > 1:
		for _, h := range running {
			g.Strays = appendHandle(g.Strays, h)
		}
		g.Contract, g.Workload = "", ""
		names := make([]string, len(running))
		for i, h := range running {
			names[i] = h.Instance.String()
		}
		if unhealthy {
			set(StateQuarantined, ReasonUnhealthy, "GPU is unhealthy: "+g.health.Summary())
			return
		}
		set(StateVerifyingFree, ReasonReconcileConflict, "found "+strings.Join(names, " and ")+
			" on one GPU: killing all of them and proving the GPU free")

	case prev == StateQuarantined:
		if len(running) == 1 {
			h := running[0]
			g.Handle = &h
		}
		s.event(Event{GPU: g.UUID, From: prev, To: prev, Reason: g.Reason, Message: "still quarantined after a restart: " + g.Message})

	case unhealthy:
		if len(running) == 1 {
			h := running[0]
			g.Handle = &h
		}
		g.Contract = ""
		set(StateQuarantined, ReasonUnhealthy, "GPU is unhealthy: "+g.health.Summary())

	case len(running) == 1 && running[0].IsMining():
		h := running[0]
		g.Handle = &h
		switch prev {
		case "", StateIdle, StateMining, StateRestoringMining:
			g.Contract, g.Workload = "", workload.MiningWorkload
			to := StateMining
			if prev == StateRestoringMining {
				to = StateRestoringMining
			}
			set(to, ReasonAdopted, "the miner runs: adopted")
		default:
			if !headingAI {
				g.Contract = ""
			}
			g.Workload = workload.MiningWorkload
			set(StateStoppingMiner, ReasonReconcileStop, fmt.Sprintf("the miner runs, but the state file says %s: stopping it", orNone(prev)))
		}

	case len(running) == 1:
		h := running[0]
		g.Handle = &h
		_, known := s.specs[h.Workload]
		adopt := known && h.Contract != "" &&
			(prev == "" || ((prev == StateStartingAI || prev == StateServingAI) && prevContract == h.Contract))
		g.Contract, g.Workload = h.Contract, h.Workload
		if adopt {
			to := prev
			if to == "" {
				to = StateStartingAI // readiness is proven again
			}
			set(to, ReasonAdopted, fmt.Sprintf("%s runs: adopted", h.Instance))
			return
		}
		why := fmt.Sprintf("the state file says %s", orNone(prev))
		if !known {
			why = fmt.Sprintf("workload %q is not configured any more", h.Workload)
		}
		set(StateDrainingAI, ReasonReconcileStop, fmt.Sprintf("%s runs, but %s: stopping it", h.Instance, why))

	case !known || len(procs) > 0:
		what := "NVML cannot list the GPU's processes"
		if known {
			what = describeProcs(procs)
		}
		leftover := known
		for _, p := range procs {
			leftover = leftover && p.Owner.Proxyd()
		}
		if leftover {
			// proxyd's own, though no runtime lists it (a status_command
			// that lies): prove the GPU free, force it off if it stays.
			for _, p := range procs {
				if h, ok := workload.ExecHandleFromMarker(p.Owner.Workload); ok && s.rts[workload.KindExec] != nil && g.Handle == nil {
					h.GPUIndex = g.Index
					g.Handle = &h
				}
			}
			if !headingAI {
				g.Contract = ""
			}
			g.Workload = ""
			s.enterWith(g, StateVerifyingFree, ReasonReconcileVerify, what+": proxyd's own, though no runtime lists it; "+
				"proving the GPU free, with a forced stop if it stays", procs)
			return
		}
		switch prev {
		case StateStoppingMiner, StateDrainingAI, StateVerifyingFree:
			if !headingAI {
				g.Contract = ""
			}
			g.Workload = ""
			s.enterWith(g, StateVerifyingFree, ReasonReconcileVerify, what+" while proxyd was freeing the GPU: proving it free", procs)
		default:
			if !known {
				set(StateVerifyingFree, ReasonReconcileVerify, what+": proving the GPU free before any work")
				return
			}
			g.Contract, g.Workload = "", ""
			s.enterWith(g, StateQuarantined, ReasonForeignProcess, what+" on the GPU, none of them proxyd's: left running and untouched; "+
				"find the owner (nvidia-smi), then resume the GPU", procs)
		}

	default:
		g.Workload = ""
		switch {
		case headingAI:
			set(StateVerifyingFree, ReasonReconcileMissing, fmt.Sprintf("the state file says %s for contract %s, nothing runs: "+
				"proving the GPU free, then starting again", prev, prevContract))
		case prev == StateDrainingAI:
			g.Contract = ""
			set(StateVerifyingFree, ReasonReconcileVerify, "the AI workload is gone: proving the GPU free")
		case prev == StateMining || prev == StateRestoringMining:
			g.Contract = ""
			set(StateIdle, ReasonReconcileMissing, "the state file says "+string(prev)+", but the miner does not run")
		case prev == "":
			set(StateIdle, ReasonDiscovered, "first seen: nothing runs on it")
		default:
			g.Contract = ""
			set(StateIdle, ReasonAdopted, "nothing runs on it")
		}
	}
}

func orNone(st State) string {
	if st == "" {
		return "nothing"
	}
	return string(st)
}
