package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/hashgate/proxyd/internal/components"
	"os/signal"
	"syscall"

	"github.com/hashgate/proxyd/internal/demo"
)

func demoCmd(args []string, io stdio) int {
	fs := newFlagSet("demo", "[--duration D] [--miners N] [--listen ADDR] [--stratum ADDR] [--summary-every D] [--json-summary] [--log-level L]",
		"Run a whole mining site on loopback in one process: a SIMULATED pool, SIMULATED ASICs with\n"+
			"mixed firmware styles and SIMULATED GPUs, driving proxyd's real Stratum proxy, GPU monitoring,\n"+
			"HTTP API and metrics, built from the same components as `proxyd run`. It prints how to call\n"+
			"the API (with a fresh token), then a summary every few seconds, and stops on Ctrl-C or after\n"+
			"--duration, exiting 0 after a clean shutdown. The simulated miners really hash: the default\n"+
			"300 use about a fifth of one CPU core.", io)
	duration := fs.Duration("duration", 0, "stop after this long, e.g. 30s (0: run until Ctrl-C)")
	miners := fs.Int("miners", demo.DefaultMiners, fmt.Sprintf("simulated miners to connect (1..%d)", demo.MaxMiners))
	listen := fs.String("listen", demo.DefaultListen, "HTTP `address` for the API and /metrics (port 0: any free port)")
	stratum := fs.String("stratum", demo.DefaultStratum, "`address` of the proxy's miner listener (port 0: any free port)")
	every := fs.Duration("summary-every", demo.DefaultSummaryEvery, "print a summary this often")
	contractAfter := fs.Duration("contract-after", demo.DefaultContractAfter, "a SIMULATED AI contract arrives this long after start (negative: never)")
	contractFor := fs.Duration("contract-for", demo.DefaultContractFor, "how long the SIMULATED AI contract keeps its GPUs")
	asJSON := fs.Bool("json-summary", false, "print JSON lines to stdout (started, summary, event) and the banner to stderr")
	logLevel := fs.String("log-level", demo.DefaultLogLevel, "daemon log `level` on stderr: debug, info, warn or error (the summary already shows\nthe journal's decisions; info shows the daemon's every step)")
	if done, code := fs.parse(args, io); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(io.err, "proxyd demo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	switch {
	case *duration < 0:
		fmt.Fprintf(io.err, "proxyd demo: --duration %s: use 0 (until Ctrl-C) or a positive duration\n", *duration)
		return exitUsage
	case *every <= 0:
		fmt.Fprintf(io.err, "proxyd demo: --summary-every %s: use a positive duration\n", *every)
		return exitUsage
	case *miners < 1 || *miners > demo.MaxMiners:
		fmt.Fprintf(io.err, "proxyd demo: --miners %d: use 1 to %d\n", *miners, demo.MaxMiners)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C during the shutdown kills the process at once
	}()
	err := demo.Run(ctx, demo.Options{
		Factories:     components.Factories(),
		Miners:        *miners,
		Listen:        *listen,
		Stratum:       *stratum,
		SummaryEvery:  *every,
		ContractAfter: *contractAfter,
		ContractFor:   *contractFor,
		Duration:      *duration,
		JSON:          *asJSON,
		Out:           io.out,
		Log:           io.err,
		LogLevel:      *logLevel,
	})
	if err == nil {
		return exitOK
	}
	var inUse *demo.AddrInUseError
	if errors.As(err, &inUse) {
		flag, alt := "--listen", "127.0.0.1:8081"
		if inUse.What == "stratum" {
			flag, alt = "--stratum", "127.0.0.1:3334"
		}
		fmt.Fprintf(io.err, "proxyd demo: %s is already in use (another proxyd or demo running?).\n"+
			"Pick another address with %s %s, or %s 127.0.0.1:0 for any free port.\n(%v)\n", inUse.Addr, flag, alt, flag, inUse.Err)
		return exitFailure
	}
	fmt.Fprintf(io.err, "proxyd demo: %v\n", err)
	return exitFailure
}
