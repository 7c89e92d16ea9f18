package workload

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hashgate/proxyd/gpuproc"
)

// execSpec drives a fake service through files in dir: start creates
// <gpu_index>.run, status tests it, stop removes it.
func execSpec(dir string) Spec {
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	return Spec{Name: "miner", Definition: Definition{Runtime: KindExec, Params: ExecParams{
		StartCommand:   sh("echo starting {workload} on {gpu_uuid}; echo {contract} > " + dir + "/{gpu_index}.run"),
		StatusCommand:  sh("test -f " + dir + "/{gpu_index}.run"),
		StopCommand:    sh("rm -f " + dir + "/{gpu_index}.run; echo stopped >&2"),
		KillCommand:    sh("rm -f " + dir + "/{gpu_index}.run; echo killed > " + dir + "/{gpu_index}.killed"),
		CommandTimeout: time.Duration(5 * time.Second)}, StopTimeout: time.Duration(time.Second),
		Readiness: ReadinessRunning}}
}

// execMod changes a spec's exec settings.
func execMod(f func(*ExecParams)) func(*Spec) {
	return func(s *Spec) {
		p := ParamsOf[ExecParams](s.Definition)
		f(&p)
		s.Params = p
	}
}

func newTestExec(t *testing.T) (*Exec, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return NewExec(zap.New(core), nil), logs
}

func TestExecLifecycle(t *testing.T) {
	dir := t.TempDir()
	e, logs := newTestExec(t)
	spec := execSpec(dir)
	in := Instance{Workload: "miner", GPUUUID: "GPU-a", GPUIndex: 2}
	h, err := e.Start(t.Context(), spec, in)
	if err != nil {
		t.Fatal(err)
	}
	if h.ID != "exec:miner:GPU-a" || h.Runtime != KindExec {
		t.Errorf("handle %+v", h)
	}
	if _, err := os.Stat(filepath.Join(dir, "2.run")); err != nil {
		t.Fatalf("start_command did not run with placeholders filled: %v", err)
	}
	if st, err := e.Status(t.Context(), spec, h); err != nil || !st.Running || !st.Ready {
		t.Errorf("status %+v %v", st, err)
	}
	// Output goes to the log.
	found := false
	for _, l := range logs.All() {
		if strings.Contains(l.ContextMap()["output"].(string), "starting miner on GPU-a") {
			found = true
		}
	}
	if !found {
		t.Error("the command's output is not in the log")
	}
	// List finds the running miner on GPU 2 only.
	l, err := e.List(t.Context(), ListQuery{GPUs: []GPURef{{"GPU-x", 1}, {"GPU-a", 2}}, Specs: map[string]Spec{"miner": spec}})
	if err != nil || len(l) != 1 || l[0].ID != h.ID || l[0].GPUIndex != 2 {
		t.Errorf("list %+v %v", l, err)
	}
	if err := e.Stop(t.Context(), spec, h, false); err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(t.Context(), spec, h)
	if err != nil || st.Running || st.ExitCode != 1 {
		t.Errorf("after stop: %+v %v", st, err)
	}
	if _, err := e.Start(t.Context(), spec, in); err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(t.Context(), spec, h, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "2.killed")); err != nil {
		t.Error("force did not use kill_command")
	}
}

