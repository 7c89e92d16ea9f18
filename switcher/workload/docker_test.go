package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// fakeDocker is an httptest fake of the Docker Engine API, enough of it for
// the runtime: ping (API version negotiation), version, containers create,
// start, inspect, stop, kill, delete and list. It records every request.
type fakeDocker struct {
	t          *testing.T
	srv        *httptest.Server
	apiVersion string
	engine     string

	mu         sync.Mutex
	seq        int
	containers map[string]*fakeContainer
	requests   []fakeRequest
	failStart  bool
}

type fakeContainer struct {
	ID, Name string
	Labels   map[string]string
	Running  bool
	ExitCode int
	Create   map[string]any
}

type fakeRequest struct {
	Method, Path string
	Query        url.Values
	Body         map[string]any
}

func newFakeDocker(t *testing.T) *fakeDocker {
	f := &fakeDocker{t: t, apiVersion: "1.43", engine: "Engine", containers: map[string]*fakeContainer{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDocker) host() string { return "tcp://" + f.srv.Listener.Addr().String() }

// add puts a container in place as if created earlier (by proxyd or not).
func (f *fakeDocker) add(name string, labels map[string]string, running bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("%064d", f.seq)
	f.containers[id] = &fakeContainer{ID: id, Name: "/" + name, Labels: labels, Running: running}
	return id
}

func (f *fakeDocker) find(ref string) *fakeContainer {
	for _, c := range f.containers {
		if c.ID == ref || c.Name == "/"+ref || strings.HasPrefix(c.ID, ref) && len(ref) >= 12 {
			return c
		}
	}
	return nil
}

func (f *fakeDocker) reqs(method, pathPart string) []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.requests {
		if r.Method == method && strings.Contains(r.Path, pathPart) {
			out = append(out, r)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeDocker) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.Path
	var body map[string]any
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		_ = json.Unmarshal(b, &body)
	}
	f.requests = append(f.requests, fakeRequest{Method: r.Method, Path: p, Query: r.URL.Query(), Body: body})
	if p == "/_ping" {
		w.Header().Set("Api-Version", f.apiVersion)
		w.Header().Set("Ostype", "linux")
		w.WriteHeader(http.StatusOK)
		return
	}
	prefix := "/v" + f.apiVersion
	if !strings.HasPrefix(p, prefix+"/") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "unversioned or wrongly versioned path " + p})
		return
	}
	p = strings.TrimPrefix(p, prefix)
	parts := strings.Split(strings.Trim(p, "/"), "/")
	notFound := func(ref string) {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "No such container: " + ref})
	}
	switch {
	case r.Method == http.MethodGet && p == "/version":
		writeJSON(w, 200, map[string]any{"Version": "27.3.1", "ApiVersion": f.apiVersion, "MinAPIVersion": "1.24",
			"Components": []map[string]any{{"Name": f.engine, "Version": "27.3.1"}}})
	case r.Method == http.MethodPost && p == "/containers/create":
		name := r.URL.Query().Get("name")
		if c := f.find(name); c != nil && name != "" {
			writeJSON(w, http.StatusConflict, map[string]string{"message": fmt.Sprintf("Conflict. The container name \"/%s\" is already in use by container %q", name, c.ID)})
			return
		}
		f.seq++
		id := fmt.Sprintf("%064d", f.seq)
		labels := map[string]string{}
		if l, ok := body["Labels"].(map[string]any); ok {
			for k, v := range l {
				labels[k], _ = v.(string)
			}
		}
		f.containers[id] = &fakeContainer{ID: id, Name: "/" + name, Labels: labels, Create: body}
		writeJSON(w, http.StatusCreated, map[string]any{"Id": id, "Warnings": []string{}})
	case r.Method == http.MethodGet && p == "/containers/json":
		var filters map[string]map[string]bool
		_ = json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filters)
		var out []map[string]any
		for _, c := range f.containers {
			match := true
			for lf := range filters["label"] {
				k, v, _ := strings.Cut(lf, "=")
				if c.Labels[k] != v {
					match = false
				}
			}
			if !match {
				continue
			}
			state := "exited"
			if c.Running {
				state = "running"
			}
			out = append(out, map[string]any{"Id": c.ID, "Names": []string{c.Name}, "Labels": c.Labels, "State": state})
		}
		writeJSON(w, 200, out)
	case len(parts) >= 2 && parts[0] == "containers":
		c := f.find(parts[1])
		if c == nil {
			notFound(parts[1])
			return
		}
		action := ""
		if len(parts) > 2 {
			action = parts[2]
		}
		switch {
		case r.Method == http.MethodGet && action == "json":
			status := "exited"
			if c.Running {
				status = "running"
			}
			writeJSON(w, 200, map[string]any{"Id": c.ID, "Name": c.Name,
				"State":  map[string]any{"Status": status, "Running": c.Running, "ExitCode": c.ExitCode},
				"Config": map[string]any{"Labels": c.Labels}})
		case r.Method == http.MethodPost && action == "start":
			if f.failStart {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"message": "could not select device driver \"cdi\""})
				return
			}
			c.Running = true
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodPost && action == "stop":
			c.Running, c.ExitCode = false, 0
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodPost && action == "kill":
			c.Running, c.ExitCode = false, 137
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodDelete && action == "":
			if c.Running && r.URL.Query().Get("force") != "1" {
				writeJSON(w, http.StatusConflict, map[string]string{"message": "container is running: stop it first"})
				return
			}
			delete(f.containers, c.ID)
			w.WriteHeader(http.StatusNoContent)
		default:
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "fake: no route " + r.Method + " " + p})
		}
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "fake: no route " + r.Method + " " + p})
	}
}

