package nvmlsim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hashgate/proxyd/gpuproc"
)

func pidsOf(t *testing.T, d *Device) map[uint32]uint64 {
	t.Helper()
	ps, ret := d.GetComputeRunningProcesses()
	if ret != gonvml.SUCCESS {
		t.Fatalf("processes: %v", ret)
	}
	out := map[uint32]uint64{}
	for _, p := range ps {
		out[p.Pid] = p.UsedGpuMemory
	}
	return out
}

// Real processes name their GPU by index or UUID in PROXYD_SIM_GPU, with
// PROXYD_SIM_GPU_MIB of memory (default 1024); a simulated process of the
// same PID wins; values naming no GPU are ignored.
func TestRealProcessesFromProc(t *testing.T) {
	s0 := New(Options{Node: "real-test"})
	uuids := s0.UUIDs()
	root := t.TempDir()
	procs := map[int]string{
		500: "PROXYD_SIM_GPU=3\x00",
		501: "PROXYD_SIM_GPU=" + uuids[5] + "\x00PROXYD_SIM_GPU_MIB=2048\x00",
		502: "PROXYD_SIM_GPU=5\x00PROXYD_SIM_GPU_MIB=lots\x00PROXYD_WORKLOAD=exec:mining:x\x00",
		503: "PROXYD_SIM_GPU=GPU-not-here\x00",
		504: "PROXYD_SIM_GPU=8\x00",
		505: "PATH=/bin\x00",
		506: "PROXYD_SIM_GPU=3\x00", // also a simulated process on GPU 3
	}
	for pid, env := range procs {
		dir := filepath.Join(root, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{"environ": env, "stat": fmt.Sprintf("%d (worker) S 1 %d %d 0", pid, pid, pid), "cgroup": "0::/\n"}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := New(Options{Node: "real-test", Procs: gpuproc.NewProcFS(root)})
	_ = s.Update(uuids[3], func(g *GPUState) {
		g.AddProcess(Process{PID: 506, UsedMemory: 5 << 30, Env: []string{"PROXYD_WORKLOAD=sim-1", "HOME=/x"}, Comm: "vllm"})
	})
	d3, _ := s.Device(uuids[3])
	d5, _ := s.Device(uuids[5])
	if got := pidsOf(t, d3); len(got) != 2 || got[500] != 1024<<20 || got[506] != 5<<30 {
		t.Errorf("GPU 3 processes %v, want 500 (1024 MiB) and the simulated 506", got)
	}
	if got := pidsOf(t, d5); len(got) != 2 || got[501] != 2048<<20 || got[502] != 1024<<20 {
		t.Errorf("GPU 5 processes %v, want 501 (2048 MiB) and 502 (default)", got)
	}
	if ps, _ := d3.GetGraphicsRunningProcesses(); len(ps) != 0 {
		t.Errorf("real processes listed as graphics: %v", ps)
	}
	m, _ := d5.GetMemoryInfo()
	if want := IdleMemoryUsed + 3072<<20; m.Used != want {
		t.Errorf("GPU 5 memory used %d, want %d", m.Used, want)
	}
	// Inspect: the simulated process from its Env, a real one from /proc.
	if f := s.Inspect(506); !f.Simulated || f.Comm != "vllm" || f.Env["PROXYD_WORKLOAD"] != "sim-1" || f.Env["HOME"] != "" {
		t.Errorf("simulated facts %+v", f)
	}
	if f := s.Inspect(502); f.Simulated || f.Comm != "worker" || f.Env["PROXYD_WORKLOAD"] != "exec:mining:x" {
		t.Errorf("real facts %+v", f)
	}
	if f := New(Options{}).Inspect(502); f.Err == nil {
		t.Errorf("a server without Procs described a real PID: %+v", f)
	}
}

// A real program started with PROXYD_SIM_GPU shows on that GPU while it
// runs and leaves with it.
func TestRealProcessLive(t *testing.T) {
	s := New(Options{Node: fmt.Sprintf("live-%d-%d", os.Getpid(), time.Now().UnixNano()), Procs: gpuproc.NewProcFS("/proc")})
	uuid := s.UUIDs()[6]
	d, _ := s.Device(uuid)
	cmd := exec.Command("sleep", "30")
	cmd.Env = append(os.Environ(), "PROXYD_SIM_GPU="+uuid, "PROXYD_SIM_GPU_MIB=300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := uint32(cmd.Process.Pid)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never happened", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the process on its GPU", func() bool { return pidsOf(t, d)[pid] == 300<<20 })
	if f := s.Inspect(int(pid)); f.Err != nil || f.Comm != "sleep" || f.Env["PROXYD_SIM_GPU"] != uuid {
		t.Errorf("facts %+v", f)
	}
	for _, other := range s.Devices() {
		if other != d && len(pidsOf(t, other)) != 0 {
			t.Errorf("GPU %d lists processes too", other.Device.Index)
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	waitFor("the process gone", func() bool { _, on := pidsOf(t, d)[pid]; return !on })
}

// BenchmarkRealScan is one /proc scan, what a telemetry pass costs on top
// of the simulated reads.
func BenchmarkRealScan(b *testing.B) {
	s := New(Options{Procs: gpuproc.NewProcFS("/proc")})
	for b.Loop() {
		_ = s.scanReal()
	}
}
