package nvml

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

func TestInventory(t *testing.T) {
	h := newHarness(t, Options{}, func(s *nvmlsim.Server) {
		_ = s.Update(s.UUIDs()[1], func(g *nvmlsim.GPUState) { g.MIGEnabled = true })
		_ = s.Update(s.UUIDs()[2], func(g *nvmlsim.GPUState) { g.NotSupported = nvmlsim.FeatureMIG })
	})
	n := h.m.Node()
	if n.Backend != BackendSimulated || n.DriverVersion != "550.54.15" || n.NVMLVersion != "12.550.54.15" ||
		n.CUDADriverVersion != "12.4" {
		t.Errorf("system %+v", n.System)
	}
	if len(n.GPUs) != 8 || len(n.Problems) != 0 {
		t.Fatalf("%d GPUs, problems %v; want 8, none", len(n.GPUs), n.Problems)
	}
	wantBus := []string{"00000000:07:00.0", "00000000:0F:00.0", "00000000:47:00.0", "00000000:4E:00.0",
		"00000000:87:00.0", "00000000:90:00.0", "00000000:B7:00.0", "00000000:BD:00.0"}
	for i, g := range n.GPUs {
		want := Info{
			UUID: h.uuids[i], Index: i, Minor: i, DevicePath: "/dev/nvidia" + string(rune('0'+i)),
			Name: "Mock NVIDIA A100-SXM4-40GB", PCIBusID: wantBus[i], MemoryTotalBytes: 40 << 30,
			Architecture: "Ampere", ComputeCapability: "8.0", MIG: &MIGMode{},
		}
		switch i {
		case 1:
			want.MIG = &MIGMode{Current: true, Pending: true}
		case 2:
			want.MIG = nil
		}
		got := g.Info
		if got.MIG != nil && want.MIG != nil && *got.MIG == *want.MIG {
			got.MIG, want.MIG = nil, nil
		}
		if got != want {
			t.Errorf("GPU %d:\n got %+v\nwant %+v", i, got, want)
		}
		if g.Health.State != Healthy || g.Telemetry == nil || g.Telemetry.Seq != 1 || !g.EventsMonitored {
			t.Errorf("GPU %d after Start: health %v, telemetry %v, events %v", i, g.Health.State, g.Telemetry, g.EventsMonitored)
		}
	}
	if _, err := h.m.GPU("GPU-nope"); !errors.Is(err, ErrUnknownGPU) {
		t.Errorf("unknown UUID: %v", err)
	}
}

func TestInventorySkipsUnreadableGPU(t *testing.T) {
	h := newHarness(t, Options{}, func(s *nvmlsim.Server) { _ = s.Lose(s.UUIDs()[3]) })
	n := h.m.Node()
	if len(n.GPUs) != 7 || len(n.Problems) != 1 || !strings.Contains(n.Problems[0], "index 3") ||
		!strings.Contains(n.Problems[0], "ERROR_GPU_IS_LOST") {
		t.Errorf("%d GPUs, problems %q", len(n.GPUs), n.Problems)
	}
}

