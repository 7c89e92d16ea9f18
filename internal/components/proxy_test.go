package components

import (
	"reflect"
	"slices"
	"testing"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
)

const proxyDoc = `
[[server]]
name = "farm"
listen = "127.0.0.1:3333"
pools = ["main", "backup"]
failback_delay = "7s"
no_pool_grace = "9s"

[[server]]
name = "lab"
listen = "127.0.0.1:3334"
pools = ["backup"]

[[pool]]
name = "main"
url = "stratum+tcp://127.0.0.1:9"
user = "acct.farm"
miners_per_session = 100

[[pool]]
name = "backup"
url = "stratum+tcp://127.0.0.1:10"
user = "acct.farm"
level = 1
`

func parse(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return cfg
}

// TestProxyOptionsCopiesEveryKey: every field of the proxy's Options is
// filled from its key (a field the conversion forgot stays zero).
func TestProxyOptionsCopiesEveryKey(t *testing.T) {
	cfg := parse(t, proxyDoc)
	// Keys without a default: set them so a forgotten copy shows as zero.
	cfg.Servers[0].MaxConnections = 5
	cfg.Pools[0].Password = "x"
	cfg.Pools[0].CAFile, cfg.Pools[0].TLSServerName, cfg.Pools[0].TLSPinSHA256 = "ca.pem", "pool.example", []string{"00"}
	cfg.Pools[0].Level = 2
	o := ProxyOptions(daemon.Env{Config: cfg})
	for _, v := range []any{o.Servers[0], o.Pools[0]} {
		rv := reflect.ValueOf(v)
		for i := 0; i < rv.NumField(); i++ {
			if rv.Field(i).IsZero() {
				t.Errorf("%s.%s is zero: ProxyOptions does not copy it", rv.Type(), rv.Type().Field(i).Name)
			}
		}
	}
	if got := o.Pools[0].MinersPerSession; got != 100 {
		t.Errorf("MinersPerSession = %d, want 100", got)
	}
	if got := o.Pools[1].MinersPerSession; got != 0 {
		t.Errorf("MinersPerSession (auto) = %d, want 0", got)
	}
}

// TestProxyRestartKeys: the keys a reload reports as needing a restart are
// the ones the proxy reported before its Options moved into the wiring.
func TestProxyRestartKeys(t *testing.T) {
	old := parse(t, proxyDoc)
	for _, tc := range []struct {
		name string
		edit func(c *config.Config)
		want []string
	}{
		{"unchanged", func(*config.Config) {}, nil},
		{"listener changed", func(c *config.Config) { c.Servers[1].Listen = "127.0.0.1:4444" }, []string{"server[1]"}},
		{"listener added", func(c *config.Config) { c.Servers = append(c.Servers, c.Servers[1]) }, []string{"server"}},
		{"pool changed", func(c *config.Config) { c.Pools[1].User = "other" }, []string{"pool.backup", "pool.backup"}},
		{"pool removed", func(c *config.Config) { c.Pools = c.Pools[1:] }, []string{"pool.main"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(t, proxyDoc)
			tc.edit(cfg)
			if got := proxyRestartKeys(old, cfg); !slices.Equal(got, tc.want) {
				t.Errorf("restart keys = %q, want %q", got, tc.want)
			}
		})
	}
}
