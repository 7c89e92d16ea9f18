package components

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
)

// DemoSwitcher is what an operator could write: it passes the config's own
// validation.
func TestDemoSwitcherIsValid(t *testing.T) {
	var buf bytes.Buffer
	doc := struct {
		GPU      config.GPU      `toml:"gpu"`
		Switcher config.Switcher `toml:"switcher"`
	}{config.Default().GPU, DemoSwitcher("/var/lib/proxyd-demo")}
	doc.GPU.Backend = "simulated"
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("DemoSwitcher does not validate: %v\n%s", err, buf.String())
	}
	if !cfg.Switcher.Enabled || cfg.Switcher.Workloads()[switcher.DemoWorkload].PowerLimitW != 300 {
		t.Errorf("decoded %+v", cfg.Switcher)
	}
}

// The switcher library's defaults are the config file's.
func TestSwitcherDefaults(t *testing.T) {
	if got, want := switcherConfig(config.Default().Switcher), switcher.DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("converted defaults\n%+v\nlibrary defaults\n%+v", got, want)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: never happened", what)
}

// The component in real time, as the daemon runs it (and under -race): it
// waits for the GPU component, reconciles, mines, serves a contract
// through the GPU routes the wiring composes and stops cleanly, leaving the workloads running.
func TestComponentOnSimulatedGPUs(t *testing.T) {
	cfg := config.Default()
	cfg.GPU.Backend = nvml.BackendSimulated
	cfg.GPU.PollInterval = config.Duration(100 * time.Millisecond)
	cfg.Switcher = DemoSwitcher(t.TempDir())
	log := zaptest.NewLogger(t)
	live := daemon.NewLiveness()
	reg := prometheus.NewRegistry()
	journal := events.New(0)
	env := daemon.Env{Config: cfg, Log: log, Metrics: reg, Liveness: live, Events: journal}

	fs := Factories()
	gc, err := fs[0](env)
	if err != nil || gc == nil {
		t.Fatalf("GPU factory: %v %v", gc, err)
	}
	gpu := gc.(*gpuComponent)
	sc, err := fs[2](env)
	if err != nil || sc == nil {
		t.Fatalf("switcher factory: %v %v", sc, err)
	}
	c := sc.(*switcherComponent)
	if err := c.Ready(); err == nil {
		t.Error("ready before start")
	}
	ctx := context.Background()
	// The switcher starts first here: it must wait for the GPUs, not fail.
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := gpu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := c.Stop(sctx); err != nil {
			t.Errorf("switcher stop: %v", err)
		}
		if err := gpu.Stop(sctx); err != nil {
			t.Errorf("gpu stop: %v", err)
		}
	}()
	eventually(t, "switcher ready", func() bool { return c.Ready() == nil })
	if !strings.Contains(strings.Join(live.Names(), ","), "switcher") {
		t.Errorf("no liveness beat: %v", live.Names())
	}
	sw := c.Switcher()
	eventually(t, "all mining", func() bool { return sw.Summary().States[switcher.StateMining] == 8 })
	if _, _, err := sw.PutContract(switcher.DemoContract("demo", 2, time.Now().Add(-time.Minute), time.Hour)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 serving", func() bool { st, _ := sw.ContractStatus("demo"); return st.Serving == 2 })
	if got := c.Summary().String(); !strings.Contains(got, "SERVING_AI 2") || !strings.Contains(got, "demo 2/2 serving") {
		t.Errorf("summary %q", got)
	}
	if n := len(journal.List(events.Query{Component: "switcher"})); n == 0 {
		t.Error("nothing in the daemon's journal")
	}

	// The GPU API shows the switch state, and resume goes through the switcher.
	mux := http.NewServeMux()
	gpu.RegisterAPI(mux)
	c.RegisterAPI(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/gpus", nil))
	if body := rec.Body.String(); rec.Code != 200 || strings.Count(body, `"state": "SERVING_AI"`) != 2 {
		t.Errorf("GET /api/v1/gpus: %d, %d serving", rec.Code, strings.Count(body, `"state": "SERVING_AI"`))
	}
	lib := gpu.Library()
	victim := lib.Sim.UUIDs()[7]
	if _, err := lib.Sim.InjectXID(victim, 79); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the XID quarantines the GPU", func() bool {
		g, _ := sw.GPUStatus(victim)
		return g.State == switcher.StateQuarantined && g.Reason == switcher.ReasonUnhealthy
	})
	eventually(t, "its miner killed", func() bool { g, _ := sw.GPUStatus(victim); return g.Handle == nil })
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/gpus/"+victim+"/resume", nil))
	if rec.Code != 200 {
		t.Fatalf("resume: %d %s", rec.Code, rec.Body.String())
	}
	eventually(t, "back to mining", func() bool { g, _ := sw.GPUStatus(victim); return g.State == switcher.StateMining })

	// Reload: a lower price floor applies live; a new state_dir needs a restart.
	next := *cfg
	next.Switcher.MinPriceUSDPerGPUHour = 5
	next.Switcher.StateDir = "/elsewhere"
	need, err := c.Reload(&next)
	if err != nil || strings.Join(need, ",") != "switcher.state_dir" {
		t.Errorf("reload: %v %v", need, err)
	}
	eventually(t, "the contract refused under the new floor and drained", func() bool {
		st, _ := sw.ContractStatus("demo")
		return st.State == switcher.ContractRefused && sw.Summary().States[switcher.StateMining] == 8
	})

	// Turning [switcher.kubernetes] on needs a restart (the agent is built
	// with the component); the reload is no error and changes nothing (the
	// floor stays at 5, so the demo contract stays refused).
	next.Switcher.Kubernetes = &config.Kubernetes{Enabled: true, APITimeout: config.Duration(time.Second)}
	need, err = c.Reload(&next)
	if err != nil || !slices.Contains(need, "switcher.kubernetes") {
		t.Errorf("reload turning kubernetes on: %v %v", need, err)
	}
	if st, _ := sw.ContractStatus("demo"); st.State != switcher.ContractRefused || sw.Summary().States[switcher.StateMining] != 8 {
		t.Errorf("after the reload: contract %s, %d mining", st.State, sw.Summary().States[switcher.StateMining])
	}
}