func TestTelemetryChangingValues(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	tests := []struct {
		name  string
		set   func(g *nvmlsim.GPUState)
		check func(t *testing.T, tel *Telemetry)
	}{
		{"idle", func(g *nvmlsim.GPUState) {}, func(t *testing.T, tel *Telemetry) {
			if *tel.UtilizationGPU != 0 || *tel.PowerDrawMW != nvmlsim.IdlePowerMW || *tel.TemperatureC != nvmlsim.IdleTemperatureC ||
				*tel.MemoryUsedBytes != nvmlsim.IdleMemoryUsed || *tel.SlowdownTemperatureC != nvmlsim.SlowdownTempC ||
				*tel.PowerLimitMW != 400_000 || *tel.PowerConstraints != (PowerRange{100_000, 400_000}) ||
				*tel.SMClockMHz != nvmlsim.IdleSMClockMHz || *tel.MemoryClockMHz != nvmlsim.MemClockMHz ||
				!*tel.PersistenceMode || *tel.RetiredPagesPending || *tel.ECC != (ECCCounts{}) || *tel.RowRemap != (RowRemap{}) {
				t.Errorf("idle telemetry %+v", tel)
			}
			if !slices.Equal(tel.ThrottleReasonNames, []string{"idle"}) {
				t.Errorf("throttle reasons %v", tel.ThrottleReasonNames)
			}
			if ps, known := tel.Processes(); !known || len(ps) != 0 {
				t.Errorf("processes %v known %v, want none, known", ps, known)
			}
		}},
		{"loaded with processes", func(g *nvmlsim.GPUState) {
			g.SetLoad(0.5)
			g.StartProcess(1234, 8<<30)
			g.Processes = append(g.Processes, nvmlsim.Process{PID: 99, Graphics: true, NotAvailable: true})
			g.ECCCorrected = 3
		}, func(t *testing.T, tel *Telemetry) {
			if *tel.UtilizationGPU != 50 || *tel.PowerDrawMW <= nvmlsim.IdlePowerMW || *tel.MemoryUsedBytes != nvmlsim.IdleMemoryUsed+8<<30 {
				t.Errorf("util %d power %d mem %d", *tel.UtilizationGPU, *tel.PowerDrawMW, *tel.MemoryUsedBytes)
			}
			if !slices.Equal(tel.ComputeProcesses, []Process{{PID: 1234, UsedMemoryBytes: 8 << 30}}) ||
				!slices.Equal(tel.GraphicsProcesses, []Process{{PID: 99, MemoryUnknown: true}}) {
				t.Errorf("processes %+v %+v", tel.ComputeProcesses, tel.GraphicsProcesses)
			}
			if ps, _ := tel.Processes(); len(ps) != 2 {
				t.Errorf("merged processes %+v", ps)
			}
			if tel.ECC.Corrected != 3 {
				t.Errorf("ECC %+v", tel.ECC)
			}
		}},
		{"power limit lowered", func(g *nvmlsim.GPUState) { g.PowerLimitMW = 250_000 }, func(t *testing.T, tel *Telemetry) {
			if *tel.PowerLimitMW != 250_000 {
				t.Errorf("limit %d", *tel.PowerLimitMW)
			}
		}},
	}
	var lastSeq uint64 = 1
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.update(t, 4, tc.set)
			h.clock.Advance(2 * time.Second)
			h.sample(t)
			tel := h.gpu(t, 4).Telemetry
			if tel.Seq != lastSeq+1 || !tel.SampledAt.Equal(h.clock.Now()) {
				t.Errorf("seq %d at %v, want %d at %v", tel.Seq, tel.SampledAt, lastSeq+1, h.clock.Now())
			}
			lastSeq = tel.Seq
			if len(tel.NotSupported) != 0 || len(tel.Errors) != 0 {
				t.Errorf("not supported %v, errors %v", tel.NotSupported, tel.Errors)
			}
			tc.check(t, tel)
		})
	}
}

func TestNotSupportedIsNotAFault(t *testing.T) {
	h := newHarness(t, Options{}, func(s *nvmlsim.Server) {
		s.UpdateAll(func(g *nvmlsim.GPUState) {
			g.NotSupported = nvmlsim.GeForceUnsupported | nvmlsim.FeatureProcesses | nvmlsim.FeaturePowerLimit
		})
	})
	g := h.gpu(t, 0)
	tel := g.Telemetry
	want := []string{FieldPowerLimit, FieldPowerConstraints, FieldECC, FieldRowRemap, FieldRetiredPages,
		FieldComputeProcesses, FieldGraphicsProcesses}
	if !slices.Equal(tel.NotSupported, want) {
		t.Errorf("not supported %v, want %v", tel.NotSupported, want)
	}
	if tel.ECC != nil || tel.RowRemap != nil || tel.RetiredPagesPending != nil || tel.PowerLimitMW != nil ||
		tel.ComputeProcesses != nil || len(tel.Errors) != 0 {
		t.Errorf("unsupported fields filled or errors: %+v", tel)
	}
	if tel.Supported(FieldECC) || !tel.Supported(FieldTemperature) {
		t.Error("Supported disagrees with NotSupported")
	}
	if _, known := tel.Processes(); known {
		t.Error("processes reported known when NVML cannot list them")
	}
	if g.Health.State != Healthy || g.MIG != nil {
		t.Errorf("health %v, MIG %v; want healthy, no MIG", g.Health, g.MIG)
	}
	if !g.EventsMonitored {
		t.Error("XID events not monitored on a GPU without ECC")
	}
	if _, err := h.m.SetPowerLimit(context.Background(), h.uuids[0], 200_000); !errors.Is(err, ErrNotSupported) {
		t.Errorf("SetPowerLimit without support: %v", err)
	}
}

