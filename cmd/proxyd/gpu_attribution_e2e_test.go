package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashgate/proxyd/gpuproc"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// Issue 13's acceptance on the real binary: `proxyd run` on the simulated
// GPUs with exec workloads whose commands are small shell scripts that
// start real processes with PROXYD_SIM_GPU set, so the simulated GPUs list
// them and proxyd attributes them from /proc.

// workScript drives the workloads: every instance is one `sleep`, started
// with setsid (as a daemonising miner would), with a pidfile per name and
// GPU index. It names its simulated GPU by UUID (read from the file uuids,
// one per index): the test's daemon runs on a simulated node of its own
// (PROXYD_SIM_NODE), so tests running in parallel never see each other's
// processes.
//
//	start  NAME IDX SIMGPU MIB DELAY TERM  SIMGPU: an index, or "next" for
//	                                       the next GPU;
//	                                       DELAY before it holds the GPU;
//	                                       TERM "ignore": it ignores SIGTERM
//	stop   NAME IDX HONESTY DELAY          HONESTY "lie": exit 0, stop nothing
//	status NAME IDX                        exit 0 while it runs
const workScript = `#!/bin/sh
set -u
dir=$(cd "$(dirname "$0")" && pwd)
act=$1 name=$2 idx=$3
pidf="$dir/$name-$idx.pid"
alive() {
	[ -f "$pidf" ] || return 1
	st=$(cut -d' ' -f3 "/proc/$(cat "$pidf")/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}
case $act in
start)
	sim=$4 mib=$5 delay=$6 term=$7
	[ "$sim" = next ] && sim=$(( (idx + 1) % 8 ))
	sim=$(sed -n "$((sim + 1))p" "$dir/uuids")
	alive && exit 0
	[ "$term" = ignore ] && trap '' TERM
	PROXYD_E2E_TAG="$dir" setsid sh -c "sleep $delay; PROXYD_SIM_GPU=$sim PROXYD_SIM_GPU_MIB=$mib exec sleep 3600" </dev/null >/dev/null 2>&1 &
	echo $! > "$pidf"
	;;
stop)
	[ "$4" = lie ] && exit 0
	sleep "$5"
	alive || { rm -f "$pidf"; exit 0; }
	kill "$(cat "$pidf")"
	i=0
	while alive && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
	alive && exit 1
	rm -f "$pidf"
	;;
status)
	alive
	;;
esac
`

// attrSetup shapes the workloads of one test.
type attrSetup struct {
	minerStop   string // "lie" or "honest"
	minerTerm   string // "ignore" or "obey"
	startDelay  string // before a started workload holds its GPU
	stopDelay   string // before an honest stop acts
	freePolls   int
	pollEvery   string
	verifyFree  string
	minerGrace  string // the miner's stop_timeout
	maxParallel int
}

const attrConfig = `shutdown_timeout = "10s"
[log]
level = "info"
[http]
listen = "127.0.0.1:0"
api_token_file = %[1]q
[gpu]
backend = "simulated"
poll_interval = %[8]q
[switcher]
enabled = true
state_dir = %[2]q
max_parallel = %[10]d
free_polls = %[7]d
reconcile_interval = "100ms"
status_interval = "500ms"
retry_backoff = "1m"
[switcher.timeouts]
stop_miner = "10s"
verify_free = %[9]q
start_ai = "15s"
drain_ai = "10s"
restore_mining = "15s"
[switcher.mining]
runtime = "exec"
start_command = ["/bin/sh", %[3]q, "start", "miner", "{gpu_index}", "{gpu_index}", "2048", %[5]q, %[4]q]
stop_command = ["/bin/sh", %[3]q, "stop", "miner", "{gpu_index}", %[11]q, %[6]q]
status_command = ["/bin/sh", %[3]q, "status", "miner", "{gpu_index}"]
stop_timeout = %[12]q
command_timeout = "10s"
[switcher.workload.llm]
runtime = "exec"
start_command = ["/bin/sh", %[3]q, "start", "llm", "{gpu_index}", "{gpu_index}", "30000", %[5]q, "obey"]
stop_command = ["/bin/sh", %[3]q, "stop", "llm", "{gpu_index}", "honest", %[6]q]
status_command = ["/bin/sh", %[3]q, "status", "llm", "{gpu_index}"]
stop_timeout = "2s"
command_timeout = "10s"
[switcher.workload.misplaced]
runtime = "exec"
start_command = ["/bin/sh", %[3]q, "start", "misplaced", "{gpu_index}", "next", "30000", "0", "obey"]
stop_command = ["/bin/sh", %[3]q, "stop", "misplaced", "{gpu_index}", "honest", "0"]
status_command = ["/bin/sh", %[3]q, "status", "misplaced", "{gpu_index}"]
stop_timeout = "2s"
command_timeout = "10s"
`

