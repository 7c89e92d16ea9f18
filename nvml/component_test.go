package nvml

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// startComponent starts a component and stops it at cleanup.
func startComponent(t *testing.T, o ComponentOptions) *Component {
	t.Helper()
	if o.Log == nil {
		o.Log = zaptest.NewLogger(t)
	}
	if o.EventWait == 0 {
		o.EventWait = 5 * time.Millisecond
	}
	c, err := NewComponent(o)
	if err != nil || c == nil {
		t.Fatalf("NewComponent: %v, %v", c, err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func TestComponentOff(t *testing.T) {
	c, err := NewComponent(ComponentOptions{Backend: BackendOff})
	if c != nil || err != nil {
		t.Errorf("backend off: %v, %v; want nil, nil", c, err)
	}
}

func TestComponentMissingLibrary(t *testing.T) {
	missing := func() gonvml.Interface {
		s := nvmlsim.New(nvmlsim.Options{})
		s.FailInit(gonvml.ERROR_LIBRARY_NOT_FOUND)
		return s
	}
	tests := []struct {
		backend   string
		wantReady bool
		wantAPI   string
	}{
		{BackendNVML, false, LibraryName},
		{BackendAuto, true, "GPU features are off"},
	}
	for _, tc := range tests {
		t.Run(tc.backend, func(t *testing.T) {
			c := startComponent(t, ComponentOptions{Backend: tc.backend, Library: LibraryOptions{Real: missing}})
			err := c.Ready()
			if (err == nil) != tc.wantReady {
				t.Errorf("Ready: %v, want ready %v", err, tc.wantReady)
			}
			if err != nil && (!strings.Contains(err.Error(), LibraryName) || !errors.Is(err, ErrLibraryNotFound)) {
				t.Errorf("Ready %q does not name %s", err, LibraryName)
			}
			if c.Manager() != nil || c.Library() != nil {
				t.Error("a manager without a library")
			}
			mux := http.NewServeMux()
			c.RegisterAPI(mux)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/gpus", nil))
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), tc.wantAPI) {
				t.Errorf("GET /api/v1/gpus: %d %s", rec.Code, rec.Body)
			}
		})
	}
}

func TestComponentRetriesUntilDriverLoads(t *testing.T) {
	sim := nvmlsim.New(nvmlsim.Options{})
	sim.FailInit(gonvml.ERROR_DRIVER_NOT_LOADED)
	c := startComponent(t, ComponentOptions{
		Backend:       BackendNVML,
		Library:       LibraryOptions{Real: func() gonvml.Interface { return sim }},
		RetryInterval: 10 * time.Millisecond,
	})
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "ERROR_DRIVER_NOT_LOADED") ||
		!strings.Contains(err.Error(), "lsmod") {
		t.Errorf("Ready with the module not loaded: %v", err)
	}
	sim.FailInit(gonvml.SUCCESS)
	eventually(t, "backend comes up", func() bool { return c.Ready() == nil })
	if m := c.Manager(); m == nil || len(m.GPUs()) != 8 {
		t.Error("no manager after the driver loaded")
	}
}

