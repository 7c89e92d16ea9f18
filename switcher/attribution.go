package switcher

import (
	"fmt"
	"strings"

	"github.com/hashgate/proxyd/gpuproc"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// What the switcher does with the owner of each GPU process (nvml gives
// every sampled process one, through package gpuproc):
//
//   - escalation: in VERIFYING_FREE a process of the GPU's own workload
//     that is still there the workload's stop_timeout after the stop (or
//     at verify_free) gets the runtime's forced stop; only foreign and
//     unknown processes make a quarantine that needs an operator, and every
//     quarantine names each process with its owner;
//   - proof of start: STARTING_AI and RESTORING_MINING become SERVING_AI
//     and MINING only once a process of the workload holds the GPU
//     (proof_of_start = "process"), and a workload whose process shows on
//     another GPU is stopped (wrong_gpu);
//   - an idle GPU is quarantined only for processes that are not proxyd's.

// ReasonWrongGPU: a workload's process appeared on another GPU than the
// one it was started for.
const ReasonWrongGPU = "wrong_gpu"

// belongs reports whether p is one of h's processes.
func belongs(p nvml.Process, h *workload.Handle) bool {
	return h != nil && p.Owner.Workload != "" && p.Owner.Workload == h.Marker()
}

// procsOn returns g's processes in its latest sample (nil, false when NVML
// could not list them).
func procsOn(g *gpuRec) ([]nvml.Process, bool) { return g.tel.Processes() }

// whereLocked returns h's processes on every GPU, from the latest samples.
// Callers hold mu.
func (s *Switcher) whereLocked(h workload.Handle) map[*gpuRec][]nvml.Process {
	out := map[*gpuRec][]nvml.Process{}
	for _, r := range s.order {
		procs, _ := procsOn(r)
		for _, p := range procs {
			if belongs(p, &h) {
				out[r] = append(out[r], p)
			}
		}
	}
	return out
}

// ownedBy says whose workload a proxyd process is: the record holding the
// handle (nil when no GPU of this proxyd knows that marker).
func (s *Switcher) ownedBy(p nvml.Process) (*gpuRec, bool) {
	for _, r := range s.order {
		if belongs(p, r.Handle) {
			return r, true
		}
		for i := range r.Strays {
			if belongs(p, &r.Strays[i]) {
				return r, true
			}
		}
	}
	return nil, false
}

// split sorts the processes of one GPU's sample.
type split struct {
	own    []nvml.Process // of this GPU's workload or strays
	proxyd []nvml.Process // proxyd's, but another GPU's workload or none this proxyd knows
	others []nvml.Process // foreign and unknown: never touched
}

// splitLocked sorts g's processes in its latest sample. Callers hold mu.
func (s *Switcher) splitLocked(g *gpuRec) split {
	var sp split
	procs, _ := procsOn(g)
	for _, p := range procs {
		switch r, ok := s.ownedBy(p); {
		case ok && r == g:
			sp.own = append(sp.own, p)
		case ok || p.Owner.Proxyd():
			sp.proxyd = append(sp.proxyd, p)
		default:
			sp.others = append(sp.others, p)
		}
	}
	return sp
}

// notProxyds returns the processes of a sample that are not attributed to
// a workload this proxyd runs (foreign, unknown, or a marker it does not
// know).
func (s *Switcher) notProxyds(procs []nvml.Process) []nvml.Process {
	var out []nvml.Process
	for _, p := range procs {
		if _, ok := s.ownedBy(p); !ok {
			out = append(out, p)
		}
	}
	return out
}

// settleHandleLocked forgets g's workload once its stop or kill reported
// success and a sample taken afterwards shows none of its processes on any
// GPU (or NVML cannot list them: then the runtime's word is all there is).
// Until then the handle stays, so that a stop that lied can be escalated.
// Callers hold mu.
func (s *Switcher) settleHandleLocked(g *gpuRec) {
	h := g.Handle
	if h == nil || g.releasedID != h.ID || g.tel == nil || g.tel.Seq <= g.releasedSeq {
		return
	}
	if len(s.whereLocked(*h)) > 0 {
		return
	}
	g.Handle, g.releasedID = nil, ""
}

// markReleasedLocked records that g's workload h reported itself stopped
// (or killed); settleHandleLocked forgets it once the GPU agrees. Callers
// hold mu.
func (s *Switcher) markReleasedLocked(g *gpuRec, h workload.Handle) {
	if g.Handle == nil || g.Handle.ID != h.ID {
		return
	}
	g.releasedID = h.ID
	g.releasedSeq = 0
	if g.tel != nil {
		g.releasedSeq = g.tel.Seq
	}
	s.settleHandleLocked(g)
}

// provenFreeLocked: the GPU proved free, so its workload is gone from it;
// if its processes still hold another GPU (it started on the wrong one),
// it becomes a stray and is killed before the GPU does anything else.
// Callers hold mu.
func (s *Switcher) provenFreeLocked(g *gpuRec) {
	if g.Handle == nil {
		return
	}
	if len(s.whereLocked(*g.Handle)) > 0 {
		g.Strays = appendHandle(g.Strays, *g.Handle)
	}
	g.Handle, g.releasedID = nil, ""
}

// proofRequired reports whether a workload must show a process on its GPU
// before it counts as running.
func proofRequired(spec workload.Spec) bool { return spec.ProofOfStart != workload.ProofNone }

// proofLocked checks g's started workload against the GPUs: wrong is set
// when its processes hold another GPU (a CUDA_VISIBLE_DEVICES mistake);
// proven when they hold g's (or the workload needs no proof); wait says
// what is missing. Callers hold mu.
func (s *Switcher) proofLocked(g *gpuRec) (proven bool, wrong string, wrongProcs []nvml.Process, wait string) {
	if g.Handle == nil {
		return false, "", nil, "not started yet"
	}
	h := *g.Handle
	where := s.whereLocked(h)
	var elsewhere []string
	for _, r := range s.order {
		if r != g && len(where[r]) > 0 {
			elsewhere = append(elsewhere, fmt.Sprintf("GPU %d (%s): %s", r.Index, r.UUID, describeProcs(where[r])))
			wrongProcs = append(wrongProcs, where[r]...)
		}
	}
	if len(elsewhere) > 0 {
		wrong = fmt.Sprintf("%s was started for GPU %d but its process holds %s", h.Instance, g.Index, strings.Join(elsewhere, "; "))
	}
	spec, _ := s.specFor(h.Workload, h.Runtime)
	switch {
	case len(where[g]) > 0:
		return true, wrong, wrongProcs, ""
	case !proofRequired(spec):
		return true, wrong, wrongProcs, ""
	}
	procs, known := procsOn(g)
	switch {
	case !known:
		wait = "NVML cannot list the GPU's processes, so the workload's start cannot be proven"
	case len(procs) == 0:
		wait = fmt.Sprintf("no process of it holds GPU %d yet (proof_of_start = \"process\")", g.Index)
	default:
		wait = fmt.Sprintf("no process of it holds GPU %d yet (proof_of_start = \"process\"); on the GPU: %s", g.Index, describeProcs(procs))
	}
	return false, wrong, wrongProcs, wait
}

// KnownWorkloads lists the workloads proxyd runs now, for attribution: a
// process whose environment cannot be read is still recognised by the
// container it runs in. It reads a snapshot: safe to call from any
// goroutine, it never waits for the switcher.
func (s *Switcher) KnownWorkloads() []gpuproc.Known {
	if k := s.known.Load(); k != nil {
		return *k
	}
	return nil
}

// publishKnownLocked refreshes the snapshot KnownWorkloads reads. Callers
// hold mu.
func (s *Switcher) publishKnownLocked() {
	var out []gpuproc.Known
	add := func(h workload.Handle) {
		k := gpuproc.Known{Marker: h.Marker(), Contract: h.Contract, GPU: h.GPUUUID}
		if h.Runtime == workload.KindDocker {
			k.Container = h.ID
		}
		out = append(out, k)
	}
	for _, g := range s.order {
		if g.Handle != nil {
			add(*g.Handle)
		}
		for _, h := range g.Strays {
			add(h)
		}
	}
	s.known.Store(&out)
}

// ProcessOwner is a GPU process with its owner, as the journal records it.
type ProcessOwner struct {
	PID             uint32        `json:"pid"`
	UsedMemoryBytes uint64        `json:"used_memory_bytes,omitempty"`
	Owner           gpuproc.Owner `json:"owner"`
}

// maxJournalProcesses bounds the processes one journal entry lists (any
// local user can start processes on a GPU); the message counts them all.
const maxJournalProcesses = 32

func processOwners(procs []nvml.Process) []ProcessOwner {
	if len(procs) == 0 {
		return nil
	}
	procs = procs[:min(len(procs), maxJournalProcesses)]
	out := make([]ProcessOwner, len(procs))
	for i, p := range procs {
		out[i] = ProcessOwner{PID: p.PID, UsedMemoryBytes: p.UsedMemoryBytes, Owner: p.Owner}
	}
	return out
}