func TestXIDs(t *testing.T) {
	tests := []struct {
		name      string
		appXIDs   []uint64
		xid       uint64
		unhealthy bool
	}{
		{"XID 13 is an application fault", nil, 13, false},
		{"XID 31 is an application fault", nil, 31, false},
		{"XID 79 is a device fault", nil, 79, true},
		{"XID 48 is a device fault", nil, 48, true},
		{"configured app XID", []uint64{79}, 79, false},
		{"empty list makes 13 critical", []uint64{}, 13, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{AppXIDs: tc.appXIDs}, nil)
			sub := h.m.Subscribe()
			defer sub.Close()
			if n, err := h.sim.InjectXID(h.uuids[2], tc.xid); err != nil || n != 1 {
				t.Fatalf("InjectXID: %d sets, %v", n, err)
			}
			eventually(t, "XID recorded", func() bool { return len(h.gpu(t, 2).RecentEvents) == 1 })
			g := h.gpu(t, 2)
			ev := g.RecentEvents[0]
			if ev.XID != tc.xid || ev.Application == tc.unhealthy || g.LastXID != tc.xid {
				t.Errorf("event %+v, last XID %d", ev, g.LastXID)
			}
			if !tc.unhealthy {
				if g.Health.State != Healthy {
					t.Errorf("health %+v after application XID", g.Health)
				}
				if c := sub.Changes(); len(c) != 0 {
					t.Errorf("health changes %+v after application XID", c)
				}
				return
			}
			if g.Health.State != Unhealthy || len(g.Health.Reasons) != 1 {
				t.Fatalf("health %+v", g.Health)
			}
			r := g.Health.Reasons[0]
			if r.Code != ReasonXID || r.XID != tc.xid || r.Severity != Unhealthy || !strings.Contains(r.Message, "XID") {
				t.Errorf("reason %+v", r)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			changes, err := sub.Next(ctx)
			if err != nil || len(changes) != 1 || changes[0].UUID != h.uuids[2] || changes[0].From != Healthy ||
				changes[0].To != Unhealthy || changes[0].Health.State != Unhealthy {
				t.Errorf("changes %+v, %v", changes, err)
			}
			// Other GPUs are untouched, and unhealthy stays after clean samples.
			h.clock.Advance(time.Hour)
			h.sample(t)
			if h.gpu(t, 2).Health.State != Unhealthy || h.gpu(t, 3).Health.State != Healthy {
				t.Error("health moved without Resume")
			}
		})
	}
}

func TestXIDStormIsOneReason(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	for range 50 {
		_, _ = h.sim.InjectXID(h.uuids[0], 62)
	}
	_, _ = h.sim.InjectXID(h.uuids[0], 79)
	eventually(t, "all XIDs handled", func() bool {
		rs := h.gpu(t, 0).Health.Reasons
		return len(rs) == 2 && rs[0].Count == 50
	})
	g := h.gpu(t, 0)
	if len(g.RecentEvents) != maxRecentEvents || g.LastXID != 79 {
		t.Errorf("%d recent events, last XID %d", len(g.RecentEvents), g.LastXID)
	}
}

