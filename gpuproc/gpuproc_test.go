package gpuproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const dockerID = "3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"

func TestParseStat(t *testing.T) {
	tests := []struct {
		name, in    string
		comm, state string
		pgid, sid   int
		wantErr     bool
	}{
		{"plain", "4242 (sleep) S 1 4240 4239 0 -1 4194304 99 0", "sleep", "S", 4240, 4239, false},
		{"comm with spaces and parens", "77 (my (odd) miner) R 1 77 77 0", "my (odd) miner", "R", 77, 77, false},
		{"zombie", "9 (x) Z 1 9 9 0", "x", "Z", 9, 9, false},
		{"no parens", "9 x S 1 9 9", "", "", 0, 0, true},
		{"too short", "9 (x) S 1", "", "", 0, 0, true},
		{"bad pgid", "9 (x) S 1 a 9 0", "", "", 0, 0, true},
		{"empty", "", "", "", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			comm, state, pgid, sid, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if comm != tc.comm || state != tc.state || pgid != tc.pgid || sid != tc.sid {
				t.Errorf("got %q %q %d %d", comm, state, pgid, sid)
			}
		})
	}
}

func TestParseCgroup(t *testing.T) {
	tests := []struct {
		name, in        string
		unit, container string
	}{
		{"v2 service", "0::/system.slice/gpu-miner@0.service\n", "gpu-miner@0.service", ""},
		{"v2 docker systemd driver", "0::/system.slice/docker-" + dockerID + ".scope\n", "", dockerID},
		{"v1 docker cgroupfs", "12:memory:/docker/" + dockerID + "\n1:name=systemd:/docker/" + dockerID + "\n", "", dockerID},
		{"podman", "0::/machine.slice/libpod-" + dockerID + ".scope/container\n", "", dockerID},
		{"podman conmon is not the container", "0::/machine.slice/libpod-conmon-" + dockerID + ".scope\n", "libpod-conmon-" + dockerID + ".scope", ""},
		{"kubernetes containerd", "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + dockerID + ".scope\n", "", dockerID},
		{"user session", "0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope", ""},
		{"v1 prefers name=systemd", "4:memory:/x\n1:name=systemd:/system.slice/proxyd.service\n", "proxyd.service", ""},
		{"root", "0::/\n", "", ""},
		{"garbage", "not a cgroup file", "", ""},
		{"hex of wrong length", "0::/docker/abc123\n", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			unit, c := parseCgroup([]byte(tc.in))
			if unit != tc.unit || c != tc.container {
				t.Errorf("got unit %q container %q, want %q %q", unit, c, tc.unit, tc.container)
			}
		})
	}
}

func TestParseEnviron(t *testing.T) {
	env := parseEnviron([]byte("PATH=/bin\x00PROXYD_WORKLOAD=exec:mining:GPU-1\x00PROXYD_CONTRACT=\x00PROXYD_WORKLOAD=second\x00" +
		"HOME=/root\x00PROXYD_BROKEN\x00PROXYD_SIM_GPU=3\x00PROXYD_GPU_UUID=" + strings.Repeat("x", maxEnvValue+1)))
	want := map[string]string{EnvWorkload: "exec:mining:GPU-1", EnvContract: "", EnvSimGPU: "3"}
	if len(env) != len(want) {
		t.Fatalf("got %v, want %v", env, want)
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("%s = %q (%v), want %q", k, got, ok, v)
		}
	}
}

func TestProcMountOptionsAndNSpid(t *testing.T) {
	mi := "22 27 0:21 / /proc rw,relatime shared:13 - proc proc rw\n" +
		"30 22 0:40 / /proc rw,nosuid - proc proc rw,hidepid=invisible,subset=pid\n" +
		"31 27 0:41 / /sys rw - sysfs sysfs rw\n"
	if got := procMountOptions([]byte(mi), "/proc"); got != "rw,hidepid=invisible,subset=pid" {
		t.Errorf("options %q", got)
	}
	if got := procMountOptions([]byte(mi), "/elsewhere"); got != "" {
		t.Errorf("options of an absent mount %q", got)
	}
	if n := nsPIDLevels([]byte("Name:\tx\nNSpid:\t4242\t7\n")); n != 2 {
		t.Errorf("NSpid levels %d", n)
	}
}

