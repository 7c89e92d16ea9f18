// Command proxyload measures what a Stratum V1 farm proxy costs an
// operator in latency and hardware. It simulates N ASICs (really hashing,
// with the handshakes of Antminer, Whatsminer, Braiins OS and Bitaxe
// firmware) and the pool they mine on, all on loopback, and measures the
// direct path (miners → pool) and the proxied path (miners → proxy → pool)
// with identical parameters: connect and handshake times, clean-job fan-out
// latency, submit latency, shares per second, bytes on each side of the
// proxy, the proxy's RSS and CPU from /proc, rejects by reason, and an
// accounting of every share. See --help.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1 // the run failed: an error, unaccounted shares, shares without an answer, miners that never connected
	exitUsage       = 2 // bad flags, or a run that cannot fit this machine's limits
	exitInterrupted = 130
)

// targetDirect is the --target value for miners straight at the pool.
const targetDirect = "direct"

// config is a parsed, validated command line: each field holds the flag of
// the same name (see newFlagSet).
type config struct {
	Target            string // targetDirect or host:port of a proxy
	Compare           bool
	SpawnProxyd       string
	ProxyPID          int
	PoolListen        string
	CompareTarget     string // proxy B: host:port of a running proxy ("" none)
	CompareSpawn      string // proxy B: a proxyd binary the tool starts ("" none)
	ComparePID        int
	ComparePoolListen string
	Rounds            int
	NamesText         string
	Names             [2]string // of proxy A and proxy B
	PrintConfig       bool
	Miners            int
	Rate              float64 // shares per minute per miner
	Duration          time.Duration
	Warmup            time.Duration
	Styles            []stratumsim.Style
	StylesText        string
	BadFraction       float64
	BadKinds          []stratumsim.ShareKind
	BadKindsText      string
	Difficulty        float64
	PoolDiffFactor    float64
	PoolSubDelay      time.Duration
	PoolJobInterval   time.Duration
	FanoutJobs        int
	FanoutInterval    time.Duration
	Settle            time.Duration
	Procs             int // -1 auto
	HashWorkers       int
	DialConcurrency   int
	SourceIPs         int // 0 auto
	FDPolicy          string
	ConnectTimeout    time.Duration
	PhaseTimeout      time.Duration
	Timeout           time.Duration
	Progress          time.Duration
	JSON              string
	MinersPerSession  string // "" (omit the key), "auto" or a number
	ProxyStartTimeout time.Duration
	User              string
	Seed              uint64
}

// defaultStyles is the handshake mix of a typical farm.
const defaultStyles = "antminer,whatsminer,braiinsos,bitaxe"

