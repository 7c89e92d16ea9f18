package components

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
)

func TestGPUOff(t *testing.T) {
	cfg := config.Default()
	cfg.GPU.Backend = nvml.BackendOff
	dc, err := GPU(daemon.Env{Config: cfg, Log: zaptest.NewLogger(t), Liveness: daemon.NewLiveness()})
	if dc != nil || err != nil {
		t.Errorf("Factory with backend off: %v, %v; want a nil interface", dc, err)
	}
}

func TestGPUSimulated(t *testing.T) {
	live := daemon.NewLiveness()
	reg := prometheus.NewRegistry()
	cfg := config.Default()
	cfg.GPU.Backend = nvml.BackendSimulated
	dc, err := GPU(daemon.Env{Config: cfg, Log: zaptest.NewLogger(t), Metrics: reg, Liveness: live})
	if err != nil || dc == nil || dc.Name() != "gpu" {
		t.Fatalf("Factory: %v, %v", dc, err)
	}
	if err := dc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := dc.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if n := len(live.Names()); n != 2 {
		t.Errorf("liveness loops %v, want telemetry and events", live.Names())
	}
	if err := dc.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(live.Names()); n != 0 {
		t.Errorf("loops still registered after Stop: %v", live.Names())
	}
}

func TestGPUReloadNeedsRestart(t *testing.T) {
	cfg := config.Default()
	cfg.GPU.Backend = nvml.BackendSimulated
	dc, err := GPU(daemon.Env{Config: cfg, Log: zaptest.NewLogger(t)})
	if err != nil || dc == nil {
		t.Fatalf("Factory: %v, %v", dc, err)
	}
	c := dc.(daemon.Reloader)
	if need, err := c.Reload(cfg); err != nil || len(need) != 0 {
		t.Errorf("unchanged: %v, %v", need, err)
	}
	next := *cfg
	next.GPU.Backend = nvml.BackendNVML
	next.GPU.AppXIDs = []uint64{13}
	if need, _ := c.Reload(&next); strings.Join(need, ",") != "gpu.backend,gpu.app_xids" {
		t.Errorf("need restart %v", need)
	}
}
