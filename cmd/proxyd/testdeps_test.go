package main

import (
	"os/exec"
	"path"
	"sort"
	"strings"
	"testing"
)

// TestNoTestCodeLinked keeps test code out of the shipped binaries (issue
// 15): proxyd and proxyload must not link testing, testing/*, or any *test
// package (stratumtest, net/http/httptest, ...). The demo and the load tool
// get their simulated pool and miners from stratum/stratumsim, which does
// not import testing; stratumtest is for tests only. The failure names who
// imports the package, so the fix is one look away.
func TestNoTestCodeLinked(t *testing.T) {
	for name, pkg := range map[string]string{"proxyd": ".", "proxyload": "../proxyload"} {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", pkg, err)
			}
			importers := map[string][]string{} // forbidden package → packages importing it
			for line := range strings.Lines(string(out)) {
				fields := strings.Fields(line)
				if len(fields) == 0 {
					continue
				}
				if testCode(fields[0]) {
					if _, ok := importers[fields[0]]; !ok {
						importers[fields[0]] = nil
					}
				}
				for _, imp := range fields[1:] {
					if testCode(imp) {
						importers[imp] = append(importers[imp], fields[0])
					}
				}
			}
			var bad []string
			for p := range importers {
				bad = append(bad, p)
			}
			sort.Strings(bad)
			for _, p := range bad {
				t.Errorf("%s links %s (imported by %s); the binary must not carry test code: use a package without testing (e.g. stratum/stratumsim)",
					name, p, strings.Join(importers[p], ", "))
			}
		})
	}
}

// testCode reports whether an import path is test code: testing, its
// subpackages, or a package whose name ends in "test" (httptest, iotest,
// stratumtest). internal/synctest is exempt: package sync imports it, so
// every Go binary links it; it is the runtime side of testing/synctest, not
// a test helper. A package named "latest" (client-go's
// tools/clientcmd/api/latest, the newest kubeconfig version, linked by the
// Kubernetes agent) is a word ending in "test", not test code.
func testCode(p string) bool {
	if p == "internal/synctest" || path.Base(p) == "latest" {
		return false
	}
	return p == "testing" || strings.HasPrefix(p, "testing/") || strings.HasSuffix(path.Base(p), "test")
}

func TestTestCode(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"testing", true},
		{"testing/synctest", true},
		{"testing/fstest", true},
		{"net/http/httptest", true},
		{"github.com/hashgate/proxyd/stratum/stratumtest", true},
		{"github.com/hashgate/proxyd/stratum/stratumtest/regtest", true},
		{"github.com/hashgate/proxyd/stratum/stratumsim", false},
		{"github.com/hashgate/proxyd/nvml/nvmlsim", false},
		{"internal/synctest", false},
		{"k8s.io/client-go/tools/clientcmd/api/latest", false},
		{"example.com/latest/latesttest", true},
		{"internal/testlog", false},
		{"net/http", false},
	}
	for _, tt := range tests {
		if got := testCode(tt.path); got != tt.want {
			t.Errorf("testCode(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