// newFlagSet defines every flag on fs, storing into c.
func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("proxyload", flag.ContinueOnError)
	fs.StringVar(&c.Target, "target", targetDirect, "`direct` (miners → the tool's pool) or HOST:PORT of a Stratum V1 proxy whose pool is the tool's pool")
	fs.BoolVar(&c.Compare, "compare", false, "run the direct path, then the proxied path (--target HOST:PORT or --spawn-proxyd) with identical parameters, and print them side by side with the added latency")
	fs.StringVar(&c.SpawnProxyd, "spawn-proxyd", "", "start this proxyd `binary` (as BINARY run --config FILE, with a generated config in front of the tool's pool) as the proxy, measure its RSS and CPU, stop it with SIGTERM")
	fs.IntVar(&c.ProxyPID, "proxy-pid", 0, "`PID` of an external proxy, for its RSS and CPU seconds from /proc/PID/status and /proc/PID/stat")
	fs.StringVar(&c.PoolListen, "pool-listen", "127.0.0.1:0", "`ADDR` the tool's pool listens on; fix the port to start an external proxy first with pool url stratum+tcp://ADDR")
	fs.StringVar(&c.CompareTarget, "compare-target", "", "proxy B: `HOST:PORT` of a second running proxy, in front of the tool's second pool (--compare-pool-listen); the same miners run through proxy A (--target or --spawn-proxyd) and B alternately, --rounds times, and the report gives B/A for every figure")
	fs.StringVar(&c.CompareSpawn, "compare-spawn-proxyd", "", "proxy B: a proxyd `binary` the tool starts for each of B's runs (like --spawn-proxyd), e.g. an older build, for a before/after comparison")
	fs.IntVar(&c.ComparePID, "compare-proxy-pid", 0, "`PID` of proxy B (--compare-target), for its RSS and CPU")
	fs.StringVar(&c.ComparePoolListen, "compare-pool-listen", "127.0.0.1:0", "`ADDR` of the tool's second pool, proxy B's; fix the port to start an external proxy B first")
	fs.IntVar(&c.Rounds, "rounds", 1, "with proxy B: `N` rounds of A then B (A, B, A, B, ...); the ratios compare the medians over the rounds")
	fs.StringVar(&c.NamesText, "names", "A,B", "`A,B`: names of proxy A and proxy B in the report")
	fs.BoolVar(&c.PrintConfig, "print-config", false, "print a proxyd config for --target and --pool-listen (and the other flags) and exit")
	fs.IntVar(&c.Miners, "miners", 1000, "simulated ASIC connections `N` (up to 100,000, as file descriptors allow; see FILE DESCRIPTORS)")
	fs.Float64Var(&c.Rate, "rate", 12, "shares per minute per miner (Poisson arrivals); 0 submits none")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "length of the measured submit window")
	fs.DurationVar(&c.Warmup, "warmup", 3*time.Second, "submitting before the measured window (counted in the accounting, not in latencies or shares/s)")
	fs.StringVar(&c.StylesText, "styles", defaultStyles, "handshake mix, round-robin over miners: `LIST` of antminer, whatsminer, braiinsos, bitaxe, nicehash, plain, each optionally NAME=WEIGHT")
	fs.Float64Var(&c.BadFraction, "bad", 0.05, "`fraction` of submits that are deliberately bad (0 to 0.9)")
	fs.StringVar(&c.BadKindsText, "bad-kinds", "low-difficulty,stale,duplicate", "`LIST` of bad share kinds, drawn uniformly: low-difficulty, stale, duplicate, bad-version-bits, unauthorized-worker, bad-extranonce2")
	fs.DurationVar(&c.PoolSubDelay, "pool-subscribe-delay", 0, "the pool answers each mining.subscribe after this `delay`, like a pool across a WAN: on the direct path every miner waits it once, on the proxied path every pool session the proxy opens does (0: at once)")
	fs.DurationVar(&c.PoolJobInterval, "pool-job-interval", 0, "the pool sends a new job (not clean) this `often`, as a real pool does about every 30 s; ckpool's proxy serves miners only once a job arrives after its pool session is up (0: jobs only at connect and for the fan-out)")
	fs.Float64Var(&c.PoolDiffFactor, "pool-difficulty-factor", 1, "on the proxied path the pool gives the proxy's sessions `F` × --difficulty, as a pool's vardiff gives a session carrying many miners more difficulty; the proxy then forwards only the shares that meet it (about 1 in F) and answers the rest itself. 1: every good share is forwarded (the proxy's worst case). Miners keep --difficulty on both paths")
	fs.Float64Var(&c.Difficulty, "difficulty", 1e-7, "share difficulty `D` of the pool (and of the generated proxyd config: initial = min = max); keep it at 1e-6 or below, see HASHING")
	fs.IntVar(&c.FanoutJobs, "fanout-jobs", 5, "clean jobs `K` the pool sends, one at a time, to measure notify fan-out")
	fs.DurationVar(&c.FanoutInterval, "fanout-interval", 500*time.Millisecond, "pause between fan-out jobs, after every miner got the previous one")
	fs.DurationVar(&c.Settle, "settle", time.Second, "pause after all miners are ready, before the fan-out")
	c.Procs = -1
	fs.Var((*procsValue)(&c.Procs), "procs", "miner processes: auto (the fewest that fit the fd limit, at least 1), or a `number`; 0 runs the miners inside the tool's process, next to the pool")
	fs.IntVar(&c.HashWorkers, "hash-workers", 16, "share-hashing goroutines per miner process; the submit scheduler queues up to twice as many due shares, so more workers absorb bursts before shares count as late")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", 128, "concurrent dials and handshakes per miner process")
	fs.IntVar(&c.SourceIPs, "source-ips", 0, "loopback source addresses 127.0.0.2, 127.0.0.3, ... the miners are spread over, round-robin (0: auto, enough for the ephemeral ports; a loopback target only)")
	fs.StringVar(&c.FDPolicy, "fd-policy", "refuse", "`policy` when N needs more file descriptors than the limits allow: refuse (exit 2) or cap (run with the most miners that fit)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 2*time.Minute, "bound on connecting all miners and getting each its first job; with --target, also on the proxy first serving a probe miner")
	fs.DurationVar(&c.PhaseTimeout, "phase-timeout", 30*time.Second, "bound on each fan-out job reaching the miners, and on the answers after the submit window")
	fs.DurationVar(&c.Timeout, "timeout", 15*time.Minute, "bound on the whole run; the tool stops by itself")
	fs.DurationVar(&c.Progress, "progress", 5*time.Second, "progress line to stderr this often (0: none)")
	fs.StringVar(&c.JSON, "json", "", "also write every figure, the parameters and the machine as JSON to `FILE` (- for stdout; the table then goes to stderr)")
	fs.StringVar(&c.MinersPerSession, "miners-per-session", "", "miners_per_session of the generated proxyd config: \"auto\" or a `number`; empty leaves the key out, so each proxyd binary uses its own default (a before/after comparison then compares defaults)")
	fs.DurationVar(&c.ProxyStartTimeout, "proxy-start-timeout", 20*time.Second, "bound on a spawned proxyd starting to listen")
	fs.StringVar(&c.User, "user", "proxyload", "worker name prefix: miners authorize as USER.w<i>")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed for jobs, extranonces, submit times and bad-share draws")
	fs.Usage = func() {}
	return fs
}

