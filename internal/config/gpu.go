package config

// GPU configures the NVML side.
type GPU struct {
	// Backend is "auto" (real NVML if the library loads, else GPU features
	// off), "nvml" (real; a missing driver makes /readyz fail), "simulated"
	// (a simulated 8-GPU server for demos and tests) or "off".
	Backend      string   `toml:"backend"`
	PollInterval Duration `toml:"poll_interval"`
	// AppXIDs are XIDs caused by an application (not the GPU): they do not
	// mark the GPU unhealthy.
	AppXIDs []uint64 `toml:"app_xids"`
	// SlowdownSustain is how long a thermal or hardware clock slowdown must
	// last before the GPU counts as degraded.
	SlowdownSustain Duration `toml:"slowdown_sustain"`
}

func defaultGPU() GPU {
	return GPU{
		Backend:         "auto",
		PollInterval:    Duration(2e9),
		AppXIDs:         []uint64{13, 31, 43, 45, 68, 109},
		SlowdownSustain: Duration(60e9),
	}
}

// maxXID bounds app_xids: NVIDIA's XID catalogue is in the low hundreds.
const maxXID = 1000

func (g *GPU) validate(v *validator) {
	v.oneOf("gpu.backend", g.Backend, "auto", "nvml", "simulated", "off")
	if g.PollInterval.D() < 100e6 {
		v.addf("gpu.poll_interval", "%s is too short (at least 100ms)", g.PollInterval)
	} else if g.PollInterval.D() > 60e9 {
		v.addf("gpu.poll_interval", "%s is too long (at most 1m): a GPU fault would go unseen that long", g.PollInterval)
	}
	seen := map[uint64]bool{}
	for _, x := range g.AppXIDs {
		switch {
		case x == 0 || x > maxXID:
			v.addf("gpu.app_xids", "%d is not an XID (XIDs run from 1 to a few hundred)", x)
		case seen[x]:
			v.addf("gpu.app_xids", "XID %d is listed twice", x)
		}
		seen[x] = true
	}
	if d := g.SlowdownSustain.D(); d <= 0 || d > 3600e9 {
		v.addf("gpu.slowdown_sustain", "%q is out of range (allowed 1ns to 1h; e.g. \"1m\")", g.SlowdownSustain.String())
	}
}
