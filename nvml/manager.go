package nvml

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/gpuproc"
)

// Defaults for Options' zero values.
const (
	DefaultPollInterval    = 2 * time.Second
	DefaultSlowdownSustain = time.Minute
	DefaultEventWait       = time.Second
)

// Bounds on what the Manager remembers per GPU.
const (
	maxStickyReasons = 32
	maxRecentEvents  = 16
	// eventErrorsBeforeRebuild: consecutive event-wait failures after which
	// the event set is freed and created again.
	eventErrorsBeforeRebuild = 10
	// eventRetry is how often a failed event-set creation is retried.
	eventRetry = 10 * time.Second
)

// DefaultAppXIDs are the XIDs NVIDIA's device plugin treats as application
// faults, not GPU faults: 13, 31, 43, 45, 68, 109.
func DefaultAppXIDs() []uint64 { return []uint64{13, 31, 43, 45, 68, 109} }

// Clock tells the time; tests pass a fake to make "sustained for a minute"
// take no time at all.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Options tune a Manager; the zero value of each field is its default.
type Options struct {
	// Backend names the library in reports ("nvml", "simulated").
	Backend string
	// PollInterval is how often telemetry is sampled.
	PollInterval time.Duration
	// AppXIDs are XIDs that do not make a GPU unhealthy. nil means
	// DefaultAppXIDs; an empty, non-nil list makes every XID critical.
	AppXIDs []uint64
	// SlowdownSustain is how long a thermal or hardware slowdown must last
	// before the GPU is degraded.
	SlowdownSustain time.Duration
	// EventWait bounds each wait on the NVML event set, so the event loop
	// turns (beats, sees Stop and Resume) at least this often.
	EventWait time.Duration
	Clock     Clock
	Log       *zap.Logger
	// Heartbeat registers a loop with the daemon's liveness board: beat is
	// called every turn, done when the loop ends. nil: no liveness.
	Heartbeat func(loop string, maxAge time.Duration) (beat func(), done func())
	// Processes tells whose each GPU process is (every sample's processes
	// get an Owner). nil: the Library's own (Library.Procs); over a bare
	// gonvml.Interface, which cannot say whether its PIDs are real, none
	// (Owner stays empty).
	Processes gpuproc.Inspector
}

