//go:build linux

package hostile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// attackCheckConfig is the cheap end of finding 8: every config that `run`
// refuses, check-config refuses too, with the same exit status (78).
func attackCheckConfig(s *suite, t *testing.T) {
	r := s.newRow(t, "8 check-config vs run on configs run refuses", "both exit 78 (EX_CONFIG), with a message")
	const stratum = "[[server]]\nname = \"farm\"\nlisten = \"127.0.0.1:0\"\n"
	tests := []struct {
		name  string
		token string      // token file contents; "-" for no file at all
		mode  os.FileMode // token file mode
		extra string      // more config
	}{
		{"token file readable by every user", apiToken + "\n", 0o644, ""},
		{"token file empty", "", 0o600, ""},
		{"token too short", "abc\n", 0o600, ""},
		{"token file missing", "-", 0o600, ""},
		{"token file of two lines", apiToken + "\nsecond-line-" + apiToken + "\n", 0o600, ""},
		{"[[server]] with no [[pool]]", apiToken + "\n", 0o600, stratum},
	}
	for _, tc := range tests {
		dir := t.TempDir()
		tok := filepath.Join(dir, "api-token")
		if tc.token != "-" {
			if err := os.WriteFile(tok, []byte(tc.token), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tok, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
		}
		cfg := fmt.Sprintf("shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n[gpu]\nbackend = \"off\"\n%s", tok, tc.extra)
		for _, sub := range []string{"check-config", "run"} {
			out, code := s.runConfig(t, dir, cfg, sub)
			if code != exitConfig {
				t.Errorf("%s: proxyd %s exit %d, want %d (EX_CONFIG); output: %.400s", tc.name, sub, code, exitConfig, out)
			}
			if code == exitConfig && len(bytes.TrimSpace(out)) == 0 {
				t.Errorf("%s: proxyd %s refused it without saying why", tc.name, sub)
			}
			if bytes.Contains(out, []byte(apiToken)) {
				t.Errorf("%s: proxyd %s prints the token: %.400s", tc.name, sub, out)
			}
		}
	}
	s.note(r, "%d configs × check-config and run", len(tests))
}

// attackLogKeys is finding 16: parse every log line the suite collected,
// from every daemon, and check each is a JSON object with no key twice.
func attackLogKeys(s *suite, t *testing.T) {
	r := s.newRow(t, "16 every JSON log line of the suite", "valid JSON, no duplicate key")
	lines, bad, plain := 0, 0, 0
	for _, d := range s.allDaemons() {
		for _, l := range d.logs() {
			if !bytes.HasPrefix(l.Raw, []byte("{")) {
				// Not a log line: a fatal error printed before logging
				// starts (a config proxyd refused).
				plain++
				continue
			}
			lines++
			dups, err := duplicateKeys(l.Raw)
			if err != nil || len(dups) > 0 {
				bad++
				if bad <= 5 {
					t.Errorf("%s: log line %v %v: %s", d.name, err, dups, l.Raw)
				}
			}
		}
	}
	s.note(r, "%d JSON lines from %d daemons, %d bad; %d plain-text lines (errors before logging started) skipped", lines, len(s.allDaemons()), bad, plain)
	if lines == 0 {
		t.Fatal("no log lines collected: run the whole suite (go test -run TestHostile ./test/hostile/)")
	}
	if bad > 5 {
		t.Errorf("… %d bad lines in all", bad)
	}
}
