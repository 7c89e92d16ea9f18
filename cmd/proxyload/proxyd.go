package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// proxydParams are the values of a proxyd config for a load run.
type proxydParams struct {
	Listen           string  // [[server]] listen: where miners connect
	HTTPListen       string  // [http] listen
	PoolURL          string  // [[pool]] url: the tool's pool
	Difficulty       float64 // initial = min = max difficulty: every good share is forwarded
	SharesPerMinute  float64 // vardiff target (moot with a fixed difficulty)
	MaxConnections   int
	MinersPerSession string // "auto", a number, or "" to leave the key out
}

// proxydConfig returns a proxyd TOML config that puts a proxy on
// p.Listen in front of the pool at p.PoolURL. The miners' difficulty is
// fixed at the pool's (initial = min = max), so every good share a miner
// finds also meets the pool's difficulty and is forwarded: the submit
// latency is measured on forwarded shares. Connections per IP are not
// limited, GPU features and the switcher are off.
func proxydConfig(p proxydParams) string {
	spm := min(max(p.SharesPerMinute, 0.1), 600)
	var b strings.Builder
	fmt.Fprintf(&b, `# proxyd config for proxyload: one listener in front of proxyload's test pool.
shutdown_timeout = "5s"

[log]
level = "warn"
format = "console"

[http]
listen = %q

[[server]]
name = "proxyload"
listen = %q
extranonce2_size = 4
# Fixed miner difficulty (--difficulty): a good share is forwarded when it
# also meets the pool's difficulty (all of them with --pool-difficulty-factor 1).
initial_difficulty = %s
min_difficulty = %s
max_difficulty = %s
shares_per_minute = %s
max_connections = %d
max_connections_per_ip = 0
pools = ["proxyload"]

[[pool]]
name = "proxyload"
url = %q
user = "proxyload.farm"
password = "x"
%s
[gpu]
backend = "off"
`, p.HTTPListen, p.Listen, tomlFloat(p.Difficulty), tomlFloat(p.Difficulty), tomlFloat(p.Difficulty),
		tomlFloat(spm), max(p.MaxConnections, 1), p.PoolURL, sessionSizeLine(p.MinersPerSession))
	return b.String()
}

// sessionSizeLine is the miners_per_session line of the config, or none.
func sessionSizeLine(v string) string {
	switch v {
	case "":
		return "# miners_per_session: proxyd's default\n"
	case "auto":
		return "miners_per_session = \"auto\"\n"
	}
	return "miners_per_session = " + v + "\n"
}

// tomlFloat formats f as a TOML float (always with a '.' or an exponent).
func tomlFloat(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return s
}

// freeLoopbackAddrs returns n distinct 127.0.0.1 addresses whose ports
// were free a moment ago (all are held open until all are chosen, so the
// kernel cannot hand out one port twice).
func freeLoopbackAddrs(n int) ([]string, error) {
	var addrs []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// proxydProc is a proxyd the tool started.
type proxydProc struct {
	cmd     *exec.Cmd
	dir     string // temp dir with the config and the log
	Listen  string // where miners connect
	Config  string // config file path
	LogPath string
	HTTP    string // [http] listen, for /readyz
	exit    chan struct{}
	wait    error // valid once exit is closed
	keep    bool  // keep the temp dir after stop
}

// PID returns the process id.
func (p *proxydProc) PID() int { return p.cmd.Process.Pid }

// startProxyd writes a config into a temp dir and starts `path run --config
// FILE`, with stdout and stderr going to a log file there. It returns once
// the proxy accepts TCP connections on its listener (or fails when the
// process exits first or startTimeout passes).
func startProxyd(ctx context.Context, path string, p proxydParams, startTimeout time.Duration) (*proxydProc, error) {
	bin, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("proxyd binary %q: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "proxyload-proxyd-")
	if err != nil {
		return nil, fmt.Errorf("temp dir for proxyd: %w", err)
	}
	pp := &proxydProc{dir: dir, Listen: p.Listen, HTTP: p.HTTPListen, Config: filepath.Join(dir, "proxyd.toml"), LogPath: filepath.Join(dir, "proxyd.log"), exit: make(chan struct{})}
	if err := os.WriteFile(pp.Config, []byte(proxydConfig(p)), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("write proxyd config: %w", err)
	}
	logf, err := os.Create(pp.LogPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("proxyd log: %w", err)
	}
	pp.cmd = exec.Command(bin, "run", "--config", pp.Config)
	pp.cmd.Stdout, pp.cmd.Stderr = logf, logf
	pp.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := pp.cmd.Start(); err != nil {
		_ = logf.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	_ = logf.Close() // the child holds its own copy
	go func() {
		pp.wait = pp.cmd.Wait()
		close(pp.exit)
	}()
	if err := pp.waitListening(ctx, startTimeout); err != nil {
		pp.keep = true // the error points at the log
		_, _ = pp.stop(5 * time.Second)
		return nil, err
	}
	return pp, nil
}

// waitListening waits, polling every 50ms, until the listener accepts and
// proxyd's /readyz says it is ready: proxyd refuses miners until a pool is
// healthy, so a listening socket alone is not enough.
func (p *proxydProc) waitListening(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		c, err := net.DialTimeout("tcp", p.Listen, time.Second)
		if err == nil {
			_ = c.Close()
			if p.HTTP == "" {
				return nil
			}
			if resp, err := client.Get("http://" + p.HTTP + "/readyz"); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-p.exit:
			return fmt.Errorf("proxyd exited before listening on %s (%v); its log %s ends: %s", p.Listen, p.wait, p.LogPath, p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("waiting for proxyd to listen on %s: %w", p.Listen, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("proxyd did not listen on %s within %v (does this build run the Stratum proxy in `proxyd run`?); its log %s ends: %s", p.Listen, timeout, p.LogPath, p.logTail())
		}
	}
}

// logTail returns the last lines of the proxyd log.
func (p *proxydProc) logTail() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	if s == "" {
		return "(empty)"
	}
	return s
}

// stop sends SIGTERM, waits up to timeout for the exit, then SIGKILLs. It
// returns how the process ended and removes the temp dir unless the exit
// was unclean or the start failed (the log is then kept for a look).
func (p *proxydProc) stop(timeout time.Duration) (string, error) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var status string
	var err error
	select {
	case <-p.exit:
		status = "exited after SIGTERM"
		if p.wait != nil {
			status += ": " + p.wait.Error()
			err = fmt.Errorf("proxyd %s; log kept in %s", status, p.LogPath)
		}
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exit
		status = fmt.Sprintf("killed: no exit within %v of SIGTERM", timeout)
		err = fmt.Errorf("proxyd %s; log kept in %s", status, p.LogPath)
	}
	if err == nil && !p.keep {
		_ = os.RemoveAll(p.dir)
	}
	return status, err
}

// waitTargetServes waits until the proxy at target completes a handshake
// with a probe miner and sends it a job, retrying every 250ms for at most
// timeout. A proxy started before the tool's pool existed is typically in
// its reconnect backoff and refusing miners; without this the run would
// fail on the first dial instead of measuring.
func waitTargetServes(ctx context.Context, target, user string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := stratumsim.DialMiner(actx, target, stratumsim.MinerOptions{User: user + ".probe"})
		if err == nil {
			err = m.WaitJob(actx)
			_ = m.Close()
		}
		acancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the proxy at %s did not give a probe miner a job within %v (is its pool the tool's pool, and has its reconnect backoff run out?): last attempt: %w", target, timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
