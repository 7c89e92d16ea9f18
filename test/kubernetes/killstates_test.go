package kubernetes

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// killStatesConfig is proxyd's config for TestKillInEveryState. Its miner
// is the exec runtime running minerScript, so the test can hold the
// miner's stop (STOPPING_MINER) and start (RESTORING_MINING) for as long
// as it likes; free_polls and the GPU poll interval are parameters, so a
// proof of free (VERIFYING_FREE) can be made to last.
const killStatesConfig = `shutdown_timeout = "10s"
[log]
level = "info"
[http]
listen = "127.0.0.1:%d"
api_token_file = %q
[gpu]
backend = "simulated"
poll_interval = %q
[switcher]
enabled = true
state_dir = %q
max_parallel = 8
free_polls = %d
reconcile_interval = "50ms"
status_interval = "300ms"
retry_backoff = "1s"
[switcher.timeouts]
stop_miner = "3m"
verify_free = %[10]q
start_ai = "60s"
drain_ai = "20s"
restore_mining = "3m"
[switcher.mining]
runtime = "exec"
proof_of_start = "none"
stop_timeout = "1s"
[switcher.mining.exec]
start_command = ["/bin/sh", %[6]q, "start", "{gpu_index}"]
stop_command = ["/bin/sh", %[6]q, "stop", "{gpu_index}"]
status_command = ["/bin/sh", %[6]q, "status", "{gpu_index}"]
command_timeout = "3m"
[switcher.kubernetes]
enabled = true
node_name = %[7]q
kubeconfig = %[8]q
namespaces = ["ai"]
device_class = "gpu.nvidia.com"
idle_before_mining = %[9]q
api_timeout = "2s"
`

// minerScript is the miner of TestKillInEveryState. GPU $2 mines while
// the file mining-$2 exists: like a miner in a systemd unit it outlives a
// proxyd killed with -9, so "what runs" with proxyd dead is real. While
// the file hold-<op> exists, start and stop wait (at most 2 minutes),
// and say so with held-<op>-<gpu>; once let go they do their work, then
// remove held-<op>-<gpu>, so the test knows an orphaned command is done.
const minerScript = `d=$(dirname "$0"); op=$1; i=$2
if [ "$op" = status ]; then exec test -e "$d/mining-$i"; fi
if [ -e "$d/hold-$op" ]; then
	: > "$d/held-$op-$i"
	n=0
	while [ -e "$d/hold-$op" ] && [ $n -lt 6000 ]; do sleep 0.02; n=$((n+1)); done
fi
case $op in
start) : > "$d/mining-$i" ;;
stop) rm -f "$d/mining-$i" ;;
*) echo "unknown op $op" >&2; exit 2 ;;
esac
rm -f "$d/held-$op-$i"
`

// Slow and fast proofs of free: slow keeps a GPU in VERIFYING_FREE for
// 100 samples 300 ms apart (30 s), fast proves it in 2 samples 100 ms
// apart.
const (
	slowPolls, slowPoll = 100, "300ms"
	fastPolls, fastPoll = 2, "100ms"
)

// miners are the files of minerScript.
type miners struct {
	t   *testing.T
	dir string
}

func (m miners) path(name string) string { return filepath.Join(m.dir, name) }

// hold makes every start or stop of a miner wait until release.
func (m miners) hold(op string) { writeFile(m.t, m.path("hold-"+op), nil) }

func (m miners) release(op string) {
	if err := os.Remove(m.path("hold-" + op)); err != nil {
		m.t.Fatal(err)
	}
}

// held lists the GPU indexes whose miner start or stop waits in a hold.
func (m miners) held(op string) []int { return m.indexes("held-" + op + "-") }

// running lists the GPU indexes whose miner runs.
func (m miners) running() []int { return m.indexes("mining-") }

func (m miners) indexes(prefix string) []int {
	names, err := filepath.Glob(m.path(prefix + "*"))
	if err != nil {
		m.t.Fatal(err)
	}
	var out []int
	for _, n := range names {
		i, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(n), prefix))
		if err != nil {
			m.t.Fatalf("miner file %s: %v", n, err)
		}
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// persistedGPU is a GPU's record in the switcher's state file.
type persistedGPU struct {
	UUID     string `json:"uuid"`
	State    string `json:"state"`
	Contract string `json:"contract"`
}

// persistedState reads the switcher's state file: with proxyd dead it
// says the state each GPU was in when the kill landed (the switcher
// writes it at the end of every pass, under the lock /api/v1/gpus reads
// under).
func persistedState(t *testing.T, stateDir string) map[string]persistedGPU {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(stateDir, "switcher-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		GPUs []persistedGPU `json:"gpus"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("the switcher's state file: %v", err)
	}
	out := map[string]persistedGPU{}
	for _, g := range f.GPUs {
		out[g.UUID] = g
	}
	return out
}