func TestComponentAPI(t *testing.T) {
	c := startComponent(t, ComponentOptions{Backend: BackendSimulated})
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	sim := c.Library().Sim
	uuids := sim.UUIDs()
	mux := http.NewServeMux()
	c.RegisterAPI(mux)
	do := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}

	code, body := do("GET", "/api/v1/gpus")
	var node Node
	if err := json.Unmarshal([]byte(body), &node); err != nil || code != 200 {
		t.Fatalf("GET /api/v1/gpus: %d %v %s", code, err, body)
	}
	if len(node.GPUs) != 8 || node.Backend != BackendSimulated || node.GPUs[0].Telemetry == nil ||
		node.GPUs[0].Health.State != Healthy || node.GPUs[0].Telemetry.SampledAt.IsZero() {
		t.Errorf("node %+v", node)
	}
	// Not-applicable fields are null, not zero.
	_ = sim.Update(uuids[1], func(g *nvmlsim.GPUState) { g.NotSupported = nvmlsim.GeForceUnsupported })
	_ = c.Manager().SampleNow(context.Background())
	code, body = do("GET", "/api/v1/gpus/"+uuids[1])
	if code != 200 || !strings.Contains(body, `"ecc": null`) || !strings.Contains(body, `"not_supported": [`) {
		t.Errorf("GET one GPU: %d %s", code, body)
	}
	if code, body := do("GET", "/api/v1/gpus/GPU-nope"); code != 404 || !strings.Contains(body, "GPU-nope") {
		t.Errorf("unknown GPU: %d %s", code, body)
	}

	_, _ = sim.InjectXID(uuids[4], 79)
	eventually(t, "XID reaches the API", func() bool {
		_, body := do("GET", "/api/v1/gpus/"+uuids[4])
		return strings.Contains(body, `"state": "unhealthy"`)
	})
	_ = sim.Lose(uuids[4])
	if code, body := do("POST", "/api/v1/gpus/"+uuids[4]+"/resume"); code != http.StatusConflict ||
		!strings.Contains(body, "still lost") {
		t.Errorf("resume of a lost GPU: %d %s", code, body)
	}
	_ = sim.Revive(uuids[4])
	code, body = do("POST", "/api/v1/gpus/"+uuids[4]+"/resume")
	if code != 200 || !strings.Contains(body, `"state": "healthy"`) {
		t.Errorf("resume: %d %s", code, body)
	}
	if code, _ := do("POST", "/api/v1/gpus/GPU-nope/resume"); code != 404 {
		t.Errorf("resume of an unknown GPU: %d", code)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := startComponent(t, ComponentOptions{Backend: BackendSimulated, Metrics: reg})
	sim := c.Library().Sim
	uuids := sim.UUIDs()
	_ = sim.Update(uuids[0], func(g *nvmlsim.GPUState) { g.SetLoad(1); g.StartProcess(7, 3<<30) })
	_ = sim.Update(uuids[1], func(g *nvmlsim.GPUState) { g.NotSupported = nvmlsim.GeForceUnsupported })
	_ = c.Manager().SampleNow(context.Background())
	_, _ = sim.InjectXID(uuids[2], 13)
	_, _ = sim.InjectXID(uuids[3], 79)
	eventually(t, "XIDs handled", func() bool {
		g, _ := c.Manager().GPU(uuids[3])
		h, _ := c.Manager().GPU(uuids[2])
		return g.LastXID == 79 && h.LastXID == 13
	})

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f := byName[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
		return 0, false
	}
	gpu0 := map[string]string{"gpu": "0", "UUID": uuids[0], "device": "nvidia0",
		"modelName": "Mock NVIDIA A100-SXM4-40GB", "pci_bus_id": "00000000:07:00.0"}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
		absent bool
	}{
		{"DCGM_FI_DEV_GPU_UTIL", gpu0, 100, false},
		{"DCGM_FI_DEV_FB_USED", gpu0, 3*1024 + 4, false},
		{"DCGM_FI_DEV_FB_FREE", gpu0, 40960 - 3*1024 - 4, false},
		{"DCGM_FI_DEV_GPU_TEMP", gpu0, nvmlsim.IdleTemperatureC + nvmlsim.MaxLoadTempRiseC, false},
		{"DCGM_FI_DEV_POWER_USAGE", gpu0, 400, false},
		{"DCGM_FI_DEV_XID_ERRORS", gpu0, 0, false},
		{"DCGM_FI_DEV_XID_ERRORS", map[string]string{"UUID": uuids[3]}, 79, false},
		{"DCGM_FI_DEV_XID_ERRORS", map[string]string{"UUID": uuids[2]}, 13, false},
		{"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", map[string]string{"UUID": uuids[1]}, 0, true},
		{"proxyd_gpu_health", map[string]string{"uuid": uuids[3], "state": "unhealthy"}, 1, false},
		{"proxyd_gpu_health", map[string]string{"uuid": uuids[3], "state": "healthy"}, 0, false},
		{"proxyd_gpu_health", map[string]string{"uuid": uuids[2], "state": "healthy"}, 1, false},
		{"proxyd_gpu_xid_errors_total", map[string]string{"uuid": uuids[3], "xid": "79"}, 1, false},
		{"proxyd_gpu_processes", map[string]string{"uuid": uuids[0]}, 1, false},
	}
	for _, tc := range tests {
		got, ok := value(tc.name, tc.labels)
		if ok == tc.absent || (ok && got != tc.want) {
			t.Errorf("%s%v = %v (present %v), want %v (absent %v)", tc.name, tc.labels, got, ok, tc.want, tc.absent)
		}
	}
	if n := len(byName["DCGM_FI_DEV_GPU_UTIL"].GetMetric()); n != 8 {
		t.Errorf("DCGM_FI_DEV_GPU_UTIL has %d series, want 8", n)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A stopped component exports nothing per GPU (and gathers cleanly).
	if families, err := reg.Gather(); err != nil || len(families) != 0 {
		t.Errorf("after Stop: %d families, %v", len(families), err)
	}
}

func TestOpenRealLibraryWithoutDriver(t *testing.T) {
	lib, err := OpenLibrary(BackendNVML, LibraryOptions{})
	if err == nil {
		lib.Close()
		t.Skip("an NVIDIA driver is present on this machine")
	}
	if !errors.Is(err, ErrLibraryNotFound) || !strings.Contains(err.Error(), LibraryName) {
		t.Errorf("OpenLibrary(nvml) without a driver: %v", err)
	}
	if _, err := OpenLibrary("bogus", LibraryOptions{}); err == nil {
		t.Error("unknown backend opened")
	}
}
