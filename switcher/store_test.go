package switcher

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/internal/fakeclock"
	"github.com/hashgate/proxyd/switcher/workload"
)

func TestStoreRoundTripAndAtomicity(t *testing.T) {
	dir := t.TempDir()
	st, err := newStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := st.load(); p != nil || err != nil {
		t.Fatalf("empty dir: %v %v", p, err)
	}
	on := true
	p := &persisted{
		Contracts: []Contract{contract("a", 2, epoch, time.Hour)},
		Feed:      &feedSnapshot{FetchedAt: epoch, Contracts: []Contract{contract("f", 1, epoch, time.Hour)}},
		GPUs: []durable{{UUID: "GPU-1", State: StateServingAI, Since: epoch, Contract: "a", Workload: "llm",
			Handle: &workload.Handle{Runtime: "docker", ID: "abc", Instance: workload.Instance{Workload: "llm", Contract: "a", GPUUUID: "GPU-1"}},
			Cordon: &Cordon{Reason: "r", At: epoch}, Power: &nvml.PowerSnapshot{UUID: "GPU-1", LimitMW: 350500, PersistenceMode: &on},
			IdleMemoryBytes: 4 << 20, Backoff: map[string]time.Time{"b": epoch}}},
	}
	if err := st.save(p); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil || info.Mode().Perm() != 0o640 {
		t.Fatalf("state file: %v %v", info, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	st2, _ := newStore(dir)
	got, err := st2.load()
	if err != nil {
		t.Fatal(err)
	}
	g := got.GPUs[0]
	if g.State != StateServingAI || g.Handle.ID != "abc" || g.Power.LimitMW != 350500 || g.Cordon.Reason != "r" ||
		!g.Backoff["b"].Equal(epoch) || got.Feed.Contracts[0].ID != "f" || got.Contracts[0].ID != "a" {
		t.Errorf("round trip lost something: %+v", got)
	}
	// Unchanged content is not rewritten.
	before, _ := os.Stat(filepath.Join(dir, StateFile))
	time.Sleep(10 * time.Millisecond)
	if err := st2.save(got); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(dir, StateFile))
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("identical state rewritten")
	}
}

func TestStoreRefusesWhatItCannotTrust(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"truncated", `{"format": 1, "gpus": [`, "unreadable"},
		{"unknown field", `{"format": 1, "gpus": [], "surprise": true}`, "unreadable"},
		{"newer format", `{"format": 9, "gpus": []}`, "format 9"},
		{"binary", "\x00\x01\x02", "unreadable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, harnessOpts{noRun: true})
			h.cfg.StateDir = dir
			_, err := New(Options{Config: h.cfg, GPUs: h.mgr, Runtimes: []workload.Runtime{h.rt}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("got %v, want an error naming the file and %q", err, tc.want)
			}
		})
	}
}

