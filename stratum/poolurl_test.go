package stratum_test

import (
	"net"
	"testing"

	"github.com/hashgate/proxyd/stratum"
)

func TestParsePoolURL(t *testing.T) {
	for _, tc := range []struct {
		in, addr string
		tls, ok  bool
	}{
		{"stratum+tcp://pool.example.com:3333", "pool.example.com:3333", false, true},
		{"tcp://10.0.0.1:3333", "10.0.0.1:3333", false, true},
		{"stratum+ssl://pool.example.com:443", "pool.example.com:443", true, true},
		{"stratum+tls://[::1]:443", "[::1]:443", true, true},
		{"stratum+tcp://pool.example.com", "", false, false},
		{"stratum+tcp://:3333", "", false, false},
		{"stratum+tcp://h:0", "", false, false},
		{"stratum+tcp://h:99999", "", false, false},
		{"http://h:80", "", false, false},
		{"", "", false, false},
		{"::", "", false, false},
	} {
		addr, scheme, err := stratum.ParsePoolURL(tc.in)
		if (err == nil) != tc.ok || addr != tc.addr || stratum.IsTLSScheme(scheme) != tc.tls {
			t.Errorf("ParsePoolURL(%q) = %q, %q, %v; want %q tls=%v ok=%v", tc.in, addr, scheme, err, tc.addr, tc.tls, tc.ok)
		}
	}
}

// FuzzParsePoolURL: a pool URL is outside input (the operator's file); no
// input may panic, and an accepted one yields a dialable host:port.
func FuzzParsePoolURL(f *testing.F) {
	for _, s := range []string{"stratum+tcp://pool.example.com:3333", "stratum+ssl://[::1]:443", "tcp://h:0", "", "::", "stratum+tcp://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		addr, _, err := stratum.ParsePoolURL(raw)
		if err != nil {
			return
		}
		if host, _, err := net.SplitHostPort(addr); err != nil || host == "" {
			t.Fatalf("ParsePoolURL(%q) accepted %q, which is no host:port", raw, addr)
		}
	})
}
