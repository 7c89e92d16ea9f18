package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// runBinaryFor runs the built binary for at most d; started reports that it
// was still running then (and was killed).
func runBinaryFor(t *testing.T, d time.Duration, args ...string) (stdout, stderr string, code int, started bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, proxydBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		return o.String(), e.String(), -1, true
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code, false
}

// TestCheckConfigAgreesWithRun: every config `proxyd run` refuses with exit
// 78, check-config refuses too, with the same reason. check-config used to
// say "config ok" to each of these; the two-line token even started, and
// then answered 401 to every request.
func TestCheckConfigAgreesWithRun(t *testing.T) {
	dir := t.TempDir()
	token := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const good = "e2e-token-0123456789abcdef"
	withToken := func(path string) string {
		return fmt.Sprintf("[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n[gpu]\nbackend = \"off\"\n", path)
	}
	foreign := token("foreign", good+"\n", 0o600)
	tests := []struct {
		name   string
		config string
		want   string
		root   bool // needs root to set up
	}{
		{"world-readable token", withToken(token("world", good+"\n", 0o644)), "readable or writable by every user", false},
		{"empty token file", withToken(token("empty", "", 0o600)), "is empty", false},
		{"short token", withToken(token("short", "0123456789\n", 0o600)), "use at least 16", false},
		{"missing token file", withToken(filepath.Join(dir, "missing")), "does not exist", false},
		{"two-line token file", withToken(token("two", good+"\n"+good+"-second\n", 0o600)), "holds 2 lines", false},
		{"token file of another user", withToken(foreign), "not to root or to the user proxyd runs as", true},
		{"server without pool", withToken(token("ok1", good+"\n", 0o600)) +
			"[[server]]\nname = \"farm\"\nlisten = \"127.0.0.1:0\"\nmax_connections_per_ip = 64\n", "no [[pool]]", false},
		{"simulated workload on real GPUs", withToken(token("ok2", good+"\n", 0o600)) +
			"[switcher]\nenabled = true\nstate_dir = \"" + dir + "\"\n[switcher.mining]\nruntime = \"simulated\"\n", `is "simulated"`, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				if os.Geteuid() != 0 {
					t.Skip("needs root to give the token file to another user")
				}
				if err := os.Chown(foreign, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
			cfg := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
			if err := os.WriteFile(cfg, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runBinary(t, "", "check-config", "--config", cfg)
			if code != exitConfig || !strings.Contains(errOut, tc.want) || strings.Contains(out, "config ok") {
				t.Errorf("check-config: exit %d, stdout %q, stderr %q; want exit 78 and %q", code, out, errOut, tc.want)
			}
			_, errOut, code, started := runBinaryFor(t, 20*time.Second, "run", "--config", cfg)
			if started {
				t.Fatalf("run started with a config check-config refuses")
			}
			if code != exitConfig || !strings.Contains(errOut, tc.want) {
				t.Errorf("run: exit %d, stderr %q; want exit 78 and %q", code, errOut, tc.want)
			}
		})
	}
}

// TestCheckConfigWarns: valid but suspicious values are listed on stderr;
// the config still passes.
func TestCheckConfigWarns(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "proxyd.toml")
	body := "[http]\nlisten = \"0.0.0.0:0\"\n[gpu]\nbackend = \"off\"\n" +
		"[[server]]\nname = \"farm\"\nlisten = \"127.0.0.1:0\"\nmax_connections_per_ip = 64\n" +
		"[[pool]]\nname = \"primary\"\nurl = \"stratum+tcp://acct:hunter2@pool.example.com:3333\"\nuser = \"acct.farm\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runBinary(t, "", "check-config", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "config ok: 1 server(s), 1 pool(s)") || !strings.Contains(out, "4 warning(s) on stderr") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, want := range []string{
		`warning: key "pool[0].url": host pool.example.com is a documentation placeholder`,
		`warning: key "pool[0].url": stratum+tcp://redacted@pool.example.com:3333 carries user information`,
		`warning: key "http.listen": "0.0.0.0:0" serves`,
		`warning: key "http.api_token_file": is not set`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "hunter2") {
		t.Errorf("stderr leaks the pool password:\n%s", errOut)
	}
}

