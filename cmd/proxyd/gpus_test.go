package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

func runGPUsCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(append([]string{"gpus"}, args...), stdio{in: strings.NewReader(""), out: &out, err: &errb})
	return code, out.String(), errb.String()
}

// skipIfNVIDIADriver skips tests that need this machine to have no NVIDIA driver.
func skipIfNVIDIADriver(t *testing.T) {
	t.Helper()
	lib, err := nvml.OpenLibrary(nvml.BackendNVML, nvml.LibraryOptions{})
	if err == nil {
		lib.Close()
		t.Skip("an NVIDIA driver is present")
	}
	if !errors.Is(err, nvml.ErrLibraryNotFound) {
		t.Skipf("NVML fails differently here: %v", err)
	}
}

func TestGPUsSimulatedTable(t *testing.T) {
	code, out, errOut := runGPUsCmd(t, "--backend", "simulated", "--config", writeGPUsConfig(t, ""))
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "Backend simulated") || !strings.Contains(lines[0], "Driver 550.54.15") ||
		!strings.Contains(lines[0], "GPUs 8") {
		t.Errorf("header %q", lines[0])
	}
	rows := 0
	for _, l := range lines[1:] {
		if strings.Contains(l, " GPU-") {
			rows++
			for _, want := range []string{"A100", "40960MiB", "55W / 400W", "healthy"} {
				if !strings.Contains(l, want) {
					t.Errorf("row %q lacks %q", l, want)
				}
			}
		}
	}
	if rows != 8 {
		t.Errorf("%d GPU rows, want 8:\n%s", rows, out)
	}
}

func TestGPUsJSON(t *testing.T) {
	code, out, errOut := runGPUsCmd(t, "--json", "--config", writeGPUsConfig(t, "[gpu]\nbackend = \"simulated\"\n"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var n nvml.Node
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if n.Backend != "simulated" || len(n.GPUs) != 8 || n.GPUs[7].Telemetry == nil || n.GPUs[7].Health.State != nvml.Healthy {
		t.Errorf("node %+v", n)
	}
}

func TestGPUsNoDriver(t *testing.T) {
	skipIfNVIDIADriver(t)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"nvml", []string{"--backend", "nvml"}, []string{"libnvidia-ml.so.1", `backend "nvml"`, "not found"}},
		{"auto", []string{"--backend", "auto"}, []string{"libnvidia-ml.so.1", "GPU features are off"}},
		{"nvml from config", []string{"--config", writeGPUsConfig(t, "[gpu]\nbackend = \"nvml\"\n")}, []string{"libnvidia-ml.so.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runGPUsCmd(t, tc.args...)
			if code != exitFailure || out != "" {
				t.Errorf("exit %d, stdout %q", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}

func TestGPUsUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad backend", []string{"--backend", "cuda"}, exitUsage, `--backend "cuda"`},
		{"off backend flag", []string{"--backend", "off"}, exitUsage, `--backend "off"`},
		{"off in config", []string{"--config", writeGPUsConfig(t, "[gpu]\nbackend = \"off\"\n")}, exitFailure, "GPU features are off"},
		{"stray argument", []string{"extra"}, exitUsage, `unexpected argument "extra"`},
		{"missing config", []string{"--config", "/nonexistent/proxyd.toml"}, exitConfig, "no such file"},
		{"bad config", []string{"--config", writeGPUsConfig(t, "[gpu]\nbackend = 3\n")}, exitConfig, "backend"},
		{"unknown flag", []string{"--nope"}, exitUsage, "Usage: proxyd gpus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runGPUsCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d (want %d), stderr %q lacks %q", code, tc.code, errOut, tc.want)
			}
		})
	}
	code, out, _ := runGPUsCmd(t, "--help")
	if code != exitOK || !strings.Contains(out, "--json") {
		t.Errorf("--help: %d %q", code, out)
	}
}

func writeGPUsConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "proxyd.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrintGPUTableMarksNotApplicable(t *testing.T) {
	temp := uint32(41)
	n := nvml.Node{Backend: "nvml", GPUs: []nvml.GPU{{
		Info: nvml.Info{UUID: "GPU-x", Index: 0, Name: "NVIDIA GeForce RTX 4090", MemoryTotalBytes: 24 << 30},
		Telemetry: &nvml.Telemetry{TemperatureC: &temp,
			NotSupported: []string{nvml.FieldPowerDraw, nvml.FieldECC},
			Errors:       map[string]string{nvml.FieldPowerLimit: "ERROR_UNKNOWN"}},
		Health: nvml.Health{State: nvml.Degraded, Reasons: []nvml.Reason{{Severity: nvml.Degraded, Message: "NVML reads failing"}}},
	}}}
	var b bytes.Buffer
	printGPUTable(&b, n)
	out := b.String()
	for _, want := range []string{"Driver n/a", "41C", "n/a / ERR", "- / 24576MiB", "?", "degraded", "GPU 0 degraded: NVML reads failing"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// With backend "nvml" and no driver, proxyd runs on (the proxy side is
// unaffected) and /readyz names the missing library.
func TestRunWithoutNVIDIADriver(t *testing.T) {
	skipIfNVIDIADriver(t)
	cfg := writeGPUsConfig(t, "shutdown_timeout = \"5s\"\n[http]\nlisten = \"127.0.0.1:0\"\n[gpu]\nbackend = \"nvml\"\n")
	p := startDaemon(t, cfg)
	p.waitLog(t, "proxyd ready", 1)
	if code, _ := daemonGet(t, p, "/healthz", ""); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	code, body := daemonGet(t, p, "/readyz", "")
	var rd struct {
		Components map[string]string `json:"components"`
	}
	_ = json.Unmarshal([]byte(body), &rd)
	if code != 503 || !strings.Contains(rd.Components["gpu"], "libnvidia-ml.so.1") {
		t.Errorf("/readyz = %d %s; want 503 naming libnvidia-ml.so.1", code, body)
	}
	stopDaemon(t, p)
}

func TestRunSimulatedServesGPUs(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	const token = "gpus-e2e-token-0123456789abcdef"
	if err := os.WriteFile(tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeGPUsConfig(t, fmt.Sprintf("shutdown_timeout = \"5s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n"+
		"[gpu]\nbackend = \"simulated\"\npoll_interval = \"200ms\"\n", tok))
	p := startDaemon(t, cfg)
	p.waitLog(t, "proxyd ready", 1)
	if code, body := daemonGet(t, p, "/readyz", ""); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	code, body := daemonGet(t, p, "/api/v1/gpus", token)
	var n nvml.Node
	if err := json.Unmarshal([]byte(body), &n); err != nil || code != 200 || len(n.GPUs) != 8 {
		t.Fatalf("/api/v1/gpus = %d %v: %.300s", code, err, body)
	}
	if code, body := daemonGet(t, p, "/api/v1/gpus/"+n.GPUs[5].UUID, token); code != 200 || !strings.Contains(body, n.GPUs[5].UUID) {
		t.Errorf("/api/v1/gpus/{uuid} = %d %.300s", code, body)
	}
	_, metrics := daemonGet(t, p, "/metrics", "")
	for _, want := range []string{"DCGM_FI_DEV_GPU_UTIL{", "DCGM_FI_DEV_FB_USED{", "DCGM_FI_DEV_XID_ERRORS{",
		`proxyd_gpu_health{state="healthy",uuid="` + n.GPUs[0].UUID + `"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	stopDaemon(t, p)
}

// startSimGPUProcess starts a real `sleep` that the simulated backend
// shows on a GPU (PROXYD_SIM_GPU), with extra environment; it is killed
// when the test ends.
func startSimGPUProcess(t *testing.T, gpu string, env ...string) int {
	t.Helper()
	cmd := exec.Command("sleep", "120")
	cmd.Env = append(append(os.Environ(), "PROXYD_SIM_GPU="+gpu), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// Every GPU process shows with its owner, in the table and in --json.
func TestGPUsShowsProcessOwners(t *testing.T) {
	uuid := nvmlsim.New(nvmlsim.Options{Node: simNode(t)}).UUIDs()[4]
	miner := startSimGPUProcess(t, uuid, "PROXYD_WORKLOAD=exec:mining:"+uuid, "PROXYD_CONTRACT=", "PROXYD_SIM_GPU_MIB=3000")
	foreign := startSimGPUProcess(t, uuid)
	var n nvml.Node
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, out, errOut := runGPUsCmd(t, "--backend", "simulated", "--json")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &n); err != nil {
			t.Fatal(err)
		}
		if ps, _ := n.GPUs[4].Telemetry.Processes(); len(ps) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the processes never showed on GPU 4: %+v", n.GPUs[4].Telemetry)
		}
		time.Sleep(50 * time.Millisecond)
	}
	owners := map[int]string{}
	for _, g := range n.GPUs {
		ps, _ := g.Telemetry.Processes()
		for _, p := range ps {
			if p.Owner.Class == "" {
				t.Errorf("GPU %d pid %d has no owner", g.Index, p.PID)
			}
			owners[int(p.PID)] = p.Owner.Class
		}
	}
	if owners[miner] != "mining" || owners[foreign] != "foreign" {
		t.Errorf("owners %v: want %d mining, %d foreign", owners, miner, foreign)
	}
	_, out, _ := runGPUsCmd(t, "--backend", "simulated")
	for _, want := range []string{"OWNER", fmt.Sprintf("%d  3000MiB  mining (exec:mining:%s, comm sleep", miner, uuid),
		fmt.Sprintf("%d  1024MiB  foreign (comm sleep", foreign)} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