func (o *Options) normalize() {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.AppXIDs == nil {
		o.AppXIDs = DefaultAppXIDs()
	}
	if o.SlowdownSustain <= 0 {
		o.SlowdownSustain = DefaultSlowdownSustain
	}
	if o.EventWait <= 0 {
		o.EventWait = DefaultEventWait
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Heartbeat == nil {
		o.Heartbeat = func(string, time.Duration) (func(), func()) { return func() {}, func() {} }
	}
}

// Manager watches the GPUs of one NVML library: it holds their inventory,
// samples telemetry on an interval, listens for XID and ECC events and keeps
// a health verdict per GPU, and it carries out the few control operations
// the switcher needs (power limits). Readers never wait on NVML: they get
// the latest published state.
//
// Build it with New over an initialised library, Start it, Stop it.
type Manager struct {
	lib    gonvml.Interface
	opts   Options
	log    *zap.Logger
	appXID map[uint64]bool
	system System
	order  []*gpu          // by index; fixed after New
	byUUID map[string]*gpu // fixed after New

	// sampleMu serialises sampling passes (the poll loop, SampleNow and
	// Resume's probe) so that samples are applied in the order taken.
	sampleMu sync.Mutex

	// mu guards every gpu's mutable fields and the fields below it. NVML is
	// never called with mu held.
	mu          sync.Mutex
	subs        map[*Subscription]struct{}
	problems    []string // inventory problems, fixed after New
	eventErr    error    // why event monitoring is down; nil when up
	eventErrors uint64   // failed event-set waits, ever
	reasonSeq   uint64   // orders reason sightings
	running     bool

	wake      chan struct{}  // capacity 1: "sample now" for the poll loop
	resumeReq chan resumeReq // Resume → event loop
	cancel    context.CancelFunc
	stopped   chan struct{} // closed by Stop
	loops     sync.WaitGroup

	// known returns the workloads proxyd runs now, for attribution; set by
	// SetKnownWorkloads, read by sampling passes.
	known atomic.Pointer[func() []gpuproc.Known]
}

// gpu is the Manager's record of one GPU.
type gpu struct {
	info Info
	// ctl serialises control operations (power limits) on this GPU.
	ctl sync.Mutex

	// guarded by Manager.mu:
	dev             gonvml.Device
	tel             *Telemetry
	seq             uint64
	sticky          []Reason // unhealthy reasons: cleared only by Resume
	live            []Reason // degraded reasons from the latest sample
	health          Health
	lost            bool
	thermalSince    time.Time
	hwSlowSince     time.Time
	eccBaseline     uint64 // uncorrected count accepted by the last Resume
	eccSeen         uint64 // highest uncorrected count already reported
	lastXID         uint64
	xids            map[uint64]uint64
	events          []Event
	eventsMonitored bool
}

func (g *gpu) label() string { return fmt.Sprintf("GPU %d (%s)", g.info.Index, g.info.UUID) }

// New reads the driver versions and the GPU inventory from lib, which the
// caller has initialised (Init returned SUCCESS) and shuts down after Stop.
// A GPU that cannot even report its UUID is left out and named in
// Node().Problems; other unreadable properties are left empty.
func New(lib gonvml.Interface, opts Options) (*Manager, error) {
	opts.normalize()
	if l, ok := lib.(*Library); ok && opts.Processes == nil {
		opts.Processes = l.Procs
	}
	m := &Manager{
		lib:       lib,
		opts:      opts,
		log:       opts.Log,
		appXID:    map[uint64]bool{},
		byUUID:    map[string]*gpu{},
		subs:      map[*Subscription]struct{}{},
		wake:      make(chan struct{}, 1),
		resumeReq: make(chan resumeReq),
		stopped:   make(chan struct{}),
	}
	for _, x := range opts.AppXIDs {
		m.appXID[x] = true
	}
	m.system = readSystem(lib)
	n, ret := lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, fmt.Errorf("listing GPUs: %w", retErr("DeviceGetCount", "", ret))
	}
	now := opts.Clock.Now()
	for i := range n {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			m.problem(fmt.Sprintf("GPU at index %d left out: %v", i, retErr("DeviceGetHandleByIndex", "", ret)))
			continue
		}
		info, err := readInfo(dev, i)
		if err != nil {
			m.problem(fmt.Sprintf("GPU at index %d left out: %v", i, err))
			continue
		}
		if _, dup := m.byUUID[info.UUID]; dup {
			m.problem(fmt.Sprintf("GPU at index %d left out: UUID %s seen twice", i, info.UUID))
			continue
		}
		g := &gpu{info: info, dev: dev, xids: map[uint64]uint64{},
			health: Health{State: Healthy, Reasons: []Reason{}, Since: now}}
		m.order = append(m.order, g)
		m.byUUID[info.UUID] = g
	}
	slices.SortFunc(m.order, func(a, b *gpu) int { return cmp.Compare(a.info.Index, b.info.Index) })
	return m, nil
}

func (m *Manager) problem(msg string) {
	m.log.Error("GPU inventory problem", zap.String("problem", msg))
	m.problems = append(m.problems, msg)
}