// procsValue is --procs: "auto" (-1) or a count.
type procsValue int

func (v *procsValue) String() string {
	if v == nil || *v < 0 {
		return "auto"
	}
	return strconv.Itoa(int(*v))
}

func (v *procsValue) Set(s string) error {
	if s == "auto" {
		*v = -1
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1000 {
		return fmt.Errorf("want auto or a number from 0 to 1000, got %q", s)
	}
	*v = procsValue(n)
	return nil
}

const helpHead = `proxyload: what a Stratum V1 farm proxy costs in latency and hardware.

Usage:
  proxyload [flags]                                  direct path only (miners → the tool's pool)
  proxyload --target HOST:PORT [--proxy-pid PID]     proxied path through a running proxy
  proxyload --spawn-proxyd PATH                      proxied path through a proxyd the tool starts
  proxyload --compare (--target HOST:PORT | --spawn-proxyd PATH)
                                                     both paths, identical parameters, side by side
  proxyload (--target HOST:PORT | --spawn-proxyd PATH)
            (--compare-target HOST:PORT | --compare-spawn-proxyd PATH) [--rounds N]
                                                     proxy A against proxy B, alternately, with B/A

proxyload simulates N ASICs and the pool they mine on, on loopback. The
miners really hash and the pool validates every share independently (btcd
header hashing), so a proxy's extranonce split, job rewriting and share
forwarding are checked byte for byte. A run: connect all N miners (bounded
concurrency, spread over source addresses 127.0.0.2, ...), wait until each
has a job, send K clean jobs one by one (fan-out), submit at --rate for
--warmup + --duration, wait for every answer, close, account.

Figures (table on stdout, everything with --json):
  connect     wall time for all N; per miner dial → handshake complete and
              dial → first job (p50/p90/p99/max)
  fan-out     per (miner, job): miner receives the clean job − the pool
              creates and starts sending it (the same instant on both paths:
              direct includes the pool's own fan-out to N sessions, proxied
              the pool's few sessions plus the proxy's fan-out);
              p50/p90/p99/max, never arrived, and the same counted from the
              pool's first socket write of the job
  submit      miner sends a good share → the pool receives it (one monotonic
              clock across the tool's processes), p50/p90/p99/max, over the
              good shares the pool accepted; round trip to the verdict too
  shares/s    offered, sent, accepted (miner side), received and accepted at
              the pool, over the measured window; "late" counts submits the
              generator could not send on time (then it, not the proxy, is
              the limit)
  bytes       pool side (pool sessions) vs miner side (miner connections)
              and the reduction
  proxy       RSS (start, after connect, peak, per miner) and CPU seconds per
              phase from /proc/PID (--spawn-proxyd, or --proxy-pid)
  accounting  submits by kind and verdict, rejects by code (miner and pool
              side), bad shares answered as expected or not, submits never
              answered, and the pool's Unaccounted: shares a miner was told
              "true" for that the pool never accepted although they met the
              pool's difficulty
  --compare adds "added" = proxied − direct for every percentile.
  proxy B (--compare-target or --compare-spawn-proxyd) runs the same
              miners through proxy A and proxy B in turn, --rounds times
              (A, B, A, B, ...), each proxy in front of its own pool of the
              tool (same seed, same jobs), so the pool-side bytes and
              sessions are each proxy's own; "B/A" gives the median of each
              figure over the rounds for A and B and their ratio. RSS per
              miner is reported after connect and at the peak, over the
              RSS before the miners connected; an external proxy's peak
              (VmHWM) is reset before each of its runs where the kernel
              allows (/proc/PID/clear_refs).

The run fails (exit 1) when a share is unaccounted, a submit got no answer,
or a miner did not connect; exit 2 is a usage or limits problem, 130 an
interrupt (Ctrl-C stops cleanly).

HASHING: miners and pool really hash. A share at difficulty d costs
d·2^32 double-SHA-256 hashes, about 156 ns each on a 2.6 GHz Xeon core:
1e-7 is ~430 hashes (~67 µs) per share, 1e-6 ~4,300 (~0.7 ms). Keep
--difficulty at 1e-6 or below for load. The proxy must give miners the
pool's difficulty (the generated proxyd config fixes initial = min = max =
--difficulty), so that every good share also meets the pool's difficulty
and is forwarded: a proxy forwards nothing below the pool's difficulty, and
submit latency is measured on forwarded shares. --pool-difficulty-factor F
raises only the pool's difficulty for the proxied path (as a pool's vardiff
does for a session carrying many miners): about 1 share in F is then
forwarded, which shows the upstream byte reduction a farm really gets.

PROXIES: any Stratum V1 proxy can be the target; configure its pool as the
tool's pool and its difficulty as --difficulty, without per-IP connection
limits (or with --source-ips spreading miners under them). Fix the pool's
port with --pool-listen to start the proxy first; --print-config prints a
proxyd config for it. The tool prints the pool's address and a config
snippet before a proxied run.

FILE DESCRIPTORS: each miner is a connection: one fd in its miner process,
one in the proxy (or, on the direct path, one in the tool's process for its
pool session). The tool raises its soft limit to the hard limit, tries to
raise the hard limit (possible only with CAP_SYS_RESOURCE), and spreads
miners over processes (--procs) so each stays under its limit. The pool's
process holds one fd per miner on the direct path and a spawned proxyd one
per miner, so with a hard limit of 20,000 those paths stop near 19,800
miners; when N does not fit, the tool says so with the numbers and refuses
or caps N (--fd-policy). Ephemeral ports (~28,000 per source address) are
covered by spreading miners over 127.0.0.2, 127.0.0.3, ...

Two shared cores make every figure noisy: the load average at the start and
end of each run is in the report.

Flags:
`

const helpTail = `
Examples:
  proxyload --miners 1000                                     # direct, ~30 s
  proxyload --miners 10000 --json direct-10k.json              # direct, ~30 s
  proxyload --compare --spawn-proxyd ./bin/proxyd --miners 1000
  proxyload --pool-listen 127.0.0.1:3334 --print-config --target 127.0.0.1:3333 > proxy.toml
  proxyload --compare --target 127.0.0.1:3333 --pool-listen 127.0.0.1:3334 --proxy-pid $(pidof proxy)
  proxyload --spawn-proxyd ./bin/proxyd --compare-target 127.0.0.1:3335 --compare-pool-listen 127.0.0.1:3336 \
            --compare-proxy-pid $(pidof ckpool) --names proxyd,ckpool --rounds 3 --rate 2 --miners 10000
  proxyload --spawn-proxyd ./bin/proxyd --compare-spawn-proxyd ./old/proxyd --names after,before --rounds 2
`

// printHelp writes the full --help text: every flag, with its default.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, helpHead)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		if def := f.DefValue; def != "" && def != "0" && def != "false" {
			usage += " (default " + def + ")"
		}
		for _, l := range wrap(usage, 72) {
			fmt.Fprintln(w, "        "+l)
		}
	})
	fmt.Fprint(w, helpTail)
}