func TestUnattributedXID(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.m.handleEvent(gonvml.EventData{EventType: gonvml.EventTypeXidCriticalError, EventData: 13})
	if h.gpu(t, 0).Health.State != Healthy {
		t.Error("application XID without a device made GPUs unhealthy")
	}
	h.m.handleEvent(gonvml.EventData{EventType: gonvml.EventTypeXidCriticalError, EventData: 79})
	for i := range h.uuids {
		if hl := h.gpu(t, i).Health; hl.State != Unhealthy || hl.Reasons[0].Code != ReasonXIDUnattributed {
			t.Errorf("GPU %d: %+v", i, hl)
		}
	}
}

func TestECCAndRemap(t *testing.T) {
	tests := []struct {
		name       string
		set        func(g *nvmlsim.GPUState)
		event      bool
		want       State
		wantReason string
		sticky     bool
	}{
		{"uncorrected ECC counter rises", func(g *nvmlsim.GPUState) { g.ECCUncorrected += 2 }, false, Unhealthy, ReasonECCUncorrected, true},
		{"uncorrected ECC event", nil, true, Unhealthy, ReasonECCUncorrected, true},
		{"corrected ECC is fine", func(g *nvmlsim.GPUState) { g.ECCCorrected += 100 }, false, Healthy, "", false},
		{"row remap pending", func(g *nvmlsim.GPUState) { g.RemapPending = true; g.RemapCorrected = 1 }, false, Degraded, ReasonRowRemapPending, false},
		{"row remap failure", func(g *nvmlsim.GPUState) { g.RemapFailure = true }, false, Unhealthy, ReasonRowRemapFailure, true},
		{"retired pages pending", func(g *nvmlsim.GPUState) { g.RetiredPending = true }, false, Degraded, ReasonRetiredPages, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{}, nil)
			if tc.set != nil {
				h.update(t, 1, tc.set)
			}
			if tc.event {
				if n, _ := h.sim.InjectUncorrectedECC(h.uuids[1], 1); n != 1 {
					t.Fatalf("ECC event reached %d sets", n)
				}
				eventually(t, "ECC event handled", func() bool { return h.gpu(t, 1).Health.State != Healthy })
			}
			h.sample(t)
			hl := h.gpu(t, 1).Health
			if hl.State != tc.want || (tc.wantReason != "" && !slices.Contains(reasonCodes(hl), tc.wantReason)) {
				t.Fatalf("health %+v, want %s with %s", hl, tc.want, tc.wantReason)
			}
			// The condition goes away: degraded clears, unhealthy stays.
			h.update(t, 1, func(g *nvmlsim.GPUState) {
				g.RemapPending, g.RemapFailure, g.RetiredPending = false, false, false
			})
			h.sample(t)
			if got := h.gpu(t, 1).Health.State; tc.sticky && got != Unhealthy || !tc.sticky && got != Healthy {
				t.Errorf("after the condition cleared: %s (sticky %v)", got, tc.sticky)
			}
		})
	}
}

func TestECCAtStartIsUnhealthy(t *testing.T) {
	h := newHarness(t, Options{}, func(s *nvmlsim.Server) {
		_ = s.Update(s.UUIDs()[6], func(g *nvmlsim.GPUState) { g.ECCUncorrected = 1 })
	})
	if hl := h.gpu(t, 6).Health; hl.State != Unhealthy || hl.Reasons[0].Code != ReasonECCUncorrected {
		t.Errorf("a GPU with uncorrected ECC errors since the driver loaded: %+v", hl)
	}
}

