package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	proxydconfig "github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// fakeProxydEnv makes the test binary, run as `BINARY run --config FILE`,
// act as a proxyd: it loads FILE with proxyd's own config package (so the
// generated config is checked by the real parser) and relays its listener
// to its pool byte for byte.
const fakeProxydEnv = "PROXYLOAD_TEST_FAKE_PROXYD"

// TestMain lets the test binary serve as the tool's miner processes and as
// a fake proxyd.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == workerEnvValue {
		os.Exit(workerMain(os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv(fakeProxydEnv) == "1" && len(os.Args) == 4 && os.Args[1] == "run" && os.Args[2] == "--config" {
		os.Exit(fakeProxyd(os.Args[3]))
	}
	os.Exit(m.Run())
}

func fakeProxyd(path string) int {
	cfg, err := proxydconfig.Load(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake proxyd: %v\n", err)
		return 78
	}
	pool, _, err := proxydconfig.ParsePoolURL(cfg.Pools[0].URL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake proxyd: %v\n", err)
		return 78
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	r, err := startRelay(cfg.Servers[0].Listen, pool, false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake proxyd: %v\n", err)
		return 1
	}
	// Like proxyd, say ready on /readyz once the listener is up.
	hl, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake proxyd: %v\n", err)
		return 1
	}
	go func() {
		_ = http.Serve(hl, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	}()
	<-sig
	_ = hl.Close()
	r.Close()
	return 0
}

// relay forwards each accepted connection to target, byte for byte: a
// trivial pass-through "proxy". A lying relay instead answers every
// mining.submit itself with true and never forwards it.
type relay struct {
	ln     net.Listener
	target string
	lie    bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startRelay(listen, target string, lie bool) (*relay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	r := &relay{ln: ln, target: target, lie: lie, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

func (r *relay) Addr() string { return r.ln.Addr().String() }

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		_ = c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		down, err := r.ln.Accept()
		if err != nil {
			return
		}
		if !r.track(down) {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				_ = down.Close()
				return
			}
			if !r.track(up) {
				_ = down.Close()
				return
			}
			var wmu sync.Mutex // writes to down: pool → miner copy and lies
			done := make(chan struct{}, 2)
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := up.Read(buf)
					if n > 0 {
						wmu.Lock()
						_, werr := down.Write(buf[:n])
						wmu.Unlock()
						if werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				done <- struct{}{}
			}()
			go func() {
				if r.lie {
					sc := bufio.NewScanner(down)
					for sc.Scan() {
						line := sc.Bytes()
						var msg struct {
							ID     json.RawMessage `json:"id"`
							Method string          `json:"method"`
						}
						if json.Unmarshal(line, &msg) == nil && msg.Method == "mining.submit" {
							wmu.Lock()
							_, _ = fmt.Fprintf(down, "{\"id\":%s,\"result\":true,\"error\":null}\n", msg.ID)
							wmu.Unlock()
							continue
						}
						if _, err := up.Write(append(line, '\n')); err != nil {
							break
						}
					}
				} else {
					_, _ = io.Copy(up, down)
				}
				done <- struct{}{}
			}()
			<-done
			_ = up.Close()
			_ = down.Close()
			<-done
		}()
	}
}

func (r *relay) Close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	_ = r.ln.Close()
	r.wg.Wait()
}

// relayToPool starts a relay (lying or not) in front of a pool address it
// picks, for the pool the tool will start there. The relay listens first,
// so the pool's port cannot be the relay's.
func relayToPool(t *testing.T, lie bool) (*relay, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := freeLoopbackAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: addrs[0], lie: lie, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r, addrs[0]
}

// testConfig is a short, small run: every phase, a few seconds in all.
func testConfig(t *testing.T, args ...string) config {
	t.Helper()
	base := []string{
		"--miners", "48", "--rate", "240", "--duration", "1500ms", "--warmup", "300ms",
		"--fanout-jobs", "3", "--fanout-interval", "50ms", "--settle", "50ms",
		"--bad", "0.2", "--difficulty", "1e-7", "--procs", "0", "--progress", "0",
		"--connect-timeout", "30s", "--phase-timeout", "20s", "--timeout", "2m",
		"--styles", "antminer,whatsminer,braiinsos,bitaxe,nicehash,plain",
	}
	c, err := parseFlags(append(base, args...), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runTool runs the tool in-process, bounded, and returns its report.
func runTool(t *testing.T, c config) (*Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	return run(ctx, c, testLog{t})
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// checkRun checks that a path's report has every figure and that every
// share is accounted for.
func checkRun(t *testing.T, rr *RunReport, miners int, c config) {
	t.Helper()
	if len(rr.Problems) > 0 {
		t.Fatalf("%s: problems %v", rr.Path, rr.Problems)
	}
	if rr.Miners.Ready != miners || rr.Miners.Failed != 0 || rr.Miners.Dropped != 0 {
		t.Fatalf("%s: miners %+v", rr.Path, rr.Miners)
	}
	if rr.Miners.DifficultyMin != c.Difficulty || rr.Miners.DifficultyMax != c.Difficulty {
		t.Fatalf("%s: miners got difficulty %g..%g", rr.Path, rr.Miners.DifficultyMin, rr.Miners.DifficultyMax)
	}
	if rr.Connect.TotalS <= 0 || rr.Connect.Handshake.Count != miners || rr.Connect.FirstJob.Count != miners || rr.Connect.Handshake.P50 <= 0 {
		t.Fatalf("%s: connect %+v", rr.Path, rr.Connect)
	}
	f := rr.Fanout
	if f.Miners != miners || f.Pairs != c.FanoutJobs*miners || f.Latency.Count != f.Pairs || f.Missing != 0 || f.NotClean != 0 || len(f.Jobs) != c.FanoutJobs {
		t.Fatalf("%s: fan-out %+v", rr.Path, f)
	}
	if f.Latency.Min <= 0 || f.Latency.P50 > f.Latency.P99 || f.Latency.P99 > f.Latency.Max {
		t.Fatalf("%s: fan-out latency %+v", rr.Path, f.Latency)
	}
	if w := f.FromFirstWrite; w.Count != f.Pairs || w.Min <= 0 || w.Max > f.Latency.Max || f.PoolQueueMaxMS < 0 {
		t.Fatalf("%s: fan-out from the first write %+v, pool queue %v", rr.Path, w, f.PoolQueueMaxMS)
	}
	s := rr.Submit
	if s.WindowS <= 0 || s.Path.Count == 0 || s.Path.Min <= 0 || s.RTT.Count != s.Path.Count || s.RTT.P50 < s.Path.P50 || s.Unmatched != 0 {
		t.Fatalf("%s: submit %+v", rr.Path, s)
	}
	tp := rr.Throughput
	if tp.OfferedPerS <= 0 || tp.SentPerS <= 0 || tp.AcceptedPerS <= 0 || tp.PoolReceivedPerS <= 0 || tp.PoolAcceptedPerS <= 0 || tp.Scheduled == 0 {
		t.Fatalf("%s: throughput %+v", rr.Path, tp)
	}
	b := rr.Bytes
	if b.PoolIn == 0 || b.PoolOut == 0 || b.MinerIn == 0 || b.MinerOut == 0 {
		t.Fatalf("%s: bytes %+v", rr.Path, b)
	}
	a := rr.Accounting
	if !a.OK || a.Unaccounted != 0 || a.NoAnswer != 0 || a.GoodRejected != 0 || a.Unexpected != 0 || !a.RecordsMatch || a.PoolAcceptedNotTold != 0 {
		t.Fatalf("%s: accounting %+v", rr.Path, a)
	}
	if a.Submitted != a.Accepted+a.Rejected || a.Submitted == 0 || a.Rejected == 0 {
		t.Fatalf("%s: %d submitted, %d accepted, %d rejected", rr.Path, a.Submitted, a.Accepted, a.Rejected)
	}
	// A pass-through path (direct, or a byte relay) shows the pool exactly
	// what the miners sent.
	if a.PoolSubmits != a.Submitted || a.PoolAccepted != a.Accepted || a.PoolRejected != a.Rejected {
		t.Fatalf("%s: pool %d/%d/%d, miners %d/%d/%d", rr.Path, a.PoolSubmits, a.PoolAccepted, a.PoolRejected, a.Submitted, a.Accepted, a.Rejected)
	}
	for _, k := range c.BadKinds {
		kf := a.ByKind[k.String()]
		if kf == nil || kf.Sent == 0 || kf.AsExpected != kf.Sent || kf.ByCode[fmt.Sprint(k.ExpectedCode())] != kf.Sent {
			t.Fatalf("%s: kind %s: %+v", rr.Path, k, kf)
		}
	}
	if g := a.ByKind[stratumtest.ShareGood.String()]; g == nil || g.Accepted != g.Sent {
		t.Fatalf("%s: good shares %+v", rr.Path, g)
	}
	if len(a.MinerRejects) == 0 || len(a.PoolRejects) == 0 || len(a.RejectMessages) == 0 {
		t.Fatalf("%s: rejects %v / %v / %v", rr.Path, a.MinerRejects, a.PoolRejects, a.RejectMessages)
	}
	if rr.LoadEnd == [3]float64{} && rr.LoadStart == [3]float64{} {
		t.Logf("%s: load average reads zero", rr.Path)
	}
}

func checkReport(t *testing.T, rep *Report, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Problems) > 0 {
		t.Fatalf("report not OK: %v", rep.Problems)
	}
	if rep.Machine.NProc < 1 || rep.Machine.GoVersion == "" || rep.Date == "" || rep.FDs.Soft == 0 || rep.PoolAddr == "" {
		t.Fatalf("report header %+v %+v", rep.Machine, rep.FDs)
	}
	var table strings.Builder
	rep.printTable(&table)
	for _, want := range []string{"handshake", "fan-out p99", "submit miner→pool p50", "shares/s", "bytes pool side", "proxy RSS", "rejects by code", "unaccounted", "every share accounted for: OK"} {
		if !strings.Contains(table.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, table.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"params", "machine", "fd_limits", "layout", "runs", "ok"} {
		if _, ok := back[k]; !ok {
			t.Fatalf("JSON lacks %q", k)
		}
	}
	t.Logf("\n%s", table.String())
}

func TestRunDirect(t *testing.T) {
	c := testConfig(t)
	rep, err := runTool(t, c)
	checkReport(t, rep, err)
	if len(rep.Runs) != 1 || rep.Runs[0].Path != "direct" || rep.Added != nil || rep.Runs[0].Proxy != nil {
		t.Fatalf("runs %+v", rep.Runs)
	}
	rr := rep.Runs[0]
	checkRun(t, rr, c.Miners, c)
	if b := rr.Bytes; b.PoolIn != b.MinerOut || b.PoolOut != b.MinerIn || b.ReductionPct != 0 {
		t.Fatalf("direct bytes differ between the sides: %+v", b)
	}
}

// TestRunCompareRelayProcs runs --compare through an in-test byte relay,
// with the miners in two miner processes (the test binary re-executed).
func TestRunCompareRelayProcs(t *testing.T) {
	r, poolAddr := relayToPool(t, false)
	c := testConfig(t, "--compare", "--target", r.Addr(), "--pool-listen", poolAddr, "--procs", "2",
		"--source-ips", "3", "--proxy-pid", fmt.Sprint(os.Getpid()))
	rep, err := runTool(t, c)
	checkReport(t, rep, err)
	if len(rep.Runs) != 2 || rep.Runs[0].Path != "direct" || rep.Runs[1].Path != "proxied" || rep.Added == nil {
		t.Fatalf("runs %d, added %v", len(rep.Runs), rep.Added)
	}
	if rep.Layout.Procs != 2 || len(rep.Layout.PerProc) != 2 || rep.Layout.SourceIPs != 3 || rep.PoolAddr != poolAddr {
		t.Fatalf("layout %+v pool %s", rep.Layout, rep.PoolAddr)
	}
	for _, rr := range rep.Runs {
		checkRun(t, rr, c.Miners, c)
		if rr.Tool.MinerCPUS <= 0 || rr.Tool.MinerMaxRSSMiB <= 0 {
			t.Fatalf("%s: miner processes' usage %+v", rr.Path, rr.Tool)
		}
	}
	px := rep.Runs[1]
	if px.Target != r.Addr() {
		t.Fatalf("proxied target %s", px.Target)
	}
	if p := px.Proxy; p == nil || p.Error != "" || p.PID != os.Getpid() || p.RSSStartMiB <= 0 || p.PeakRSSMiB < p.RSSStartMiB || p.CPUTotalS < 0 {
		t.Fatalf("proxy figures %+v", px.Proxy)
	}
	a := rep.Added
	if a.Fanout == nil || a.SubmitPath == nil || a.Handshake == nil || a.FirstJob == nil || a.SubmitRTT == nil || a.FanoutFromFirstWrite == nil ||
		a.Fanout.P50 != px.Fanout.Latency.P50-rep.Runs[0].Fanout.Latency.P50 ||
		a.SubmitPath.P99 != px.Submit.Path.P99-rep.Runs[0].Submit.Path.P99 {
		t.Fatalf("added %+v", a)
	}
}

// TestRunProxyBRelays alternates two proxies (in-test byte relays, each in
// front of its own pool of the tool) for two rounds: every run is complete
// and accounted for against its own pool, and the comparison has every
// figure with a ratio.
func TestRunProxyBRelays(t *testing.T) {
	ra, poolA := relayToPool(t, false)
	rb, poolB := relayToPool(t, false)
	pid := fmt.Sprint(os.Getpid())
	c := testConfig(t, "--target", ra.Addr(), "--pool-listen", poolA, "--proxy-pid", pid,
		"--compare-target", rb.Addr(), "--compare-pool-listen", poolB, "--compare-proxy-pid", pid,
		"--rounds", "2", "--names", "one,two", "--miners", "24", "--fanout-jobs", "2")
	rep, err := runTool(t, c)
	checkReport(t, rep, err)
	if rep.PoolAddr != poolA || rep.ComparePoolAddr != poolB || rep.Added != nil {
		t.Fatalf("pools %s %s, added %v", rep.PoolAddr, rep.ComparePoolAddr, rep.Added)
	}
	var labels []string
	for _, rr := range rep.Runs {
		labels = append(labels, rr.label())
		// A byte relay shows the pool what the miners sent: the pool's
		// counts match only if each path's pool is its own.
		checkRun(t, rr, c.Miners, c)
		if rr.Bytes.PoolSessions != c.Miners {
			t.Fatalf("%s: %d pool sessions through a relay of %d miners", rr.label(), rr.Bytes.PoolSessions, c.Miners)
		}
		want := map[string]string{"one": ra.Addr(), "two": rb.Addr()}[rr.Path]
		// The "proxy" is this test process, whose RSS need not grow with 24
		// miners: check the figures were taken, not their size.
		if rr.Target != want || rr.Proxy == nil || rr.Proxy.PID != os.Getpid() || rr.Proxy.PeakRSSMiB == 0 {
			t.Fatalf("%s: target %s (want %s), proxy %+v", rr.label(), rr.Target, want, rr.Proxy)
		}
	}
	if strings.Join(labels, " ") != "one#1 two#1 one#2 two#2" {
		t.Fatalf("runs %v", labels)
	}
	cmp := rep.Compare
	if cmp == nil || cmp.A != "one" || cmp.B != "two" || cmp.Rounds != 2 {
		t.Fatalf("comparison %+v", cmp)
	}
	for _, f := range cmp.Figures {
		if len(f.A) != 2 || len(f.B) != 2 || f.Ratio == nil && f.AMedian != 0 {
			t.Fatalf("figure %+v", f)
		}
	}
	var table strings.Builder
	rep.printTable(&table)
	for _, want := range []string{"one#2", "two/one", "upstream sessions", "proxy RSS per miner at peak"} {
		if !strings.Contains(table.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// TestRunSpawnProxyd runs the proxied path through a "proxyd" the tool
// starts: the test binary as a fake proxyd that loads the generated config
// with proxyd's config package and relays.
func TestRunSpawnProxyd(t *testing.T) {
	t.Setenv(fakeProxydEnv, "1")
	t.Setenv("TMPDIR", t.TempDir())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := testConfig(t, "--spawn-proxyd", exe, "--fanout-jobs", "2")
	rep, err := runTool(t, c)
	checkReport(t, rep, err)
	rr := rep.Runs[0]
	checkRun(t, rr, c.Miners, c)
	p := rr.Proxy
	if p == nil || p.Error != "" || p.PID == 0 || p.PID == os.Getpid() || p.RSSStartMiB <= 0 || p.RSSConnectedMiB <= 0 || p.Threads < 1 {
		t.Fatalf("proxy figures %+v", p)
	}
	if p.Stop != "exited after SIGTERM" {
		t.Fatalf("proxyd stop: %q", p.Stop)
	}
}

// TestRunSpawnProxydNotListening checks the clear failure for a proxyd
// that never listens (today's proxyd, whose `run` has no Stratum proxy
// yet, behaves like this).
func TestRunSpawnProxydNotListening(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // the failed proxyd's log is kept there
	c := testConfig(t, "--spawn-proxyd", "/bin/sleep", "--proxy-start-timeout", "300ms")
	rep, err := runTool(t, c)
	if err == nil || !strings.Contains(err.Error(), "did not listen") && !strings.Contains(err.Error(), "exited before listening") {
		t.Fatalf("err = %v", err)
	}
	if rep == nil || rep.OK || len(rep.Runs) != 1 || rep.Runs[0].Completed {
		t.Fatalf("report %+v", rep)
	}
	var table strings.Builder
	rep.printTable(&table)
	if !strings.Contains(table.String(), "PROBLEM proxied: proxyd") || strings.Contains(table.String(), "fan-out p50") {
		t.Fatalf("table for a failed start:\n%s", table.String())
	}
}

// TestRunLyingProxyUnaccounted checks that a proxy that tells miners
// "true" without forwarding fails the run with unaccounted shares.
func TestRunLyingProxyUnaccounted(t *testing.T) {
	r, poolAddr := relayToPool(t, true)
	c := testConfig(t, "--target", r.Addr(), "--pool-listen", poolAddr, "--miners", "8", "--duration", "1s")
	rep, err := runTool(t, c)
	if err != nil {
		t.Fatal(err)
	}
	a := rep.Runs[0].Accounting
	if rep.OK || a.OK || a.Unaccounted == 0 || a.Unaccounted < int(a.ByKind["good"].Accepted) || a.UnaccountedBy != "Pool.Unaccounted" || a.PoolSubmits != 0 {
		t.Fatalf("ok %v, accounting %+v", rep.OK, a)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), "unaccounted") {
		t.Fatalf("problems %v", rep.Problems)
	}
}

func TestRunRefusesWhatDoesNotFit(t *testing.T) {
	c := testConfig(t, "--miners", "5000000")
	rep, err := runTool(t, c)
	var le *limitsError
	if !errors.As(err, &le) || rep != nil {
		t.Fatalf("err = %v, report %v", err, rep)
	}
	for _, want := range []string{"do not fit", "file descriptors", "--fd-policy cap", "At most"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
}

func TestRunInterrupted(t *testing.T) {
	c := testConfig(t, "--duration", "1m", "--procs", "1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := run(ctx, c, io.Discard)
		done <- result{rep, err}
	}()
	time.Sleep(time.Second)
	cancel()
	select {
	case res := <-done:
		if !errors.Is(res.err, context.Canceled) || res.rep != nil {
			t.Fatalf("after cancel: %v, %v", res.rep, res.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not stop within a minute of its context ending")
	}
}

// TestRunTargetGoesAway checks that a proxy that dies mid-run fails the
// run, promptly and with the reason, instead of hanging.
func TestRunTargetGoesAway(t *testing.T) {
	r, poolAddr := relayToPool(t, false)
	c := testConfig(t, "--target", r.Addr(), "--pool-listen", poolAddr, "--miners", "16", "--duration", "30s",
		"--settle", "500ms", "--timeout", "1m")
	go func() {
		time.Sleep(time.Second)
		r.Close()
	}()
	rep, err := runTool(t, c)
	if err == nil && (rep == nil || rep.OK) {
		t.Fatalf("a run whose proxy died passed: %+v", rep)
	}
	if rep == nil || len(rep.Problems) == 0 {
		t.Fatalf("no problems reported (err %v)", err)
	}
	t.Logf("err %v; problems %q", err, rep.Problems)
}
