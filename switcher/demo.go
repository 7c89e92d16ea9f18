package switcher

import (
	"time"

	"github.com/hashgate/proxyd/internal/config"
)

// DemoWorkload is the AI workload DemoConfig defines.
const DemoWorkload = "demo-llm"

// DemoConfig returns a [switcher] section for `proxyd demo` and for tests:
// enabled, state in stateDir, mining and one AI workload (DemoWorkload) on
// the simulated runtime, with delays and timeouts of seconds so that a
// contract moves GPUs to AI and back while a person watches. It needs
// [gpu] backend = "simulated" (poll_interval of 100 to 250ms suits it).
// The AI workload runs under a 300 W power limit, mining under the GPU's
// own limit.
func DemoConfig(stateDir string) config.Switcher {
	cfg := config.Default().Switcher
	cfg.Enabled = true
	cfg.StateDir = stateDir
	cfg.MaxParallel = 2
	cfg.FreePolls = 2
	cfg.ReconcileInterval = config.Duration(100 * time.Millisecond)
	cfg.StatusInterval = config.Duration(500 * time.Millisecond)
	cfg.RetryBackoff = config.Duration(30 * time.Second)
	cfg.Timeouts = config.SwitcherTimeouts{
		StopMiner:     config.Duration(10 * time.Second),
		VerifyFree:    config.Duration(10 * time.Second),
		StartAI:       config.Duration(30 * time.Second),
		DrainAI:       config.Duration(10 * time.Second),
		RestoreMining: config.Duration(10 * time.Second),
	}
	cfg.Mining = &config.Workload{
		Runtime:       config.RuntimeSimulated,
		StopTimeout:   config.Duration(5 * time.Second),
		Readiness:     config.ReadinessRunning,
		SimMemoryMiB:  2048,
		SimLoad:       0.85,
		SimStartDelay: config.Duration(200 * time.Millisecond),
		SimReadyDelay: config.Duration(300 * time.Millisecond),
		SimStopDelay:  config.Duration(200 * time.Millisecond),
	}
	cfg.Workload = &config.WorkloadTable{
		DemoWorkload: {
			Runtime:       config.RuntimeSimulated,
			PowerLimitW:   300,
			StopTimeout:   config.Duration(5 * time.Second),
			Readiness:     config.ReadinessRunning,
			SimMemoryMiB:  30000,
			SimLoad:       0.95,
			SimStartDelay: config.Duration(300 * time.Millisecond),
			SimReadyDelay: config.Duration(1500 * time.Millisecond),
			SimStopDelay:  config.Duration(300 * time.Millisecond),
		},
	}
	return cfg
}

// DemoContract is a contract for DemoWorkload starting at start and
// lasting d, at $2 per GPU-hour.
func DemoContract(id string, gpus int, start time.Time, d time.Duration) Contract {
	return Contract{ID: id, GPUs: gpus, Start: start, End: start.Add(d), PriceUSDPerGPUHour: 2, Priority: 10, Workload: DemoWorkload}
}
