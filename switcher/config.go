package switcher

import (
	"fmt"
	"time"

	"github.com/hashgate/proxyd/switcher/workload"
)

// Config is what the switcher runs by: its limits, intervals, timeouts and
// workloads. The wiring (internal/components) converts [switcher] into it;
// DefaultConfig is the same defaults the config file has.
type Config struct {
	// StateDir holds the state file (StateFile).
	StateDir string
	// MinPriceUSDPerGPUHour is the site's value of mining: cheaper contracts are refused.
	MinPriceUSDPerGPUHour float64
	// MaxParallel caps GPUs in transition at once.
	MaxParallel int
	// DemandURL is an optional polled feed returning a JSON list of
	// contracts, with the bearer token in DemandTokenFile.
	DemandURL          string
	DemandTokenFile    string
	DemandPollInterval time.Duration
	// ContractRetention is how long an API or feed contract is kept after
	// its end; MaxContracts bounds those kept from the API, and separately
	// from the feed.
	ContractRetention time.Duration
	MaxContracts      int
	// ReconcileInterval is how often the loop walks every GPU one step.
	ReconcileInterval time.Duration
	// StatusInterval is how often a running workload is asked whether it
	// is still up.
	StatusInterval time.Duration
	// FreePolls consecutive fresh samples must show a GPU free (memory at
	// most FreeMemorySlackMiB above its idle baseline) before new work.
	FreePolls          int
	FreeMemorySlackMiB int
	// RetryBackoff is how long a GPU is not offered again to a contract
	// whose workload failed to start on it.
	RetryBackoff time.Duration
	Timeouts     Timeouts
	// Mining is the workload a GPU runs when no contract wants it; nil:
	// such GPUs stay idle.
	Mining *workload.Definition
	// Workload holds the named AI workloads that contracts refer to.
	Workload map[string]workload.Definition
}

// Timeouts bound every waiting state of a GPU's switch; each has an
// escalation (kill, quarantine, back to mining).
type Timeouts struct {
	StopMiner     time.Duration
	VerifyFree    time.Duration
	StartAI       time.Duration
	DrainAI       time.Duration
	RestoreMining time.Duration
}

// DefaultConfig returns the defaults of [switcher] in the config file
// (a test in internal/components keeps the two equal).
func DefaultConfig() Config {
	return Config{
		StateDir:           "/var/lib/proxyd",
		MaxParallel:        1,
		DemandPollInterval: 30 * time.Second,
		ContractRetention:  7 * 24 * time.Hour,
		MaxContracts:       1000,
		ReconcileInterval:  time.Second,
		StatusInterval:     10 * time.Second,
		FreePolls:          3,
		FreeMemorySlackMiB: 256,
		RetryBackoff:       10 * time.Minute,
		Timeouts: Timeouts{
			StopMiner:     2 * time.Minute,
			VerifyFree:    time.Minute,
			StartAI:       20 * time.Minute,
			DrainAI:       5 * time.Minute,
			RestoreMining: 5 * time.Minute,
		},
	}
}

// Workloads returns the named AI workloads (never nil).
func (c *Config) Workloads() map[string]workload.Definition {
	if c.Workload == nil {
		return map[string]workload.Definition{}
	}
	return c.Workload
}

// MiningWorkload returns the mining workload and whether one is configured.
func (c *Config) MiningWorkload() (workload.Definition, bool) {
	if c.Mining == nil {
		return workload.Definition{}, false
	}
	return *c.Mining, true
}

// Duration is a time.Duration that reads and writes as a Go duration
// string ("10m0s") in JSON: a contract's lead_time.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as "10m0s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write it as a Go duration string such as \"5s\", \"2m\" or \"250ms\"", string(b))
	}
	*d = Duration(v)
	return nil
}
