package switcher

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
)

// apiHarness serves the switcher's routes over a step-driven switcher.
type apiHarness struct {
	*harness
	mux *http.ServeMux
	reg *prometheus.Registry
	c   *Component
}

func newAPIHarness(t *testing.T, o harnessOpts) *apiHarness {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := NewComponent(ComponentOptions{Config: testConfig(t.TempDir()), GPUBackend: "simulated", Drivers: simDrivers(t),
		Log: zaptest.NewLogger(t), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, o)
	metricsOf := func(sw *Switcher) { sw.metrics = c.metrics }
	metricsOf(h.sw)
	c.mu.Lock()
	c.sw = h.sw
	c.mu.Unlock()
	mux := http.NewServeMux()
	c.RegisterAPI(mux)
	return &apiHarness{harness: h, mux: mux, reg: reg, c: c}
}

func (a *apiHarness) do(method, path, body string) (int, string) {
	a.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	rec := httptest.NewRecorder()
	a.mux.ServeHTTP(rec, httptest.NewRequest(method, path, r))
	return rec.Code, rec.Body.String()
}

func TestAPIContracts(t *testing.T) {
	a := newAPIHarness(t, harnessOpts{})
	now := a.clock.Now()
	body := func(gpus int, price string) string {
		return `{"gpus": ` + itoa(gpus) + `, "start": "` + now.Format(time.RFC3339) + `", "end": "` +
			now.Add(time.Hour).Format(time.RFC3339) + `", "price_usd_per_gpu_hour": ` + price + `, "workload": "llm", "lead_time": "1m"}`
	}
	bad := []struct {
		name, path, body string
		code             int
		field            string
	}{
		{"not JSON", "/api/v1/contracts/a", "{", 400, ""},
		{"unknown field", "/api/v1/contracts/a", `{"gpu": 1}`, 400, "gpu"},
		{"wrong type", "/api/v1/contracts/a", `{"gpus": "two"}`, 400, "gpus"},
		{"missing gpus", "/api/v1/contracts/a", `{}`, 400, "gpus"},
		{"zero gpus", "/api/v1/contracts/a", body(0, "2"), 400, "gpus"},
		{"bad start", "/api/v1/contracts/a", strings.Replace(body(1, "2"), now.Format(time.RFC3339), "tomorrow", 1), 400, "start"},
		{"end before start", "/api/v1/contracts/a", strings.Replace(body(1, "2"), now.Add(time.Hour).Format(time.RFC3339),
			now.Add(-time.Hour).Format(time.RFC3339), 1), 400, "end"},
		{"bad lead time", "/api/v1/contracts/a", strings.Replace(body(1, "2"), `"1m"`, `"soon"`, 1), 400, "lead_time"},
		{"unknown workload", "/api/v1/contracts/a", strings.Replace(body(1, "2"), `"llm"`, `"gpt"`, 1), 400, "workload"},
		{"id mismatch", "/api/v1/contracts/a", `{"id": "b", ` + body(1, "2")[1:], 400, "id"},
		{"bad id", "/api/v1/contracts/-a", body(1, "2"), 400, "id"},
		{"pin elsewhere", "/api/v1/contracts/a", `{"pin": ["GPU-x"], ` + body(1, "2")[1:], 400, "pin"},
		{"negative price", "/api/v1/contracts/a", body(1, "-1"), 400, "price_usd_per_gpu_hour"},
	}
	for _, tc := range bad {
		code, resp := a.do("PUT", tc.path, tc.body)
		var e struct{ Error, Field string }
		_ = json.Unmarshal([]byte(resp), &e)
		if code != tc.code || e.Field != tc.field || e.Error == "" {
			t.Errorf("%s: %d %s; want %d naming field %q", tc.name, code, resp, tc.code, tc.field)
		}
	}
	if code, _ := a.do("GET", "/api/v1/contracts", ""); code != 200 {
		t.Errorf("list: %d", code)
	}

	code, resp := a.do("PUT", "/api/v1/contracts/acme", body(2, "2.5"))
	if code != http.StatusCreated || !strings.Contains(resp, `"source": "api"`) {
		t.Fatalf("create: %d %s", code, resp)
	}
	if code, _ := a.do("PUT", "/api/v1/contracts/acme", body(2, "2.5")); code != http.StatusOK {
		t.Errorf("idempotent put: %d", code)
	}
	a.runUntil("serving", 120, func() bool { return a.serving("acme") == 2 })
	code, resp = a.do("GET", "/api/v1/contracts/acme", "")
	var st ContractStatus
	if err := json.Unmarshal([]byte(resp), &st); err != nil || code != 200 {
		t.Fatalf("get: %d %v %s", code, err, resp)
	}
	if st.State != ContractActive || st.Desired != 2 || st.Serving != 2 || st.Assigned != 2 || st.LeadTime.D() != time.Minute {
		t.Errorf("status: %+v", st)
	}

	// Metrics while serving.
	if v := testutil.ToFloat64(gaugeVec(t, a.reg, "proxyd_contract_gpus", map[string]string{"contract": "acme", "kind": "serving"})); v != 2 {
		t.Errorf("proxyd_contract_gpus serving = %v", v)
	}
	if v := testutil.ToFloat64(gaugeVec(t, a.reg, "proxyd_gpu_state", map[string]string{"uuid": st.GPUList[0], "state": "SERVING_AI"})); v != 1 {
		t.Errorf("proxyd_gpu_state = %v", v)
	}
	if n := testutil.CollectAndCount(a.c.metrics.transitions, "proxyd_gpu_transitions_total"); n == 0 {
		t.Error("no transitions counted")
	}
	if v := testutil.ToFloat64(a.c.metrics.transitions.WithLabelValues("STARTING_AI", "SERVING_AI", ReasonAIReady)); v != 2 {
		t.Errorf("transitions STARTING_AI→SERVING_AI = %v", v)
	}
	if n := testutil.CollectAndCount(a.c.metrics.seconds, "proxyd_gpu_transition_seconds"); n == 0 {
		t.Error("no transition durations")
	}

	// Cordon API.
	u := st.GPUList[0]
	for _, tc := range []struct{ body, field string }{{`{}`, "reason"}, {`{"reason": ""}`, "reason"}, {`{"reason": "x", "forse": true}`, "forse"}} {
		code, resp := a.do("POST", "/api/v1/gpus/"+u+"/cordon", tc.body)
		if code != 400 || !strings.Contains(resp, `"field": "`+tc.field+`"`) {
			t.Errorf("cordon %s: %d %s", tc.body, code, resp)
		}
	}
	if code, _ := a.do("POST", "/api/v1/gpus/GPU-nope/cordon", `{"reason": "x"}`); code != 404 {
		t.Errorf("cordon unknown GPU: %d", code)
	}
	code, resp = a.do("POST", "/api/v1/gpus/"+u+"/cordon", `{"reason": "PSU swap", "force": true}`)
	if code != 200 || !strings.Contains(resp, `"reason": "PSU swap"`) {
		t.Fatalf("cordon: %d %s", code, resp)
	}
	a.runUntil("cordoned GPU idle", 120, func() bool { g, _ := a.sw.GPUStatus(u); return g.State == StateIdle })
	if code, resp := a.do("POST", "/api/v1/gpus/"+u+"/uncordon", ""); code != 200 || !strings.Contains(resp, `"cordon": null`) {
		t.Errorf("uncordon: %d %s", code, resp)
	}

	// Summary, delete.
	code, resp = a.do("GET", "/api/v1/switcher", "")
	if code != 200 || !strings.Contains(resp, `"summary_line": "8 GPUs:`) {
		t.Errorf("summary: %d %s", code, resp)
	}
	if code, _ := a.do("DELETE", "/api/v1/contracts/nope", ""); code != 404 {
		t.Errorf("delete unknown: %d", code)
	}
	if code, _ := a.do("DELETE", "/api/v1/contracts/acme", ""); code != 200 {
		t.Errorf("delete: %d", code)
	}
	a.runUntil("all mining", 120, func() bool { return a.count(StateMining) == 8 })
	if code, _ := a.do("GET", "/api/v1/contracts/acme", ""); code != 404 {
		t.Errorf("get deleted: %d", code)
	}
}

func TestAPIPriceFloorAndConfigContracts(t *testing.T) {
	a := newAPIHarness(t, harnessOpts{cfg: func(c *Config) { c.MinPriceUSDPerGPUHour = 1 }})
	a.contracts = []Contract{{ID: "from-file", GPUs: 1, Start: epoch, End: epoch.Add(time.Hour), PriceUSDPerGPUHour: 2, Workload: "llm"}}
	a.restart()
	a.c.mu.Lock()
	a.c.sw = a.sw
	a.c.mu.Unlock()
	now := a.clock.Now()
	b := `{"gpus": 1, "start": "` + now.Format(time.RFC3339) + `", "end": "` + now.Add(time.Hour).Format(time.RFC3339) +
		`", "price_usd_per_gpu_hour": 0.5, "workload": "llm"}`
	code, resp := a.do("PUT", "/api/v1/contracts/cheap", b)
	if code != http.StatusUnprocessableEntity || !strings.Contains(resp, `"field": "price_usd_per_gpu_hour"`) || !strings.Contains(resp, "floor") {
		t.Errorf("below the floor: %d %s", code, resp)
	}
	if code, resp := a.do("PUT", "/api/v1/contracts/from-file", strings.Replace(b, "0.5", "2", 1)); code != http.StatusConflict {
		t.Errorf("put over a config contract: %d %s", code, resp)
	}
	if code, _ := a.do("DELETE", "/api/v1/contracts/from-file", ""); code != http.StatusConflict {
		t.Errorf("delete of a config contract: %d", code)
	}
}

func TestAPIWithoutSwitcher(t *testing.T) {
	o := ComponentOptions{Config: testConfig(t.TempDir()), GPUBackend: "off", Drivers: simDrivers(t), RetryInterval: time.Millisecond}
	if _, err := NewComponent(o); err == nil {
		t.Fatalf("a simulated runtime without the simulated backend was accepted")
	}
	o.GPUBackend = "simulated"
	c, err := NewComponent(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(t.Context()) })
	eventually(t, "not ready, with the reason", func() bool {
		err := c.Ready()
		return err != nil && strings.Contains(err.Error(), "GPU backend is off")
	})
	mux := http.NewServeMux()
	c.RegisterAPI(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/contracts", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "GPU backend is off") {
		t.Errorf("without GPUs: %d %s", rec.Code, rec.Body.String())
	}
}

func TestComponentRefusesUnknownWorkloadInConfig(t *testing.T) {
	o := ComponentOptions{Config: testConfig(t.TempDir()), GPUBackend: "simulated", Drivers: simDrivers(t),
		Contracts: []Contract{{ID: "x", GPUs: 1, Start: epoch, End: epoch.Add(time.Hour), Workload: "gpt"}}}
	if _, err := NewComponent(o); err == nil || !strings.Contains(err.Error(), `[switcher.workload.gpt]`) {
		t.Errorf("unknown workload: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// gaugeVec finds one series of a gathered family.
func gaugeVec(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return m.GetGauge().GetValue() })
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}
