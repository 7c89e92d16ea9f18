// Package nvmlsim is a simulated NVML server for demos and tests: go-nvml's
// eight-GPU DGX A100 mock (pkg/nvml/mock/dgxa100) with the parts it leaves
// unwired filled in (telemetry, processes, events, power limits, ECC, row
// remapping) and knobs to drive them: per-GPU state, injected XIDs and ECC
// errors, lost GPUs, GeForce-style unsupported fields, processes that appear
// or refuse to leave.
//
// A Server is a gonvml.Interface: hand it to anything that takes one. Its
// UUIDs are deterministic (derived from Options.Node and the GPU index), so
// tests and demo configs can name GPUs. Every method is safe for concurrent
// use.
//
// The calls proxyd makes are implemented as methods on Device and Server
// rather than through the mock's XxxFunc fields: the mock records every call
// it sees, which would grow without bound in a simulated daemon left running
// for days. Everything else (MIG bookkeeping, unwired calls) is the mock's.
//
// Real processes on simulated GPUs: with Options.Procs set (nvml.OpenLibrary
// sets it for [gpu] backend = "simulated"), every process on this machine
// whose environment has PROXYD_SIM_GPU=<a GPU's UUID or index> is listed as
// a compute process of that GPU, using PROXYD_SIM_GPU_MIB MiB of its memory
// (default 1024). They are found in /proc on every process or memory query
// (one scan serves the queries of one telemetry pass), so a script or test
// outside this repository can put load on a simulated GPU by starting any
// program with that variable, and take it off by ending it. An index names
// that GPU on every simulated server of the machine, a UUID only on servers
// of the same Node (PROXYD_SIM_NODE for a daemon). Server is also a
// gpuproc.Inspector: it answers for its simulated processes (their Env) and
// reads /proc for real ones.
package nvmlsim

import (
	"fmt"
	"slices"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/google/uuid"

	"github.com/hashgate/proxyd/gpuproc"
)

// busIDs are the PCI bus ids of a real DGX A100's eight GPUs.
var busIDs = [8]string{
	"00000000:07:00.0", "00000000:0F:00.0", "00000000:47:00.0", "00000000:4E:00.0",
	"00000000:87:00.0", "00000000:90:00.0", "00000000:B7:00.0", "00000000:BD:00.0",
}

// uuidSpace namespaces the deterministic UUIDs.
var uuidSpace = uuid.MustParse("5f0f6a3c-6b1e-4d55-9a51-70726f787964")

// Options configures a simulated server.
type Options struct {
	// Node seeds the GPU UUIDs; servers with the same Node (default
	// "proxyd-sim") have the same UUIDs.
	Node string
	// AfterFunc schedules Schedule's updates; nil uses time.AfterFunc. Tests
	// with a fake clock pass their own.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Procs, when set, is where real processes with PROXYD_SIM_GPU are
	// found (and inspected); nil: simulated processes only.
	Procs *gpuproc.ProcFS
}

// Server is a simulated NVML library with eight A100 GPUs.
type Server struct {
	*dgxa100.Server

	afterFunc func(time.Duration, func()) func() bool
	devices   []*Device // fixed after New
	procs     *gpuproc.ProcFS

	scanMu sync.Mutex // guards scan; held while /proc is read, never with mu
	scan   realScan

	mu        sync.Mutex // guards every Device's state, the event sets and the fields below
	sets      map[*EventSet]struct{}
	initErr   gonvml.Return
	waitErr   gonvml.Return
	inits     int
	timers    map[int]func() bool
	nextTimer int
	closed    bool
}

var _ gonvml.Interface = (*Server)(nil)