func readSystem(lib gonvml.Interface) System {
	var s System
	if v, ret := lib.SystemGetDriverVersion(); ret == gonvml.SUCCESS {
		s.DriverVersion = v
	}
	if v, ret := lib.SystemGetNVMLVersion(); ret == gonvml.SUCCESS {
		s.NVMLVersion = v
	}
	if v, ret := lib.SystemGetCudaDriverVersion(); ret == gonvml.SUCCESS {
		s.CUDADriverVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	return s
}

func readInfo(dev gonvml.Device, index int) (Info, error) {
	info := Info{Index: index, Minor: -1}
	uuid, ret := dev.GetUUID()
	if ret != gonvml.SUCCESS {
		return info, retErr("GetUUID", "", ret)
	}
	info.UUID = uuid
	if i, ret := dev.GetIndex(); ret == gonvml.SUCCESS {
		info.Index = i
	}
	if minor, ret := dev.GetMinorNumber(); ret == gonvml.SUCCESS {
		info.Minor = minor
		info.DevicePath = fmt.Sprintf("/dev/nvidia%d", minor)
	}
	if name, ret := dev.GetName(); ret == gonvml.SUCCESS {
		info.Name = name
	}
	if pci, ret := dev.GetPciInfo(); ret == gonvml.SUCCESS {
		info.PCIBusID = cString(pci.BusId[:])
	}
	if mem, ret := dev.GetMemoryInfo(); ret == gonvml.SUCCESS {
		info.MemoryTotalBytes = mem.Total
	}
	if arch, ret := dev.GetArchitecture(); ret == gonvml.SUCCESS {
		info.Architecture = architectureName(arch)
	}
	if major, minor, ret := dev.GetCudaComputeCapability(); ret == gonvml.SUCCESS {
		info.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
	}
	if cur, pending, ret := dev.GetMigMode(); ret == gonvml.SUCCESS {
		info.MIG = &MIGMode{Current: cur == gonvml.DEVICE_MIG_ENABLE, Pending: pending == gonvml.DEVICE_MIG_ENABLE}
	}
	return info, nil
}

func cString(b []uint8) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Start takes a first telemetry sample and registers for events before it
// returns (so the state it leaves is already a verdict), then keeps
// sampling and listening in two goroutines until Stop. ctx bounds only the
// first sample.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.running || m.cancel != nil {
		m.mu.Unlock()
		return errors.New("nvml: Manager started twice")
	}
	m.running = true
	loopCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.mu.Unlock()

	if err := m.SampleNow(ctx); err != nil {
		cancel()
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
		close(m.stopped)
		return fmt.Errorf("first GPU telemetry sample: %w", err)
	}
	set, _ := m.buildEventSet(nil)

	pollBeat, pollDone := m.opts.Heartbeat("gpu-telemetry", max(30*time.Second, 5*m.opts.PollInterval))
	eventBeat, eventDone := m.opts.Heartbeat("gpu-events", max(15*time.Second, 5*m.opts.EventWait))
	m.loops.Add(2)
	go func() {
		defer m.loops.Done()
		defer pollDone()
		m.pollLoop(loopCtx, pollBeat)
	}()
	go func() {
		defer m.loops.Done()
		defer eventDone()
		m.eventLoop(loopCtx, set, eventBeat)
	}()
	m.log.Info("GPU monitoring started", zap.String("backend", m.opts.Backend), zap.Int("gpus", len(m.order)),
		zap.String("driver", m.system.DriverVersion), zap.String("cuda", m.system.CUDADriverVersion),
		zap.Duration("poll_interval", m.opts.PollInterval))
	return nil
}

// Stop ends both loops and frees the event set. It returns when they have
// ended, or with ctx's error if an NVML call hangs past ctx (the loops then
// end on their own once the call returns).
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	if m.cancel == nil {
		m.mu.Unlock()
		return nil
	}
	wasRunning := m.running
	m.running = false
	m.cancel()
	m.mu.Unlock()
	if wasRunning {
		close(m.stopped)
	}
	done := make(chan struct{})
	go func() {
		m.loops.Wait()
		close(done)
	}()
	select {
	case <-done:
		m.log.Info("GPU monitoring stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("GPU loops still inside an NVML call at shutdown: %w", ctx.Err())
	}
}

// Ready is nil while telemetry and event monitoring run, else why not.
func (m *Manager) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return ErrNotRunning
	}
	if m.eventErr != nil {
		return fmt.Errorf("XID event monitoring is down, GPU health cannot be proven: %w", m.eventErr)
	}
	return nil
}

func (m *Manager) pollLoop(ctx context.Context, beat func()) {
	t := time.NewTicker(m.opts.PollInterval)
	defer t.Stop()
	for {
		beat()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
		}
		if err := m.SampleNow(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("GPU telemetry pass failed", zap.Error(err))
		}
	}
}

