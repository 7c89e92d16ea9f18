package nvml

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashgate/proxyd/gpuproc"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// Every process of a sample carries an owner: from its markers, from a
// container proxyd names as its own, foreign or unknown otherwise; and the
// owner is in the JSON the API and `proxyd gpus --json` serve.
func TestProcessOwners(t *testing.T) {
	lib, err := OpenLibrary(BackendSimulated, LibraryOptions{Sim: nvmlsim.Options{Node: "owners"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	uuid := lib.Sim.UUIDs()[1]
	_ = lib.Sim.Update(uuid, func(g *nvmlsim.GPUState) {
		g.AddProcess(nvmlsim.Process{PID: 41001, UsedMemory: 1 << 30, Comm: "miner",
			Env: []string{gpuproc.EnvWorkload + "=sim-1", gpuproc.EnvContract + "=", gpuproc.EnvGPU + "=" + uuid}})
		g.AddProcess(nvmlsim.Process{PID: 41002, UsedMemory: 1 << 30, Env: []string{gpuproc.EnvWorkload + "=sim-2",
			gpuproc.EnvContract + "=acme"}})
		g.AddProcess(nvmlsim.Process{PID: 41003, UsedMemory: 1 << 30, Graphics: true, Comm: "Xorg"})
	})
	m, err := New(lib, Options{Backend: lib.Backend})
	if err != nil {
		t.Fatal(err)
	}
	m.SetKnownWorkloads(func() []gpuproc.Known { return []gpuproc.Known{{Marker: "sim-2", Contract: "acme-renamed"}} })
	if err := m.SampleNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	tel, _ := m.Telemetry(uuid)
	procs, known := tel.Processes()
	if !known || len(procs) != 3 {
		t.Fatalf("processes %+v", procs)
	}
	want := map[uint32]string{41001: "mining", 41002: "ai:acme-renamed", 41003: "foreign"}
	for _, p := range procs {
		if p.Owner.Class != want[p.PID] {
			t.Errorf("pid %d: owner %s, want %s", p.PID, p.Owner, want[p.PID])
		}
	}
	b, _ := json.Marshal(m.Node())
	if n := strings.Count(string(b), `"owner":{"class":`); n != 3 {
		t.Errorf("%d owners in the JSON, want 3: %s", n, b)
	}
}

// PROXYD_SIM_NODE gives a simulated daemon UUIDs of its own.
func TestSimNodeFromEnvironment(t *testing.T) {
	t.Setenv(nvmlsim.EnvNode, "rack-42")
	lib, err := OpenLibrary(BackendSimulated, LibraryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	if got, want := lib.Sim.UUIDs()[0], nvmlsim.New(nvmlsim.Options{Node: "rack-42"}).UUIDs()[0]; got != want {
		t.Errorf("UUID %s, want %s (node rack-42)", got, want)
	}
	if lib.Sim.UUIDs()[0] == nvmlsim.New(nvmlsim.Options{}).UUIDs()[0] {
		t.Error("the node from the environment was ignored")
	}
}
