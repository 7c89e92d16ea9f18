package daemon

import (
	"os"
	"time"

	"github.com/hashgate/proxyd/internal/config"
)

// Preflight is the outcome of Check: what `proxyd run` found before it
// starts anything, beyond what config.Load already validated.
type Preflight struct {
	// Warnings are valid but suspicious values, in the order found.
	Warnings []config.Warning
	// token is the API token's digest; nil: the API is disabled.
	token *[32]byte
}

// Check runs every check `proxyd run` makes on a loaded config before it
// binds or starts anything: the API token file (present, a regular file,
// owned by root or by this user, not readable or writable by others, one
// line of at least 16 characters) and the warnings for suspicious values.
// New calls it, and so does `proxyd check-config`: the two cannot disagree
// about a config. An error is a configuration problem (exit 78).
func Check(cfg *config.Config) (*Preflight, error) {
	return check(cfg, tokenRules{uid: os.Geteuid()}, time.Now())
}

func check(cfg *config.Config, rules tokenRules, now time.Time) (*Preflight, error) {
	digest, tokenWarnings, err := rules.read(cfg.HTTP.APITokenFile)
	if err != nil {
		return nil, err
	}
	p := &Preflight{token: digest}
	if cfg.HTTP.APITokenFile == "" {
		p.Warnings = append(p.Warnings, config.Warning{Key: "http.api_token_file",
			Message: "is not set: the API is disabled and every /api/v1 call will get 401"})
	}
	p.Warnings = append(p.Warnings, tokenWarnings...)
	p.Warnings = append(p.Warnings, cfg.Warnings(now)...)
	return p, nil
}
