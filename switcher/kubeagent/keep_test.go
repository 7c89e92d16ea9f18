package kubeagent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	eventsv1 "k8s.io/api/events/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/client-go/rest"
)

// fakeAPI answers the writes the rule keeper makes (rule create and
// delete, Event create) and records them; failDelete names rules whose
// delete fails with 500.
type fakeAPI struct {
	mu         sync.Mutex
	writes     []string // "POST rule <name>", "DELETE rule <name>", "POST event <reason>"
	failDelete map[string]bool
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	const rules = "/apis/resource.k8s.io/v1/devicetaintrules"
	switch {
	case r.Method == http.MethodPost && r.URL.Path == rules:
		var dr resourcev1.DeviceTaintRule
		_ = json.Unmarshal(body, &dr)
		f.writes = append(f.writes, "POST rule "+dr.Name)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, rules+"/"):
		name := strings.TrimPrefix(r.URL.Path, rules+"/")
		f.writes = append(f.writes, "DELETE rule "+name)
		if f.failDelete[name] {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is unhappy","code":500}`))
			return
		}
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Success"}`))
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/events"):
		var ev eventsv1.Event
		_ = json.Unmarshal(body, &ev)
		f.writes = append(f.writes, "POST event "+ev.Reason)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	default:
		f.writes = append(f.writes, "UNEXPECTED "+r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeAPI) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.writes
	f.writes = nil
	sort.Strings(out)
	return out
}

// keepHarness is an agent whose caches the test fills by hand (no
// informer runs) against fakeAPI, on a fake clock.
type keepHarness struct {
	a     *Agent
	api   *fakeAPI
	clock *fakeClock
	reg   *prometheus.Registry
}

func newKeepHarness(t *testing.T, seen []string) *keepHarness {
	t.Helper()
	api := &fakeAPI{failDelete: map[string]bool{}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	cl, err := NewClientForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	h := &keepHarness{api: api, clock: &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}, reg: prometheus.NewRegistry()}
	h.a, err = New(Options{Client: cl, Node: "n1", Clock: h.clock, Metrics: h.reg, StaleRuleGrace: 30 * time.Second,
		GPUs: func() ([]string, bool) { return seen, seen != nil }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *keepHarness) add(t *testing.T, objs ...any) {
	t.Helper()
	for _, o := range objs {
		inf := h.a.informers[0] // slices
		if _, ok := o.(*resourcev1.DeviceTaintRule); ok {
			inf = h.a.informers[1]
		}
		if err := inf.GetIndexer().Add(o); err != nil {
			t.Fatal(err)
		}
	}
}

func (h *keepHarness) remove(t *testing.T, r *resourcev1.DeviceTaintRule) {
	t.Helper()
	if err := h.a.informers[1].GetIndexer().Delete(r); err != nil {
		t.Fatal(err)
	}
}

// metric reads one sample of a series from the registry (-1: absent).
func (h *keepHarness) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return value(m)
		}
	}
	return -1
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestKeepRulesRemovesOnlyItsStaleRules runs the rule keeper on a cache
// with proxyd's rules on this node (one per published GPU it sees, one for
// a device no slice publishes, one for a published GPU NVML does not see),
// another node's proxyd rule, and rules of other owners: only proxyd's
// own stale rules on this node go, after the grace, each with an Event;
// nothing goes before the switcher said which GPUs are lent or while the
// API server does not answer.
func TestKeepRulesRemovesOnlyItsStaleRules(t *testing.T) {
	h := newKeepHarness(t, []string{"GPU-0", "GPU-1"})
	a, ctx := h.a, t.Context()
	h.add(t, slice("n1-gpus", "gpu.nvidia.com", "n1", map[string]string{"gpu-0": "GPU-0", "gpu-1": "GPU-1", "gpu-2": "GPU-2"}))
	r0 := ownedRule("proxyd-mining-n1-gpu-0", "GPU-0", "gpu-0")
	r1 := ownedRule("proxyd-mining-n1-gpu-1", "GPU-1", "gpu-1")
	unseen := ownedRule("proxyd-mining-n1-gpu-2", "GPU-2", "gpu-2")
	gone := ownedRule("proxyd-mining-n1-gpu-gone", "GPU-9", "gpu-gone")
	otherNode := ownedRule("proxyd-mining-n2-gpu-gone", "GPU-x", "gpu-gone")
	otherNode.Labels[LabelNode] = "n2"
	noPrefix := ownedRule("operator-gpu-gone", "GPU-9", "gpu-gone") // proxyd's labels, not its name
	noLabel := ownedRule("proxyd-mining-n1-gpu-gone-hold", "", "gpu-gone")
	noLabel.Labels = map[string]string{LabelManagedBy: "nvidia-dra-driver", LabelNode: "n1"}
	h.add(t, r0, unseen, gone, otherNode, noPrefix, noLabel)

	// Before the switcher said which GPUs are lent: nothing is written.
	a.keepRules(ctx)
	if w := h.api.take(); len(w) != 0 {
		t.Fatalf("the keeper wrote before List: %v", w)
	}
	a.mu.Lock()
	a.restored = true
	a.mu.Unlock()

	// First look: gpu-1 gets its rule, gpu-2 (not a GPU NVML sees) none;
	// the stale rules are noticed, not deleted.
	a.keepRules(ctx)
	if w, want := strings.Join(h.api.take(), "; "), "POST rule proxyd-mining-n1-gpu-1"; w != want {
		t.Fatalf("first look wrote %q, want %q", w, want)
	}
	h.add(t, r1) // what the watch would bring
	h.clock.t = h.clock.t.Add(29 * time.Second)
	a.keepRules(ctx)
	if w := h.api.take(); len(w) != 0 {
		t.Fatalf("stale rules deleted before the grace: %v", w)
	}

	// The API server does not answer: its cache judges no rule.
	h.clock.t = h.clock.t.Add(time.Second)
	a.mu.Lock()
	a.apiErr = io.ErrUnexpectedEOF
	a.mu.Unlock()
	a.keepRules(ctx)
	if w := h.api.take(); len(w) != 0 {
		t.Fatalf("stale rules deleted while the API server does not answer: %v", w)
	}
	a.mu.Lock()
	a.apiErr, a.apiAnswered = nil, true
	a.mu.Unlock()

	// The grace is over: exactly proxyd's two stale rules on n1 go, one
	// of them failing once (retried on the next pass, counted as an error).
	h.api.failDelete[unseen.Name] = true
	a.keepRules(ctx)
	want := []string{"DELETE rule " + gone.Name, "DELETE rule " + unseen.Name, "POST event StaleRuleDeleted"}
	sort.Strings(want)
	if w := h.api.take(); strings.Join(w, "; ") != strings.Join(want, "; ") {
		t.Fatalf("after the grace wrote %q, want %q", w, want)
	}
	h.remove(t, gone)
	delete(h.api.failDelete, unseen.Name)
	a.keepRules(ctx)
	want = []string{"DELETE rule " + unseen.Name, "POST event StaleRuleDeleted"}
	if w := h.api.take(); strings.Join(w, "; ") != strings.Join(want, "; ") {
		t.Fatalf("the retry wrote %q, want %q", w, want)
	}
	h.remove(t, unseen)
	a.keepRules(ctx)
	if w := h.api.take(); len(w) != 0 {
		t.Fatalf("a settled node still writes: %v", w)
	}

	for _, m := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"proxyd_kubernetes_rule_writes_total", map[string]string{"op": "create", "result": "ok"}, 1},
		{"proxyd_kubernetes_rule_writes_total", map[string]string{"op": "delete", "result": "ok"}, 2},
		{"proxyd_kubernetes_rule_writes_total", map[string]string{"op": "delete", "result": "error"}, 1},
		{"proxyd_kubernetes_rule_writes_total", map[string]string{"op": "update", "result": "ok"}, 0},
		{"proxyd_kubernetes_stale_rules_deleted_total", nil, 2},
		{"proxyd_kubernetes_evictions_total", map[string]string{"result": "evicted"}, 0},
		{"proxyd_kubernetes_api_up", nil, 1},
		{"proxyd_kubernetes_gpus_lent", nil, 0},
		// Not synced (no informer runs here): the rules gauge is left out.
		{"proxyd_kubernetes_rules", nil, -1},
	} {
		if got := h.metric(t, m.name, m.labels); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
}

