package nvmlsim

import (
	"strings"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestDeterministicIdentity(t *testing.T) {
	a, b, c := New(Options{}), New(Options{}), New(Options{Node: "rack7"})
	ua, ub, uc := a.UUIDs(), b.UUIDs(), c.UUIDs()
	if len(ua) != 8 {
		t.Fatalf("got %d GPUs, want 8", len(ua))
	}
	seen := map[string]bool{}
	for i := range ua {
		if ua[i] != ub[i] {
			t.Errorf("GPU %d: UUID %s then %s: not deterministic", i, ua[i], ub[i])
		}
		if ua[i] == uc[i] {
			t.Errorf("GPU %d: nodes %q and %q share UUID %s", i, "proxyd-sim", "rack7", ua[i])
		}
		if !strings.HasPrefix(ua[i], "GPU-") || len(ua[i]) != 40 {
			t.Errorf("GPU %d: UUID %q is not GPU-<uuid>", i, ua[i])
		}
		if seen[ua[i]] {
			t.Errorf("UUID %s repeated", ua[i])
		}
		seen[ua[i]] = true
		dev, ret := a.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			t.Fatalf("DeviceGetHandleByIndex(%d): %v", i, ret)
		}
		if u, _ := dev.GetUUID(); u != ua[i] {
			t.Errorf("GPU %d: GetUUID %s, UUIDs() %s", i, u, ua[i])
		}
		if byUUID, ret := a.DeviceGetHandleByUUID(ua[i]); ret != gonvml.SUCCESS || byUUID != dev {
			t.Errorf("DeviceGetHandleByUUID(%s) = %v, %v", ua[i], byUUID, ret)
		}
		pci, _ := dev.GetPciInfo()
		if got := string(pci.BusId[:16]); got != busIDs[i] {
			t.Errorf("GPU %d: bus id %q, want %q", i, got, busIDs[i])
		}
	}
	if _, ret := a.DeviceGetHandleByUUID("GPU-nope"); ret != gonvml.ERROR_NOT_FOUND {
		t.Errorf("unknown UUID: %v, want ERROR_NOT_FOUND", ret)
	}
	if _, ret := a.DeviceGetHandleByIndex(8); ret != gonvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("index 8: %v, want ERROR_INVALID_ARGUMENT", ret)
	}
}

func TestStateKnobs(t *testing.T) {
	s := New(Options{})
	uuid := s.UUIDs()[2]
	dev, _ := s.Device(uuid)
	tests := []struct {
		name  string
		set   func(g *GPUState)
		check func(t *testing.T)
	}{
		{"memory follows processes", func(g *GPUState) { g.StartProcess(42, 1<<30); g.StartProcess(43, 2<<30) }, func(t *testing.T) {
			m, _ := dev.GetMemoryInfo()
			if want := IdleMemoryUsed + 3<<30; m.Used != want || m.Free != m.Total-want {
				t.Errorf("memory %+v, want used %d", m, want)
			}
			ps, ret := dev.GetComputeRunningProcesses()
			if ret != gonvml.SUCCESS || len(ps) != 2 || ps[0].Pid != 42 {
				t.Errorf("processes %+v, %v", ps, ret)
			}
		}},
		{"refuse release keeps processes", func(g *GPUState) { g.RefuseRelease = true; g.StopAllProcesses(); g.StopProcess(42) }, func(t *testing.T) {
			if ps, _ := dev.GetComputeRunningProcesses(); len(ps) != 2 {
				t.Errorf("processes %+v, want both still there", ps)
			}
		}},
		{"release", func(g *GPUState) { g.RefuseRelease = false; g.StopAllProcesses() }, func(t *testing.T) {
			if ps, ret := dev.GetComputeRunningProcesses(); ret != gonvml.SUCCESS || ps == nil || len(ps) != 0 {
				t.Errorf("processes %+v, %v: want empty, non-nil", ps, ret)
			}
		}},
		{"load", func(g *GPUState) { g.SetLoad(1) }, func(t *testing.T) {
			u, _ := dev.GetUtilizationRates()
			p, _ := dev.GetPowerUsage()
			if u.Gpu != 100 || p != PowerLimitDefault {
				t.Errorf("util %d, power %d at full load", u.Gpu, p)
			}
		}},
		{"geforce", func(g *GPUState) { g.NotSupported = GeForceUnsupported }, func(t *testing.T) {
			if _, ret := dev.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.VOLATILE_ECC); ret != gonvml.ERROR_NOT_SUPPORTED {
				t.Errorf("ECC: %v", ret)
			}
			if _, _, _, _, ret := dev.GetRemappedRows(); ret != gonvml.ERROR_NOT_SUPPORTED {
				t.Errorf("remap: %v", ret)
			}
			if ev, _ := dev.GetSupportedEventTypes(); ev&gonvml.EventTypeDoubleBitEccError != 0 {
				t.Errorf("ECC events offered without ECC")
			}
			if _, ret := dev.GetTemperature(gonvml.TEMPERATURE_GPU); ret != gonvml.SUCCESS {
				t.Errorf("temperature: %v", ret)
			}
		}},
		{"lost", func(g *GPUState) { g.Lost = true }, func(t *testing.T) {
			if _, ret := dev.GetUUID(); ret != gonvml.ERROR_GPU_IS_LOST {
				t.Errorf("GetUUID on a lost GPU: %v", ret)
			}
			if _, ret := dev.GetMemoryInfo(); ret != gonvml.ERROR_GPU_IS_LOST {
				t.Errorf("GetMemoryInfo on a lost GPU: %v", ret)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Update(uuid, tc.set); err != nil {
				t.Fatal(err)
			}
			tc.check(t)
		})
	}
	if err := s.Update("GPU-nope", func(*GPUState) {}); err == nil {
		t.Error("Update of an unknown UUID succeeded")
	}
}