func TestExecFailures(t *testing.T) {
	dir := t.TempDir()
	e, _ := newTestExec(t)
	in := Instance{Workload: "miner", GPUUUID: "GPU-a", GPUIndex: 0}
	tests := []struct {
		name string
		mod  func(*Spec)
		op   func(Spec) error
		want string
	}{
		{"start exits 3", execMod(func(p *ExecParams) { p.StartCommand = []string{"/bin/sh", "-c", "echo no such miner >&2; exit 3"} }),
			func(s Spec) error { _, err := e.Start(t.Context(), s, in); return err }, "exited 3: no such miner"},
		{"start hangs", execMod(func(p *ExecParams) {
			p.StartCommand = []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}
			p.CommandTimeout = 200 * time.Millisecond
		}), func(s Spec) error { _, err := e.Start(t.Context(), s, in); return err }, "did not finish within 200ms"},
		{"not found", execMod(func(p *ExecParams) { p.StartCommand = []string{"/nonexistent/miner"} }),
			func(s Spec) error { _, err := e.Start(t.Context(), s, in); return err }, "could not run"},
		{"stop fails", execMod(func(p *ExecParams) { p.StopCommand = []string{"/bin/false"} }),
			func(s Spec) error { return e.Stop(t.Context(), s, Handle{Instance: in}, false) }, "exited 1"},
		{"unconfigured workload", func(s *Spec) { *s = Spec{Name: "gone"} },
			func(s Spec) error { return e.Stop(t.Context(), s, Handle{Instance: Instance{Workload: "gone"}}, true) }, "no longer configured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := execSpec(dir)
			tc.mod(&spec)
			err := tc.op(spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// Every command carries the instance's markers; a forced stop without
// kill_command SIGKILLs the processes that carry the handle's marker (the
// one left in start_command's group and one that escaped it with setsid),
// never an unmarked process.
func TestExecMarkersAndForcedStop(t *testing.T) {
	dir := t.TempDir()
	e, _ := newTestExec(t)
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	spec := Spec{Name: "miner", Definition: Definition{Runtime: KindExec, Params: ExecParams{
		StartCommand: sh("echo \"$PROXYD_WORKLOAD|$PROXYD_CONTRACT|$PROXYD_GPU_UUID\" > " + dir + "/env; " +
			"trap '' TERM; sleep 60 </dev/null >/dev/null 2>&1 & echo $! > " + dir + "/grouped; " +
			"setsid sleep 61 </dev/null >/dev/null 2>&1 & echo $! > " + dir + "/escaped"),
		StatusCommand:  sh("true"),
		StopCommand:    sh("echo lying > " + dir + "/stopped; exit 0"),
		CommandTimeout: time.Duration(5 * time.Second)}, StopTimeout: time.Duration(time.Second),
		Readiness: ReadinessRunning}}
	in := Instance{Workload: "miner", Contract: "acme", GPUUUID: "GPU-m", GPUIndex: 1}
	bystander := exec.Command("sleep", "60")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bystander.Process.Kill(); _ = bystander.Wait() })

	h, err := e.Start(t.Context(), spec, in)
	if err != nil {
		t.Fatal(err)
	}
	if h.PGID <= 0 || h.Marker() != "exec:miner:acme:GPU-m" {
		t.Errorf("handle %+v, marker %q", h, h.Marker())
	}
	readPID := func(name string) int {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "env")); strings.TrimSpace(string(b)) != "exec:miner:acme:GPU-m|acme|GPU-m" {
		t.Errorf("start_command's markers: %q", b)
	}
	grouped, escaped := readPID("grouped"), readPID("escaped")
	procs := gpuproc.NewProcFS("/proc")
	t.Cleanup(func() {
		for _, pid := range []int{grouped, escaped} {
			if procs.Alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	// Both carry the marker once they have exec'd sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		found, _ := procs.FindEnv(gpuproc.EnvWorkload)
		n := 0
		for _, f := range found {
			if f.Env[gpuproc.EnvWorkload] == h.Marker() && (f.PID == grouped || f.PID == escaped) {
				n++
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workload's processes never showed the marker")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.Stop(t.Context(), spec, h, false); err != nil {
		t.Fatal(err)
	}
	if !procs.Alive(grouped) || !procs.Alive(escaped) {
		t.Fatal("the lying stop_command stopped something")
	}
	if err := e.Stop(t.Context(), spec, h, true); err != nil {
		t.Fatal(err)
	}
	if procs.Alive(grouped) || procs.Alive(escaped) {
		t.Errorf("after the forced stop: grouped alive %v, escaped alive %v", procs.Alive(grouped), procs.Alive(escaped))
	}
	if !procs.Alive(bystander.Process.Pid) {
		t.Error("an unmarked process was killed")
	}
	// Nothing marked left: a second forced stop falls back to stop_command.
	_ = os.Remove(filepath.Join(dir, "stopped"))
	if err := e.Stop(t.Context(), spec, h, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stopped")); err != nil {
		t.Error("with nothing marked, the forced stop did not run stop_command")
	}
}

func TestExecHandleFromMarker(t *testing.T) {
	tests := []struct {
		marker string
		ok     bool
		want   Instance
	}{
		{"exec:mining:GPU-a", true, Instance{Workload: "mining", GPUUUID: "GPU-a"}},
		{"exec:llm:acme:GPU-b", true, Instance{Workload: "llm", Contract: "acme", GPUUUID: "GPU-b"}},
		{"sim-4", false, Instance{}},
		{"docker:llm:acme:GPU-b", false, Instance{}},
		{"exec::GPU-a", false, Instance{}},
		{"exec:a:b:c:d", false, Instance{}},
		{"", false, Instance{}},
	}
	for _, tc := range tests {
		h, ok := ExecHandleFromMarker(tc.marker)
		if ok != tc.ok || h.Instance != tc.want || (ok && (h.ID != tc.marker || h.Marker() != tc.marker || h.Runtime != KindExec)) {
			t.Errorf("%q: %+v %v", tc.marker, h, ok)
		}
	}
}
