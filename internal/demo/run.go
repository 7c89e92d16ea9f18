package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hashgate/proxyd/switcher"
	"io"
	"strings"
	"time"

	"github.com/hashgate/proxyd/internal/events"
)

// closeTimeout bounds Close in Run: the daemon's shutdown timeout (5 s) plus
// room for the HTTP server and the pool.
const closeTimeout = 30 * time.Second

// maxEventsPerTick bounds the journal lines printed with one summary.
const maxEventsPerTick = 10

// Run starts a site, prints its banner and a summary every o.SummaryEvery
// until ctx ends or o.Duration has passed, prints a final summary and
// closes the site. It returns nil after a clean shutdown (ctx ending during
// the start included); an error when the site could not start (see
// AddrInUseError), when the daemon failed while running or when the
// shutdown was not clean.
func Run(ctx context.Context, o Options) error {
	s, err := Start(ctx, o)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Interrupted while starting: Start has already taken down what it
			// started, which is a clean stop.
			if o.Log != nil {
				fmt.Fprintf(o.Log, "demo: interrupted while starting; stopped\n")
			}
			return nil
		}
		return err
	}
	runErr := s.Run(ctx)
	closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	closeErr := s.Close(closeCtx)
	if runErr == nil && closeErr == nil {
		s.printf("demo: stopped cleanly (miners disconnected, daemon drained, pool closed) after %s\n",
			time.Since(s.started).Round(time.Second))
	}
	return errors.Join(runErr, closeErr)
}