// TestConfigErrorsRedactURLs: a pool URL's or demand_url's password and API
// key never reach check-config's or run's output.
func TestConfigErrorsRedactURLs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, body, want string }{
		{"pool url", "[[pool]]\nname = \"p\"\nuser = \"u\"\nurl = \"stratum+http://acct:hunter2@pool.example.net:3333/?api_key=s3cret\"\n",
			"stratum+http://redacted@pool.example.net:3333/?api_key=redacted"},
		{"demand_url", "[switcher]\ndemand_url = \"ftp://feed:hunter2@demand.example.net/v1?api_key=s3cret\"\n",
			"ftp://redacted@demand.example.net/v1?api_key=redacted"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
			if err := os.WriteFile(cfg, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"check-config", "run"} {
				out, errOut, code, started := runBinaryFor(t, 20*time.Second, cmd, "--config", cfg)
				if started || code != exitConfig {
					t.Fatalf("%s: exit %d (started %v), want 78", cmd, code, started)
				}
				if strings.Contains(out+errOut, "hunter2") || strings.Contains(out+errOut, "s3cret") {
					t.Errorf("%s leaks a secret:\n%s%s", cmd, out, errOut)
				}
				if !strings.Contains(errOut, tc.want) {
					t.Errorf("%s: stderr lacks the redacted URL %q:\n%s", cmd, tc.want, errOut)
				}
			}
		})
	}
}

// TestRunRateLimitsRefusedConnections: a client hammering a listener at its
// per-IP limit used to get one WARN line per refused connection (4,936
// lines in 0.5 s), pushing real failover messages past journald's rate
// limit. Now at most rate_limit_per_second such lines are written each
// second, a summary counts the rest, and proxyd_log_suppressed_total shows
// them. The binary, real TCP on loopback, bounded: 300 connections.
func TestRunRateLimitsRefusedConnections(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "proxyd.toml")
	body := fmt.Sprintf(`shutdown_timeout = "5s"
[log]
rate_limit_per_second = 10
[http]
listen = "127.0.0.1:0"
[gpu]
backend = "off"
[[server]]
name = "farm"
listen = "127.0.0.1:0"
max_connections_per_ip = 1
[[pool]]
name = "primary"
url = %q
user = "acct.farm"
`, pool.URL())
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, cfg)
	l := p.waitLog(t, "stratum listening", 1)
	stratumAddr, _ := l["addr"].(string)
	p.waitLog(t, "proxyd ready", 1)
	for i := 0; ; i++ {
		if code, _ := daemonGet(t, p, "/readyz", ""); code == 200 {
			break
		}
		if i > 1000 {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// One connection takes the address's only slot; 300 more are refused.
	hold, err := net.Dial("tcp", stratumAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	time.Sleep(100 * time.Millisecond) // let the accept loop count it
	const attempts = 300
	t0 := time.Now()
	for i := 0; i < attempts; i++ {
		c, err := net.Dial("tcp", stratumAddr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 1)) // until proxyd closes it
		c.Close()
	}
	elapsed := time.Since(t0)
	_, metrics := daemonGet(t, p, "/metrics", "")
	if !strings.Contains(metrics, `proxyd_log_suppressed_total{message="refusing miner connection"}`) {
		t.Errorf("/metrics lacks proxyd_log_suppressed_total for the refusals")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exit:
	case <-time.After(30 * time.Second):
		t.Fatal("proxyd did not exit after SIGTERM")
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	var written int
	var counted uint64
	countRE := regexp.MustCompile(`^(\d+) similar messages suppressed: refusing miner connection$`)
	for _, line := range p.lines {
		msg, _ := line["msg"].(string)
		if msg == "refusing miner connection" {
			written++
		}
		if m := countRE.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			counted += n
		}
	}
	// The clock is real: allow 10 a started second of the storm and its shutdown.
	bound := 10 * (int(elapsed/time.Second) + 2)
	t.Logf("%d refused connections in %s: %d lines written, %d counted in summaries", attempts, elapsed.Round(time.Millisecond), written, counted)
	if written > bound {
		t.Errorf("%d 'refusing miner connection' lines for %d refusals in %s, want at most %d", written, attempts, elapsed, bound)
	}
	if uint64(written)+counted != attempts {
		t.Errorf("%d written + %d counted as suppressed = %d, want all %d refusals accounted for", written, counted, uint64(written)+counted, attempts)
	}
}
