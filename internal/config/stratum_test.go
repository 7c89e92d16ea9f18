package config

import (
	"strings"
	"testing"
)

// TestMaxConnectionsPerIPDefault: an absent key is the documented 64; an
// explicit 0 stays "unlimited", per [[server]] table, in both table syntaxes.
func TestMaxConnectionsPerIPDefault(t *testing.T) {
	const pool = "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\n"
	tests := []struct {
		name string
		toml string
		want []int
	}{
		{"absent", "[[server]]\nname=\"a\"\nlisten=\":1\"\n", []int{64}},
		{"explicit zero", "[[server]]\nname=\"a\"\nlisten=\":1\"\nmax_connections_per_ip = 0\n", []int{0}},
		{"explicit value", "[[server]]\nname=\"a\"\nlisten=\":1\"\nmax_connections_per_ip = 3\n", []int{3}},
		{"second table only", "[[server]]\nname=\"a\"\nlisten=\":1\"\n[[server]]\nname=\"b\"\nlisten=\":2\"\nmax_connections_per_ip = 0\n", []int{64, 0}},
		{"first table only", "[[server]]\nname=\"a\"\nlisten=\":1\"\nmax_connections_per_ip = 0\n[[server]]\nname=\"b\"\nlisten=\":2\"\n", []int{0, 64}},
		{"inline array", "server = [{name=\"a\", listen=\":1\"}, {name=\"b\", listen=\":2\", max_connections_per_ip=0}]\n", []int{64, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.toml + pool))
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.want {
				if got := c.Servers[i].MaxConnectionsPerIP; got != want {
					t.Errorf("server[%d].max_connections_per_ip = %d, want %d", i, got, want)
				}
			}
		})
	}
}

// TestClientBoundKeys: the bounds on what a Stratum client can make proxyd
// store have their documented defaults and name the key when out of range.
func TestClientBoundKeys(t *testing.T) {
	const srv = "[[server]]\nname=\"a\"\nlisten=\":1\"\n"
	const pool = "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\n"
	c, err := Parse([]byte(srv + pool))
	if err != nil {
		t.Fatal(err)
	}
	s, p := c.Servers[0], c.Pools[0]
	if s.MaxWorkersPerConnection != 8 || s.MaxRetiredWorkers != 10000 || s.MaxPendingAuthorizations != 2 || p.MaxAuthorizationsPerSecond != 10 {
		t.Errorf("defaults: workers %d retired %d pending %d auth/s %g", s.MaxWorkersPerConnection, s.MaxRetiredWorkers,
			s.MaxPendingAuthorizations, p.MaxAuthorizationsPerSecond)
	}
	bad := []struct{ server, pool, want string }{
		{"max_workers_per_connection = -1", "", `"server[0].max_workers_per_connection"`},
		{"max_workers_per_connection = 1001", "", `"server[0].max_workers_per_connection"`},
		{"max_retired_workers = -5", "", `"server[0].max_retired_workers"`},
		{"max_retired_workers = 2000000", "", `"server[0].max_retired_workers"`},
		{"max_pending_authorizations = 65", "", `"server[0].max_pending_authorizations"`},
		{"max_connections_per_ip = -1", "", `"server[0].max_connections_per_ip"`},
		{"", "max_authorizations_per_second = -1", `"pool[0].max_authorizations_per_second"`},
		{"", "max_authorizations_per_second = 0.01", `"pool[0].max_authorizations_per_second"`},
	}
	for _, b := range bad {
		_, err := Parse([]byte(srv + b.server + "\n" + pool + b.pool + "\n"))
		if err == nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%s%s: error %v, want one naming %s", b.server, b.pool, err, b.want)
		}
	}
}