// TestKillInEveryState kill -9s proxyd in the states TestNodeAgent cannot
// reach with a hold at its front proxy, because they make no API call:
// STOPPING_MINER, VERIFYING_FREE on the way to a loan and on the way back
// to mining, RESTORING_MINING, and the resting IDLE (a GPU cordoned) and
// QUARANTINED (a GPU not proven free in time). Together with TestNodeAgent
// (MINING, STARTING_AI, SERVING_AI, DRAINING_AI) that is every state a GPU
// can be in with the node agent on.
//
// Each state is reached by making it last and watching for it, then the
// kill: STOPPING_MINER and RESTORING_MINING last while the miner's stop
// or start command is held (minerScript's hold file, which only the test
// lets go), VERIFYING_FREE lasts 30 s with a slow proof of free (the
// proof counts NVML samples; nothing the test holds is on its path),
// IDLE and QUARANTINED last until an operator acts. The
// simulated runtime cannot keep a GPU in STOPPING_MINER: its stop returns
// at once and the process leaves the GPU later, in VERIFYING_FREE; and its
// miners would die with proxyd, which an exec miner (like a systemd unit)
// does not. The test fails if a state is never observed, and checks in
// the state file written before the kill that the kill landed in it.
//
// After each kill, with proxyd dead: every GPU but the lent ones carries
// proxyd's NoSchedule rule, no lent one does, and every GPU whose miner
// runs has its rule. Then proxyd restarts (with a fast proof of free: the
// config is read again) and the same holds, with what proxyd reports
// running, until it settles.
func TestKillInEveryState(t *testing.T) {
	start := time.Now()
	var stateDir, cfgPath string
	var cfgArgs []any
	dir := t.TempDir()
	m := miners{t: t, dir: dir}
	script := filepath.Join(dir, "miner.sh")
	writeFile(t, script, []byte(minerScript))
	c := setupClusterWith(t, func(port int, tokenFile, state, kubeconfig string) string {
		stateDir = state
		cfgArgs = []any{port, tokenFile, fastPoll, state, fastPolls, script, node, kubeconfig, dwell.String(), "3m"}
		return fmt.Sprintf(killStatesConfig, cfgArgs...)
	})
	cfgPath = c.p.cfgPath
	// proofOfFree rewrites the config for the next start of proxyd.
	proofOfFree := func(polls int, poll string) {
		cfgArgs[2], cfgArgs[4] = poll, polls
		writeFile(t, cfgPath, []byte(fmt.Sprintf(killStatesConfig, cfgArgs...)))
	}
	all := c.devicesSorted()
	device := func(i int) string { return fmt.Sprintf("gpu-%d", i) }

	// minersTainted: every GPU whose miner runs carries proxyd's
	// NoSchedule rule (proxyd may be dead: this reads the files and the
	// API server only).
	minersTainted := func() error {
		rules := map[string]bool{}
		for _, d := range c.ruleDevices() {
			rules[d] = true
		}
		for _, i := range m.running() {
			if !rules[device(i)] {
				return fmt.Errorf("GPU %s mines without proxyd's rule", device(i))
			}
		}
		return nil
	}
	// afterKill checks the rules with proxyd dead, and that the kill
	// landed in the state: the state file says uuid was in want.
	afterKill := func(t *testing.T, want, uuid string, lent ...string) {
		t.Helper()
		if got := persistedState(t, stateDir)[uuid]; got.State != want {
			t.Fatalf("the kill did not land in %s: the state file says GPU %s was %s", want, c.devices[uuid], got.State)
		}
		if err := consistentRules(c, lent...); err != nil {
			t.Fatalf("%s: with proxyd dead: %v", want, err)
		}
		if err := minersTainted(); err != nil {
			t.Fatalf("%s: with proxyd dead: %v", want, err)
		}
	}
	// restart starts proxyd again and checks the rules against what runs
	// until settled says it settled, and a while after.
	restart := func(t *testing.T, step string, settled func() bool) {
		t.Helper()
		c.p.start()
		check := func() {
			t.Helper()
			if err := c.consistent(); err != nil {
				t.Fatalf("%s: after restart: %v", step, err)
			}
			if err := minersTainted(); err != nil {
				t.Fatalf("%s: after restart: %v", step, err)
			}
		}
		c.p.waitFor(step+": settled after the restart", 60*time.Second, func() bool { check(); return settled() })
		for i := 0; i < 20; i++ {
			check()
			time.Sleep(50 * time.Millisecond)
		}
	}
	// observe waits until a GPU that pick accepts is in state, and
	// returns it.
	observe := func(t *testing.T, state string, within time.Duration, pick func(uuid string) bool) string {
		t.Helper()
		var got string
		c.p.waitFor("a GPU observed in "+state, within, func() bool {
			for u, st := range c.p.states() {
				if st == state && pick(u) {
					got = u
					return true
				}
			}
			return false
		})
		return got
	}
	// lentDevices lists the GPUs without proxyd's rule, sorted.
	lentDevices := func() []string {
		rules := map[string]bool{}
		for _, d := range c.ruleDevices() {
			rules[d] = true
		}
		var out []string
		for _, d := range all {
			if !rules[d] {
				out = append(out, d)
			}
		}
		return out
	}
	anyGPU := func(string) bool { return true }
	// serve plays the scheduler and the kubelet: the claim is allocated
	// on the lent GPU and its pod runs.
	serve := func(claim, device string) {
		c.t.Helper()
		c.allocate("ai", claim, device)
		c.podReady("ai", claim)
		c.p.waitFor(device+" SERVING_AI", 30*time.Second, func() bool { return c.stateOf(device) == "SERVING_AI" })
	}
	nLent := func(n int) func() bool {
		return func() bool { return len(lentDevices()) == n && len(c.mining()) == len(all)-n }
	}

	// Each step starts from the state the one before left: after a
	// failure the rest do not run.
	failed := false
	step := func(name string, f func(t *testing.T)) {
		if failed {
			t.Logf("%s: not run (an earlier step failed)", name)
			return
		}
		failed = !t.Run(name, f)
	}

	step("mining GPUs get rules", func(t *testing.T) {
		c.use(t)
		c.p.waitFor("every GPU mining with proxyd's rule", 60*time.Second, func() bool {
			return fmt.Sprint(c.mining()) == fmt.Sprint(all) && fmt.Sprint(c.ruleDevices()) == fmt.Sprint(all) &&
				len(m.running()) == len(all)
		})
	})

	// STOPPING_MINER, on the way to a loan: the miner's stop is held.
	var first string // the GPU lent for claim ks-1
	step("kill -9 in STOPPING_MINER", func(t *testing.T) {
		c.use(t)
		m.hold("stop")
		c.pendingClaim("ai", "ks-1")
		u := observe(t, "STOPPING_MINER", 30*time.Second, anyGPU)
		c.p.waitFor("the miner's stop held", 30*time.Second, func() bool { return len(m.held("stop")) == 1 })
		c.p.kill()
		afterKill(t, "STOPPING_MINER", u)
		if h := m.held("stop"); len(h) != 1 || device(h[0]) != c.devices[u] {
			t.Fatalf("held stops %v after the kill, want the one of %s", h, c.devices[u])
		}
		// The orphaned stop command finishes: the miner stops with proxyd
		// dead, the rule stays.
		m.release("stop")
		c.p.waitFor("the orphaned stop command done", 30*time.Second, func() bool { return len(m.held("stop")) == 0 })
		afterKill(t, "STOPPING_MINER", u)
		// The claim still waits: after the restart one GPU is lent.
		restart(t, "STOPPING_MINER", nLent(1))
		// The scheduler takes it (a lent GPU no claim holds would go back
		// to mining after the dwell, and be lent again for the claim).
		first = lentDevices()[0]
		serve("ks-1", first)
	})

	// VERIFYING_FREE, on the way to a loan: a second claim, a slow proof.
	var second string
	step("kill -9 in VERIFYING_FREE before a loan", func(t *testing.T) {
		c.use(t)
		c.p.kill()
		proofOfFree(slowPolls, slowPoll)
		c.p.start()
		c.pendingClaim("ai", "ks-2")
		u := observe(t, "VERIFYING_FREE", 30*time.Second, func(u string) bool { return c.devices[u] != first })
		c.p.kill()
		afterKill(t, "VERIFYING_FREE", u, first)
		if got := persistedState(t, stateDir)[u]; got.Contract == "" {
			t.Fatalf("GPU %s was in VERIFYING_FREE for no contract, want on its way to a loan", c.devices[u])
		}
		proofOfFree(fastPolls, fastPoll)
		restart(t, "VERIFYING_FREE before a loan", nLent(2))
		for _, d := range lentDevices() {
			if d != first {
				second = d
			}
		}
		serve("ks-2", second)
	})

	// VERIFYING_FREE, on the way back to mining: ks-2 ends, and after
	// the dwell its GPU is tainted again, drained and proven free, slowly.
	step("kill -9 in VERIFYING_FREE after a take-back", func(t *testing.T) {
		c.use(t)
		c.p.kill()
		proofOfFree(slowPolls, slowPoll)
		c.p.start()
		c.finish("ai", "ks-2")
		u := observe(t, "VERIFYING_FREE", dwell+30*time.Second, func(u string) bool { return c.devices[u] == second })
		c.p.kill()
		afterKill(t, "VERIFYING_FREE", u, first)
		if got := persistedState(t, stateDir)[u]; got.Contract != "" {
			t.Fatalf("GPU %s was in VERIFYING_FREE for contract %s, want on its way back to mining", c.devices[u], got.Contract)
		}
		proofOfFree(fastPolls, fastPoll)
		restart(t, "VERIFYING_FREE after a take-back", nLent(1))
	})

	// RESTORING_MINING: ks-1 ends; after the dwell its GPU is taken back
	// and the miner's start is held.
	step("kill -9 in RESTORING_MINING", func(t *testing.T) {
		c.use(t)
		m.hold("start")
		c.finish("ai", "ks-1")
		u := observe(t, "RESTORING_MINING", dwell+30*time.Second, func(u string) bool { return c.devices[u] == first })
		c.p.waitFor("the miner's start held", 30*time.Second, func() bool { return len(m.held("start")) == 1 })
		c.p.kill()
		afterKill(t, "RESTORING_MINING", u)
		// The orphaned start command finishes: the miner runs with proxyd
		// dead, under its rule.
		m.release("start")
		c.p.waitFor("the orphaned start command done", 30*time.Second, func() bool { return len(m.held("start")) == 0 })
		if r := m.running(); len(r) != len(all) {
			t.Fatalf("miners %v run after the orphaned start, want all %d", r, len(all))
		}
		afterKill(t, "RESTORING_MINING", u)
		restart(t, "RESTORING_MINING", nLent(0))
	})

	// IDLE: a GPU cordoned with force stops mining and rests idle, still
	// under its rule (the agent lends only what the switcher lends).
	step("kill -9 in IDLE (cordoned)", func(t *testing.T) {
		c.use(t)
		u := c.uuids[all[0]]
		if code, b := c.p.do(http.MethodPost, "/api/v1/gpus/"+u+"/cordon", `{"reason":"kill test","force":true}`); code/100 != 2 {
			t.Fatalf("cordon: %d %s", code, b)
		}
		observe(t, "IDLE", 30*time.Second, func(x string) bool { return x == u })
		c.p.kill()
		afterKill(t, "IDLE", u)
		restart(t, "IDLE", func() bool { return c.p.states()[u] == "IDLE" && len(c.mining()) == len(all)-1 })
		if code, b := c.p.do(http.MethodPost, "/api/v1/gpus/"+u+"/uncordon", ""); code/100 != 2 {
			t.Fatalf("uncordon: %d %s", code, b)
		}
		c.p.waitFor("the uncordoned GPU mining again", 30*time.Second, nLent(0))
	})

	// QUARANTINED: with a proof of free that cannot finish within
	// verify_free, a GPU cordoned with force stops mining and, not proven
	// free in time, is quarantined; it rests there until an operator
	// resumes it, still under its rule.
	step("kill -9 in QUARANTINED", func(t *testing.T) {
		c.use(t)
		u := c.uuids[all[1]]
		c.p.kill()
		cfgArgs[9] = "1s"
		proofOfFree(slowPolls, slowPoll)
		c.p.start()
		if code, b := c.p.do(http.MethodPost, "/api/v1/gpus/"+u+"/cordon", `{"reason":"kill test","force":true}`); code/100 != 2 {
			t.Fatalf("cordon: %d %s", code, b)
		}
		observe(t, "QUARANTINED", 30*time.Second, func(x string) bool { return x == u })
		c.p.kill()
		afterKill(t, "QUARANTINED", u)
		cfgArgs[9] = "3m"
		proofOfFree(fastPolls, fastPoll)
		restart(t, "QUARANTINED", func() bool { return c.p.states()[u] == "QUARANTINED" && len(c.mining()) == len(all)-1 })
		for _, op := range []string{"uncordon", "resume"} {
			if code, b := c.p.do(http.MethodPost, "/api/v1/gpus/"+u+"/"+op, "{}"); code/100 != 2 {
				t.Fatalf("%s: %d %s", op, code, b)
			}
		}
		c.p.waitFor("the resumed GPU mining again", 30*time.Second, nLent(0))
	})

	t.Logf("TestKillInEveryState took %s", time.Since(start).Round(time.Second))
}
