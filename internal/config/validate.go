package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/hashgate/proxyd/internal/redact"
)

// validator collects every problem in a config so that one check-config run
// shows them all, each prefixed with its line where the file shows it.
type validator struct {
	src  string
	errs []string
	// warns are deprecations found while decoding (legacy.go).
	warns []Warning
	// legacy maps a workload's runtime sub-table key to the flat key the
	// file set it with; subtables holds the runtime sub-tables the file
	// has ("switcher.workload.x.docker"). See runtimeKey.
	legacy    map[string]string
	subtables map[string]bool
	// urls are the config's URL values that carry credentials or query
	// values; no message may quote them whole (see addf).
	urls []string
}

// addf records a problem. Every message passes through redactText, so a
// pool URL or demand_url quoted in it never shows its password or API key.
func (v *validator) addf(key string, format string, args ...any) {
	msg := fmt.Sprintf("key %q: %s", key, fmt.Sprintf(format, args...))
	if line := locatePath(v.src, key); line > 0 {
		msg = fmt.Sprintf("line %d: %s", line, msg)
	}
	v.errs = append(v.errs, v.redactText(msg))
}

// secretURL records a URL value of the config whose user information or
// query values must not appear in a message.
func (v *validator) secretURL(raw string) {
	if raw != "" && redact.URL(raw) != raw {
		v.urls = append(v.urls, raw)
	}
}

// redactText replaces the config's secret-bearing URLs, as written and as
// %q quotes them, by their redacted form, then redacts any other URL-shaped
// token (url.Parse errors quote the URL they failed on).
func (v *validator) redactText(msg string) string {
	for _, raw := range v.urls {
		red := redact.URL(raw)
		quoted := strconv.Quote(raw)
		msg = strings.ReplaceAll(msg, quoted[1:len(quoted)-1], red)
		msg = strings.ReplaceAll(msg, raw, red)
	}
	return redact.String(msg)
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(v.errs, "; "))
}

func (v *validator) positiveDuration(key string, d Duration) {
	if d <= 0 {
		v.addf(key, "must be a positive duration such as \"5s\", got %q", d.String())
	}
}

func (v *validator) oneOf(key, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.addf(key, "%q is not allowed; use one of %s", got, quoteList(allowed))
}

func (v *validator) intRange(key string, got, lo, hi int64) {
	if got < lo || got > hi {
		v.addf(key, "%d is out of range (allowed %d to %d)", got, lo, hi)
	}
}

func (v *validator) floatRange(key string, got, lo, hi float64) {
	if got < lo || got > hi || got != got {
		v.addf(key, "%g is out of range (allowed %g to %g)", got, lo, hi)
	}
}

// hostPort checks a listen address: host may be empty only when
// allowEmptyHost is set (":3333" listens on every interface).
func (v *validator) hostPort(key, addr string, allowEmptyHost bool) {
	if addr == "" {
		v.addf(key, "must not be empty; write host:port such as \"127.0.0.1:8080\"")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf(key, "%q is not host:port (%v)", addr, err)
		return
	}
	if host == "" && !allowEmptyHost {
		v.addf(key, "%q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		v.addf(key, "port %q in %q is not a number", port, addr)
		return
	}
	// Port 0 lets the kernel pick a free port (tests, demo); the bound
	// address is logged.
	if n < 0 || n > 65535 {
		v.addf(key, "port %d in %q is out of range (allowed 1 to 65535, or 0 for any free port)", n, addr)
	}
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, ", ")
}
