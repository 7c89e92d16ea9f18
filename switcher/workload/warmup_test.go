package workload

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// inferenceServer stands in for vLLM/TGI/SGLang and Triton on 127.0.0.1:
// /health answers health, /v1/completions answers completion (status and
// body) after delay, /v2/models/<model>/ready answers 200 for tritonModel.
type inferenceServer struct {
	mu          sync.Mutex
	health      int
	status      int
	body        string
	delay       time.Duration
	tritonModel string
	warmups     []map[string]any
	tritonPaths []string
}

func (s *inferenceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	health, status, body, delay := s.health, s.status, s.body, s.delay
	s.mu.Unlock()
	switch {
	case r.URL.Path == "/health" && r.Method == http.MethodGet:
		w.WriteHeader(health)
	case r.URL.Path == "/v1/completions" && r.Method == http.MethodPost:
		var req map[string]any
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "want a JSON body", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.warmups = append(s.warmups, req)
		s.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	case strings.HasPrefix(r.URL.Path, "/v2/models/") && r.Method == http.MethodGet:
		s.mu.Lock()
		s.tritonPaths = append(s.tritonPaths, r.URL.EscapedPath())
		s.mu.Unlock()
		if r.URL.Path == "/v2/models/"+s.tritonModel+"/ready" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
	default:
		http.NotFound(w, r)
	}
}

func (s *inferenceServer) set(f func(s *inferenceServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func startInference(t *testing.T) (*inferenceServer, int) {
	t.Helper()
	s := &inferenceServer{health: 200, status: 200, body: `{"choices": [{"text": " world"}]}`}
	srv := httptest.NewServer(s) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	return s, port
}

func warmupSpec(port int, warmup, model string) Spec {
	return Spec{Name: "llm", Definition: Definition{Runtime: KindExec, Readiness: ReadinessVLLM,
		ReadinessPath: "/health", ReadinessStatus: 200, Port: port, Warmup: warmup, WarmupModel: model,
		WarmupTimeout: time.Duration(2 * time.Second)}}
}

func TestProbeWarmup(t *testing.T) {
	in := Instance{Workload: "llm", Contract: "c1", GPUUUID: "GPU-a", GPUIndex: 0}
	tests := []struct {
		name    string
		warmup  string
		model   string
		server  func(s *inferenceServer)
		client  *http.Client
		timeout time.Duration
		wantErr string // "" passes
		check   func(t *testing.T, s *inferenceServer)
	}{
		{name: "openai: a one-token completion naming the model", warmup: WarmupOpenAI, model: "meta-llama/Llama-3.1-8B",
			check: func(t *testing.T, s *inferenceServer) {
				if len(s.warmups) != 1 || s.warmups[0]["max_tokens"] != 1.0 || s.warmups[0]["model"] != "meta-llama/Llama-3.1-8B" ||
					s.warmups[0]["prompt"] == nil {
					t.Errorf("warm-up requests %v", s.warmups)
				}
			}},
		{name: "openai without a model leaves it to the server", warmup: WarmupOpenAI,
			check: func(t *testing.T, s *inferenceServer) {
				if _, named := s.warmups[0]["model"]; named {
					t.Errorf("warm-up named a model: %v", s.warmups[0])
				}
			}},
		{name: "no warm-up configured sends none", check: func(t *testing.T, s *inferenceServer) {
			if len(s.warmups)+len(s.tritonPaths) != 0 {
				t.Errorf("requests without a warm-up: %v %v", s.warmups, s.tritonPaths)
			}
		}},
		{name: "readiness fails first: no warm-up", warmup: WarmupOpenAI, server: func(s *inferenceServer) { s.health = 503 },
			wantErr: "readiness probe GET", check: func(t *testing.T, s *inferenceServer) {
				if len(s.warmups) != 0 {
					t.Errorf("a warm-up while /health says 503: %v", s.warmups)
				}
			}},
		{name: "health 200 but the model is not served", warmup: WarmupOpenAI, model: "wrong",
			server:  func(s *inferenceServer) { s.status, s.body = 404, `{"error": "The model wrong does not exist."}` },
			wantErr: `status 404, want 200 (is warmup_model the name the server serves the model under?): {"error": "The model wrong does not exist."}`},
		{name: "health 200 but the GPU faulted", warmup: WarmupOpenAI,
			server: func(s *inferenceServer) { s.status, s.body = 500, "CUDA error: an illegal memory access" }, wantErr: "status 500"},
		{name: "200 without choices is not a completion", warmup: WarmupOpenAI,
			server: func(s *inferenceServer) { s.body = `{"object": "error"}` }, wantErr: "no completion choices"},
		{name: "a completion slower than warmup_timeout", warmup: WarmupOpenAI, timeout: 50 * time.Millisecond,
			server: func(s *inferenceServer) { s.delay = time.Minute }, wantErr: "no answer within warmup_timeout 50ms"},
		{name: "the readiness client's short timeout does not cut a warm-up", warmup: WarmupOpenAI,
			client: &http.Client{Timeout: 30 * time.Millisecond}, server: func(s *inferenceServer) { s.delay = 300 * time.Millisecond }},
		{name: "triton: the model's ready check", warmup: WarmupTriton, model: "resnet 50",
			server: func(s *inferenceServer) { s.tritonModel = "resnet 50" },
			check: func(t *testing.T, s *inferenceServer) {
				if len(s.tritonPaths) != 1 || s.tritonPaths[0] != "/v2/models/resnet%2050/ready" {
					t.Errorf("triton requests %v", s.tritonPaths)
				}
			}},
		{name: "triton: the model is not loaded", warmup: WarmupTriton, model: "bert",
			server: func(s *inferenceServer) { s.tritonModel = "resnet" }, wantErr: "warm-up GET http://127.0.0.1:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, port := startInference(t)
			if tc.server != nil {
				s.set(tc.server)
			}
			spec := warmupSpec(port, tc.warmup, tc.model)
			if tc.timeout > 0 {
				spec.WarmupTimeout = time.Duration(tc.timeout)
			}
			err := Probe(t.Context(), tc.client, spec, in)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Probe: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Probe: %v, want an error containing %q", err, tc.wantErr)
			}
			if tc.check != nil {
				s.mu.Lock()
				defer s.mu.Unlock()
				tc.check(t, s)
			}
		})
	}
}

