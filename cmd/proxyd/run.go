package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/components"
	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/internal/logging"
	"github.com/hashgate/proxyd/internal/redact"
	"github.com/hashgate/proxyd/internal/version"
)

func runCmd(args []string, io stdio) int {
	fs := newFlagSet("run", "[--config FILE]",
		"Start the daemon with every component the config enables and serve /healthz, /readyz,\n"+
			"/metrics and /api/v1 on [http] listen. SIGTERM or SIGINT drains and exits 0 within\n"+
			"shutdown_timeout; SIGHUP reloads the config (and logs what needs a restart).", io)
	path := fs.String("config", config.DefaultPath, "TOML config `file`")
	if done, code := fs.parse(args, io); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(io.err, "proxyd run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(io.err, "proxyd run: %s\n", redact.String(err.Error()))
		return exitConfig
	}
	return runDaemon(cfg, io, daemon.Options{Factories: components.Factories()})
}

// runDaemon runs a daemon from cfg until SIGTERM or SIGINT. daemon.New runs
// the same preflight (daemon.Check) as check-config, and owns the log rate
// limiter's summaries from there on.
func runDaemon(cfg *config.Config, io stdio, opts daemon.Options) int {
	log, level, err := logging.New(cfg.Log, io.err)
	if err != nil {
		fmt.Fprintf(io.err, "proxyd: %v\n", err)
		return exitConfig
	}
	defer func() {
		// Daemon.Run writes the last suppressed-lines summary itself; this
		// one covers a start that failed before Run.
		logging.LimiterOf(log).Flush()
		_ = log.Sync() // stderr sync errors are meaningless
	}()
	log.Info("proxyd starting", zap.String("version", version.Version), zap.String("commit", version.Commit),
		zap.String("config", cfg.Path))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}()

	opts.Level = &level
	d, err := daemon.New(cfg, log, opts)
	if err != nil {
		log.Error("cannot start", zap.String("error", redact.String(err.Error())))
		return exitConfig
	}
	if err := d.Run(ctx, reload); err != nil {
		log.Error("proxyd failed", zap.String("error", redact.String(err.Error())))
		return exitFailure
	}
	return exitOK
}