func TestPowerLimit(t *testing.T) {
	s := New(Options{})
	dev, _ := s.Device(s.UUIDs()[0])
	tests := []struct {
		name    string
		set     func(g *GPUState)
		mw      uint32
		wantRet gonvml.Return
		wantMW  uint32
	}{
		{"in range", nil, 250_000, gonvml.SUCCESS, 250_000},
		{"below min", nil, 50_000, gonvml.ERROR_INVALID_ARGUMENT, 250_000},
		{"above max", nil, 500_000, gonvml.ERROR_INVALID_ARGUMENT, 250_000},
		{"no permission", func(g *GPUState) { g.PowerSetError = gonvml.ERROR_NO_PERMISSION }, 300_000, gonvml.ERROR_NO_PERMISSION, 250_000},
		{"ignored", func(g *GPUState) { g.PowerSetError = gonvml.SUCCESS; g.PowerSetIgnored = true }, 300_000, gonvml.SUCCESS, 250_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set != nil {
				_ = s.Update(dev.UUID(), tc.set)
			}
			if ret := dev.SetPowerManagementLimit(tc.mw); ret != tc.wantRet {
				t.Errorf("Set(%d) = %v, want %v", tc.mw, ret, tc.wantRet)
			}
			if got, _ := dev.GetPowerManagementLimit(); got != tc.wantMW {
				t.Errorf("limit %d, want %d", got, tc.wantMW)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	s := New(Options{})
	uuids := s.UUIDs()
	set, ret := s.EventSetCreate()
	if ret != gonvml.SUCCESS {
		t.Fatal(ret)
	}
	d0, _ := s.Device(uuids[0])
	if ret := d0.RegisterEvents(gonvml.EventTypeXidCriticalError|gonvml.EventTypeDoubleBitEccError, set); ret != gonvml.SUCCESS {
		t.Fatalf("RegisterEvents: %v", ret)
	}
	if _, ret := set.Wait(1); ret != gonvml.ERROR_TIMEOUT {
		t.Fatalf("empty Wait: %v, want ERROR_TIMEOUT", ret)
	}
	if n, _ := s.InjectXID(uuids[1], 79); n != 0 {
		t.Errorf("XID on an unregistered GPU reached %d sets", n)
	}
	if n, _ := s.InjectXID(uuids[0], 79); n != 1 {
		t.Errorf("XID reached %d sets, want 1", n)
	}
	if n, _ := s.InjectUncorrectedECC(uuids[0], 2); n != 1 {
		t.Errorf("ECC event reached %d sets, want 1", n)
	}
	e, ret := set.Wait(0)
	if ret != gonvml.SUCCESS || e.EventType != gonvml.EventTypeXidCriticalError || e.EventData != 79 || e.Device != d0 {
		t.Errorf("first event %+v, %v", e, ret)
	}
	e, ret = set.Wait(0)
	if ret != gonvml.SUCCESS || e.EventType != gonvml.EventTypeDoubleBitEccError {
		t.Errorf("second event %+v, %v", e, ret)
	}
	if st, _ := s.State(uuids[0]); st.ECCUncorrected != 2 {
		t.Errorf("ECC counter %d, want 2", st.ECCUncorrected)
	}

	// A waiter blocked in Wait wakes for an event injected meanwhile (a lost
	// wake-up would show as a 60s timeout, not a hang).
	var wg sync.WaitGroup
	wg.Add(1)
	var got gonvml.EventData
	var gotRet gonvml.Return
	go func() {
		defer wg.Done()
		got, gotRet = set.Wait(60_000)
	}()
	// Injected before or after the goroutine blocks: either way Wait returns it.
	if _, err := s.InjectXID(uuids[0], 31); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if gotRet != gonvml.SUCCESS || got.EventData != 31 {
		t.Errorf("blocked Wait got %+v, %v", got, gotRet)
	}

	s.FailEventWait(gonvml.ERROR_UNKNOWN)
	if _, ret := set.Wait(10); ret != gonvml.ERROR_UNKNOWN {
		t.Errorf("failing Wait: %v", ret)
	}
	s.FailEventWait(gonvml.SUCCESS)
	if s.EventSets() != 1 {
		t.Errorf("%d live sets, want 1", s.EventSets())
	}
	if ret := set.Free(); ret != gonvml.SUCCESS {
		t.Errorf("Free: %v", ret)
	}
	if s.EventSets() != 0 {
		t.Errorf("%d live sets after Free, want 0", s.EventSets())
	}
	if _, ret := set.Wait(1); ret == gonvml.SUCCESS || ret == gonvml.ERROR_TIMEOUT {
		t.Errorf("Wait on a freed set: %v", ret)
	}
	if ret := d0.RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("RegisterEvents on a freed set: %v", ret)
	}
}

func TestEventQueueBounded(t *testing.T) {
	s := New(Options{})
	set, _ := s.EventSetCreate()
	d, _ := s.Device(s.UUIDs()[0])
	d.RegisterEvents(gonvml.EventTypeXidCriticalError, set)
	for range maxQueued + 10 {
		_, _ = s.InjectXID(d.UUID(), 13)
	}
	if got := set.(*EventSet).Dropped(); got != 10 {
		t.Errorf("dropped %d, want 10", got)
	}
}

// manualTimers is an AfterFunc under test control.
type manualTimers struct {
	mu  sync.Mutex
	fns []func()
}

func (m *manualTimers) afterFunc(_ time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fns = append(m.fns, f)
	return func() bool { return true }
}

func (m *manualTimers) fireAll() {
	m.mu.Lock()
	fns := m.fns
	m.fns = nil
	m.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

func TestSchedule(t *testing.T) {
	timers := &manualTimers{}
	s := New(Options{AfterFunc: timers.afterFunc})
	uuid := s.UUIDs()[5]
	if _, err := s.Schedule(3*time.Second, uuid, func(g *GPUState) { g.StartProcess(7, 1<<30) }); err != nil {
		t.Fatal(err)
	}
	cancel, _ := s.Schedule(time.Second, uuid, func(g *GPUState) { g.StartProcess(8, 1<<30) })
	if st, _ := s.State(uuid); len(st.Processes) != 0 {
		t.Fatalf("scheduled change applied early: %+v", st.Processes)
	}
	if !cancel() {
		t.Error("cancel of a pending change reported false")
	}
	timers.fireAll()
	st, _ := s.State(uuid)
	if len(st.Processes) != 1 || st.Processes[0].PID != 7 {
		t.Errorf("processes %+v, want only PID 7", st.Processes)
	}
	if _, err := s.Schedule(0, "GPU-nope", func(*GPUState) {}); err == nil {
		t.Error("Schedule on an unknown UUID succeeded")
	}
	s.Close()
	if _, err := s.Schedule(0, uuid, func(*GPUState) {}); err == nil {
		t.Error("Schedule after Close succeeded")
	}
}

func TestInitShutdown(t *testing.T) {
	s := New(Options{})
	s.FailInit(gonvml.ERROR_DRIVER_NOT_LOADED)
	if ret := s.Init(); ret != gonvml.ERROR_DRIVER_NOT_LOADED {
		t.Errorf("Init: %v", ret)
	}
	s.FailInit(gonvml.SUCCESS)
	if ret := s.Init(); ret != gonvml.SUCCESS || s.Initialized() != 1 {
		t.Errorf("Init: %v, initialized %d", ret, s.Initialized())
	}
	if ret := s.Shutdown(); ret != gonvml.SUCCESS || s.Initialized() != 0 {
		t.Errorf("Shutdown: %v, initialized %d", ret, s.Initialized())
	}
	if ret := s.Shutdown(); ret != gonvml.ERROR_UNINITIALIZED {
		t.Errorf("second Shutdown: %v", ret)
	}
}
