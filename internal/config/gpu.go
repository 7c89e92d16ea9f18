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
}

func defaultGPU() GPU {
	return GPU{Backend: "auto", PollInterval: Duration(2e9), AppXIDs: []uint64{13, 31, 43, 45, 68, 109}}
}

func (g *GPU) validate(v *validator) {
	v.oneOf("gpu.backend", g.Backend, "auto", "nvml", "simulated", "off")
	if g.PollInterval.D() < 100e6 {
		v.addf("gpu.poll_interval", "%s is too short (at least 100ms)", g.PollInterval)
	}
}