func TestSlowdownSustained(t *testing.T) {
	tests := []struct {
		name   string
		set    func(g *nvmlsim.GPUState)
		reason string
	}{
		{"hw thermal bit", func(g *nvmlsim.GPUState) { g.ThrottleReasons = gonvml.ClocksThrottleReasonHwThermalSlowdown }, ReasonThermalSlowdown},
		{"sw thermal bit", func(g *nvmlsim.GPUState) { g.ThrottleReasons = gonvml.ClocksThrottleReasonSwThermalSlowdown }, ReasonThermalSlowdown},
		{"temperature at slowdown", func(g *nvmlsim.GPUState) { g.TemperatureC = 90 }, ReasonThermalSlowdown},
		{"power brake", func(g *nvmlsim.GPUState) { g.ThrottleReasons = gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown }, ReasonHWSlowdown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{SlowdownSustain: time.Minute}, nil)
			h.update(t, 0, tc.set)
			steps := []struct {
				advance time.Duration
				want    State
			}{{0, Healthy}, {30 * time.Second, Healthy}, {29 * time.Second, Healthy}, {time.Second, Degraded}, {time.Hour, Degraded}}
			for i, s := range steps {
				h.clock.Advance(s.advance)
				h.sample(t)
				if hl := h.gpu(t, 0).Health; hl.State != s.want {
					t.Fatalf("step %d (+%v): %+v, want %s", i, s.advance, hl, s.want)
				}
			}
			hl := h.gpu(t, 0).Health
			if hl.Reasons[0].Code != tc.reason || !hl.Reasons[0].First.Equal(h.clock.Now().Add(-time.Hour)) {
				t.Errorf("reason %+v", hl.Reasons[0])
			}
			// A blip of normal clocks resets the timer.
			h.update(t, 0, func(g *nvmlsim.GPUState) { *g = nvmlsim.DefaultState() })
			h.sample(t)
			h.update(t, 0, tc.set)
			h.clock.Advance(59 * time.Second)
			h.sample(t)
			if got := h.gpu(t, 0).Health.State; got != Healthy {
				t.Errorf("after the slowdown ended and restarted: %s", got)
			}
		})
	}
}

func TestTelemetryErrorsDegrade(t *testing.T) {
	sim := nvmlsim.New(nvmlsim.Options{})
	dev, _ := sim.Device(sim.UUIDs()[0])
	tel, lost := readTelemetry(failingPower{dev}, time.Now())
	if lost || tel.Errors[FieldPowerDraw] != "ERROR_UNKNOWN" || tel.PowerDrawMW != nil || tel.TemperatureC == nil {
		t.Fatalf("lost %v, telemetry %+v", lost, tel)
	}
	m := &Manager{opts: Options{SlowdownSustain: time.Minute}}
	g := &gpu{}
	if live := m.liveReasons(g, tel, false, time.Now()); len(live) != 1 || live[0].Code != ReasonTelemetryErrors ||
		!strings.Contains(live[0].Message, "power_draw: ERROR_UNKNOWN") {
		t.Errorf("live reasons %+v", live)
	}
}

// failingPower is a GPU whose power reading fails.
type failingPower struct{ *nvmlsim.Device }

func (failingPower) GetPowerUsage() (uint32, gonvml.Return) { return 0, gonvml.ERROR_UNKNOWN }

func TestGPULost(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	if err := h.sim.Lose(h.uuids[5]); err != nil {
		t.Fatal(err)
	}
	h.sample(t)
	g := h.gpu(t, 5)
	if g.Health.State != Unhealthy || g.Health.Reasons[0].Code != ReasonGPULost {
		t.Fatalf("lost GPU health %+v", g.Health)
	}
	if g.Telemetry.Errors[FieldMemory] != "ERROR_GPU_IS_LOST" || len(g.Telemetry.Errors) != 1 {
		t.Errorf("a lost GPU is read past the first failure: %v", g.Telemetry.Errors)
	}
	if slices.Contains(reasonCodes(g.Health), ReasonTelemetryErrors) {
		t.Error("a lost GPU is also reported as telemetry errors")
	}
	if h.gpu(t, 4).Health.State != Healthy {
		t.Error("a neighbour of the lost GPU is not healthy")
	}
	// Back on the bus (a reset): still unhealthy until resumed.
	_ = h.sim.Revive(h.uuids[5])
	h.sample(t)
	if h.gpu(t, 5).Health.State != Unhealthy {
		t.Error("a revived GPU became healthy without Resume")
	}
}

