package workload

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// KindSimulated is the simulated runtime's Kind.
const KindSimulated = "simulated"

// maxSimCalls bounds the call record tests read.
const maxSimCalls = 10_000

// SimOptions configure a simulated runtime.
type SimOptions struct {
	// Server is the simulated GPU server the workloads run on.
	Server *nvmlsim.Server
	// Now tells the time (readiness delays); nil: time.Now. Delays of
	// processes appearing and leaving go through the server's AfterFunc.
	Now func() time.Time
}

// Sim runs simulated workloads on nvmlsim GPUs: a started workload shows
// up on its GPU as a process (carrying the handle's markers in its
// simulated environment) with sim_memory_mib of memory and sim_load
// utilisation after sim_start_delay, is ready sim_ready_delay after its
// start (never with sim_never_ready), and leaves sim_stop_delay after a
// stop. A GPU with RefuseRelease set (nvmlsim's zombie mode) refuses: its
// workload ignores stop and kill alike.
//
// Sim also watches the switcher: every Start onto a GPU that already has a
// process or a running instance is recorded as a violation.
type Sim struct {
	srv *nvmlsim.Server
	now func() time.Time

	mu         sync.Mutex // guards the fields below; never held while calling srv
	seq        int
	inst       map[string]*simInst
	calls      []SimCall
	violations []string
	faults     map[string]SimFault // by GPU UUID
}

// SimFault is misbehaviour of the workloads started on one GPU, as seen
// in the field.
type SimFault struct {
	// StopLies: a graceful Stop reports success but the process stays (a
	// stop_command that exits 0 while the miner ignores SIGTERM); a
	// forced stop still kills it.
	StopLies bool
	// LandOn is the UUID of the GPU the workload's process appears on
	// instead (a CUDA_VISIBLE_DEVICES mistake); "" for its own.
	LandOn string
}

// SetFault sets the misbehaviour of workloads started on a GPU from now
// on (the zero SimFault clears it).
func (s *Sim) SetFault(uuid string, f SimFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == nil {
		s.faults = map[string]SimFault{}
	}
	s.faults[uuid] = f
}

type simInst struct {
	h           Handle
	on          string // the GPU its process is on
	pid         uint32
	readyAt     time.Time
	neverReady  bool
	cancelStart func() bool
}

// SimCall records one Start or Stop, with the GPU's power limit at that
// moment (tests check that limits are lowered before load moves and raised
// only after).
type SimCall struct {
	Op           string // "start", "stop", "kill"
	Instance     Instance
	PowerLimitMW uint32
	Processes    int
	At           time.Time
	Err          string
}

var _ Runtime = (*Sim)(nil)

// NewSim returns a simulated runtime over a simulated GPU server.
func NewSim(o SimOptions) *Sim {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sim{srv: o.Server, now: o.Now, inst: map[string]*simInst{}}
}

// Kind implements Runtime.
func (s *Sim) Kind() string { return KindSimulated }

func (s *Sim) record(c SimCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) >= maxSimCalls {
		s.calls = s.calls[1:]
	}
	s.calls = append(s.calls, c)
}

// Start implements Runtime.
func (s *Sim) Start(ctx context.Context, spec Spec, in Instance) (Handle, error) {
	sp := ParamsOf[SimParams](spec.Definition)
	if err := ctx.Err(); err != nil {
		return Handle{}, err
	}
	st, err := s.srv.State(in.GPUUUID)
	if err != nil {
		return Handle{}, fmt.Errorf("simulated runtime: %w", err)
	}
	now := s.now()
	s.mu.Lock()
	for _, other := range s.inst {
		if other.h.GPUUUID == in.GPUUUID {
			s.violations = append(s.violations, fmt.Sprintf("%s started beside %s", in, other.h.Instance))
		}
	}
	if len(st.Processes) > 0 {
		s.violations = append(s.violations, fmt.Sprintf("%s started on a GPU with %d process(es)", in, len(st.Processes)))
	}
	s.seq++
	pid := uint32(40000 + s.seq)
	h := Handle{Runtime: KindSimulated, ID: fmt.Sprintf("sim-%d", s.seq), Instance: in, StartedAt: now}
	on := in.GPUUUID
	if f := s.faults[in.GPUUUID]; f.LandOn != "" {
		on = f.LandOn
	}
	inst := &simInst{h: h, on: on, pid: pid, readyAt: now.Add(sp.ReadyDelay), neverReady: sp.NeverReady}
	s.inst[h.ID] = inst
	s.mu.Unlock()
	s.record(SimCall{Op: "start", Instance: in, PowerLimitMW: st.PowerLimitMW, Processes: len(st.Processes), At: now})

	mem := uint64(sp.MemoryMiB) << 20
	load := sp.Load
	proc := nvmlsim.Process{PID: pid, UsedMemory: mem, Comm: spec.Name, Env: MarkerEnv(h.Marker(), in)}
	cancel, err := s.srv.Schedule(sp.StartDelay, on, func(g *nvmlsim.GPUState) {
		g.AddProcess(proc)
		g.SetLoad(load)
	})
	if err != nil {
		s.mu.Lock()
		delete(s.inst, h.ID)
		s.mu.Unlock()
		return Handle{}, fmt.Errorf("simulated runtime: starting %s: %w", in, err)
	}
	s.mu.Lock()
	inst.cancelStart = cancel
	s.mu.Unlock()
	return h, nil
}