// New returns a server with eight idle A100s (DefaultState) and
// deterministic UUIDs.
func New(opts Options) *Server {
	if opts.Node == "" {
		opts.Node = "proxyd-sim"
	}
	s := &Server{
		Server: dgxa100.New(),
		sets:   map[*EventSet]struct{}{},
		timers: map[int]func() bool{},
	}
	s.afterFunc, s.procs = opts.AfterFunc, opts.Procs
	if s.afterFunc == nil {
		s.afterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	for i, d := range s.Server.Devices {
		raw := d.(*dgxa100.Device)
		// Overwrite the mock's random identity before anything can read it.
		raw.UUID = "GPU-" + uuid.NewSHA1(uuidSpace, fmt.Appendf(nil, "%s/%d", opts.Node, i)).String()
		raw.PciBusID = busIDs[i]
		s.devices = append(s.devices, &Device{Device: raw, srv: s, state: DefaultState()})
	}
	return s
}

// Devices returns the simulated GPUs in index order.
func (s *Server) Devices() []*Device { return slices.Clone(s.devices) }

// UUIDs returns the GPUs' UUIDs in index order.
func (s *Server) UUIDs() []string {
	out := make([]string, len(s.devices))
	for i, d := range s.devices {
		out[i] = d.Device.UUID
	}
	return out
}

// Device returns the GPU with this UUID.
func (s *Server) Device(uuid string) (*Device, error) {
	for _, d := range s.devices {
		if d.Device.UUID == uuid {
			return d, nil
		}
	}
	return nil, fmt.Errorf("nvmlsim: no simulated GPU with UUID %q", uuid)
}

// Update changes one GPU's state atomically.
func (s *Server) Update(uuid string, fn func(*GPUState)) error {
	d, err := s.Device(uuid)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&d.state)
	return nil
}

// UpdateAll changes every GPU's state atomically.
func (s *Server) UpdateAll(fn func(*GPUState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		fn(&d.state)
	}
}

// State returns a copy of one GPU's state.
func (s *Server) State(uuid string) (GPUState, error) {
	d, err := s.Device(uuid)
	if err != nil {
		return GPUState{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return d.state.clone(), nil
}

// Schedule applies fn to a GPU's state after delay (a process that shows up
// a few seconds after its container starts, say). The returned stop cancels
// it if it has not run; Close cancels everything still pending.
func (s *Server) Schedule(delay time.Duration, uuid string, fn func(*GPUState)) (stop func() bool, err error) {
	d, err := s.Device(uuid)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("nvmlsim: server closed")
	}
	id := s.nextTimer
	s.nextTimer++
	s.timers[id] = nil // pending; the timer's stop func is stored below
	s.mu.Unlock()

	// Outside s.mu: an AfterFunc may run f at once.
	timerStop := s.afterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, pending := s.timers[id]; !pending {
			return
		}
		delete(s.timers, id)
		fn(&d.state)
	})
	s.mu.Lock()
	if _, pending := s.timers[id]; pending {
		s.timers[id] = timerStop
	}
	s.mu.Unlock()
	return func() bool {
		s.mu.Lock()
		st, pending := s.timers[id]
		delete(s.timers, id)
		s.mu.Unlock()
		if st != nil {
			st()
		}
		return pending
	}, nil
}

// Close cancels every pending Schedule. The server still answers calls.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for id, stop := range s.timers {
		if stop != nil {
			stop()
		}
		delete(s.timers, id)
	}
}

// StartProcess makes a process with mem bytes of GPU memory appear on a GPU.
func (s *Server) StartProcess(uuid string, pid uint32, mem uint64) error {
	return s.Update(uuid, func(g *GPUState) { g.StartProcess(pid, mem) })
}

// StopProcess removes a process, unless the GPU refuses to release.
func (s *Server) StopProcess(uuid string, pid uint32) error {
	return s.Update(uuid, func(g *GPUState) { g.StopProcess(pid) })
}

// Lose makes every call on the GPU return ERROR_GPU_IS_LOST, as after it
// fell off the bus. (A real GPU usually reports XID 79 first: InjectXID it
// too where that matters.)
func (s *Server) Lose(uuid string) error {
	return s.Update(uuid, func(g *GPUState) { g.Lost = true })
}

// Revive undoes Lose, as a node reboot or a successful GPU reset would.
func (s *Server) Revive(uuid string) error {
	return s.Update(uuid, func(g *GPUState) { g.Lost = false })
}

// InjectXID delivers an XID critical-error event for the GPU to every event
// set it is registered on for XIDs, and returns how many sets got it.
func (s *Server) InjectXID(uuid string, xid uint64) (int, error) {
	d, err := s.Device(uuid)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliver(d, gonvml.EventTypeXidCriticalError, xid), nil
}

