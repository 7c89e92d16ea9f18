package switcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/internal/fakeclock"
	"github.com/hashgate/proxyd/switcher/workload"
)

// staticGPUs is a GPU source that only lists GPUs: enough for what the
// API does before a pass runs.
type staticGPUs []nvml.GPU

func (g staticGPUs) GPUs() []nvml.GPU { return g }

var errNoPower = errors.New("staticGPUs: no power control")

func (staticGPUs) SnapshotPower(context.Context, string) (nvml.PowerSnapshot, error) {
	return nvml.PowerSnapshot{}, errNoPower
}

func (staticGPUs) SetPowerLimit(context.Context, string, uint32) (nvml.PowerChange, error) {
	return nvml.PowerChange{}, errNoPower
}

func (staticGPUs) RestorePower(context.Context, nvml.PowerSnapshot) (nvml.PowerChange, error) {
	return nvml.PowerChange{}, errNoPower
}

// writeEndedContracts writes a state file holding n API contracts that
// ended at end (as a proxyd that ran for weeks would have).
func writeEndedContracts(tb testing.TB, dir string, n int, end time.Time) {
	tb.Helper()
	p := persisted{Format: stateFormat, GPUs: []durable{}}
	for i := range n {
		p.Contracts = append(p.Contracts, contract(fmt.Sprintf("old-%05d", i), 1, end.Add(-time.Hour), time.Hour))
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o640); err != nil {
		tb.Fatal(err)
	}
}

// apiOver returns the switcher's routes over sw.
func apiOver(tb testing.TB, sw *Switcher) *http.ServeMux {
	tb.Helper()
	c, err := NewComponent(ComponentOptions{Config: sw.cfg, GPUBackend: "simulated", Drivers: simDrivers(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	c.sw = sw
	mux := http.NewServeMux()
	c.RegisterAPI(mux)
	return mux
}

// BenchmarkPutContractEnded measures PUT /api/v1/contracts/{id} (decode,
// validation, the durable write) on a switcher whose state holds many
// API contracts that ended eight days ago (ended=N: past the default
// contract_retention) or one day ago (ended-1d=N: within it, so only
// max_contracts bounds them). Each PUT changes the contract, so each one
// writes the state file.
func BenchmarkPutContractEnded(b *testing.B) {
	for _, bc := range []struct {
		name string
		n    int
		ago  time.Duration
	}{
		{"ended=0", 0, 0},
		{"ended=2000", 2000, 8 * 24 * time.Hour},
		{"ended-1d=2000", 2000, 24 * time.Hour},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			clock := fakeclock.New(epoch)
			writeEndedContracts(b, dir, bc.n, epoch.Add(-bc.ago))
			sw, err := New(Options{Config: testConfig(dir), GPUs: staticGPUs{{Info: nvml.Info{UUID: "GPU-bench-0"}}},
				Runtimes: []workload.Runtime{workload.NewSim(workload.SimOptions{})}, Clock: clock, Log: zap.NewNop()})
			if err != nil {
				b.Fatal(err)
			}
			mux := apiOver(b, sw)
			bodies := [2]string{}
			for i := range bodies {
				bodies[i] = fmt.Sprintf(`{"gpus": 1, "start": %q, "end": %q, "price_usd_per_gpu_hour": %d, "workload": "llm"}`,
					epoch.Format(time.RFC3339), epoch.Add(time.Hour).Format(time.RFC3339), i+2)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/api/v1/contracts/bench", strings.NewReader(bodies[i%2])))
				if rec.Code != http.StatusOK && rec.Code != http.StatusCreated {
					b.Fatalf("PUT: %d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
