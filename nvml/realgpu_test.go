//go:build gpu

// Tests against the real NVIDIA driver. Run on a GPU machine with:
//
//	go test -tags gpu -run RealGPU -v ./nvml/
//
// They read only, except for a power-limit "set" to the current value,
// which writes nothing and checks the read-back (no root needed).
package nvml

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestRealGPU(t *testing.T) {
	lib, err := OpenLibrary(BackendNVML, LibraryOptions{})
	if err != nil {
		t.Fatalf("the gpu tag expects an NVIDIA driver: %v", err)
	}
	defer func() {
		if err := lib.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	m, err := New(lib, Options{Backend: BackendNVML, Log: zaptest.NewLogger(t), PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}()

	n := m.Node()
	t.Logf("driver %s, NVML %s, CUDA %s, %d GPUs, problems %v", n.DriverVersion, n.NVMLVersion, n.CUDADriverVersion, len(n.GPUs), n.Problems)
	if n.DriverVersion == "" || n.CUDADriverVersion == "" || len(n.GPUs) == 0 || len(n.Problems) != 0 {
		t.Fatalf("node %+v", n)
	}
	if err := m.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	first := n.GPUs[0].Telemetry.Seq
	if err := m.SampleNow(ctx); err != nil {
		t.Fatal(err)
	}
	for _, g := range m.GPUs() {
		tel := g.Telemetry
		t.Logf("GPU %d %s %q bus %s arch %s cc %s mem %d MiB mig %+v events %v", g.Index, g.UUID, g.Name, g.PCIBusID,
			g.Architecture, g.ComputeCapability, g.MemoryTotalBytes>>20, g.MIG, g.EventsMonitored)
		t.Logf("  telemetry %+v", *tel)
		t.Logf("  health %s", g.Health.Summary())
		if !strings.HasPrefix(g.UUID, "GPU-") || g.PCIBusID == "" || g.MemoryTotalBytes == 0 || g.Name == "" ||
			g.DevicePath == "" || strings.HasPrefix(g.Architecture, "unknown") {
			t.Errorf("GPU %d inventory %+v", g.Index, g.Info)
		}
		if tel.Seq <= first {
			t.Errorf("GPU %d: sample %d did not advance past %d", g.Index, tel.Seq, first)
		}
		if len(tel.Errors) != 0 {
			t.Errorf("GPU %d: NVML read errors %v", g.Index, tel.Errors)
		}
		if tel.MemoryUsedBytes == nil || *tel.MemoryUsedBytes+*tel.MemoryFreeBytes > g.MemoryTotalBytes {
			t.Errorf("GPU %d: memory used/free %v/%v of %d", g.Index, tel.MemoryUsedBytes, tel.MemoryFreeBytes, g.MemoryTotalBytes)
		}
		if tel.TemperatureC == nil || *tel.TemperatureC == 0 || *tel.TemperatureC > 120 {
			t.Errorf("GPU %d: temperature %v", g.Index, tel.TemperatureC)
		}
		if tel.Supported(FieldPowerDraw) && (tel.PowerDrawMW == nil || *tel.PowerDrawMW == 0) {
			t.Errorf("GPU %d: power draw %v", g.Index, tel.PowerDrawMW)
		}
		if _, known := tel.Processes(); !known {
			t.Errorf("GPU %d: processes cannot be listed (not supported: %v)", g.Index, tel.NotSupported)
		}

		snap, err := m.SnapshotPower(ctx, g.UUID)
		if errors.Is(err, ErrNotSupported) {
			t.Logf("  power limits not supported")
			continue
		}
		if err != nil {
			t.Errorf("GPU %d: SnapshotPower: %v", g.Index, err)
			continue
		}
		t.Logf("  power snapshot %+v", snap)
		if snap.LimitMW < snap.MinMW || snap.LimitMW > snap.MaxMW {
			t.Errorf("GPU %d: limit outside its constraints: %+v", g.Index, snap)
		}
		// Setting the current value writes nothing and verifies the read-back.
		if c, err := m.SetPowerLimit(ctx, g.UUID, snap.LimitMW); err != nil || c.ReadBackMW != snap.LimitMW {
			t.Errorf("GPU %d: no-op SetPowerLimit: %+v, %v", g.Index, c, err)
		}
		if _, err := m.PersistenceMode(g.UUID); err != nil && !errors.Is(err, ErrNotSupported) {
			t.Errorf("GPU %d: PersistenceMode: %v", g.Index, err)
		}
	}
	// The event loop must keep turning on real NVML (bounded waits).
	time.Sleep(3 * time.Second)
	if err := m.Ready(); err != nil {
		t.Errorf("Ready after 3s of event waits: %v", err)
	}
}
