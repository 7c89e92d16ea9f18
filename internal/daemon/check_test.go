package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/logging"
)

// TestCheck: the preflight New and check-config share refuses what run
// must refuse and warns about what it merely dislikes.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A file that belongs to someone other than root and the rules' user.
	foreign := file("foreign", testToken, 0o600)
	rules := tokenRules{uid: os.Geteuid() + 1}
	if os.Geteuid() == 0 {
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		rules = tokenRules{uid: 0}
	}
	tests := []struct {
		name    string
		token   string // api_token_file
		rules   tokenRules
		wantErr string
		warns   []string // substrings of warnings that must be present
	}{
		{"no token file", "", tokenRules{uid: os.Geteuid()}, "", []string{`"http.api_token_file": is not set: the API is disabled`}},
		{"good", file("good", testToken+"\n", 0o640), tokenRules{uid: os.Geteuid()}, "", nil},
		{"missing", filepath.Join(dir, "missing"), tokenRules{uid: os.Geteuid()}, "does not exist; create it with", nil},
		{"world readable", file("world", testToken, 0o644), tokenRules{uid: os.Geteuid()}, "readable or writable by every user", nil},
		{"empty", file("empty", "", 0o600), tokenRules{uid: os.Geteuid()}, "is empty", nil},
		{"too short", file("short", "0123456789\n", 0o600), tokenRules{uid: os.Geteuid()}, "token of 10 characters; use at least 16", nil},
		{"two lines", file("two", testToken+"\nsecond-line-0123456789\n", 0o600), tokenRules{uid: os.Geteuid()}, "holds 2 lines", nil},
		{"a directory", dir, tokenRules{uid: os.Geteuid()}, "not a regular file", nil},
		{"someone else's file", foreign, rules, "not to root or to the user proxyd runs as", nil},
		{"group writable", file("gw", testToken, 0o660), tokenRules{uid: os.Geteuid()}, "", []string{"its group can change the token"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(fmt.Sprintf("[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n", tc.token)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := check(cfg, tc.rules, time.Now())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "http.api_token_file") {
					t.Fatalf("check = %v, want an error naming http.api_token_file and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ws []string
			for _, w := range p.Warnings {
				ws = append(ws, w.String())
			}
			for _, w := range tc.warns {
				if !strings.Contains(strings.Join(ws, "\n"), w) {
					t.Errorf("warnings %q lack %q", ws, w)
				}
			}
			if (tc.token == "") != (p.token == nil) {
				t.Errorf("token digest %v for token file %q", p.token, tc.token)
			}
		})
	}
}

// TestNewLogsConfigWarnings: run logs the same warnings check-config
// prints, marked so the rate limiter never drops them.
func TestNewLogsConfigWarnings(t *testing.T) {
	cfg, err := config.Parse([]byte("[http]\nlisten = \"127.0.0.1:0\"\n[[server]]\nname = \"f\"\nlisten = \"127.0.0.1:0\"\n" +
		"[[pool]]\nname = \"p\"\nurl = \"stratum+tcp://pool.example.com:3333\"\nuser = \"u\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := newObserved()
	if _, err := New(cfg, zap.New(core), Options{Factories: []Factory{}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range logs.FilterMessage("config warning").All() {
		got = append(got, fmt.Sprint(e.ContextMap()["key"], ": ", e.ContextMap()["warning"]))
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{"http.api_token_file: is not set", "pool[0].url: host pool.example.com is a documentation placeholder"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logged warnings lack %q:\n%s", want, joined)
		}
	}
}

// TestLogRateLimiterWiring: the daemon registers the limiter's metric,
// writes summaries on its own goroutine while running and a last one after
// the components stopped.
func TestLogRateLimiterWiring(t *testing.T) {
	comp := &noisyComponent{name: "noisy", atStart: 200, atStop: 50}
	var rl *logging.RateLimiter
	h := startWith(t, harnessOptions{
		wrap: func(c zapcore.Core) zapcore.Core {
			rl = logging.NewRateLimiter(c, logging.RateLimitOptions{PerSecond: 10})
			return rl.Core()
		},
		summaryEvery: 20 * time.Millisecond,
	}, comp)
	// A periodic summary while running.
	for i := 0; h.logs.FilterMessageSnippet("similar messages suppressed: refusing miner connection").Len() == 0; i++ {
		if i > 2000 {
			t.Fatal("no periodic summary while running")
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, m := h.get(t, "/metrics", "")
	if code != 200 || !strings.Contains(m["body"].(string), `proxyd_log_suppressed_total{message="refusing miner connection"}`) {
		t.Fatalf("/metrics = %d, lacks proxyd_log_suppressed_total for the message", code)
	}
	h.cancel()
	if err := <-h.done; err != nil {
		t.Fatal(err)
	}
	h.done <- nil // for Cleanup
	// Every entry is either written or counted in a summary, the ones logged
	// during Stop included.
	passed := h.logs.FilterMessage("refusing miner connection").Len()
	var counted uint64
	for _, e := range h.logs.FilterMessageSnippet("similar messages suppressed: refusing miner connection").All() {
		counted += e.ContextMap()["count"].(uint64)
	}
	if uint64(passed)+counted != 250 {
		t.Errorf("%d written + %d counted as suppressed, want all 250 accounted for", passed, counted)
	}
	last := h.logs.All()[h.logs.Len()-1]
	if !strings.Contains(last.Message, "similar messages suppressed") && last.Message != "proxyd stopped" {
		t.Errorf("last line %q: the final summary must follow the shutdown", last.Message)
	}
}

// noisyComponent logs the same warning many times at Start and at Stop.
type noisyComponent struct {
	name            string
	atStart, atStop int
	log             *zap.Logger
}

func (c *noisyComponent) Name() string           { return c.name }
func (c *noisyComponent) setLog(log *zap.Logger) { c.log = log }
func (c *noisyComponent) Start(context.Context) error {
	for i := 0; i < c.atStart; i++ {
		c.log.Warn("refusing miner connection", zap.String("remote", fmt.Sprintf("127.0.0.1:%d", i)))
	}
	return nil
}
func (c *noisyComponent) Ready() error { return nil }
func (c *noisyComponent) Stop(context.Context) error {
	for i := 0; i < c.atStop; i++ {
		c.log.Warn("refusing miner connection")
	}
	return nil
}

// TestReloadRedactsURLs: a reload that fails on a URL with credentials, in
// the config or in a component's answer, logs it redacted.
func TestReloadRedactsURLs(t *testing.T) {
	var calls []string
	c := &fakeComponent{name: "switcher", log: &calls,
		reloadErr: errors.New(`demand feed: Get "https://feed:hunter2@demand.example.net/v1?api_key=s3cret": connection refused`)}
	h := start(t, c)
	tok := filepath.Join(filepath.Dir(h.cfgPath), "token")

	writeConfig(t, h.cfgPath, fmt.Sprintf("shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n"+
		"[switcher]\ndemand_url = \"ftp://feed:hunter2@demand.example.net/v1?api_key=s3cret\"\n", tok))
	h.reload <- struct{}{}
	waitLog(t, h.logs, "config reload failed; keeping the running config")

	writeConfig(t, h.cfgPath, fmt.Sprintf("shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n", tok))
	h.reload <- struct{}{}
	waitLog(t, h.logs, "component kept its previous config")

	for _, e := range h.logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, "hunter2") || strings.Contains(line, "s3cret") {
			t.Errorf("log line leaks a secret: %s", line)
		}
	}
	e := h.logs.FilterMessage("component kept its previous config").All()[0]
	if !strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "https://redacted@demand.example.net/v1?api_key=redacted") {
		t.Errorf("redacted error lost its useful part: %v", e.ContextMap())
	}
}

// TestAPIDisabledIsWarned: without a token file the daemon starts and says
// at start that the API is disabled.
func TestAPIDisabledIsWarned(t *testing.T) {
	cfg, err := config.Parse([]byte("[http]\nlisten=\"127.0.0.1:0\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := newObserved()
	if _, err := New(cfg, zap.New(core), Options{Factories: []Factory{}}); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessage("config warning").FilterField(zap.String("key", "http.api_token_file")).Len() != 1 {
		t.Error("no warning that the API is disabled")
	}
}

func newObserved() (zapcore.Core, *observer.ObservedLogs) { return observer.New(zap.DebugLevel) }

// FuzzParseToken: whatever a token file holds, an accepted token is one
// line of at least 16 characters with no surrounding space.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{testToken + "\n", testToken + "\r\n\n", "a\nb", "", "short\n", "\r" + testToken, " " + testToken + " \n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := parseToken(b)
		if err != nil {
			return
		}
		if len(tok) < minTokenChars || strings.ContainsAny(tok, "\r\n") || strings.TrimSpace(tok) != tok {
			t.Fatalf("accepted %q from %q", tok, b)
		}
	})
}
