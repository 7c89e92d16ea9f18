//go:build linux

package hostile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// apiToken is the bearer token every daemon of the suite is started with.
const apiToken = "hostile-suite-0123456789abcdef0123456789abcdef"

// startTimeout bounds how long a daemon may take to log "proxyd ready" and
// to turn ready; it only fails on a real hang.
const startTimeout = 60 * time.Second

// buildProxyd builds ./cmd/proxyd into dir, without -race: the suite
// measures the binary an operator installs. -trimpath as in `make build`,
// so that after it the compiled packages come from the build cache.
func buildProxyd(dir string) (string, error) {
	out := filepath.Join(dir, "proxyd")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "../../cmd/proxyd")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/proxyd: %w\n%s", err, b)
	}
	return out, nil
}

// logLine is one line proxyd wrote to stderr.
type logLine struct {
	At  time.Time // the line's own "ts", or when it was read if it has none
	Raw []byte
	Msg string
}

// maxKeptLines bounds the lines kept per daemon (an unfixed proxyd can log
// thousands of lines a second); lines past it are counted, not kept.
const maxKeptLines = 200_000

// daemon is one running `proxyd run`.
type daemon struct {
	t        *testing.T
	name     string
	bin      string
	dir      string
	cfgPath  string
	cmd      *exec.Cmd
	httpBase string
	stratum  map[string]string // [[server]] name -> listen address
	done     chan struct{}     // closed when the process has exited and stderr is drained

	mu      sync.Mutex // guards the fields below
	lines   []logLine
	dropped int
	exitErr error
}

// startDaemon writes cfg (with %[1]q standing for the token file path, if
// used) to a temp dir, starts proxyd on it and waits for "proxyd ready".
// The daemon is killed at cleanup if the test did not stop it.
func (s *suite) startDaemon(t *testing.T, name, cfg string) *daemon {
	t.Helper()
	dir := t.TempDir()
	tok := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tok, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "proxyd.toml")
	body := strings.ReplaceAll(cfg, "@TOKEN_FILE@", strconv.Quote(tok))
	body = strings.ReplaceAll(body, "@STATE_DIR@", strconv.Quote(dir))
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, name: name, bin: s.bin, dir: dir, cfgPath: cfgPath, stratum: map[string]string{}, done: make(chan struct{})}
	d.cmd = exec.Command(s.bin, "run", "--config", cfgPath)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout = io.Discard
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.addDaemon(d)
	ready := make(chan struct{})
	go d.readLogs(stderr, ready)
	// After the attack proxyd must still shut down cleanly on SIGTERM.
	t.Cleanup(func() { d.stop(t) })
	select {
	case <-ready:
	case <-d.done:
		t.Fatalf("%s: proxyd exited before it was ready (%v); its log:\n%s\nconfig:\n%s", name, d.exitErr, d.tail(40), body)
	case <-time.After(startTimeout):
		t.Fatalf("%s: proxyd not ready after %s; its log:\n%s", name, startTimeout, d.tail(40))
	}
	return d
}

// readLogs collects stderr until EOF, then waits for the process.
func (d *daemon) readLogs(r io.Reader, ready chan struct{}) {
	defer close(d.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	readySent := false
	for sc.Scan() {
		raw := bytes.Clone(sc.Bytes())
		l := logLine{At: time.Now(), Raw: raw}
		var m struct {
			TS     string `json:"ts"`
			Msg    string `json:"msg"`
			Addr   string `json:"addr"`
			Server string `json:"server"`
		}
		if json.Unmarshal(raw, &m) == nil {
			l.Msg = m.Msg
			if ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", m.TS); err == nil {
				l.At = ts
			}
		}
		d.mu.Lock()
		switch m.Msg {
		case "http listening":
			d.httpBase = "http://" + m.Addr
		case "stratum listening":
			d.stratum[m.Server] = m.Addr
		}
		if len(d.lines) < maxKeptLines {
			d.lines = append(d.lines, l)
		} else {
			d.dropped++
		}
		d.mu.Unlock()
		if m.Msg == "proxyd ready" && !readySent {
			readySent = true
			close(ready)
		}
	}
	err := d.cmd.Wait()
	d.mu.Lock()
	d.exitErr = err
	d.mu.Unlock()
}

