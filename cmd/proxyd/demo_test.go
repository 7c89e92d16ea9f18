package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDemoBinary runs `proxyd demo` as the README's newcomer would (briefly,
// with fewer miners, on free ports) and checks the banner, the summaries,
// the simulated label on the real API and the clean exit.
func TestDemoBinary(t *testing.T) {
	// The banner's workers example carries the token and the bound address.
	curlLine := regexp.MustCompile(`curl -H "Authorization: Bearer ([0-9a-f]+)" (http://[0-9.]+:[0-9]+)/api/v1/workers`)
	tmp := t.TempDir()
	cmd := exec.Command(proxydBinary(t), "demo", "--duration", "8s", "--miners", "20", "--listen", "127.0.0.1:0", "--summary-every", "1s")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp) // the token directory goes here
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var mu sync.Mutex
	var lines []string
	found := make(chan []string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if m := curlLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(lines, "\n")
	}
	var token, base string
	select {
	case m := <-found:
		token, base = m[1], m[2]
	case <-scanned:
		err := cmd.Wait() // before reading stderr, which Wait finishes copying
		t.Fatalf("demo exited (%v) without printing the API commands\nstdout:\n%s\nstderr:\n%s", err, output(), stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no API commands printed\nstdout:\n%s", output())
	}

	// The fleet is connected before the banner, so the proxy lists all 20.
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/workers", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var w struct {
		Simulated bool `json:"simulated"`
		Workers   []struct {
			Name string `json:"name"`
		} `json:"workers"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &w) != nil {
		t.Fatalf("/api/v1/workers = %d %.300s", resp.StatusCode, body)
	}
	if !w.Simulated || resp.Header.Get("X-Proxyd-Simulated") != "pool, miners, gpus" {
		t.Errorf("/api/v1/workers not labelled simulated: header %q, body %.200s", resp.Header.Get("X-Proxyd-Simulated"), body)
	}
	if len(w.Workers) != 20 {
		t.Errorf("/api/v1/workers lists %d workers, want 20", len(w.Workers))
	}
	for _, wk := range w.Workers {
		if !strings.HasPrefix(wk.Name, "sim.") {
			t.Errorf("worker %q is not named as simulated", wk.Name)
		}
	}

	<-scanned
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("demo exited with %v\nstdout:\n%s\nstderr:\n%s", err, output(), stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("demo did not exit after --duration")
	}
	out := output()
	summaries := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "[demo ") && strings.Contains(l, "SIMULATED pool, 20 miners, 8 GPUs") &&
			strings.Contains(l, "| miners ") && strings.Contains(l, "| hashrate ") && strings.Contains(l, "GPUs 8 simulated") {
			summaries++
		}
	}
	if summaries == 0 {
		t.Errorf("no summary line\nstdout:\n%s", out)
	}
	for _, want := range []string{"SIMULATED", "--duration 8s reached", "stopped cleanly"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the demo left %s behind in TMPDIR", left[0].Name())
	}
	if strings.Contains(stderr.String(), "panic") || strings.Contains(stderr.String(), "DATA RACE") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

func TestDemoBinaryUsageAndStartupErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{"help", []string{"demo", "--help"}, exitOK, "Usage: proxyd demo", nil},
		{"listed in help", []string{"--help"}, exitOK, "demo ", nil},
		{"bad flag", []string{"demo", "--bogus"}, exitUsage, "", []string{"Usage: proxyd demo"}},
		{"argument", []string{"demo", "now"}, exitUsage, "", []string{`unexpected argument "now"`}},
		{"no miners", []string{"demo", "--miners", "0"}, exitUsage, "", []string{"--miners"}},
		{"http address taken", []string{"demo", "--listen", taken.Addr().String(), "--duration", "1s"}, exitFailure, "",
			[]string{taken.Addr().String() + " is already in use", "--listen 127.0.0.1:0"}},
		{"stratum address taken", []string{"demo", "--listen", "127.0.0.1:0", "--stratum", taken.Addr().String(), "--duration", "1s"}, exitFailure, "",
			[]string{taken.Addr().String() + " is already in use", "--stratum 127.0.0.1:0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBinary(t, "", tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) {
				t.Errorf("proxyd %v: exit %d, stdout %q; want exit %d and %q\nstderr: %s", tc.args, code, out, tc.code, tc.stdout, errOut)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
		})
	}
}

// TestDemoBinaryStopsOnSignal: without --duration the demo runs until
// SIGINT (Ctrl-C) or SIGTERM, then shuts down cleanly and exits 0.
func TestDemoBinaryStopsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(proxydBinary(t), "demo", "--miners", "5", "--listen", "127.0.0.1:0", "--summary-every", "200ms")
			cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			var out strings.Builder
			summary := make(chan struct{})
			scanned := make(chan struct{})
			go func() {
				defer close(scanned)
				sc := bufio.NewScanner(stdout)
				seen := false
				for sc.Scan() {
					out.WriteString(sc.Text() + "\n")
					if !seen && strings.HasPrefix(sc.Text(), "[demo ") {
						seen = true
						close(summary)
					}
				}
			}()
			select {
			case <-summary:
			case <-scanned:
				err := cmd.Wait() // before reading stderr, which Wait finishes copying
				t.Fatalf("demo exited (%v) before its first summary; stderr:\n%s", err, stderr.String())
			case <-time.After(2 * time.Minute):
				t.Fatal("no summary printed")
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { <-scanned; errc <- cmd.Wait() }()
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("exit after %s: %v\nstdout:\n%s\nstderr:\n%s", sig, err, out.String(), stderr.String())
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("demo did not exit after %s", sig)
			}
			if !strings.Contains(out.String(), "interrupted; shutting down") || !strings.Contains(out.String(), "stopped cleanly") {
				t.Errorf("stdout:\n%s", out.String())
			}
		})
	}
}