// wrap breaks text into lines of at most width runes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	var cur []string
	n := 0
	for _, word := range strings.Fields(text) {
		wl := len([]rune(word))
		if n > 0 && n+1+wl > width {
			lines = append(lines, strings.Join(cur, " "))
			cur, n = nil, 0
		}
		if n > 0 {
			n++
		}
		cur = append(cur, word)
		n += wl
	}
	if len(cur) > 0 {
		lines = append(lines, strings.Join(cur, " "))
	}
	return lines
}

// parseFlags parses args into a validated config. It returns flag.ErrHelp
// after printing --help to stdout.
func parseFlags(args []string, stdout, stderr io.Writer) (config, error) {
	var c config
	fs := newFlagSet(&c)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout, fs)
			return c, err
		}
		return c, fmt.Errorf("%w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if err := c.finish(); err != nil {
		return c, err
	}
	return c, nil
}

// finish checks the flags together and fills the parsed lists.
func (c *config) finish() error {
	var err error
	if c.Styles, err = parseStyles(c.StylesText); err != nil {
		return fmt.Errorf("--styles: %w", err)
	}
	if c.BadKinds, err = parseBadKinds(c.BadKindsText); err != nil {
		return fmt.Errorf("--bad-kinds: %w", err)
	}
	switch {
	case c.Miners < 1:
		return fmt.Errorf("--miners %d: want at least 1", c.Miners)
	case c.Miners > 10_000_000:
		return fmt.Errorf("--miners %d: more than 10,000,000 is not a load test", c.Miners)
	case !(c.Rate >= 0) || c.Rate > 60_000:
		return fmt.Errorf("--rate %v: want 0 to 60,000 shares per minute per miner", c.Rate)
	case !(c.BadFraction >= 0) || c.BadFraction > 0.9:
		return fmt.Errorf("--bad %v: want a fraction from 0 to 0.9", c.BadFraction)
	case c.PoolSubDelay < 0 || c.PoolSubDelay > time.Minute:
		return fmt.Errorf("--pool-subscribe-delay %v: want 0 to 1m", c.PoolSubDelay)
	case c.PoolJobInterval != 0 && (c.PoolJobInterval < 100*time.Millisecond || c.PoolJobInterval > time.Hour):
		return fmt.Errorf("--pool-job-interval %v: want 0 (none) or 100ms to 1h", c.PoolJobInterval)
	case !(c.PoolDiffFactor >= 1) || c.PoolDiffFactor > 1e6:
		return fmt.Errorf("--pool-difficulty-factor %v: want 1 to 1e6", c.PoolDiffFactor)
	case !(c.Difficulty > 0) || c.Difficulty > 1e-3:
		return fmt.Errorf("--difficulty %v: want above 0 and at most 1e-3 (each share costs difficulty·2^32 hashes; 1e-7 is ~430)", c.Difficulty)
	case c.Duration <= 0 || c.Warmup < 0 || c.Settle < 0 || c.FanoutInterval < 0:
		return errors.New("--duration must be positive; --warmup, --settle and --fanout-interval not negative")
	case c.FanoutJobs < 0 || c.FanoutJobs > 1000:
		return fmt.Errorf("--fanout-jobs %d: want 0 to 1000", c.FanoutJobs)
	case c.ConnectTimeout <= 0 || c.PhaseTimeout <= 0 || c.Timeout <= 0 || c.ProxyStartTimeout <= 0:
		return errors.New("--connect-timeout, --phase-timeout, --timeout and --proxy-start-timeout must be positive")
	case c.Progress < 0:
		return errors.New("--progress must not be negative")
	case c.DialConcurrency < 1:
		return fmt.Errorf("--dial-concurrency %d: want at least 1", c.DialConcurrency)
	case c.HashWorkers < 1 || c.HashWorkers > 4096:
		return fmt.Errorf("--hash-workers %d: want 1 to 4096", c.HashWorkers)
	case c.SourceIPs < 0 || c.ProxyPID < 0:
		return errors.New("--source-ips and --proxy-pid must not be negative")
	case c.SourceIPs > maxSourceIPs:
		return fmt.Errorf("--source-ips %d: at most %d", c.SourceIPs, maxSourceIPs)
	case c.FDPolicy != "refuse" && c.FDPolicy != "cap":
		return fmt.Errorf("--fd-policy %q: want refuse or cap", c.FDPolicy)
	case !validSessionSize(c.MinersPerSession):
		return fmt.Errorf("--miners-per-session %q: want auto, a number from 1 to 16777216, or nothing", c.MinersPerSession)
	case c.User == "" || strings.ContainsAny(c.User, " \t\n\""):
		return fmt.Errorf("--user %q: want a non-empty name without spaces or quotes", c.User)
	}
	if _, _, err := net.SplitHostPort(c.PoolListen); err != nil {
		return fmt.Errorf("--pool-listen %q: want HOST:PORT: %w", c.PoolListen, err)
	}
	if c.Target != targetDirect {
		if _, port, err := net.SplitHostPort(c.Target); err != nil || port == "" || port == "0" {
			return fmt.Errorf("--target %q: want direct or HOST:PORT of a proxy", c.Target)
		}
		if c.SpawnProxyd != "" {
			return errors.New("--spawn-proxyd starts its own proxy: leave --target at direct")
		}
	}
	if c.Compare && c.Target == targetDirect && c.SpawnProxyd == "" {
		return errors.New("--compare needs the proxied path: --target HOST:PORT or --spawn-proxyd PATH")
	}
	if err := c.finishProxyB(); err != nil {
		return err
	}
	if c.ProxyPID > 0 && c.SpawnProxyd != "" {
		return errors.New("--proxy-pid is for an external proxy; --spawn-proxyd measures its own")
	}
	if c.PrintConfig && c.Target == targetDirect {
		return errors.New("--print-config needs --target HOST:PORT (where the proxy will listen)")
	}
	if _, port, _ := net.SplitHostPort(c.PoolListen); c.PrintConfig && port == "0" {
		return errors.New("--print-config needs --pool-listen HOST:PORT with a fixed port (the pool the proxy will use)")
	}
	return nil
}

