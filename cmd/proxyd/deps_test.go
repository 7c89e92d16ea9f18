package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyFloors keeps modules with known advisories at or above the
// version that cleared them (issue 12, finding 14: golang.org/x/crypto
// v0.40.0 carried 17 advisories; govulncheck against a local copy of the Go
// vulnerability database found none from x/crypto at v0.59.0). A downgrade,
// direct or through another module's requirement, fails here.
func TestDependencyFloors(t *testing.T) {
	floors := map[string]string{
		"golang.org/x/crypto": "v0.59.0",
	}
	for mod, floor := range floors {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", mod).Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", mod, err)
		}
		got := strings.TrimSpace(string(out))
		if !atLeast(got, floor) {
			t.Errorf("%s is at %q, below %s (the version that cleared its advisories)", mod, got, floor)
		}
	}
}

// atLeast compares two release versions vMAJOR.MINOR.PATCH (a pre-release or
// pseudo-version suffix counts as below its release, which is the safe side).
func atLeast(v, floor string) bool {
	parse := func(s string) (n [3]int, pre bool, ok bool) {
		s, suffix, _ := strings.Cut(strings.TrimPrefix(s, "v"), "-")
		_, err := fmt.Sscanf(s, "%d.%d.%d", &n[0], &n[1], &n[2])
		return n, suffix != "", err == nil
	}
	a, aPre, ok1 := parse(v)
	b, _, ok2 := parse(floor)
	if !ok1 || !ok2 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return !aPre
}

func TestAtLeast(t *testing.T) {
	tests := []struct {
		v, floor string
		want     bool
	}{
		{"v0.59.0", "v0.59.0", true},
		{"v0.60.1", "v0.59.0", true},
		{"v1.0.0", "v0.59.0", true},
		{"v0.40.0", "v0.59.0", false},
		{"v0.59.0-20260101000000-abcdef123456", "v0.59.0", false},
		{"garbage", "v0.59.0", false},
	}
	for _, tt := range tests {
		if got := atLeast(tt.v, tt.floor); got != tt.want {
			t.Errorf("atLeast(%q, %q) = %v", tt.v, tt.floor, got)
		}
	}
}