// kill ends the process at once (cleanup); a stopped daemon is left alone.
func (d *daemon) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// stopTimeout bounds a clean shutdown: the configs' shutdown_timeout (5 s)
// plus a margin. Only a hang fails it.
const stopTimeout = 20 * time.Second

// stop sends SIGTERM and waits for a clean exit (status 0). A daemon that
// had already exited (it refused its config) is left alone.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		t.Errorf("%s: proxyd did not exit within %s of SIGTERM; its last lines:\n%s", d.name, stopTimeout, d.tail(15))
		d.kill()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exitErr != nil {
		t.Errorf("%s: proxyd exit after SIGTERM: %v", d.name, d.exitErr)
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stratumAddr returns the listen address of the [[server]] named name.
func (d *daemon) stratumAddr(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.stratum[name]
	if !ok {
		d.t.Fatalf("%s: no \"stratum listening\" line for server %q", d.name, name)
	}
	return a
}

// logs returns a copy of the lines so far.
func (d *daemon) logs() []logLine {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]logLine(nil), d.lines...)
}

// tail returns the last n lines as text, for failure messages.
func (d *daemon) tail(n int) string {
	ls := d.logs()
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	var b strings.Builder
	for _, l := range ls {
		b.Write(l.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// countLogs counts lines whose msg contains sub.
func (d *daemon) countLogs(sub string) int {
	n := 0
	for _, l := range d.logs() {
		if strings.Contains(l.Msg, sub) {
			n++
		}
	}
	return n
}

// peakLogRate is the most lines proxyd logged in any one-second window
// starting in [from, to), by the lines' own timestamps. The windows slide in
// steps of 100 ms.
func (d *daemon) peakLogRate(from, to time.Time) int {
	var ts []time.Time
	for _, l := range d.logs() {
		if !l.At.Before(from) && l.At.Before(to.Add(time.Second)) {
			ts = append(ts, l.At)
		}
	}
	peak := 0
	for w := from; w.Before(to); w = w.Add(100 * time.Millisecond) {
		n := 0
		for _, x := range ts {
			if !x.Before(w) && x.Before(w.Add(time.Second)) {
				n++
			}
		}
		peak = max(peak, n)
	}
	return peak
}

// request sends an API request with the bearer token and returns the
// status and body.
func (d *daemon) request(method, path, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, d.httpBase+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// get is request("GET") that fails the test on a transport error.
func (d *daemon) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	code, b, err := d.request(http.MethodGet, path, "")
	if err != nil {
		t.Fatalf("%s: GET %s: %v", d.name, path, err)
	}
	return code, b
}

// waitReady polls /readyz until it answers 200.
func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		code, body, err := d.request(http.MethodGet, "/readyz", "")
		if err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz never 200 within %s: %d %s %v\nlog:\n%s", d.name, startTimeout, code, body, err, d.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metrics scrapes /metrics and returns every sample by its series
// (name{labels} exactly as exposed) and the body's size.
func (d *daemon) metrics() (map[string]float64, int, error) {
	code, b, err := d.request(http.MethodGet, "/metrics", "")
	if err != nil {
		return nil, 0, err
	}
	if code != http.StatusOK {
		return nil, len(b), fmt.Errorf("/metrics: %d", code)
	}
	return parseMetrics(b), len(b), nil
}

// parseMetrics reads Prometheus text exposition: "series value" lines,
// comments skipped.
func parseMetrics(b []byte) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, val := line[:i], line[i+1:]
		// An OpenMetrics timestamp or exemplar would follow; proxyd sends none.
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[series] = v
		}
	}
	return out
}

// sumMetric adds every series of the metric name whose labels contain all
// of the given label="value" pairs.
func sumMetric(ms map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for series, v := range ms {
		base, rest, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// metric scrapes once and returns sumMetric; it fails the test when
// /metrics cannot be read.
func (d *daemon) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	ms, _, err := d.metrics()
	if err != nil {
		t.Fatalf("%s: %v", d.name, err)
	}
	return sumMetric(ms, name, labels...)
}

// rssKiB reads VmRSS of pid from /proc.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("VmRSS line %q", line)
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line in /proc/PID/status")
}