// Run prints the banner, then a summary (and any new journal events) every
// SummaryEvery until ctx ends or Duration has passed since Start, then a
// final summary. It returns nil then, or an error as soon as the daemon
// stops by itself. It does not Close the site.
func (s *Site) Run(ctx context.Context) error {
	s.banner()
	var deadline <-chan time.Time
	if s.opts.Duration > 0 {
		t := time.NewTimer(time.Until(s.started.Add(s.opts.Duration)))
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(s.opts.SummaryEvery)
	defer tick.Stop()
	var contract <-chan time.Time
	if s.opts.ContractAfter > 0 {
		t := time.NewTimer(time.Until(s.started.Add(s.opts.ContractAfter)))
		defer t.Stop()
		contract = t.C
	}
	for {
		select {
		case <-contract:
			contract = nil
			if !s.placeContract() { // the switcher is not built yet: try again shortly
				contract = time.After(500 * time.Millisecond)
			}
		case <-tick.C:
			s.report()
		case <-deadline:
			s.report()
			s.printf("demo: --duration %s reached; shutting down\n", s.opts.Duration)
			return nil
		case <-ctx.Done():
			s.report()
			s.printf("demo: interrupted; shutting down\n")
			return nil
		case <-s.daemonEnd:
			return fmt.Errorf("the daemon stopped by itself: %w", s.daemonErr)
		}
	}
}

// report prints one summary and the journal events since the last one.
func (s *Site) report() {
	sum := s.Summary()
	evs, skipped := s.newEvents(maxEventsPerTick)
	if s.opts.JSON {
		s.jsonLine(struct {
			Type string `json:"type"`
			Summary
		}{"summary", sum})
		for _, e := range evs {
			s.jsonLine(struct {
				Type      string       `json:"type"`
				Simulated []string     `json:"simulated"`
				Event     events.Event `json:"event"`
			}{"event", simulatedParts(), e})
		}
		return
	}
	fmt.Fprintln(s.opts.Out, sum)
	if skipped > 0 {
		fmt.Fprintf(s.opts.Out, "    event: %d older events not shown (GET /api/v1/events lists them)\n", skipped)
	}
	for _, e := range evs {
		fmt.Fprintf(s.opts.Out, "    event: %s\n", eventLine(e))
	}
}

// eventLine renders a journal event: "stratum pool_health demo/simulated-pool: healthy → unhealthy (no job for 2m)".
func eventLine(e events.Event) string {
	var b strings.Builder
	b.WriteString(e.Component + " " + e.Kind)
	if e.Subject != "" {
		b.WriteString(" " + e.Subject)
	}
	if e.From != "" || e.To != "" {
		fmt.Fprintf(&b, ": %s → %s", e.From, e.To)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	return b.String()
}

// banner says what runs, what is simulated and how to look at it: to Out,
// or with JSON a "started" line to Out and the text to Log.
func (s *Site) banner() {
	info := s.Info()
	w := s.opts.Out
	if s.opts.JSON {
		s.jsonLine(struct {
			Type string `json:"type"`
			Info
		}{"started", info})
		w = s.opts.Log
	}
	o := s.opts
	gpus := summarizeGPUs(s.comps)
	gpuLine := gpus.Unavailable
	if gpuLine == "" {
		gpuLine = fmt.Sprintf("%d × %s (nvml %q backend: go-nvml's mock, no driver touched)", gpus.Total, gpus.Model, gpus.Backend)
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("proxyd demo: a whole mining site on loopback, in one process.")
	p("The pool, the miners and the GPUs are SIMULATED; the proxy, GPU monitoring, API and metrics are proxyd's real code.")
	p("")
	p("  pool    SIMULATED  %s  (checks every share itself; difficulty %g, a new job every %s)", info.Pool, o.Difficulty*poolDifficultyFactor, o.JobInterval)
	p("  miners  SIMULATED  %d of %d connected: antminer, whatsminer, braiinsos, bitaxe, nicehash firmware styles,", info.Miners, o.Miners)
	p("                     really hashing on this CPU: %g shares/min each at difficulty %g, %g%% deliberately bad", o.SharesPerMinute, o.Difficulty, o.BadFraction*100)
	p("  GPUs    SIMULATED  %s", gpuLine)
	p("  proxy   real       stratum+tcp://%s -> [[pool]] %q", info.Stratum, PoolName)
	p("  API     real       %s  (/api/v1 answers carry %s and \"simulated\": true)", info.API, SimulatedHeader)
	p("")
	p("Look around (the token is in %s; it is removed on exit):", info.TokenFile)
	for _, path := range []string{"workers", "pools", "stratum", "gpus", "events", "demo"} {
		p("  curl -H \"Authorization: Bearer %s\" %s/api/v1/%s", info.Token, info.API, path)
	}
	p("  curl %s/metrics", info.API)
	p("")
	until := "Ctrl-C"
	if o.Duration > 0 {
		until = fmt.Sprintf("after %s or on Ctrl-C", o.Duration)
	}
	p("A summary every %s; stops %s.", o.SummaryEvery, until)
	_, _ = io.WriteString(w, b.String())
}

// jsonLine writes v as one line of JSON to Out.
func (s *Site) jsonLine(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"type": "error", "error": err.Error()})
	}
	_, _ = s.opts.Out.Write(append(b, '\n'))
}

// printf writes a status line: to Out in text mode, to Log in JSON mode (so
// Out stays pure JSON).
func (s *Site) printf(format string, args ...any) {
	w := s.opts.Out
	if s.opts.JSON {
		w = s.opts.Log
	}
	fmt.Fprintf(w, format, args...)
}

// placeContract hands the switcher a SIMULATED AI contract, as an operator's
// PUT /api/v1/contracts/{id} would: it moves GPUs from mining to the
// simulated inference workload for ContractFor, then back.
// It reports false when the switcher is not running yet (call again later)
// and true once the contract was handed over, refused, or there is no
// switcher in this build.
func (s *Site) placeContract() bool {
	for _, c := range s.comps {
		// The wiring wraps the switcher's component; ask for what it promotes.
		sc, ok := c.(interface{ Switcher() *switcher.Switcher })
		if !ok {
			continue
		}
		sw := sc.Switcher()
		if sw == nil {
			return false
		}
		ct := switcher.DemoContract("demo-ai", s.opts.ContractGPUs, time.Now(), s.opts.ContractFor)
		if _, _, err := sw.PutContract(ct); err != nil {
			s.printf("demo: the SIMULATED AI contract was refused: %v\n", err)
			return true
		}
		s.printf("demo: SIMULATED AI contract %q arrives: %d GPUs for %s (watch them move to AI and back)\n",
			ct.ID, s.opts.ContractGPUs, s.opts.ContractFor)
		return true
	}
	return true
}
