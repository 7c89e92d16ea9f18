package regtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// InstallHint is the command that installs the btcd this package is tested
// with (btcctl is for a person inspecting a node by hand).
const InstallHint = "go install github.com/btcsuite/btcd@v0.24.2 github.com/btcsuite/btcd/cmd/btcctl@v0.24.2"

// ErrNoBtcd is returned by FindBtcd when no btcd binary is found.
var ErrNoBtcd = errors.New("regtest: no btcd binary on PATH or in $(go env GOBIN) or $(go env GOPATH)/bin")

// FindBtcd returns the path of a btcd binary: the one on PATH, else the one
// `go install` put in GOBIN or the first GOPATH entry's bin.
func FindBtcd() (string, error) {
	if p, err := exec.LookPath("btcd"); err == nil {
		return p, nil
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n") // GOBIN's line may be empty
		if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
			dirs = append(dirs, strings.TrimSpace(lines[0]))
		}
		if len(lines) > 1 && strings.TrimSpace(lines[1]) != "" {
			gopath := filepath.SplitList(strings.TrimSpace(lines[1]))[0]
			dirs = append(dirs, filepath.Join(gopath, "bin"))
		}
	} else if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin")) // go's default GOPATH
	}
	for _, d := range dirs {
		p := filepath.Join(d, "btcd")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNoBtcd
}

// TB is the part of testing.TB that Need uses (this package does not
// import testing, so tools may use it too).
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// InCI reports whether the CI environment variable says the tests run in
// CI (set and not "", "0" or "false").
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "", "0", "false":
		return false
	}
	return true
}

// Need returns the btcd binary for a test that runs a node. Without one,
// the test is skipped on a developer's machine and fails in CI (see InCI),
// where a missing node must never pass silently; both say how to install
// it.
func Need(t TB) string {
	t.Helper()
	p, err := FindBtcd()
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%v; install it with: %s", err, InstallHint)
	if InCI() {
		t.Fatalf("%s (CI=%s: the btcd node tests must run in CI)", msg, os.Getenv("CI"))
		return ""
	}
	t.Skipf("%s (skipped because CI is not set)", msg)
	return ""
}