func TestLostOnAnyCall(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	_ = h.sim.Lose(h.uuids[7])
	_, err := h.m.SetPowerLimit(context.Background(), h.uuids[7], 300_000)
	if !errors.Is(err, ErrGPULost) || !strings.Contains(err.Error(), h.uuids[7]) {
		t.Errorf("SetPowerLimit on a lost GPU: %v", err)
	}
	if hl := h.gpu(t, 7).Health; hl.State != Unhealthy || hl.Reasons[0].Code != ReasonGPULost {
		t.Errorf("health %+v", hl)
	}
}

func TestResume(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	ctx := context.Background()
	u := h.uuids[3]

	if hl, err := h.m.Resume(ctx, u); err != nil || hl.State != Healthy {
		t.Errorf("Resume of a healthy GPU: %+v, %v", hl, err)
	}
	_, _ = h.sim.InjectXID(u, 79)
	eventually(t, "XID 79 handled", func() bool { return h.gpu(t, 3).Health.State == Unhealthy })
	_ = h.sim.Lose(u)

	// The probe fails while the GPU is lost.
	hl, err := h.m.Resume(ctx, u)
	if !errors.Is(err, ErrProbeFailed) || !strings.Contains(err.Error(), "lost") || hl.State != Unhealthy {
		t.Fatalf("Resume of a lost GPU: %+v, %v", hl, err)
	}
	_ = h.sim.Revive(u)
	_ = h.sim.Update(u, func(g *nvmlsim.GPUState) { g.RemapFailure = true })
	if _, err := h.m.Resume(ctx, u); !errors.Is(err, ErrProbeFailed) || !strings.Contains(err.Error(), "row-remap") {
		t.Fatalf("Resume with a row-remap failure: %v", err)
	}
	_ = h.sim.Update(u, func(g *nvmlsim.GPUState) { g.RemapFailure = false; g.ECCUncorrected = 4; g.RemapPending = true })
	h.sample(t) // the ECC errors are seen before the resume
	hl, err = h.m.Resume(ctx, u)
	if err != nil || hl.State != Degraded || !slices.Equal(reasonCodes(hl), []string{ReasonRowRemapPending}) {
		t.Fatalf("Resume after reset: %+v, %v; want degraded by the pending remap only", hl, err)
	}
	if h.sim.EventSets() != 1 {
		t.Errorf("%d event sets after re-registration, want 1 (the old one freed)", h.sim.EventSets())
	}
	// The fresh registration delivers new XIDs; the ECC baseline moved.
	h.sample(t)
	if got := h.gpu(t, 3).Health.State; got != Degraded {
		t.Errorf("after resume, a sample with the old ECC count gives %s", got)
	}
	_, _ = h.sim.InjectXID(u, 94)
	eventually(t, "XID after resume", func() bool { return h.gpu(t, 3).Health.State == Unhealthy })
	_ = h.sim.Update(u, func(g *nvmlsim.GPUState) { g.ECCUncorrected++ })
	if _, err := h.m.Resume(ctx, u); !errors.Is(err, ErrProbeFailed) || !strings.Contains(err.Error(), "ECC") {
		t.Errorf("Resume with new ECC errors: %v", err)
	}
	if _, err := h.m.Resume(ctx, "GPU-nope"); !errors.Is(err, ErrUnknownGPU) {
		t.Errorf("Resume of an unknown GPU: %v", err)
	}
}

