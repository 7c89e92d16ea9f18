package regtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTB records what Need did instead of ending the test.
type fakeTB struct {
	skipped, failed string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skipf(format string, a ...any)  { f.skipped = fmt.Sprintf(format, a...) }
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = fmt.Sprintf(format, a...) }

// TestNeed: btcd is found on PATH or in ~/go/bin (go's default GOPATH
// when `go` itself cannot be asked); without it a test is skipped when CI
// is unset and fails when it is set, saying how to install it.
func TestNeed(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	tests := []struct {
		name     string
		ci       string
		place    string // "" (nowhere), "path", "home", "gopath" or "gobin"
		found    bool
		skip     bool
		fail     bool
		mentions string
	}{
		{"missing, CI unset", "", "", false, true, false, InstallHint},
		{"missing, CI=false", "false", "", false, true, false, InstallHint},
		{"missing, CI=true", "true", "", false, false, true, InstallHint},
		{"missing, CI=1", "1", "", false, false, true, "CI=1"},
		{"on PATH, CI=true", "true", "path", true, false, false, ""},
		{"in ~/go/bin", "", "home", true, false, false, ""},
		{"in $GOPATH/bin", "true", "gopath", true, false, false, ""},
		{"in $GOBIN", "true", "gobin", true, false, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// An empty PATH also hides `go`: FindBtcd falls back to
			// $HOME/go/bin.
			t.Setenv("PATH", filepath.Join(dir, "path"))
			t.Setenv("HOME", filepath.Join(dir, "home"))
			t.Setenv("CI", tc.ci)
			t.Setenv("GOPATH", filepath.Join(dir, "gopath"))
			t.Setenv("GOBIN", "")
			want := ""
			if tc.place != "" {
				d := filepath.Join(dir, "path")
				switch tc.place {
				case "home":
					d = filepath.Join(dir, "home", "go", "bin")
				case "gopath":
					t.Setenv("PATH", filepath.Dir(goBin)) // `go env` answers
					d = filepath.Join(dir, "gopath", "bin")
				case "gobin":
					t.Setenv("PATH", filepath.Dir(goBin))
					d = filepath.Join(dir, "gobin")
					t.Setenv("GOBIN", d)
				}
				want = filepath.Join(d, "btcd")
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(want, []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			p, err := FindBtcd()
			if tc.found != (err == nil) || p != want || (err != nil && !errors.Is(err, ErrNoBtcd)) {
				t.Fatalf("FindBtcd = %q, %v; want %q", p, err, want)
			}
			var f fakeTB
			got := Need(&f)
			if got != want || (f.skipped != "") != tc.skip || (f.failed != "") != tc.fail {
				t.Fatalf("Need = %q, skipped %q, failed %q", got, f.skipped, f.failed)
			}
			if msg := f.skipped + f.failed; !strings.Contains(msg, tc.mentions) {
				t.Fatalf("message %q does not mention %q", msg, tc.mentions)
			}
		})
	}
}