// A state directory that cannot be written holds every new switch (and
// refuses API changes) until it can.
func TestPersistFailureHoldsSwitching(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// Replace the state directory by a file: every write fails, even as
	// root (whom permissions would not stop).
	dir := h.cfg.StateDir
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := h.sw.PutContract(contract("acme", 1, h.clock.Now(), time.Hour))
	if !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("put while the state cannot be written: %v", err)
	}
	if _, err := h.sw.ContractStatus("acme"); err == nil {
		t.Error("a contract that was not persisted is listed")
	}
	if err := h.sw.NotReady(); err == nil || !strings.Contains(err.Error(), "cannot write its state") {
		t.Errorf("NotReady: %v", err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	h.step()
	if err := h.sw.NotReady(); err != nil {
		t.Errorf("after the directory is back: %v", err)
	}
	h.put(contract("acme", 1, h.clock.Now(), time.Hour))
	h.runUntil("served", 120, func() bool { return h.serving("acme") == 1 })
}

// The switcher's events go to the journal it is given, as component
// "switcher": transitions with the GPU as subject, contract decisions with
// the contract.
func TestEventsGoToTheJournal(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	journal := events.New(0)
	h.sw.journal = journal
	h.put(contract("acme", 1, h.clock.Now(), time.Hour))
	h.runUntil("serving", 200, func() bool { return h.serving("acme") == 1 })
	all := journal.List(events.Query{Component: "switcher"})
	var transitions, contractEvents int
	for _, e := range all {
		switch {
		case e.Kind == KindTransition:
			transitions++
			if e.Subject == "" || e.From == e.To || e.Details["gpu"] != e.Subject || e.Time.Location() != time.UTC {
				t.Errorf("transition %+v", e)
			}
		case e.Subject == "acme" && e.Reason == "contract_added":
			contractEvents++
		}
	}
	if transitions < 8 || contractEvents != 1 {
		t.Errorf("%d transitions, %d contract events in %d", transitions, contractEvents, len(all))
	}
	gpu := h.contractStatus("acme").GPUList[0]
	evs := h.sw.Events(EventFilter{GPU: gpu})
	if len(evs) == 0 || evs[len(evs)-1].To != StateServingAI || evs[len(evs)-1].Contract != "acme" {
		t.Errorf("events of %s: %+v", gpu, evs)
	}
	if got := h.sw.Events(EventFilter{Contract: "acme", Limit: 2}); len(got) != 2 || got[1].Seq != evs[len(evs)-1].Seq {
		t.Errorf("by contract, limited: %+v", got)
	}
	if got := h.sw.Events(EventFilter{After: evs[len(evs)-1].Seq}); len(got) != 0 {
		t.Errorf("after the last: %+v", got)
	}
}

func TestSummaryString(t *testing.T) {
	s := Summary{GPUs: 8, States: map[State]int{StateMining: 6, StateServingAI: 2}, Cordoned: 1,
		Contracts: []ContractSum{{ID: "z", State: ContractEnded}, {ID: "demo", State: ContractActive, Desired: 2, Serving: 2}}}
	want := "8 GPUs: MINING 6, SERVING_AI 2 (1 cordoned) | demo 2/2 serving, z ended"
	if got := s.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestParseContractList(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		n       int
		invalid []string
		err     string
	}{
		{"empty", `[]`, 0, nil, ""},
		{"object", `{"contracts": []}`, 0, nil, "JSON list"},
		{"no id", `[{"gpus": 1}]`, 0, nil, "with an id"},
		{"valid", `[{"id":"a","gpus":1,"start":"2026-12-01T00:00:00Z","end":"2026-12-02T00:00:00Z","price_usd_per_gpu_hour":1,"workload":"w"}]`, 1, nil, ""},
		{"invalid kept", `[{"id":"a","gpus":"x"},{"id":"b","gpus":1,"start":"2026-12-01T00:00:00Z","end":"2026-12-02T00:00:00Z","price_usd_per_gpu_hour":1,"workload":"w","lead_time":"later"}]`,
			2, []string{"a", "b"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, invalid, err := parseContractList([]byte(tc.body))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(cs) != tc.n || len(invalid) != len(tc.invalid) {
				t.Errorf("got %d contracts, invalid %v, err %v", len(cs), invalid, err)
			}
			for _, id := range tc.invalid {
				if invalid[id] == "" {
					t.Errorf("%s not marked invalid", id)
				}
			}
		})
	}
}

// Issue 12 #7: kill -9 during a state write leaves
// .switcher-state.json.<n>.tmp files that were never removed. Start
// removes its own, logs each, and leaves everything else in state_dir.
func TestStaleTempFilesRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	writeEndedContracts(t, dir, 0, epoch) // a valid state file beside them
	stale := []string{".switcher-state.json.123456789.tmp", ".switcher-state.json.7.tmp"}
	foreign := []string{"notes.tmp", ".switcher-state.json.tmp", ".switcher-state.json.abc.tmp", "switcher-state.json.1.tmp",
		".switcher-state.json.1.tmp.bak", ".other-state.json.1.tmp", ".switcher-state.json.1.tmpx", "x.switcher-state.json.1.tmp"}
	for _, n := range append(append([]string{}, stale...), foreign...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(`{"format": 1, "gpus": [`), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// Named like ours but not a regular file: left alone.
	if err := os.Mkdir(filepath.Join(dir, ".switcher-state.json.77.tmp"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "notes.tmp"), filepath.Join(dir, ".switcher-state.json.88.tmp")); err != nil {
		t.Fatal(err)
	}
	foreign = append(foreign, ".switcher-state.json.77.tmp", ".switcher-state.json.88.tmp", StateFile)

	core, logs := observer.New(zap.DebugLevel)
	_, err := New(Options{Config: testConfig(dir), GPUs: staticGPUs{{Info: nvml.Info{UUID: "GPU-0"}}},
		Runtimes: []workload.Runtime{workload.NewSim(workload.SimOptions{})}, Clock: fakeclock.New(epoch), Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s not removed: %v", n, err)
		}
		found := false
		for _, e := range logs.FilterMessageSnippet("removed a temporary switcher state file").All() {
			found = found || e.ContextMap()["path"] == filepath.Join(dir, n)
		}
		if !found {
			t.Errorf("removal of %s not logged", n)
		}
	}
	for _, n := range foreign {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s is not the switcher's and must stay: %v", n, err)
		}
	}
	if n := logs.FilterMessageSnippet("removed a temporary").Len(); n != len(stale) {
		t.Errorf("%d removals logged, want %d", n, len(stale))
	}
}