func TestEventRegistration(t *testing.T) {
	h := newHarness(t, Options{}, func(s *nvmlsim.Server) {
		_ = s.Update(s.UUIDs()[0], func(g *nvmlsim.GPUState) { g.NotSupported = nvmlsim.FeatureEvents })
		_ = s.Update(s.UUIDs()[1], func(g *nvmlsim.GPUState) { g.RegisterEventsError = gonvml.ERROR_UNKNOWN })
	})
	if g := h.gpu(t, 0); g.EventsMonitored || g.Health.State != Healthy {
		t.Errorf("a GPU without event support: monitored %v, health %+v; want unmonitored, healthy", g.EventsMonitored, g.Health)
	}
	g := h.gpu(t, 1)
	if g.EventsMonitored || g.Health.State != Unhealthy || g.Health.Reasons[0].Code != ReasonEventRegistration {
		t.Fatalf("a GPU whose registration failed: monitored %v, health %+v", g.EventsMonitored, g.Health)
	}
	if _, err := h.m.Resume(context.Background(), h.uuids[1]); !errors.Is(err, ErrProbeFailed) ||
		!strings.Contains(err.Error(), "registering for events") {
		t.Errorf("Resume while registration fails: %v", err)
	}
	h.update(t, 1, func(g *nvmlsim.GPUState) { g.RegisterEventsError = gonvml.SUCCESS })
	if hl, err := h.m.Resume(context.Background(), h.uuids[1]); err != nil || hl.State != Healthy {
		t.Fatalf("Resume once registration works: %+v, %v", hl, err)
	}
	if !h.gpu(t, 1).EventsMonitored {
		t.Error("not monitored after a successful resume")
	}
	_, _ = h.sim.InjectXID(h.uuids[1], 79)
	eventually(t, "XID after re-registration", func() bool { return h.gpu(t, 1).Health.State == Unhealthy })
}

func TestEventWaitFailures(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.sim.FailEventWait(gonvml.ERROR_UNKNOWN)
	eventually(t, "Ready reports the event failures", func() bool { return h.m.Ready() != nil })
	if err := h.m.Ready(); !strings.Contains(err.Error(), "XID event monitoring is down") {
		t.Errorf("Ready: %v", err)
	}
	h.sim.FailEventWait(gonvml.SUCCESS)
	eventually(t, "event monitoring recovers", func() bool { return h.m.Ready() == nil })
	_, _ = h.sim.InjectXID(h.uuids[1], 79)
	eventually(t, "XIDs arrive after recovery", func() bool { return h.gpu(t, 1).Health.State == Unhealthy })
	if h.gpu(t, 0).Health.State != Healthy {
		t.Error("event-wait failures made a GPU unhealthy")
	}
}

func TestStopEndsLoops(t *testing.T) {
	base := runtime.NumGoroutine()
	sim := nvmlsim.New(nvmlsim.Options{})
	sim.Init()
	b := &beats{}
	m, err := New(sim, Options{EventWait: 5 * time.Millisecond, PollInterval: 100 * time.Millisecond, Heartbeat: b.register})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both loops beat", func() bool {
		p, _ := b.count("gpu-telemetry")
		e, _ := b.count("gpu-events")
		return p > 1 && e > 1
	})
	if err := m.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := m.Ready(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Ready after Stop: %v", err)
	}
	if _, err := m.Resume(context.Background(), sim.UUIDs()[0]); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Resume after Stop: %v", err)
	}
	if sim.EventSets() != 0 {
		t.Error("event set not freed")
	}
	slices.Sort(b.ended)
	if !slices.Equal(b.ended, []string{"gpu-events", "gpu-telemetry"}) {
		t.Errorf("loops that ended: %v", b.ended)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	goroutinesAtMost(t, base)
}

func TestSubscriptionCoalesces(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	sub := h.m.Subscribe()
	h.update(t, 2, func(g *nvmlsim.GPUState) { g.RemapPending = true })
	h.sample(t)
	h.update(t, 2, func(g *nvmlsim.GPUState) { g.RemapFailure = true })
	h.sample(t)
	select {
	case <-sub.C():
	default:
		t.Fatal("no signal for pending changes")
	}
	c := sub.Changes()
	if len(c) != 1 || c[0].From != Healthy || c[0].To != Unhealthy || c[0].Index != 2 {
		t.Errorf("changes %+v, want one healthy→unhealthy", c)
	}
	if c := sub.Changes(); len(c) != 0 {
		t.Errorf("changes not cleared: %+v", c)
	}
	sub.Close()
	h.update(t, 3, func(g *nvmlsim.GPUState) { g.RemapPending = true })
	h.sample(t)
	if c := sub.Changes(); len(c) != 0 {
		t.Errorf("closed subscription got %+v", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sub.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next on a cancelled context: %v", err)
	}
}
