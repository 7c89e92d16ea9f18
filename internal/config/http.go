package config

import "time"

// HTTP configures the local listener for health, metrics and the JSON API.
type HTTP struct {
	// Listen is host:port; keep it on loopback or a management network.
	Listen string `toml:"listen"`
	// APITokenFile holds the bearer token every /api/v1 route requires: one
	// line, at least 16 characters, in a file other users can neither read
	// nor write, owned by root or by the user proxyd runs as. Empty disables
	// /api/v1 (every call 401).
	APITokenFile string `toml:"api_token_file"`
	// Pprof mounts net/http/pprof under /debug/pprof/ (off by default).
	Pprof bool `toml:"pprof"`
	// WriteTimeout bounds how long one answer may take to write: a client
	// that stops reading is cut off after it. Profiles under /debug/pprof/
	// get their own duration on top.
	WriteTimeout Duration `toml:"write_timeout"`
	// MaxAPIRequests bounds the /api/v1 requests served at once; more get
	// 503 with Retry-After.
	MaxAPIRequests int `toml:"max_api_requests"`
}

// HTTP defaults.
const (
	DefaultHTTPWriteTimeout = 30 * time.Second
	DefaultMaxAPIRequests   = 32
)

func defaultHTTP() HTTP {
	return HTTP{Listen: "127.0.0.1:8080", WriteTimeout: Duration(DefaultHTTPWriteTimeout), MaxAPIRequests: DefaultMaxAPIRequests}
}

func (h *HTTP) validate(v *validator) {
	v.hostPort("http.listen", h.Listen, true)
	durationRange(v, "http.write_timeout", h.WriteTimeout, 10*time.Millisecond, time.Hour)
	v.intRange("http.max_api_requests", int64(h.MaxAPIRequests), 1, 100_000)
}
