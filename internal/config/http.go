package config

// HTTP configures the local listener for health, metrics and the JSON API.
type HTTP struct {
	// Listen is host:port; keep it on loopback or a management network.
	Listen string `toml:"listen"`
	// APITokenFile holds the bearer token every /api/v1 route requires. The
	// file must not be world-readable. Empty disables /api/v1 (every call 401).
	APITokenFile string `toml:"api_token_file"`
	// Pprof mounts net/http/pprof under /debug/pprof/ (off by default).
	Pprof bool `toml:"pprof"`
}

func defaultHTTP() HTTP { return HTTP{Listen: "127.0.0.1:8080"} }

func (h *HTTP) validate(v *validator) {
	v.hostPort("http.listen", h.Listen, true)
}
