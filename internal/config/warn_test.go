package config

import (
	"strings"
	"testing"
	"time"
)

const testPool = "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://10.0.0.5:3333\"\nuser=\"u\"\n"

// TestParseRefusesWhatRunRefuses: rules that tie sections together used to
// be enforced only when the components were built, so check-config said
// "config ok" and `proxyd run` exited 78.
func TestParseRefusesWhatRunRefuses(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"server without pool", "[[server]]\nname=\"f\"\nlisten=\":3333\"\n",
			`line 1: key "server": 1 [[server]] table(s) but no [[pool]]`},
		{"simulated mining on real GPUs", "[switcher]\nenabled = true\n[switcher.mining]\nruntime = \"simulated\"\n",
			`key "switcher.mining.runtime": is "simulated", which runs on simulated GPUs only, but [gpu] backend is "auto"`},
		{"simulated workload with GPUs off", "[gpu]\nbackend = \"off\"\n[switcher]\nenabled = true\n[switcher.workload.llm]\nruntime = \"simulated\"\n",
			`key "switcher.workload.llm.runtime": is "simulated"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The same sections, consistent, are fine.
	for _, ok := range []string{
		"[[server]]\nname=\"f\"\nlisten=\":3333\"\nmax_connections_per_ip = 64\n" + testPool,
		"[gpu]\nbackend = \"simulated\"\n[switcher]\nenabled = true\n[switcher.mining]\nruntime = \"simulated\"\n",
		"[switcher.mining]\nruntime = \"simulated\"\n", // switcher off: nothing runs it
	} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("Parse(%q) = %v", ok, err)
		}
	}
}

// TestErrorsRedactURLs: a URL's password or API key never appears in a
// config error, whichever check quotes the URL.
func TestErrorsRedactURLs(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string // must appear
	}{
		{"pool url with an unsupported scheme", "[[pool]]\nname=\"p\"\nuser=\"u\"\nurl=\"stratum+http://acct:hunter2@pool.example.net:3333/?api_key=s3cret\"\n",
			[]string{`"pool[0].url"`, "stratum+http://redacted@pool.example.net:3333/?api_key=redacted"}},
		{"pool url without a port", "[[pool]]\nname=\"p\"\nuser=\"u\"\nurl=\"stratum+tcp://acct:hunter2@pool.example.net?api_key=s3cret\"\n",
			[]string{`"pool[0].url"`, "redacted@pool.example.net"}},
		{"pool url that does not parse", "[[pool]]\nname=\"p\"\nuser=\"u\"\nurl=\"stratum+tcp://acct:hunter2@pool.example.net:3333/%zz?api_key=s3cret\"\n",
			[]string{`"pool[0].url"`}},
		{"demand_url not http", "[switcher]\ndemand_url = \"ftp://user:hunter2@feed.example.net/c?api_key=s3cret\"\n",
			[]string{`"switcher.demand_url"`, "ftp://redacted@feed.example.net/c?api_key=redacted"}},
		{"demand_url with a space in the password", "[switcher]\ndemand_url = \"ftp://user:hun ter2@feed/c?api_key=s3cret\"\n",
			[]string{`"switcher.demand_url"`}},
		{"docker host with credentials", "[switcher.docker]\nhost = \"ssh://root:hunter2@gpu-node/?api_key=s3cret\"\n",
			[]string{`"switcher.docker.host"`}},
		{"decode error near a URL", "[switcher]\ndemand_url = \"https://user:hunter2@feed/c?api_key=s3cret\" x\n",
			[]string{"line 2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			if err == nil {
				t.Fatal("Parse accepted the config")
			}
			msg := err.Error()
			for _, secret := range []string{"hunter2", "hun ter2", "s3cret"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error leaks %q: %s", secret, msg)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q: %s", w, msg)
				}
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	now := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		toml string
		want []string // each must appear in one warning; nil: no warnings
	}{
		{"quiet config", "[http]\nlisten = \"127.0.0.1:8080\"\napi_token_file = \"/etc/proxyd/api-token\"\n", nil},
		{"placeholder pool host", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://pool.example.com:3333\"\nuser=\"u\"\n",
			[]string{`key "pool[0].url": host pool.example.com is a documentation placeholder`}},
		{"placeholder TLDs", "[[pool]]\nname=\"a\"\nurl=\"stratum+tcp://eu.pool.example:3333\"\nuser=\"u\"\n" +
			"[[pool]]\nname=\"b\"\nurl=\"stratum+tcp://POOL.EXAMPLE.ORG.:3333\"\nuser=\"u\"\n",
			[]string{`"pool[0].url": host eu.pool.example`, `"pool[1].url": host POOL.EXAMPLE.ORG.`}},
		{"credentials in a pool url", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://acct:hunter2@10.0.0.5:3333\"\nuser=\"u\"\n",
			[]string{`"pool[0].url": stratum+tcp://redacted@10.0.0.5:3333 carries user information`}},
		{"wildcard http without token", "[http]\nlisten = \"0.0.0.0:8080\"\n", []string{`"http.listen": "0.0.0.0:8080" serves`}},
		{"empty host http without token", "[http]\nlisten = \":8080\"\n", []string{`"http.listen": ":8080" serves`}},
		{"pprof on the network", "[http]\nlisten = \"10.1.2.3:8080\"\napi_token_file = \"/t\"\npprof = true\n", []string{`"http.pprof"`}},
		{"unlimited per ip", "[[server]]\nname=\"f\"\nlisten=\"0.0.0.0:3333\"\nmax_connections_per_ip = 0\n" + testPool,
			[]string{`"server[0].max_connections_per_ip": is 0 (unlimited)`}},
		{"privileged stratum port", "[[server]]\nname=\"f\"\nlisten=\"0.0.0.0:443\"\nmax_connections_per_ip = 64\n" + testPool,
			[]string{`"server[0].listen": port 443 is below 1024`}},
		{"placeholder feed in clear text", "[switcher]\ndemand_url = \"http://k:hunter2@demand.example.com/c?api_key=s3cret\"\ndemand_token_file = \"/t\"\n",
			[]string{`"switcher.demand_url": host demand.example.com`, "clear text"}},
		{"switcher without GPUs or mining", "[gpu]\nbackend = \"off\"\n[switcher]\nenabled = true\n",
			[]string{`"switcher.enabled"`, `"switcher.mining": is not configured`}},
		{"ended contract", "[[contract]]\nid=\"old\"\ngpus=1\nworkload=\"w\"\nstart=2026-01-01T00:00:00Z\nend=2026-01-02T00:00:00Z\n",
			[]string{`"contract[0].end": contract "old" ended at 2026-01-02T00:00:00Z`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			var all []string
			for _, w := range c.Warnings(now) {
				all = append(all, w.String())
			}
			joined := strings.Join(all, "\n")
			if tc.want == nil && len(all) > 0 {
				t.Fatalf("unexpected warnings:\n%s", joined)
			}
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("warnings lack %q:\n%s", w, joined)
				}
			}
			for _, secret := range []string{"hunter2", "s3cret"} {
				if strings.Contains(joined, secret) {
					t.Errorf("warnings leak %q:\n%s", secret, joined)
				}
			}
		})
	}
}