// validSessionSize reports whether s is a --miners-per-session value.
func validSessionSize(s string) bool {
	if s == "" || s == "auto" {
		return true
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 1<<24
}

// sessionsEstimate is how many miners one upstream session of the
// generated config is taken to carry when planning file descriptors: the
// number given, else 256 (older proxyd's default; "auto" carries more, so
// this errs on the safe side).
func (c *config) sessionsEstimate() int {
	if n, err := strconv.Atoi(c.MinersPerSession); err == nil {
		return n
	}
	return 256
}

// parseStyles parses "antminer,whatsminer=3,..." into a round-robin cycle
// in which each style appears WEIGHT times, spread evenly (smooth weighted
// round-robin).
func parseStyles(text string) ([]stratumsim.Style, error) {
	byName := map[string]stratumsim.Style{}
	for _, s := range stratumsim.AllStyles() {
		byName[s.String()] = s
	}
	type entry struct {
		style        stratumsim.Style
		weight, curr int
	}
	var es []*entry
	total := 0
	for part := range strings.SplitSeq(text, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, hasW := strings.Cut(part, "=")
		st, ok := byName[strings.ToLower(strings.TrimSpace(name))]
		if !ok {
			return nil, fmt.Errorf("unknown style %q (want antminer, whatsminer, braiinsos, bitaxe, nicehash or plain)", name)
		}
		weight := 1
		if hasW {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 1 || n > 1000 {
				return nil, fmt.Errorf("weight %q of %s: want 1 to 1000", w, name)
			}
			weight = n
		}
		es = append(es, &entry{style: st, weight: weight})
		total += weight
	}
	if len(es) == 0 {
		return nil, errors.New("no styles")
	}
	cycle := make([]stratumsim.Style, 0, total)
	for range total {
		var best *entry
		for _, e := range es {
			e.curr += e.weight
			if best == nil || e.curr > best.curr {
				best = e
			}
		}
		best.curr -= total
		cycle = append(cycle, best.style)
	}
	return cycle, nil
}

// parseBadKinds parses a comma-separated list of share kind names.
func parseBadKinds(text string) ([]stratumsim.ShareKind, error) {
	byName := map[string]stratumsim.ShareKind{}
	for _, k := range stratumsim.BadKinds() {
		byName[k.String()] = k
	}
	var out []stratumsim.ShareKind
	for part := range strings.SplitSeq(text, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		if part == "" {
			continue
		}
		k, ok := byName[part]
		if !ok {
			return nil, fmt.Errorf("unknown kind %q (want low-difficulty, stale, duplicate, bad-version-bits, unauthorized-worker or bad-extranonce2)", part)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("no kinds")
	}
	return out, nil
}

func main() {
	if os.Getenv(workerEnv) == workerEnvValue {
		os.Exit(workerMain(os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the tool with args and returns its exit status.
func realMain(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "proxyload: %v\n", err)
		return exitUsage
	}
	if c.PrintConfig {
		fmt.Fprint(stdout, proxydConfig(c.proxydParams(c.Target, "stratum+tcp://"+c.PoolListen, "127.0.0.1:8080")))
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	runtime.GC()
	rep, err := run(ctx, c, stderr)
	if rep != nil {
		rep.Command = append([]string{"proxyload"}, args...)
	}
	if err != nil {
		var le *limitsError
		switch {
		case errors.As(err, &le):
			fmt.Fprintf(stderr, "proxyload: %v\n", err)
			return exitUsage
		case errors.Is(err, context.Canceled):
			fmt.Fprintf(stderr, "proxyload: interrupted: %v\n", err)
			return exitInterrupted
		}
		if rep == nil {
			fmt.Fprintf(stderr, "proxyload: %v\n", err)
			return exitFailed
		}
		// The report lists the error among its problems.
	}
	table := stdout
	if c.JSON == "-" {
		table = stderr
	}
	rep.printTable(table)
	if c.JSON != "" {
		if err := writeJSON(c.JSON, stdout, rep); err != nil {
			fmt.Fprintf(stderr, "proxyload: %v\n", err)
			return exitFailed
		}
	}
	if !rep.OK {
		fmt.Fprintf(stderr, "proxyload: run FAILED with %d problem(s), listed in the report\n", len(rep.Problems))
		return exitFailed
	}
	return exitOK
}

// writeJSON writes rep as indented JSON to path ("-": w).
func writeJSON(path string, w io.Writer, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON report: %w", err)
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = w.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

// proxydParams returns the proxyd config values for a proxy on listen in
// front of poolURL.
func (c *config) proxydParams(listen, poolURL, httpListen string) proxydParams {
	return proxydParams{
		Listen:           listen,
		HTTPListen:       httpListen,
		PoolURL:          poolURL,
		Difficulty:       c.Difficulty,
		SharesPerMinute:  c.Rate,
		MaxConnections:   max(c.Miners*2, 1000),
		MinersPerSession: c.MinersPerSession,
	}
}
