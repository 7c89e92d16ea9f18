package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashgate/proxyd/internal/redact"
)

// Warning is a value that is valid but probably not what the operator
// meant: a documentation placeholder left in, an open listener with no
// token. check-config prints warnings and run logs them; neither refuses.
type Warning struct {
	Key     string
	Message string
}

func (w Warning) String() string { return fmt.Sprintf("key %q: %s", w.Key, w.Message) }

// Warnings lists the config's suspicious values; now decides which
// contracts have already ended. URLs in the messages are redacted.
func (c *Config) Warnings(now time.Time) []Warning {
	ws := slices.Clone(c.deprecations)
	add := func(key, format string, args ...any) {
		ws = append(ws, Warning{Key: key, Message: redact.String(fmt.Sprintf(format, args...))})
	}

	if host := listenHost(c.HTTP.Listen); isWildcard(host) {
		if c.HTTP.APITokenFile == "" {
			add("http.listen", "%q serves /healthz, /readyz and /metrics to every network this host is on, and no api_token_file is set; "+
				"listen on 127.0.0.1 or a management address, or set api_token_file", c.HTTP.Listen)
		}
	}
	if c.HTTP.Pprof && !isLoopback(listenHost(c.HTTP.Listen)) {
		add("http.pprof", "is on and http.listen %q is not loopback: /debug/pprof/ needs no token and shows heap contents and profiles to anyone who can connect", c.HTTP.Listen)
	}

	for i, s := range c.Servers {
		k := func(key string) string { return fmt.Sprintf("server[%d].%s", i, key) }
		if s.MaxConnectionsPerIP == 0 {
			add(k("max_connections_per_ip"), "is 0 (unlimited): one address may open up to max_connections (%d) connections", s.MaxConnections)
		}
		if _, port, err := net.SplitHostPort(s.Listen); err == nil {
			if n, err := strconv.Atoi(port); err == nil && n > 0 && n < 1024 {
				add(k("listen"), "port %d is below 1024: the systemd unit needs AmbientCapabilities=CAP_NET_BIND_SERVICE in a drop-in (see its comment)", n)
			}
		}
	}
	for i, p := range c.Pools {
		k := func(key string) string { return fmt.Sprintf("pool[%d].%s", i, key) }
		u, err := url.Parse(p.URL)
		if err != nil {
			continue
		}
		if isPlaceholderHost(u.Hostname()) {
			add(k("url"), "host %s is a documentation placeholder (RFC 2606): put your pool's address here", u.Hostname())
		}
		if u.User != nil || u.RawQuery != "" {
			add(k("url"), "%s carries user information or a query, which proxyd does not send: the pool is authorized with pool user and password", p.URL)
		}
	}

	sw := c.Switcher
	if sw.DemandURL != "" {
		if u, err := url.Parse(sw.DemandURL); err == nil {
			if isPlaceholderHost(u.Hostname()) {
				add("switcher.demand_url", "host %s is a documentation placeholder (RFC 2606): the feed will never answer", u.Hostname())
			}
			if u.Scheme == "http" && sw.DemandTokenFile != "" && !isLoopback(u.Hostname()) {
				add("switcher.demand_url", "is plain http to %s with a demand_token_file: the token crosses the network in clear text; use https", u.Hostname())
			}
		}
	}
	if sw.Enabled {
		if c.GPU.Backend == "off" {
			add("switcher.enabled", "is true but [gpu] backend is \"off\": the switcher has no GPUs and will never be ready")
		}
		if _, ok := sw.MiningWorkload(); !ok {
			add("switcher.mining", "is not configured: a GPU no contract wants stays idle")
		}
	}
	for i, ct := range c.Contracts {
		if !ct.End.IsZero() && !ct.End.After(now) {
			add(fmt.Sprintf("contract[%d].end", i), "contract %q ended at %s: it has no effect", ct.ID, ct.End.UTC().Format(time.RFC3339))
		}
	}
	return ws
}

func listenHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// isWildcard: an empty host, 0.0.0.0 or :: listens on every interface.
func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isPlaceholderHost reports the names RFC 2606 and RFC 6761 reserve for
// documentation and tests: example.com/.net/.org and the .example, .invalid
// and .test top-level domains, with any subdomain.
func isPlaceholderHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	for _, d := range []string{"example.com", "example.net", "example.org", "example", "invalid", "test"} {
		if h == d || strings.HasSuffix(h, "."+d) {
			return true
		}
	}
	return false
}
