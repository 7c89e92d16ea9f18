package switcher

import (
	"strings"
	"testing"

	"github.com/hashgate/proxyd/switcher/workload"
)

// A workload whose runtime kind no driver was registered for is refused
// before anything starts, naming the kinds this build has.
func TestComponentRefusesUnregisteredRuntime(t *testing.T) {
	cfg := testConfig(t.TempDir())
	w := cfg.Workload["llm"]
	w.Runtime = "kubernetes"
	cfg.Workload["llm"] = w
	_, err := NewComponent(ComponentOptions{Config: cfg, GPUBackend: "simulated", Drivers: simDrivers(t)})
	if err == nil || !strings.Contains(err.Error(), `runtime "kubernetes", which this build does not have (known: simulated)`) {
		t.Errorf("unregistered runtime: %v", err)
	}
	// Registered, it is accepted.
	d := simDrivers(t)
	if err := d.Register("kubernetes", workload.Driver{New: func(workload.Env) (workload.Runtime, error) { return nil, nil }}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewComponent(ComponentOptions{Config: cfg, GPUBackend: "simulated", Drivers: d}); err != nil {
		t.Errorf("registered runtime refused: %v", err)
	}
}