func newTestDocker(t *testing.T, f *fakeDocker, mode string) *Docker {
	t.Helper()
	d, err := NewDocker(DockerOptions{Host: f.host(), DeviceMode: mode, APITimeout: time.Duration(5 * time.Second),
		Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func vllmSpec() Spec {
	return Spec{Name: "vllm", Definition: Definition{Runtime: KindDocker, Params: DockerParams{Image: "vllm/vllm-openai:v0.6.3",
		Cmd: []string{"--model", "m", "--port", "{port}", "--served-model-name", "{contract}"}, Env: []string{"GPU={gpu_uuid}", "IDX={gpu_index}"},
		Binds: []string{"/models:/models:ro"}, Network: "host"}, StopTimeout: time.Duration(90 * time.Second),
		Readiness: ReadinessRunning, Port: 8000, PortPerGPU: true}}
}

var testInstance = Instance{Workload: "vllm", Contract: "acme", GPUUUID: "GPU-5f0f6a3c-0000-4000-8000-000000000003", GPUIndex: 3}

func TestDockerStartCreatesLabelledCDIContainer(t *testing.T) {
	f := newFakeDocker(t)
	d := newTestDocker(t, f, DeviceModeCDI)
	h, err := d.Start(t.Context(), vllmSpec(), testInstance)
	if err != nil {
		t.Fatal(err)
	}
	if h.Runtime != KindDocker || h.ID == "" || h.Instance != testInstance {
		t.Errorf("handle %+v", h)
	}
	creates := f.reqs(http.MethodPost, "/containers/create")
	if len(creates) != 1 {
		t.Fatalf("%d creates", len(creates))
	}
	c := creates[0]
	if !strings.HasPrefix(c.Path, "/v1.43/") {
		t.Errorf("create went to %s: the API version was not negotiated down to the engine's 1.43", c.Path)
	}
	if got := c.Query.Get("name"); got != "proxyd-vllm-5f0f6a3c" {
		t.Errorf("name %q", got)
	}
	b := c.Body
	labels, _ := b["Labels"].(map[string]any)
	want := map[string]string{LabelOwner: OwnerValue, LabelGPU: testInstance.GPUUUID, LabelContract: "acme", LabelWorkload: "vllm"}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label %s = %v, want %q", k, labels[k], v)
		}
	}
	if b["Image"] != "vllm/vllm-openai:v0.6.3" || b["StopTimeout"] != float64(90) {
		t.Errorf("config: %v", b)
	}
	if got := fmt.Sprint(b["Cmd"]); got != "[--model m --port 8003 --served-model-name acme]" {
		t.Errorf("cmd placeholders: %s", got)
	}
	if got := fmt.Sprint(b["Env"]); got != "[GPU="+testInstance.GPUUUID+" IDX=3]" {
		t.Errorf("env: %s", got)
	}
	hc, _ := b["HostConfig"].(map[string]any)
	if hc["NetworkMode"] != "host" || hc["Init"] != true || fmt.Sprint(hc["Binds"]) != "[/models:/models:ro]" {
		t.Errorf("host config: %v", hc)
	}
	if rp, _ := hc["RestartPolicy"].(map[string]any); rp["Name"] != "no" {
		t.Errorf("restart policy %v", hc["RestartPolicy"])
	}
	drs, _ := hc["DeviceRequests"].([]any)
	if len(drs) != 1 {
		t.Fatalf("device requests %v", hc["DeviceRequests"])
	}
	dr := drs[0].(map[string]any)
	if dr["Driver"] != "cdi" || fmt.Sprint(dr["DeviceIDs"]) != "[nvidia.com/gpu="+testInstance.GPUUUID+"]" {
		t.Errorf("device request %v", dr)
	}
	if n := len(f.reqs(http.MethodPost, "/start")); n != 1 {
		t.Errorf("%d starts", n)
	}
	st, err := d.Status(t.Context(), vllmSpec(), h)
	if err != nil || !st.Running || !st.Ready {
		t.Errorf("status %+v %v", st, err)
	}
}

func TestDockerNvidiaDeviceMode(t *testing.T) {
	f := newFakeDocker(t)
	d := newTestDocker(t, f, DeviceModeNVIDIA)
	if _, err := d.Start(t.Context(), vllmSpec(), testInstance); err != nil {
		t.Fatal(err)
	}
	hc, _ := f.reqs(http.MethodPost, "/containers/create")[0].Body["HostConfig"].(map[string]any)
	dr := hc["DeviceRequests"].([]any)[0].(map[string]any)
	if dr["Driver"] != "nvidia" || fmt.Sprint(dr["DeviceIDs"]) != "["+testInstance.GPUUUID+"]" || fmt.Sprint(dr["Capabilities"]) != "[[gpu]]" {
		t.Errorf("device request %v", dr)
	}
}

func TestDockerStopOnlyOwnContainers(t *testing.T) {
	f := newFakeDocker(t)
	d := newTestDocker(t, f, DeviceModeCDI)
	spec := vllmSpec()
	h, err := d.Start(t.Context(), spec, testInstance)
	if err != nil {
		t.Fatal(err)
	}
	foreign := f.add("someone-elses-llm", map[string]string{"com.example": "x", LabelGPU: testInstance.GPUUUID}, true)
	fake := Handle{Runtime: KindDocker, ID: foreign, Instance: testInstance}
	for _, force := range []bool{false, true} {
		if err := d.Stop(t.Context(), spec, fake, force); !errors.Is(err, ErrNotOwned) {
			t.Errorf("stop (force %v) of a foreign container: %v", force, err)
		}
	}
	if _, err := d.Status(t.Context(), spec, fake); !errors.Is(err, ErrNotOwned) {
		t.Errorf("status of a foreign container: %v", err)
	}
	// List shows ours only, and asks the engine by label.
	l, err := d.List(t.Context(), ListQuery{})
	if err != nil || len(l) != 1 || l[0].ID != h.ID || !l[0].Running || l[0].Instance.Contract != "acme" || l[0].GPUUUID != testInstance.GPUUUID {
		t.Errorf("list: %+v %v", l, err)
	}
	if lr := f.reqs(http.MethodGet, "/containers/json"); len(lr) != 1 || !strings.Contains(lr[0].Query.Get("filters"), LabelOwner+"="+OwnerValue) {
		t.Errorf("list request %+v", lr)
	}

	// Graceful stop of ours: stop with the stop timeout, then remove.
	if err := d.Stop(t.Context(), spec, h, false); err != nil {
		t.Fatal(err)
	}
	stops := f.reqs(http.MethodPost, "/stop")
	if len(stops) != 1 || stops[0].Query.Get("t") != "90" || !strings.Contains(stops[0].Path, h.ID) {
		t.Errorf("stop requests %+v", stops)
	}
	dels := f.reqs(http.MethodDelete, "/containers/")
	if len(dels) != 1 || !strings.Contains(dels[0].Path, h.ID) || dels[0].Query.Get("force") == "1" {
		t.Errorf("delete requests %+v", dels)
	}
	// Nothing ever stopped, killed or removed the foreign one.
	for _, r := range append(append(f.reqs(http.MethodPost, "/stop"), f.reqs(http.MethodPost, "/kill")...), f.reqs(http.MethodDelete, "/")...) {
		if strings.Contains(r.Path, foreign) {
			t.Errorf("touched the foreign container: %s %s", r.Method, r.Path)
		}
	}
	// Gone now: status says so, a second stop is a no-op.
	if st, err := d.Status(t.Context(), spec, h); err != nil || !st.Gone {
		t.Errorf("status after stop: %+v %v", st, err)
	}
	if err := d.Stop(t.Context(), spec, h, false); err != nil {
		t.Errorf("second stop: %v", err)
	}

	// Kill: SIGKILL then forced removal.
	h2, err := d.Start(t.Context(), spec, testInstance)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(t.Context(), spec, h2, true); err != nil {
		t.Fatal(err)
	}
	kills := f.reqs(http.MethodPost, "/kill")
	if len(kills) != 1 || kills[0].Query.Get("signal") != "KILL" {
		t.Errorf("kill requests %+v", kills)
	}
}

func TestDockerStatusExitedAndReadiness(t *testing.T) {
	f := newFakeDocker(t)
	d := newTestDocker(t, f, DeviceModeCDI)
	ready := false
	var mu sync.Mutex
	probe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/health" || !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer probe.Close()
	_, port, _ := net.SplitHostPort(probe.Listener.Addr().String())
	spec := vllmSpec()
	spec.Readiness, spec.ReadinessPath, spec.ReadinessStatus = ReadinessVLLM, "/health", 200
	spec.Port, _ = strconv.Atoi(port)
	spec.PortPerGPU = false
	h, err := d.Start(t.Context(), spec, testInstance)
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(t.Context(), spec, h)
	if err != nil || !st.Running || st.Ready || !strings.Contains(st.Detail, "503") {
		t.Errorf("loading: %+v %v", st, err)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	if st, err := d.Status(t.Context(), spec, h); err != nil || !st.Ready {
		t.Errorf("ready: %+v %v", st, err)
	}
	f.mu.Lock()
	c := f.find(h.ID)
	c.Running, c.ExitCode = false, 3
	f.mu.Unlock()
	st, err = d.Status(t.Context(), spec, h)
	if err != nil || st.Running || st.ExitCode != 3 || !strings.Contains(st.Detail, "exit code 3") || !strings.Contains(st.Detail, "docker logs") {
		t.Errorf("exited: %+v %v", st, err)
	}
}

func TestDockerNameConflicts(t *testing.T) {
	spec := vllmSpec()
	name := ContainerName(testInstance)
	own := Labels(testInstance)
	tests := []struct {
		name     string
		labels   map[string]string
		running  bool
		wantErr  error
		adopt    bool
		creates  int
		removals int
	}{
		{"same instance running: adopted", own, true, nil, true, 1, 0},
		{"ours, stopped: removed and created again", own, false, nil, false, 2, 1},
		{"not ours: refused", map[string]string{"x": "y"}, false, ErrNotOwned, false, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDocker(t)
			d := newTestDocker(t, f, DeviceModeCDI)
			old := f.add(name, tc.labels, tc.running)
			h, err := d.Start(t.Context(), spec, testInstance)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if tc.adopt && h.ID != old {
				t.Errorf("not adopted: %s", h.ID)
			}
			if n := len(f.reqs(http.MethodPost, "/containers/create")); n != tc.creates {
				t.Errorf("%d creates, want %d", n, tc.creates)
			}
			if n := len(f.reqs(http.MethodDelete, "/containers/")); n != tc.removals {
				t.Errorf("%d removals, want %d", n, tc.removals)
			}
		})
	}
}

func TestDockerStartFailureRemovesTheContainer(t *testing.T) {
	f := newFakeDocker(t)
	f.failStart = true
	d := newTestDocker(t, f, DeviceModeCDI)
	_, err := d.Start(t.Context(), vllmSpec(), testInstance)
	if err == nil || !strings.Contains(err.Error(), "cdi") || !strings.Contains(err.Error(), "proxyd-vllm-5f0f6a3c") {
		t.Fatalf("start failure: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.containers) != 0 {
		t.Errorf("a created container was left behind: %v", f.containers)
	}
}

func TestDockerEngineUnreachable(t *testing.T) {
	f := newFakeDocker(t)
	f.srv.Close()
	d := newTestDocker(t, f, DeviceModeCDI)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := d.List(ctx, ListQuery{})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the container engine") {
		t.Errorf("unreachable engine: %v", err)
	}
}

func TestDockerDetectsPodman(t *testing.T) {
	f := newFakeDocker(t)
	f.engine = "Podman Engine"
	d := newTestDocker(t, f, DeviceModeCDI)
	if _, err := d.Start(t.Context(), vllmSpec(), testInstance); err != nil {
		t.Fatal(err)
	}
	if d.Engine() != "podman" {
		t.Errorf("engine %q", d.Engine())
	}
}
