package monitoring

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// requireTool finds an external tool; missing, it skips locally and fails in CI.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found on PATH: install Debian's prometheus package (apt-get install prometheus); .ci/run does", name)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func TestPromtoolRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := filepath.Join(repoRoot(t), "configs", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "proxyd.rules.yml"},
		{"test", "rules", "proxyd.rules_test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// dashboard is the part of Grafana's JSON model the test reads.
type dashboard struct {
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows keep their panels here
}

// panelExprs lists every query of the dashboard with its panel title, with
// Grafana's variables replaced the way Grafana would for "All" over a short range.
func panelExprs(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid dashboard JSON: %v", path, err)
	}
	repl := strings.NewReplacer(`$instance`, `.+`, `$__rate_interval`, `15s`, `$__interval`, `5s`, `$__range`, `5m`)
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for i, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %d has no expr", p.Title, i)
					continue
				}
				out[fmt.Sprintf("%s [%c]", p.Title, 'A'+i)] = repl.Replace(tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatalf("%s has no panel queries", path)
	}
	return out
}

func TestDashboardVariablesAreKnown(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "grafana", "proxyd.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Every $variable a query uses must be one the dashboard defines or one
	// Grafana provides, or the panel breaks on import.
	known := map[string]bool{"instance": true, "datasource": true, "__all": true, "__rate_interval": true, "__interval": true, "__range": true}
	for _, m := range regexp.MustCompile(`\$\{?([A-Za-z_]+)`).FindAllStringSubmatch(string(raw), -1) {
		if !known[m[1]] {
			t.Errorf("dashboard uses undefined variable $%s", m[1])
		}
	}
}

// startedLine is the demo's first JSON line (internal/demo.Info).
type startedLine struct {
	Type  string `json:"type"`
	API   string `json:"api"`
	Token string `json:"token"`
}