// InjectUncorrectedECC adds n uncorrected (double-bit) ECC errors to the
// GPU's volatile counter and delivers the ECC event where registered. It
// returns how many event sets got the event.
func (s *Server) InjectUncorrectedECC(uuid string, n uint64) (int, error) {
	d, err := s.Device(uuid)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d.state.ECCUncorrected += n
	return s.deliver(d, gonvml.EventTypeDoubleBitEccError, 0), nil
}

// FailInit makes Init return ret (ERROR_LIBRARY_NOT_FOUND,
// ERROR_DRIVER_NOT_LOADED…) until called again with SUCCESS.
func (s *Server) FailInit(ret gonvml.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initErr = ret
}

// FailEventWait makes every EventSet.Wait return ret at once until called
// again with SUCCESS.
func (s *Server) FailEventWait(ret gonvml.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitErr = ret
	for set := range s.sets {
		set.wake()
	}
}

// EventSets is how many event sets are live (created and not freed): a
// leak check for tests.
func (s *Server) EventSets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sets)
}

// Initialized is Init calls minus Shutdown calls: a leak check for tests.
func (s *Server) Initialized() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inits
}

// deliver queues an event on every set the device is registered on for
// eventType. Callers hold s.mu.
func (s *Server) deliver(d *Device, eventType, data uint64) int {
	n := 0
	for set := range s.sets {
		if set.masks[d]&eventType == 0 {
			continue
		}
		set.push(gonvml.EventData{Device: d, EventType: eventType, EventData: data,
			GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF})
		n++
	}
	return n
}

// Init implements gonvml.Interface.
func (s *Server) Init() gonvml.Return {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.initErr != gonvml.SUCCESS {
		return s.initErr
	}
	s.inits++
	return gonvml.SUCCESS
}

// Shutdown implements gonvml.Interface.
func (s *Server) Shutdown() gonvml.Return {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inits == 0 {
		return gonvml.ERROR_UNINITIALIZED
	}
	s.inits--
	return gonvml.SUCCESS
}

// DeviceGetCount implements gonvml.Interface.
func (s *Server) DeviceGetCount() (int, gonvml.Return) { return len(s.devices), gonvml.SUCCESS }

// DeviceGetHandleByIndex implements gonvml.Interface.
func (s *Server) DeviceGetHandleByIndex(i int) (gonvml.Device, gonvml.Return) {
	if i < 0 || i >= len(s.devices) {
		return nil, gonvml.ERROR_INVALID_ARGUMENT
	}
	return s.devices[i], gonvml.SUCCESS
}

// DeviceGetHandleByUUID implements gonvml.Interface.
func (s *Server) DeviceGetHandleByUUID(uuid string) (gonvml.Device, gonvml.Return) {
	d, err := s.Device(uuid)
	if err != nil {
		return nil, gonvml.ERROR_NOT_FOUND
	}
	return d, gonvml.SUCCESS
}

// DeviceGetHandleByPciBusId implements gonvml.Interface.
func (s *Server) DeviceGetHandleByPciBusId(busID string) (gonvml.Device, gonvml.Return) {
	for _, d := range s.devices {
		if d.Device.PciBusID == busID {
			return d, gonvml.SUCCESS
		}
	}
	return nil, gonvml.ERROR_NOT_FOUND
}

// EventSetCreate implements gonvml.Interface.
func (s *Server) EventSetCreate() (gonvml.EventSet, gonvml.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := &EventSet{srv: s, masks: map[*Device]uint64{}, signal: make(chan struct{}, 1)}
	s.sets[set] = struct{}{}
	return set, gonvml.SUCCESS
}

// EventSetWait implements gonvml.Interface.
func (s *Server) EventSetWait(set gonvml.EventSet, timeoutMs uint32) (gonvml.EventData, gonvml.Return) {
	return set.Wait(timeoutMs)
}

// EventSetFree implements gonvml.Interface.
func (s *Server) EventSetFree(set gonvml.EventSet) gonvml.Return { return set.Free() }

// ErrorString implements gonvml.Interface.
func (s *Server) ErrorString(r gonvml.Return) string { return r.Error() }