// attrEnv is one test's directory, config and daemon.
type attrEnv struct {
	t     *testing.T
	dir   string
	cfg   string
	uuids []string
	p     *daemonProc
	c     apiClient
	// misplaced: the test itself puts a workload on a GPU beside another
	// (the failure wrong_gpu catches), so double booking is expected.
	misplaced bool
}

func newAttrEnv(t *testing.T, s attrSetup) *attrEnv {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "w.sh")
	tok := filepath.Join(dir, "token")
	for path, data := range map[string]string{script: workScript, tok: e2eToken + "\n"} {
		if err := os.WriteFile(path, []byte(data), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Chmod(tok, 0o600)
	cfg := filepath.Join(dir, "proxyd.toml")
	body := fmt.Sprintf(attrConfig, tok, filepath.Join(dir, "state"), script, s.minerTerm, s.startDelay, s.stopDelay,
		s.freePolls, s.pollEvery, s.verifyFree, s.maxParallel, s.minerStop, s.minerGrace)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	node := simNode(t)
	e := &attrEnv{t: t, dir: dir, cfg: cfg, uuids: nvmlsim.New(nvmlsim.Options{Node: node}).UUIDs()}
	if err := os.WriteFile(filepath.Join(dir, "uuids"), []byte(strings.Join(e.uuids, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup)
	return e
}

// simNode gives the test's simulated GPUs (daemons started from now on,
// and `proxyd gpus`) UUIDs of their own, and returns the node name.
func simNode(t *testing.T) string {
	t.Helper()
	node := fmt.Sprintf("e2e-%s-%d-%d", t.Name(), os.Getpid(), time.Now().UnixNano())
	t.Setenv(nvmlsim.EnvNode, node)
	return node
}

// cleanup ends the daemon and every process the test's scripts started.
func (e *attrEnv) cleanup() {
	if e.p != nil {
		_ = e.p.cmd.Process.Kill()
	}
	procs := gpuproc.NewProcFS("/proc")
	for range 3 {
		found, _ := procs.FindEnv("PROXYD_E2E_TAG")
		for _, f := range found {
			if f.Env["PROXYD_E2E_TAG"] == e.dir {
				_ = syscall.Kill(f.PID, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *attrEnv) start() {
	e.t.Helper()
	e.p, e.c = startSwitcherDaemon(e.t, e.cfg)
}

// kill9 kills the daemon as kill -9 would; its workloads run on.
func (e *attrEnv) kill9() {
	e.t.Helper()
	if err := e.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-e.p.exit:
	case <-time.After(30 * time.Second):
		e.t.Fatal("proxyd did not die of SIGKILL")
	}
}

type attrProc struct {
	PID             int    `json:"pid"`
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	Owner           *struct {
		Class    string `json:"class"`
		Workload string `json:"workload"`
		Comm     string `json:"comm"`
		Reason   string `json:"reason"`
	} `json:"owner"`
}

type attrGPU struct {
	UUID   string `json:"uuid"`
	Index  int    `json:"index"`
	Switch *struct {
		State   string `json:"state"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"switch"`
	Telemetry *struct {
		Compute  []attrProc `json:"compute_processes"`
		Graphics []attrProc `json:"graphics_processes"`
	} `json:"telemetry"`
}

// gpus reads /api/v1/gpus and checks what must always hold: every process
// has an owner, and no GPU ever holds two of proxyd's workloads (the miner
// beside an AI workload, or two instances).
func (e *attrEnv) gpus() []attrGPU {
	e.t.Helper()
	var node struct {
		GPUs []attrGPU `json:"gpus"`
	}
	e.c.getJSON("/api/v1/gpus", &node)
	for _, g := range node.GPUs {
		if g.Telemetry == nil || g.Switch == nil {
			e.t.Fatalf("GPU %d lacks telemetry or switch fields", g.Index)
		}
		workloads := map[string]bool{}
		for _, p := range append(g.Telemetry.Compute, g.Telemetry.Graphics...) {
			if p.Owner == nil || p.Owner.Class == "" {
				e.t.Fatalf("GPU %d pid %d has no owner in /api/v1/gpus", g.Index, p.PID)
			}
			if p.Owner.Workload != "" {
				workloads[p.Owner.Workload] = true
			}
		}
		if len(workloads) > 1 && !e.misplaced {
			e.t.Fatalf("GPU %d is double-booked: %v (state %s)", g.Index, workloads, g.Switch.State)
		}
	}
	return node.GPUs
}

func (e *attrEnv) gpu(i int) attrGPU {
	e.t.Helper()
	for _, g := range e.gpus() {
		if g.Index == i {
			return g
		}
	}
	e.t.Fatalf("no GPU %d", i)
	return attrGPU{}
}

func (e *attrEnv) state(i int) string { return e.gpu(i).Switch.State }

func (e *attrEnv) count(state string) int {
	n := 0
	for _, g := range e.gpus() {
		if g.Switch.State == state {
			n++
		}
	}
	return n
}

type attrEvent struct {
	Subject string         `json:"subject"`
	From    string         `json:"from"`
	To      string         `json:"to"`
	Reason  string         `json:"reason"`
	Details map[string]any `json:"details"`
}

func (e *attrEnv) events(gpu, reason string) []attrEvent {
	e.t.Helper()
	var evs struct {
		Events []attrEvent `json:"events"`
	}
	e.c.getJSON("/api/v1/events?component=switcher&limit=4096", &evs)
	var out []attrEvent
	for _, ev := range evs.Events {
		if ev.Subject == gpu && (reason == "" || ev.Reason == reason) {
			out = append(out, ev)
		}
	}
	return out
}

// owners lists the owner classes of the processes a journal entry names.
func (ev attrEvent) owners() []string {
	var out []string
	ps, _ := ev.Details["processes"].([]any)
	for _, p := range ps {
		m, _ := p.(map[string]any)
		o, _ := m["owner"].(map[string]any)
		out = append(out, fmt.Sprint(m["pid"], " ", o["class"]))
	}
	return out
}

func (e *attrEnv) pid(name string, idx int) int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("%s-%d.pid", name, idx)))
	if err != nil {
		e.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		e.t.Fatal(err)
	}
	return pid
}

func (e *attrEnv) putPinned(id, workload string, gpu int) {
	e.t.Helper()
	now := time.Now().UTC()
	body := fmt.Sprintf(`{"gpus": 1, "start": %q, "end": %q, "price_usd_per_gpu_hour": 2, "workload": %q, "pin": [%q]}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339), workload, e.uuids[gpu])
	if code, resp := e.c.do("PUT", "/api/v1/contracts/"+id, body); code != http.StatusCreated {
		e.t.Fatalf("PUT contract %s: %d %s", id, code, resp)
	}
}

func neverEntered(evs []attrEvent, state string) bool {
	for _, ev := range evs {
		if ev.To == state && ev.From != state {
			return false
		}
	}
	return true
}

// A miner whose stop command lies (exits 0 while the miner, which ignores
// SIGTERM, runs on) is killed by proxyd, and the contract is served: no
// quarantine, no operator.
func TestGPUE2ELyingMinerIsKilled(t *testing.T) {
	e := newAttrEnv(t, attrSetup{minerStop: "lie", minerTerm: "ignore", startDelay: "0", stopDelay: "0",
		freePolls: 2, pollEvery: "100ms", verifyFree: "5s", minerGrace: "1s", maxParallel: 8})
	e.start()
	e.c.waitFor("8 GPUs mining", func() bool { return e.count("MINING") == 8 })
	for _, g := range e.gpus() {
		ps := g.Telemetry.Compute
		if len(ps) != 1 || ps[0].Owner.Class != "mining" || ps[0].Owner.Workload != "exec:mining:"+g.UUID || ps[0].UsedMemoryBytes != 2048<<20 {
			t.Fatalf("GPU %d while mining: %+v", g.Index, ps)
		}
	}
	miner := e.pid("miner", 0)
	e.putPinned("acme", "llm", 0)
	e.c.waitFor("acme served on GPU 0", func() bool { ct, _ := e.c.contract("acme"); return ct.Serving == 1 })
	if gpuproc.NewProcFS("/proc").Alive(miner) {
		t.Errorf("the lying miner (pid %d) still runs", miner)
	}
	kills := e.events(e.uuids[0], "verify_timeout_kill_owned")
	if len(kills) != 1 || fmt.Sprint(kills[0].owners()) != fmt.Sprintf("[%d mining]", miner) {
		t.Errorf("escalation in the journal: %+v", kills)
	}
	if evs := e.events(e.uuids[0], ""); !neverEntered(evs, "QUARANTINED") {
		t.Errorf("GPU 0 was quarantined: %+v", evs)
	}
	g := e.gpu(0)
	if ps := g.Telemetry.Compute; len(ps) != 1 || ps[0].PID != e.pid("llm", 0) || ps[0].Owner.Class != "ai:acme" {
		t.Errorf("GPU 0 serving: %+v", ps)
	}
	stopDaemon(t, e.p)
}

// A foreign process on a GPU is never signalled and keeps the GPU
// quarantined with a reason naming it and its owner; after it exits and
// an operator resumes, the contract is served.
func TestGPUE2EForeignProcessQuarantines(t *testing.T) {
	e := newAttrEnv(t, attrSetup{minerStop: "lie", minerTerm: "ignore", startDelay: "0", stopDelay: "0",
		freePolls: 2, pollEvery: "100ms", verifyFree: "3s", minerGrace: "1s", maxParallel: 8})
	e.start()
	e.c.waitFor("8 GPUs mining", func() bool { return e.count("MINING") == 8 })
	// Someone else's job on GPU 1: it records any signal it gets.
	sigs := filepath.Join(e.dir, "foreign-signals")
	foreign := exec.Command("/bin/sh", "-c", `for s in HUP INT QUIT USR1 USR2 TERM; do trap "echo $s >> '`+sigs+`'" $s; done
while :; do sleep 0.2; done`)
	foreign.Env = append(os.Environ(), "PROXYD_SIM_GPU="+e.uuids[1], "PROXYD_SIM_GPU_MIB=2566")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	foreignDone := make(chan error, 1)
	go func() { foreignDone <- foreign.Wait() }()
	t.Cleanup(func() { _ = foreign.Process.Kill(); <-foreignDone })
	e.c.waitFor("the foreign process on GPU 1", func() bool {
		for _, p := range e.gpu(1).Telemetry.Compute {
			if p.PID == foreign.Process.Pid && p.Owner.Class == "foreign" && p.Owner.Comm == "sh" {
				return true
			}
		}
		return false
	})
	miner := e.pid("miner", 1)
	e.putPinned("acme", "llm", 1)
	e.c.waitFor("GPU 1 quarantined", func() bool { return e.state(1) == "QUARANTINED" })
	g := e.gpu(1)
	want := fmt.Sprintf("pid %d (2566 MiB, foreign (comm sh", foreign.Process.Pid)
	if g.Switch.Reason != "gpu_not_released" || !strings.Contains(g.Switch.Message, want) || strings.Contains(g.Switch.Message, "mining (") {
		t.Errorf("quarantine reason %q: %q, want it to name %q and not the miner", g.Switch.Reason, g.Switch.Message, want)
	}
	if gpuproc.NewProcFS("/proc").Alive(miner) {
		t.Errorf("proxyd's own lying miner (pid %d) was not killed", miner)
	}
	q := e.events(e.uuids[1], "gpu_not_released")
	if len(q) == 0 || !strings.Contains(fmt.Sprint(q[len(q)-1].owners()), fmt.Sprintf("%d foreign", foreign.Process.Pid)) {
		t.Errorf("the quarantine's journal entry does not name the foreign process: %+v", q)
	}
	for range 20 { // it stays quarantined while the process runs
		if st := e.state(1); st != "QUARANTINED" {
			t.Fatalf("GPU 1 left quarantine (%s) while the foreign process runs", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-foreignDone:
		t.Fatalf("the foreign process died: %v", err)
	default:
	}
	if b, err := os.ReadFile(sigs); err == nil {
		t.Fatalf("the foreign process got signals: %q", b)
	}
	// Its owner ends it; still quarantined until an operator resumes.
	_ = foreign.Process.Kill()
	<-foreignDone
	foreignDone <- nil // for the cleanup
	e.c.waitFor("the foreign process gone from GPU 1", func() bool { return len(e.gpu(1).Telemetry.Compute) == 0 })
	if st := e.state(1); st != "QUARANTINED" {
		t.Fatalf("GPU 1 left quarantine by itself (%s) after a foreign process", st)
	}
	if code, body := e.c.do("POST", "/api/v1/gpus/"+e.uuids[1]+"/resume", ""); code != 200 {
		t.Fatalf("resume: %d %s", code, body)
	}
	e.c.waitFor("acme served after the resume", func() bool { ct, _ := e.c.contract("acme"); return ct.Serving == 1 })
	stopDaemon(t, e.p)
}

// A workload started on the wrong GPU (its command points at the next
// GPU) is caught: wrong_gpu, stopped, never serving.
func TestGPUE2EWrongGPU(t *testing.T) {
	e := newAttrEnv(t, attrSetup{minerStop: "honest", minerTerm: "obey", startDelay: "0", stopDelay: "0",
		freePolls: 2, pollEvery: "100ms", verifyFree: "5s", minerGrace: "2s", maxParallel: 8})
	e.misplaced = true
	e.start()
	e.c.waitFor("8 GPUs mining", func() bool { return e.count("MINING") == 8 })
	e.putPinned("acme", "misplaced", 2)
	var wrong []attrEvent
	e.c.waitFor("wrong_gpu on GPU 2", func() bool { wrong = e.events(e.uuids[2], "wrong_gpu"); return len(wrong) > 0 })
	// The event names the misplaced process (its pidfile may be gone
	// already: the stop that follows removes it).
	w := wrong[0]
	owners := w.owners()
	var misplaced int
	if len(owners) == 1 {
		_, _ = fmt.Sscanf(owners[0], "%d ai:acme", &misplaced)
	}
	if w.From != "STARTING_AI" || w.To != "DRAINING_AI" || misplaced == 0 || !strings.Contains(fmt.Sprint(w.Details["message"]), "GPU 3") {
		t.Fatalf("wrong_gpu event %+v (owners %v)", w, owners)
	}
	if f := gpuproc.NewProcFS("/proc").Inspect(misplaced); f.Err == nil && f.Env["PROXYD_WORKLOAD"] != "" &&
		f.Env["PROXYD_WORKLOAD"] != "exec:misplaced:acme:"+e.uuids[2] {
		t.Errorf("pid %d carries marker %q", misplaced, f.Env["PROXYD_WORKLOAD"])
	}
	e.c.waitFor("GPU 2 back to mining", func() bool { return e.state(2) == "MINING" })
	if gpuproc.NewProcFS("/proc").Alive(misplaced) {
		t.Errorf("the misplaced workload (pid %d) still runs", misplaced)
	}
	if evs := e.events(e.uuids[2], ""); !neverEntered(evs, "SERVING_AI") {
		t.Errorf("GPU 2 served from the wrong GPU: %+v", evs)
	}
	if g := e.gpu(3); g.Switch.State != "MINING" || len(g.Telemetry.Compute) != 1 || g.Telemetry.Compute[0].Owner.Class != "mining" {
		t.Errorf("GPU 3 after the misplaced workload left: %+v %+v", g.Switch, g.Telemetry.Compute)
	}
	if ct, _ := e.c.contract("acme"); ct.Serving != 0 || !strings.Contains(ct.Shortfall, "wrong GPU") {
		t.Errorf("contract %+v", ct)
	}
	stopDaemon(t, e.p)
}

// kill -9 of proxyd in every state of the round trip: the restarted
// proxyd adopts or cleans up, and no GPU ever holds two of proxyd's
// workloads (every /api/v1/gpus read checks it); in the end the contract
// was served and every GPU mines again with exactly one miner.
func TestGPUE2EKill9AtEveryState(t *testing.T) {
	e := newAttrEnv(t, attrSetup{minerStop: "honest", minerTerm: "obey", startDelay: "1", stopDelay: "1",
		freePolls: 5, pollEvery: "200ms", verifyFree: "10s", minerGrace: "5s", maxParallel: 8})
	e.start()
	e.c.waitFor("8 GPUs mining", func() bool { return e.count("MINING") == 8 })
	crashAt := func(state string) {
		t.Helper()
		e.c.waitFor("GPU 0 in "+state, func() bool { return e.state(0) == state })
		e.kill9()
		e.start()
		t.Logf("killed -9 in %s; after the restart GPU 0 is %s", state, e.state(0))
	}
	crashAt("MINING")
	e.putPinned("acme", "llm", 0)
	for _, st := range []string{"STOPPING_MINER", "VERIFYING_FREE", "STARTING_AI", "SERVING_AI"} {
		crashAt(st)
	}
	e.c.waitFor("acme served", func() bool { ct, _ := e.c.contract("acme"); return ct.Serving == 1 })
	if code, body := e.c.do("DELETE", "/api/v1/contracts/acme", ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	for _, st := range []string{"DRAINING_AI", "VERIFYING_FREE", "RESTORING_MINING"} {
		crashAt(st)
	}
	e.c.waitFor("every GPU mining", func() bool { return e.count("MINING") == 8 })
	procs := gpuproc.NewProcFS("/proc")
	for _, g := range e.gpus() {
		ps := g.Telemetry.Compute
		if len(ps) != 1 || ps[0].Owner.Class != "mining" || ps[0].PID != e.pid("miner", g.Index) {
			t.Errorf("GPU %d: %+v, want its one miner", g.Index, ps)
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.dir, "llm-0.pid")); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && procs.Alive(pid) {
			t.Errorf("the AI workload (pid %d) still runs after the contract ended", pid)
		}
	}
	stopDaemon(t, e.p)
}

// The JSON of `proxyd gpus --json` (the binary) carries an owner for
// every process, like /api/v1/gpus.
func TestGPUE2EGPUsJSONOwners(t *testing.T) {
	uuid := nvmlsim.New(nvmlsim.Options{Node: simNode(t)}).UUIDs()[6]
	pid := startSimGPUProcess(t, uuid)
	var n struct {
		GPUs []attrGPU `json:"gpus"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, errOut, code := runBinary(t, "", "gpus", "--backend", "simulated", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &n); err != nil {
			t.Fatal(err)
		}
		if len(n.GPUs[6].Telemetry.Compute) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process never showed on GPU 6")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, g := range n.GPUs {
		for _, p := range append(g.Telemetry.Compute, g.Telemetry.Graphics...) {
			if p.Owner == nil || p.Owner.Class == "" {
				t.Errorf("GPU %d pid %d: no owner", g.Index, p.PID)
			}
			if p.PID == pid && p.Owner.Class != "foreign" {
				t.Errorf("pid %d: owner %+v, want foreign", pid, p.Owner)
			}
		}
	}
}