// buildProxyd builds the daemon the operator would run.
func buildProxyd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "proxyd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/proxyd")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startDemo runs `proxyd demo` until the test ends and returns its API URL.
func startDemo(t *testing.T, bin string) startedLine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "demo", "--listen", "127.0.0.1:0", "--json-summary",
		"--miners", "60", "--duration", "5m", "--contract-after", "1s", "--contract-for", "10m")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("demo stderr:\n%s", stderr.String())
		}
	})
	lines := make(chan startedLine, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l startedLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Type == "started" {
				lines <- l
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-lines:
		return l
	case <-time.After(60 * time.Second):
		t.Fatalf("demo printed no started line in 60 s; stderr:\n%s", stderr.String())
	}
	return startedLine{}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startPrometheus runs a real Prometheus scraping target every second with
// the shipped rules loaded, until the test ends, and returns its base URL.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	rules := filepath.Join(repoRoot(t), "configs", "prometheus", "proxyd.rules.yml")
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: proxyd
    static_configs:
      - targets: [%q]
`, rules, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.WaitDelay = 20 * time.Second
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready in 60 s: %v\n%s", err, logs.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// promQuery runs an instant query and returns how many series it gave, or
// the error Prometheus reported (a parse error, for example).
func promQuery(base, expr string) (int, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("decoding the answer: %w", err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	return len(r.Data.Result), nil
}

// TestDashboardAgainstDemo scrapes a running demo with a real Prometheus and
// checks that every dashboard query parses and returns series, and that every
// shipped rule evaluates without error.
func TestDashboardAgainstDemo(t *testing.T) {
	requireTool(t, "prometheus")
	bin := buildProxyd(t)
	demo := startDemo(t, bin)
	u, err := url.Parse(demo.API)
	if err != nil || u.Host == "" {
		t.Fatalf("demo API %q: %v", demo.API, err)
	}
	prom := startPrometheus(t, u.Host)
	exprs := panelExprs(t, filepath.Join(repoRoot(t), "configs", "grafana", "proxyd.json"))

	// Rates need a few scrapes, and the simulated contract a few seconds to
	// move GPUs: poll until every query has data or the deadline passes.
	missing := map[string]string{}
	deadline := time.Now().Add(120 * time.Second)
	for {
		clear(missing)
		for name, expr := range exprs {
			n, err := promQuery(prom, expr)
			switch {
			case err != nil:
				t.Fatalf("panel %s: query %q: %v", name, expr, err)
			case n == 0:
				missing[name] = expr
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if len(missing) > 0 {
		names := make([]string, 0, len(missing))
		for n := range missing {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			t.Errorf("panel %s returned no series in 120 s: %s", n, missing[n])
		}
	}
	t.Logf("%d dashboard queries returned data against the demo", len(exprs)-len(missing))
	checkRulesHealthy(t, prom)
}

// checkRulesHealthy asks Prometheus whether every loaded rule evaluated
// without error (a rule that never evaluated yet is "unknown": waited for).
func checkRulesHealthy(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/api/v1/rules")
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Data struct {
				Groups []struct {
					Name  string `json:"name"`
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		total, unknown := 0, 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				total++
				switch rule.Health {
				case "ok":
				case "unknown":
					unknown++
				default:
					t.Errorf("rule %s/%s: health %s: %s", g.Name, rule.Name, rule.Health, rule.LastError)
				}
			}
		}
		if total == 0 {
			t.Fatal("prometheus loaded no rules from proxyd.rules.yml")
		}
		if unknown == 0 || time.Now().After(deadline) {
			if unknown > 0 {
				t.Errorf("%d of %d rules never evaluated in 60 s", unknown, total)
			}
			t.Logf("%d rules loaded, all evaluated", total)
			return
		}
		time.Sleep(time.Second)
	}
}

// chromium runs headless Chromium on url with the flags this machine's closed
// network needs, and returns what it printed on stdout.
func chromium(t *testing.T, url string, extra ...string) string {
	t.Helper()
	bin := requireChromium(t)
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,3600", "--virtual-time-budget=10000"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	return string(out)
}

func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found on PATH: install Debian's chromium package; .ci/run does"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestStatusPageInChromium loads the status page of a running demo in a real
// browser, without and with the API token, checks what it shows and saves a
// screenshot to test-artifacts/statuspage.png.
func TestStatusPageInChromium(t *testing.T) {
	requireChromium(t)
	bin := buildProxyd(t)
	demo := startDemo(t, bin)
	// Let miners submit and the simulated contract move its GPUs first.
	waitFor(t, 60*time.Second, func() bool {
		body, err := apiGet(demo, "/api/v1/contracts")
		return err == nil && strings.Contains(body, `"serving": 2`)
	})

	// Without a token: only totals, and an invitation to paste it.
	dom := chromium(t, demo.API+"/", "--dump-dom")
	for _, want := range []string{"paste the API token to see this", `id="t-miners" class="value">60<`} {
		if !strings.Contains(dom, want) {
			t.Errorf("page without a token lacks %q", want)
		}
	}
	if strings.Contains(dom, "simulated-pool") {
		t.Error("page without a token shows the pool's name, which only the API gives")
	}

	// With the token (handed over in the fragment, as a bookmark would).
	withToken := demo.API + "/#token=" + demo.Token
	dom = chromium(t, withToken, "--dump-dom")
	for _, want := range []string{
		"simulated-pool", "healthy", // pools with health
		"SERVING_AI", "MINING", // GPUs with their switch state
		"demo-ai", "2 / 2", // the contract, serving
		"sim.antminer-", // workers
		"pid 4",         // GPU processes, each with its owner
		"transition:",   // the last events
		`class="badge ok" title="">ready<`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("page with the token lacks %q", want)
		}
	}
	if strings.Contains(dom, "[object Object]") {
		t.Error("the page renders an object as [object Object]")
	}
	if m := regexp.MustCompile(`id="t-hashrate" class="value">([^<]*)<`).FindStringSubmatch(dom); m == nil || !strings.Contains(m[1], "H/s") || strings.HasPrefix(m[1], "0.00 ") {
		t.Errorf("site hashrate tile shows %q, want a non-zero hashrate", m)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	dir := filepath.Join(repoRoot(t), "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "statuspage.png")
	chromium(t, withToken, "--screenshot="+shot)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Fatalf("screenshot %s: %v (size %v)", shot, err, fi)
	}
	t.Logf("screenshot: %s", shot)
}

func apiGet(demo startedLine, path string) (string, error) {
	req, err := http.NewRequest("GET", demo.API+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+demo.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in %v", d)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