// fakeProc builds a proc tree: pid → files.
func fakeProc(t *testing.T, procs map[int]map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, files := range procs {
		dir := filepath.Join(root, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestInspectAndClassify(t *testing.T) {
	root := fakeProc(t, map[int]map[string]string{
		100: {"stat": "100 (miner) S 1 100 100 0", "cgroup": "0::/system.slice/proxyd.service\n",
			"environ": "PROXYD_WORKLOAD=exec:mining:GPU-a\x00PROXYD_CONTRACT=\x00PROXYD_GPU_UUID=GPU-a\x00"},
		101: {"stat": "101 (vllm) S 1 101 101 0", "cgroup": "0::/system.slice/proxyd.service\n",
			"environ": "PROXYD_WORKLOAD=exec:llm:acme:GPU-b\x00PROXYD_CONTRACT=acme\x00PROXYD_GPU_UUID=GPU-b\x00"},
		102: {"stat": "102 (python3) S 1 102 102 0", "cgroup": "0::/user.slice/user-1000.slice/session-2.scope\n",
			"environ": "HOME=/home/x\x00"},
		103: {"stat": "103 (python3) S 1 103 103 0", "cgroup": "0::/system.slice/docker-" + dockerID + ".scope\n"},
		104: {"stat": "104 (python3) S 1 104 104 0", "cgroup": "0::/system.slice/other.service\n"},
		105: {"stat": "105 (defunct) Z 1 105 105 0", "cgroup": "0::/\n", "environ": ""},
		106: {"stat": "garbage"},
	})
	// 103 and 104: no environ file readable (another user's process).
	for _, pid := range []int{103, 104} {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprint(pid), "environ"), 0o755); err != nil {
			t.Fatal(err) // a directory: reading it fails, like EACCES would
		}
	}
	p := NewProcFS(root)
	known := []Known{{Marker: "docker:llm:beta:GPU-c", Container: dockerID, Contract: "beta", GPU: "GPU-c"}}
	tests := []struct {
		pid      int
		class    string
		workload string
		has      []string // in String()
	}{
		{100, "mining", "exec:mining:GPU-a", []string{"mining (exec:mining:GPU-a", "unit proxyd.service"}},
		{101, "ai:acme", "exec:llm:acme:GPU-b", []string{"ai:acme"}},
		{102, "foreign", "", []string{"comm python3", "unit session-2.scope"}},
		{103, "ai:beta", "docker:llm:beta:GPU-c", []string{"container 3f2a1b0c9d8e"}},
		{104, "unknown", "", []string{"cannot read its environment", "unit other.service"}},
		{105, "unknown", "", []string{"zombie"}},
		{106, "unknown", "", []string{"malformed"}},
		{107, "unknown", "", []string{"no /proc/107 visible to proxyd"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.pid), func(t *testing.T) {
			o := Classify(p.Inspect(tc.pid), known)
			if o.Class != tc.class || o.Workload != tc.workload {
				t.Errorf("class %q workload %q, want %q %q: %s", o.Class, o.Workload, tc.class, tc.workload, o)
			}
			for _, h := range tc.has {
				if !strings.Contains(o.String(), h) {
					t.Errorf("%q lacks %q", o.String(), h)
				}
			}
			if o.Proxyd() != (tc.class == "mining" || strings.HasPrefix(tc.class, "ai:")) {
				t.Errorf("Proxyd() = %v for %s", o.Proxyd(), o.Class)
			}
		})
	}
	found, err := p.FindEnv(EnvWorkload)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range found {
		pids = append(pids, f.PID)
	}
	if !slices.Equal(pids, []int{100, 101}) {
		t.Errorf("FindEnv found %v, want [100 101]", pids)
	}
	if _, err := p.KillMarked("exec:mining:GPU-a", 0); err == nil {
		t.Error("KillMarked through a fake tree did not refuse")
	}
}

func TestHidepidNote(t *testing.T) {
	root := fakeProc(t, map[int]map[string]string{})
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mi := "30 22 0:40 / " + root + " rw - proc proc rw,hidepid=invisible\n"
	if err := os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(mi), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "self", "status"), []byte("NSpid:\t9\t1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Classify(NewProcFS(root).Inspect(4242), nil)
	for _, want := range []string{"hidepid=invisible", "ProtectProc=invisible", "PID namespace of its own"} {
		if !strings.Contains(o.Reason, want) {
			t.Errorf("reason %q lacks %q", o.Reason, want)
		}
	}
}

// KillMarked on real processes: the marked group leader and a marked
// process that left the group (setsid) die; an unmarked member of the
// group and an unmarked outsider live.
func TestKillMarkedRealProcesses(t *testing.T) {
	marker := fmt.Sprintf("gpuproc-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	start := func(marked bool, attr *syscall.SysProcAttr) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sleep", "60")
		cmd.Env = os.Environ()
		if marked {
			cmd.Env = append(cmd.Env, EnvWorkload+"="+marker)
		}
		cmd.SysProcAttr = attr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	leader := start(true, &syscall.SysProcAttr{Setpgid: true})
	pgid := leader.Process.Pid
	member := start(false, &syscall.SysProcAttr{Setpgid: true, Pgid: pgid})
	escaped := start(true, &syscall.SysProcAttr{Setsid: true})
	outsider := start(false, nil)
	p := NewProcFS("/proc")
	// Wait until the marked children have exec'd (their environ is theirs).
	deadline := time.Now().Add(10 * time.Second)
	for {
		found, _ := p.FindEnv(EnvWorkload)
		n := 0
		for _, f := range found {
			if f.Env[EnvWorkload] == marker {
				n++
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the marked processes never showed their marker (%d seen)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := p.KillMarked(marker, pgid)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Killed)
	want := []int{leader.Process.Pid, escaped.Process.Pid}
	slices.Sort(want)
	if !slices.Equal(res.Killed, want) {
		t.Errorf("killed %v, want %v", res.Killed, want)
	}
	if !slices.Equal(res.Spared, []int{member.Process.Pid}) {
		t.Errorf("spared %v, want the unmarked group member %d", res.Spared, member.Process.Pid)
	}
	for _, c := range []*exec.Cmd{leader, escaped} {
		err := c.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("pid %d: %v, want killed by SIGKILL", c.Process.Pid, err)
		}
	}
	for _, c := range []*exec.Cmd{member, outsider} {
		if !p.Alive(c.Process.Pid) {
			t.Errorf("pid %d without the marker was hit", c.Process.Pid)
		}
	}
	if _, err := p.KillMarked("", 0); err == nil {
		t.Error("an empty marker was accepted")
	}
}

func FuzzParseStat(f *testing.F) {
	for _, s := range []string{"4242 (sleep) S 1 4240 4239 0", "77 (a) b) R 1 77 77", "", "(", ")(", "1 () S 1 2 3"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		comm, _, _, _, err := parseStat(data)
		if err == nil && !strings.Contains(string(data), "("+comm+")") {
			t.Errorf("comm %q is not between parentheses in %q", comm, data)
		}
	})
}

func FuzzParseCgroup(f *testing.F) {
	for _, s := range []string{"0::/system.slice/docker-" + dockerID + ".scope\n", "1:name=systemd:/a.service\n0::/\n", "::", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		unit, c := parseCgroup(data)
		if c != "" && !isContainerID(c) {
			t.Errorf("container %q is not an ID", c)
		}
		if unit != "" && !strings.HasSuffix(unit, ".service") && !strings.HasSuffix(unit, ".scope") {
			t.Errorf("unit %q", unit)
		}
	})
}

func FuzzParseEnviron(f *testing.F) {
	f.Add([]byte("PROXYD_WORKLOAD=x\x00PATH=/bin\x00"))
	f.Add([]byte("PROXYD_\x00=\x00PROXYD_A==b"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for k := range parseEnviron(data) {
			if !strings.HasPrefix(k, envPrefix) || strings.ContainsAny(k, "=\x00") {
				t.Errorf("key %q", k)
			}
		}
	})
}

func FuzzProcMountOptions(f *testing.F) {
	f.Add([]byte("22 27 0:21 / /proc rw - proc proc rw,hidepid=2\n"))
	f.Add([]byte(" - proc proc\n - \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = procMountOptions(data, "/proc")
		_ = nsPIDLevels(data)
	})
}