// kickPoll asks the poll loop for a sample now (after an event-wait error,
// say, to find out which GPU is lost).
func (m *Manager) kickPoll() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// SampleNow samples every GPU at once and applies the results before it
// returns. The poll loop calls it on every tick; tests and the `gpus`
// command call it directly.
func (m *Manager) SampleNow(ctx context.Context) error {
	m.sampleMu.Lock()
	defer m.sampleMu.Unlock()
	for _, g := range m.order {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.mu.Lock()
		dev := g.dev
		m.mu.Unlock()
		t, lost := readTelemetry(dev, m.opts.Clock.Now())
		m.ownProcesses(t)
		m.mu.Lock()
		m.apply(g, t, lost)
		m.mu.Unlock()
	}
	return nil
}

// SetKnownWorkloads installs what tells attribution which workloads proxyd
// runs now (the switcher's handles): a container's process whose
// environment cannot be read is then recognised by its container. fn must
// not block nor call the Manager; nil removes it.
func (m *Manager) SetKnownWorkloads(fn func() []gpuproc.Known) {
	if fn == nil {
		m.known.Store(nil)
		return
	}
	m.known.Store(&fn)
}

// ownProcesses sets the Owner of every process of a sample before it is
// published (a PID listed as compute and graphics is read once).
func (m *Manager) ownProcesses(t *Telemetry) {
	if t == nil || m.opts.Processes == nil || (len(t.ComputeProcesses) == 0 && len(t.GraphicsProcesses) == 0) {
		return
	}
	var known []gpuproc.Known
	if fn := m.known.Load(); fn != nil {
		known = (*fn)()
	}
	seen := map[uint32]gpuproc.Owner{}
	for _, list := range [][]Process{t.ComputeProcesses, t.GraphicsProcesses} {
		for i := range list {
			o, ok := seen[list[i].PID]
			if !ok {
				o = gpuproc.Classify(m.opts.Processes.Inspect(int(list[i].PID)), known)
				seen[list[i].PID] = o
			}
			list[i].Owner = o
		}
	}
}

// GPUs returns every GPU's latest state, by index.
func (m *Manager) GPUs() []GPU {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]GPU, len(m.order))
	for i, g := range m.order {
		out[i] = g.view()
	}
	return out
}

// GPU returns one GPU's latest state.
func (m *Manager) GPU(uuid string) (GPU, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return GPU{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return g.view(), nil
}

// Health returns one GPU's health verdict.
func (m *Manager) Health(uuid string) (Health, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return Health{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return g.health.clone(), nil
}

// Telemetry returns one GPU's latest sample (nil before the first). The
// value is shared and must not be modified.
func (m *Manager) Telemetry(uuid string) (*Telemetry, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return g.tel, nil
}

// Node returns the driver, every GPU and the problems found at inventory.
func (m *Manager) Node() Node {
	gpus := m.GPUs()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := Node{Backend: m.opts.Backend, System: m.system, GPUs: gpus, Problems: slices.Clone(m.problems)}
	if m.eventErr != nil {
		n.Problems = append(n.Problems, "XID event monitoring is down: "+m.eventErr.Error())
	}
	return n
}

// System returns the driver's versions.
func (m *Manager) System() System { return m.system }

func (m *Manager) lookup(uuid string) (*gpu, error) {
	g, ok := m.byUUID[uuid]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownGPU, uuid)
	}
	return g, nil
}

// view copies a GPU's state for a reader. Callers hold m.mu.
func (g *gpu) view() GPU {
	info := g.info
	if info.MIG != nil {
		mig := *info.MIG
		info.MIG = &mig
	}
	ev := slices.Clone(g.events)
	if ev == nil {
		ev = []Event{}
	}
	return GPU{Info: info, Telemetry: g.tel, Health: g.health.clone(), LastXID: g.lastXID,
		RecentEvents: ev, EventsMonitored: g.eventsMonitored}
}
