package nvml

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestAPIExtension(t *testing.T) {
	c := startComponent(t, ComponentOptions{Backend: BackendSimulated})
	sim := c.Library().Sim
	uuids := sim.UUIDs()
	plain := http.NewServeMux()
	c.RegisterAPI(plain)
	extended := http.NewServeMux()
	mux := plain
	do := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}

	// Without an extension, nothing changes: no "switch" field.
	if _, body := do("GET", "/api/v1/gpus"); strings.Contains(body, `"switch"`) {
		t.Errorf("no extension, yet a switch field: %s", body)
	}

	var mu sync.Mutex
	var resumed []string
	resumeErr := error(nil)
	c.RegisterAPIWith(extended, APIExtension{
		Annotate: func(uuid string) any {
			if uuid == uuids[1] {
				return nil
			}
			return map[string]string{"state": "MINING", "uuid": uuid}
		},
		AfterResume: func(_ context.Context, uuid string) error {
			mu.Lock()
			defer mu.Unlock()
			resumed = append(resumed, uuid)
			return resumeErr
		},
	})
	mux = extended

	code, body := do("GET", "/api/v1/gpus")
	var node struct {
		Backend string `json:"backend"`
		GPUs    []struct {
			UUID   string            `json:"uuid"`
			Health json.RawMessage   `json:"health"`
			Switch map[string]string `json:"switch"`
		} `json:"gpus"`
	}
	if err := json.Unmarshal([]byte(body), &node); err != nil || code != 200 {
		t.Fatalf("GET /api/v1/gpus: %d %v %s", code, err, body)
	}
	if node.Backend != BackendSimulated || len(node.GPUs) != 8 {
		t.Fatalf("node lost its fields: %+v", node)
	}
	for i, g := range node.GPUs {
		switch {
		case len(g.Health) == 0:
			t.Errorf("GPU %d lost its health: %s", i, body)
		case i == 1 && g.Switch != nil:
			t.Errorf("GPU 1: annotation nil must leave out the field, got %v", g.Switch)
		case i != 1 && (g.Switch["state"] != "MINING" || g.Switch["uuid"] != g.UUID):
			t.Errorf("GPU %d: switch = %v", i, g.Switch)
		}
	}
	if _, body := do("GET", "/api/v1/gpus/"+uuids[2]); !strings.Contains(body, `"switch"`) || !strings.Contains(body, `"telemetry"`) {
		t.Errorf("one GPU lacks switch or telemetry: %s", body)
	}

	// Resume goes through the extension, healthy GPU or not.
	if code, body := do("POST", "/api/v1/gpus/"+uuids[3]+"/resume"); code != 200 || !strings.Contains(body, `"switch"`) {
		t.Errorf("resume of a healthy GPU: %d %s", code, body)
	}
	mu.Lock()
	resumeErr = errors.New("switcher not ready")
	mu.Unlock()
	if code, body := do("POST", "/api/v1/gpus/"+uuids[3]+"/resume"); code != http.StatusConflict || !strings.Contains(body, "switcher not ready") {
		t.Errorf("resume refused by the extension: %d %s", code, body)
	}
	// An unhealthy GPU whose probe fails never reaches the extension.
	_ = sim.Lose(uuids[5])
	_ = c.Manager().SampleNow(context.Background())
	if code, _ := do("POST", "/api/v1/gpus/"+uuids[5]+"/resume"); code != http.StatusConflict {
		t.Errorf("resume of a lost GPU: %d", code)
	}
	mu.Lock()
	got := strings.Join(resumed, ",")
	mu.Unlock()
	if got != uuids[3]+","+uuids[3] {
		t.Errorf("extension saw resumes %q, want GPU 3 twice", got)
	}

	// The same component's routes registered without the extension.
	mux = plain
	if _, body := do("GET", "/api/v1/gpus"); strings.Contains(body, `"switch"`) {
		t.Errorf("routes without the extension, yet a switch field: %s", body)
	}
}
