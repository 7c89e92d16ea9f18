package config

import (
	"fmt"
	"time"
)

// Switcher configures the GPU workload switcher.
type Switcher struct {
	Enabled  bool   `toml:"enabled"`
	StateDir string `toml:"state_dir"`
	// MinPriceUSDPerGPUHour is the site's value of mining: cheaper contracts are refused.
	MinPriceUSDPerGPUHour float64 `toml:"min_price_usd_per_gpu_hour"`
	// MaxParallel caps GPUs in transition at once (PSUs dislike many load steps together).
	MaxParallel int `toml:"max_parallel"`
	// DemandURL is an optional polled feed returning a JSON list of contracts.
	DemandURL          string   `toml:"demand_url"`
	DemandTokenFile    string   `toml:"demand_token_file"`
	DemandPollInterval Duration `toml:"demand_poll_interval"`
}

func defaultSwitcher() Switcher {
	return Switcher{StateDir: "/var/lib/proxyd", MaxParallel: 1, DemandPollInterval: Duration(30e9)}
}

func (s *Switcher) validate(v *validator) {
	if s.StateDir == "" {
		v.addf("switcher.state_dir", "must not be empty")
	}
	v.floatRange("switcher.min_price_usd_per_gpu_hour", s.MinPriceUSDPerGPUHour, 0, 1e6)
	v.intRange("switcher.max_parallel", int64(s.MaxParallel), 1, 1024)
	v.positiveDuration("switcher.demand_poll_interval", s.DemandPollInterval)
}

// Contract is AI demand declared in the config file.
type Contract struct {
	ID                 string    `toml:"id"`
	GPUs               int       `toml:"gpus"`
	Start              time.Time `toml:"start"`
	End                time.Time `toml:"end"`
	PriceUSDPerGPUHour float64   `toml:"price_usd_per_gpu_hour"`
	Priority           int       `toml:"priority"`
	Workload           string    `toml:"workload"`
	Pin                []string  `toml:"pin"`
	LeadTime           Duration  `toml:"lead_time"`
}

func validateContracts(v *validator, cs []Contract) {
	ids := map[string]bool{}
	for i, c := range cs {
		k := func(key string) string { return fmt.Sprintf("contract[%d].%s", i, key) }
		if c.ID == "" {
			v.addf(k("id"), "every [[contract]] needs an id")
		} else if ids[c.ID] {
			v.addf(k("id"), "duplicate contract id %q", c.ID)
		}
		ids[c.ID] = true
		v.intRange(k("gpus"), int64(c.GPUs), 1, 4096)
		if c.Start.IsZero() {
			v.addf(k("start"), "required: an RFC 3339 date-time such as 2026-12-01T00:00:00Z")
		}
		if c.End.IsZero() || !c.End.After(c.Start) {
			v.addf(k("end"), "required and must be after start")
		}
		v.floatRange(k("price_usd_per_gpu_hour"), c.PriceUSDPerGPUHour, 0, 1e6)
		if c.Workload == "" {
			v.addf(k("workload"), "must name the workload to run")
		}
		if c.LeadTime < 0 {
			v.addf(k("lead_time"), "must not be negative")
		}
	}
}