// TestMetrics: the series exist from the start with bounded labels, pass
// the exposition linter (what promtool check metrics checks), and follow
// the agent's state.
func TestMetrics(t *testing.T) {
	h := newKeepHarness(t, nil)
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(h.reg, "proxyd_kubernetes_rule_writes_total", "proxyd_kubernetes_evictions_total")
	if err != nil || n != 3*2+3 {
		t.Errorf("%d counter series at start (%v), want 9: op×result and every eviction result", n, err)
	}
	if v := h.metric(t, "proxyd_kubernetes_api_up", nil); v != 0 {
		t.Errorf("api_up before any probe answered = %v, want 0", v)
	}
	h.a.mu.Lock()
	h.a.apiAnswered = true
	h.a.leases["GPU-0"] = &lease{}
	h.a.leases["GPU-1"] = &lease{}
	h.a.mu.Unlock()
	if v := h.metric(t, "proxyd_kubernetes_api_up", nil); v != 1 {
		t.Errorf("api_up after an answer = %v, want 1", v)
	}
	if v := h.metric(t, "proxyd_kubernetes_gpus_lent", nil); v != 2 {
		t.Errorf("gpus_lent = %v, want 2", v)
	}
	h.a.mu.Lock()
	h.a.apiErr = io.ErrUnexpectedEOF
	h.a.mu.Unlock()
	if v := h.metric(t, "proxyd_kubernetes_api_up", nil); v != 0 {
		t.Errorf("api_up while the probe fails = %v, want 0", v)
	}
	// An eviction refused by the backoff is counted as deferred.
	h.a.mu.Lock()
	h.a.leases["GPU-0"].evictAgain = h.clock.t.Add(time.Minute)
	h.a.mu.Unlock()
	if err := h.a.evict(t.Context(), "GPU-0", deviceRef{"gpu.nvidia.com", "n1", "gpu-0"}, []string{"ai/job"}); err == nil {
		t.Fatal("an eviction within the backoff did not fail")
	}
	if v := h.metric(t, "proxyd_kubernetes_evictions_total", map[string]string{"result": "deferred"}); v != 1 {
		t.Errorf("evictions_total{deferred} = %v, want 1", v)
	}
	// Registering twice on one registry is refused, not a panic.
	if _, err := New(Options{Client: h.a.o.Client, Node: "n1", Metrics: h.reg}); err == nil {
		t.Error("a second agent registered the same series")
	}
}