// Status implements Runtime.
func (s *Sim) Status(ctx context.Context, _ Spec, h Handle) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	s.mu.Lock()
	inst := s.inst[h.ID]
	s.mu.Unlock()
	if inst == nil {
		return Status{Gone: true, Detail: "no such simulated workload"}, nil
	}
	st, err := s.srv.State(inst.on)
	if err != nil {
		return Status{}, fmt.Errorf("simulated runtime: %w", err)
	}
	up := slices.ContainsFunc(st.Processes, func(p nvmlsim.Process) bool { return p.PID == inst.pid })
	switch {
	case !up:
		return Status{Running: true, Detail: "starting: no process on the GPU yet"}, nil
	case inst.neverReady:
		return Status{Running: true, Detail: "readiness never comes (sim_never_ready)"}, nil
	case s.now().Before(inst.readyAt):
		return Status{Running: true, Detail: "loading: ready at " + inst.readyAt.UTC().Format(time.RFC3339)}, nil
	}
	return Status{Running: true, Ready: true}, nil
}

// Stop implements Runtime.
func (s *Sim) Stop(ctx context.Context, spec Spec, h Handle, force bool) error {
	sp := ParamsOf[SimParams](spec.Definition)
	if err := ctx.Err(); err != nil {
		return err
	}
	op := "stop"
	if force {
		op = "kill"
	}
	s.mu.Lock()
	inst := s.inst[h.ID]
	s.mu.Unlock()
	if inst == nil {
		return nil
	}
	st, err := s.srv.State(inst.on)
	if err != nil {
		return fmt.Errorf("simulated runtime: %w", err)
	}
	call := SimCall{Op: op, Instance: h.Instance, PowerLimitMW: st.PowerLimitMW, Processes: len(st.Processes), At: s.now()}
	if st.RefuseRelease {
		err := fmt.Errorf("simulated runtime: %s: process %d ignored the %s and still holds the GPU (simulated refuse-release)",
			h.Instance, inst.pid, map[bool]string{false: "SIGTERM", true: "SIGKILL"}[force])
		call.Err = err.Error()
		s.record(call)
		return err
	}
	s.record(call)
	s.mu.Lock()
	lies := s.faults[h.GPUUUID].StopLies && !force
	if !lies {
		delete(s.inst, h.ID)
	}
	cancelStart := inst.cancelStart
	s.mu.Unlock()
	if lies {
		return nil // "stopped", says the lying stop; the process runs on
	}
	if cancelStart != nil {
		cancelStart()
	}
	pid := inst.pid
	leave := func(g *nvmlsim.GPUState) {
		if g.StopProcess(pid) && len(g.Processes) == 0 {
			g.SetLoad(0)
		}
	}
	if force || sp.StopDelay <= 0 {
		return s.srv.Update(inst.on, leave)
	}
	_, err = s.srv.Schedule(sp.StopDelay, inst.on, leave)
	return err
}

// List implements Runtime: every simulated workload, all running.
func (s *Sim) List(ctx context.Context, _ ListQuery) ([]Listed, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Listed, 0, len(s.inst))
	for _, in := range s.inst {
		out = append(out, Listed{Handle: in.h, Running: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Instances returns the running simulated workloads, by ID.
func (s *Sim) Instances() []Handle {
	l, _ := s.List(context.Background(), ListQuery{})
	out := make([]Handle, len(l))
	for i, x := range l {
		out[i] = x.Handle
	}
	return out
}

// Calls returns the recorded Start and Stop calls, oldest first.
func (s *Sim) Calls() []SimCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Violations lists every Start onto a GPU that was not free.
func (s *Sim) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// PIDOf returns the process ID a simulated workload shows on its GPU.
func (s *Sim) PIDOf(h Handle) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst[h.ID]
	if in == nil {
		return 0, false
	}
	return in.pid, true
}