// Through the exec runtime: the workload runs and /health answers, but it
// is ready only once a completion succeeds; a failing one keeps it not
// ready (the switcher keeps probing until start_ai).
func TestExecStatusWaitsForTheWarmup(t *testing.T) {
	s, port := startInference(t)
	s.set(func(s *inferenceServer) { s.status, s.body = 503, `{"error": "loading"}` })
	e, _ := newTestExec(t)
	spec := execSpec(t.TempDir())
	spec.Definition.Readiness, spec.ReadinessPath, spec.ReadinessStatus = ReadinessVLLM, "/health", 200
	spec.Port, spec.Warmup, spec.WarmupTimeout = port, WarmupOpenAI, time.Duration(time.Second)
	in := Instance{Workload: "miner", Contract: "c1", GPUUUID: "GPU-a", GPUIndex: 0}
	h, err := e.Start(t.Context(), spec, in)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(t.Context(), spec, h)
	if err != nil || !st.Running || st.Ready || !strings.Contains(st.Detail, "warm-up POST") || !strings.Contains(st.Detail, "status 503") {
		t.Fatalf("before the model answers: %+v %v", st, err)
	}
	s.set(func(s *inferenceServer) { s.status, s.body = 200, `{"choices": [{"text": "!"}]}` })
	if st, err := e.Status(t.Context(), spec, h); err != nil || !st.Ready {
		t.Fatalf("after the model answers: %+v %v", st, err)
	}
}
