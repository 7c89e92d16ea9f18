// Package daemon wires proxyd together: config in, components built by one
// list of factories, a local HTTP listener for health, metrics and the API,
// systemd notification, SIGHUP reload and a bounded, draining shutdown.
//
// Check is the one preflight both `proxyd run` (through New) and `proxyd
// check-config` call. The daemon also owns the goroutine that writes the log
// rate limiter's summaries (internal/logging). It does not implement any
// component: those come from the factories.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/internal/logging"
	"github.com/hashgate/proxyd/internal/logkeep"
	"github.com/hashgate/proxyd/internal/redact"
	"github.com/hashgate/proxyd/internal/version"
)

// Options adjusts how a Daemon is built; the zero value is production.
type Options struct {
	// Factories builds the components, in start order. The binary's one
	// wiring list is internal/components.Factories(); tests pass their own.
	Factories []Factory
	// Notify sends an sd_notify state; nil uses systemd's socket (a no-op
	// outside systemd).
	Notify func(state string)
	// Level is the logger's atomic level, adjusted on reload.
	Level *zap.AtomicLevel
	// Load reads the config on reload; nil uses config.Load on the original path.
	Load func(path string) (*config.Config, error)
	// APIMiddleware, when set, wraps the /api/v1 routes (inside bearer-token
	// authentication): the demo labels every response as simulated with it.
	APIMiddleware func(http.Handler) http.Handler
	// LogSummaryInterval is how often the log rate limiter's "N similar
	// messages suppressed" lines are written (0: logging.DefaultSummaryInterval).
	LogSummaryInterval time.Duration
}

// Daemon is a configured proxyd instance. Build it with New, then Run it.
type Daemon struct {
	log    *zap.Logger
	opts   Options
	notify func(string)
	reg    *prometheus.Registry
	live   *Liveness
	events *events.Log
	token  tokenStore
	comps  []Component
	ln     net.Listener
	srv    *http.Server
	start  time.Time
	// limiter is the log rate limiter behind log (nil when log has none);
	// Run owns the goroutine that flushes it.
	limiter *logging.RateLimiter

	mu    sync.Mutex // guards cfg and phase
	cfg   *config.Config
	phase string // "starting", "running", "stopping"

	reloads *prometheus.CounterVec
}

// New builds the daemon: it runs Check (the API token, the warnings, which it
// logs), binds the HTTP listener and constructs every enabled component, but
// starts nothing yet. Errors here are configuration problems an operator must
// fix before proxyd can start.
func New(cfg *config.Config, log *zap.Logger, opts Options) (_ *Daemon, err error) {
	journal, err := openJournal(cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = journal.Close()
		}
	}()
	d := &Daemon{
		log:    log,
		opts:   opts,
		reg:    prometheus.NewRegistry(),
		live:   NewLiveness(),
		events: journal,
		cfg:    cfg,
		phase:  "starting",
		start:  time.Now(),
	}
	d.notify = opts.Notify
	if d.notify == nil {
		d.notify = func(state string) { _, _ = sd.SdNotify(false, state) }
	}
	if d.opts.Load == nil {
		d.opts.Load = config.Load
	}
	pre, err := Check(cfg)
	if err != nil {
		return nil, err
	}
	d.token.set(pre.token)
	d.logWarnings(pre.Warnings)
	d.registerCoreMetrics()
	if d.limiter = logging.LimiterOf(log); d.limiter != nil {
		d.reg.MustRegister(d.limiter)
	}

	for _, f := range opts.Factories {
		c, err := f(Env{Config: cfg, Log: log, Metrics: d.reg, Liveness: d.live, Events: d.events})
		if err != nil {
			return nil, redactedError{err}
		}
		if c == nil {
			continue
		}
		d.comps = append(d.comps, c)
		name := c.Name()
		comp := c
		d.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "proxyd_component_ready",
			Help:        "1 when the component reports ready, else 0.",
			ConstLabels: prometheus.Labels{"component": name},
		}, func() float64 {
			if comp.Ready() == nil {
				return 1
			}
			return 0
		}))
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	d.ln = ln
	d.srv = d.newHTTPServer()
	return d, nil
}

// logWarnings logs Check's warnings; they are never rate limited, an
// operator reads them once at start.
func (d *Daemon) logWarnings(ws []config.Warning) {
	for _, w := range ws {
		d.log.Warn("config warning", zap.String("key", w.Key), zap.String("warning", w.Message), logkeep.Field())
	}
}

// errField logs an error with any URL credentials in it redacted: errors
// from config and components may quote a pool URL or the demand feed's.
func errField(err error) zap.Field {
	return zap.String("error", redact.String(err.Error()))
}

// redactedError reads as err with URL credentials redacted, and still
// unwraps to err (callers test for EADDRINUSE and the like).
type redactedError struct{ err error }

func (e redactedError) Error() string { return redact.String(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

// openJournal opens the events journal: on disk in switcher.state_dir when
// the switcher is enabled and log.events_file_mib is not 0, so a restart
// keeps the why of what happened before it; in memory otherwise.
func openJournal(cfg *config.Config, log *zap.Logger) (*events.Log, error) {
	if !cfg.Switcher.Enabled || cfg.Log.EventsFileMiB == 0 {
		log.Info("events journal in memory only: it starts empty after a restart",
			zap.Bool("switcher", cfg.Switcher.Enabled), zap.Int("events_file_mib", cfg.Log.EventsFileMiB))
		return events.New(0), nil
	}
	j, err := events.Open(cfg.Switcher.StateDir, int64(cfg.Log.EventsFileMiB)<<20)
	if err != nil {
		return nil, fmt.Errorf("events journal (log.events_file_mib in switcher.state_dir; 0 keeps it in memory): %w", err)
	}
	st := j.Status()
	fields := []zap.Field{zap.String("dir", st.Dir), zap.Int64("max_bytes", st.MaxBytes), zap.String("boot", st.Boot),
		zap.Int("events", st.Recovered.Events), zap.Uint64("oldest_seq", st.OldestSeq), zap.Duration("took", st.Recovered.Took)}
	if st.Recovered.TornBytes > 0 {
		log.Warn("events journal read back; a torn tail (a write cut short by a crash) was cut off",
			append(fields, zap.Int64("torn_bytes", st.Recovered.TornBytes))...)
	} else {
		log.Info("events journal read back", fields...)
	}
	return j, nil
}

// Addr is the bound address of the HTTP listener.
func (d *Daemon) Addr() net.Addr { return d.ln.Addr() }

// Events exposes the journal of decisions (the demo prints from it).
func (d *Daemon) Events() *events.Log { return d.events }

// Registry exposes the Prometheus registry (the demo and tests read it).
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

func (d *Daemon) registerCoreMetrics() {
	d.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "proxyd_build_info",
		Help: "Always 1; labels say which build is running.",
	}, []string{"version", "commit", "goversion"})
	bi.WithLabelValues(version.Version, version.Commit, version.GoVersion()).Set(1)
	d.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "proxyd_config_reloads_total",
		Help: "SIGHUP config reloads by result (ok, error).",
	}, []string{"result"})
	d.reloads.WithLabelValues("ok")
	d.reloads.WithLabelValues("error")
	d.reg.MustRegister(bi, d.reloads, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "proxyd_healthy",
		Help: "1 while every loop of the daemon is turning (what /healthz reports).",
	}, func() float64 {
		if d.live.Check() == nil {
			return 1
		}
		return 0
	}))
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Daemon) setPhase(p string) {
	d.mu.Lock()
	d.phase = p
	d.mu.Unlock()
}

// Run serves HTTP, starts the components, tells systemd it is ready and then
// keeps the watchdog fed until ctx ends; a value on reload re-reads the
// config. On ctx's end it drains the components within shutdown_timeout and
// returns nil; an error means startup failed.
func (d *Daemon) Run(ctx context.Context, reload <-chan struct{}) error {
	// Deferred first, so it runs last: the final summary of suppressed log
	// lines follows every line of the shutdown.
	defer d.runLogFlusher()()
	serveErr := make(chan error, 1)
	go func() { serveErr <- d.srv.Serve(d.ln) }()
	d.log.Info("http listening", zap.String("addr", d.ln.Addr().String()))

	var started []Component
	for _, c := range d.comps {
		if err := c.Start(ctx); err != nil {
			d.log.Error("component failed to start", zap.String("component", c.Name()), errField(err))
			sctx, cancel := context.WithTimeout(context.Background(), d.config().ShutdownTimeout.D())
			d.stopComponents(sctx, started)
			cancel()
			_ = d.srv.Close()
			d.closeJournal()
			return fmt.Errorf("starting %s: %w", c.Name(), redactedError{err})
		}
		d.log.Info("component started", zap.String("component", c.Name()))
		started = append(started, c)
	}
	d.setPhase("running")
	d.notify(sd.SdNotifyReady)
	d.log.Info("proxyd ready", zap.String("version", version.Version), zap.Int("components", len(d.comps)))

	beat := d.live.Register("daemon", 5*time.Second)
	wdInterval, _ := sd.SdWatchdogEnabled(false)
	tick := time.Second
	if wdInterval > 0 && wdInterval/2 < tick {
		tick = wdInterval / 2
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var lastWD time.Time
	for {
		select {
		case <-ctx.Done():
			return d.shutdown()
		case err := <-serveErr:
			// The HTTP server died under us: that is a hard failure, let systemd restart us.
			d.log.Error("http server stopped", errField(err))
			_ = d.shutdown()
			return fmt.Errorf("http server: %w", err)
		case <-reload:
			d.reload()
		case now := <-ticker.C:
			beat.Beat()
			if wdInterval > 0 && now.Sub(lastWD) >= wdInterval/2 {
				if err := d.live.Check(); err != nil {
					// Withholding the ping lets systemd restart a hung daemon.
					d.log.Error("withholding watchdog ping", errField(err))
				} else {
					d.notify(sd.SdNotifyWatchdog)
					lastWD = now
				}
			}
		}
	}
}

func (d *Daemon) shutdown() error {
	d.setPhase("stopping")
	d.notify(sd.SdNotifyStopping)
	timeout := d.config().ShutdownTimeout.D()
	d.log.Info("shutting down", zap.Duration("timeout", timeout))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d.stopComponents(ctx, d.comps)
	hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
	defer hcancel()
	if err := d.srv.Shutdown(hctx); err != nil {
		_ = d.srv.Close()
	}
	if ctx.Err() != nil {
		d.log.Warn("shutdown timeout reached before everything drained", zap.Duration("timeout", timeout))
	}
	d.closeJournal()
	d.log.Info("proxyd stopped")
	return nil
}

// closeJournal flushes the events journal to disk, once the components
// that record into it have stopped.
func (d *Daemon) closeJournal() {
	if err := d.events.Close(); err != nil {
		d.log.Warn("events journal not flushed to disk: the last events may be lost on a power cut", zap.Error(err))
	}
}

// stopComponents stops cs in reverse order, all under the shutdown deadline.
func (d *Daemon) stopComponents(ctx context.Context, cs []Component) {
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		t0 := time.Now()
		if err := c.Stop(ctx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Warn("component did not stop cleanly", zap.String("component", c.Name()), errField(err))
			continue
		}
		d.log.Info("component stopped", zap.String("component", c.Name()), zap.Duration("took", time.Since(t0)))
	}
}

// reload re-reads the config file and applies what can change live. A bad
// file leaves the running config in place.
func (d *Daemon) reload() {
	d.notify(reloadingState())
	defer d.notify(sd.SdNotifyReady)
	old := d.config()
	cfg, err := d.opts.Load(old.Path)
	if err != nil {
		d.reloads.WithLabelValues("error").Inc()
		d.log.Error("config reload failed; keeping the running config", zap.String("path", old.Path), errField(err))
		return
	}
	var applied, restart []string
	if cfg.Log.Level != old.Log.Level && d.opts.Level != nil {
		if err := logging.SetLevel(*d.opts.Level, cfg.Log.Level); err == nil {
			applied = append(applied, "log.level")
		}
	}
	if cfg.Log.RateLimitPerSecond != old.Log.RateLimitPerSecond && d.limiter != nil {
		d.limiter.SetPerSecond(cfg.Log.RateLimitPerSecond)
		applied = append(applied, "log.rate_limit_per_second")
	}
	if cfg.Log.Format != old.Log.Format {
		restart = append(restart, "log.format")
	}
	if cfg.HTTP.Listen != old.HTTP.Listen {
		restart = append(restart, "http.listen")
	}
	if cfg.Log.EventsFileMiB != old.Log.EventsFileMiB {
		restart = append(restart, "log.events_file_mib")
	}
	if cfg.HTTP.Pprof != old.HTTP.Pprof {
		restart = append(restart, "http.pprof")
	}
	if cfg.HTTP.WriteTimeout != old.HTTP.WriteTimeout {
		restart = append(restart, "http.write_timeout")
	}
	if cfg.HTTP.MaxAPIRequests != old.HTTP.MaxAPIRequests {
		restart = append(restart, "http.max_api_requests")
	}
	if cfg.ShutdownTimeout != old.ShutdownTimeout {
		applied = append(applied, "shutdown_timeout")
	}
	// The same preflight as at start. The token file is re-read every
	// reload so a rotated token takes effect; a bad one keeps the old token.
	if pre, err := Check(cfg); err != nil {
		d.log.Error("API token not reloaded; keeping the previous one", errField(err))
		cfg.HTTP.APITokenFile = old.HTTP.APITokenFile
	} else {
		d.token.set(pre.token)
		d.logWarnings(pre.Warnings)
		if cfg.HTTP.APITokenFile != old.HTTP.APITokenFile {
			applied = append(applied, "http.api_token_file")
		}
	}
	for _, c := range d.comps {
		r, ok := c.(Reloader)
		if !ok {
			continue
		}
		need, err := r.Reload(cfg)
		if err != nil {
			d.log.Error("component kept its previous config", zap.String("component", c.Name()), errField(err))
			continue
		}
		restart = append(restart, need...)
	}
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.reloads.WithLabelValues("ok").Inc()
	d.log.Info("config reloaded", zap.String("path", cfg.Path), zap.Strings("applied", applied))
	if len(restart) > 0 {
		d.log.Warn("config changes need a restart to take effect (systemctl restart proxyd)", zap.Strings("keys", restart))
	}
}

// reloadingState carries MONOTONIC_USEC, which systemd 253+ requires to match
// a reload to its READY=1.
func reloadingState() string {
	return fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sd.SdNotifyReloading, monotonicUsec())
}

// runLogFlusher starts the goroutine that writes the log rate limiter's
// summaries every LogSummaryInterval. The returned func stops it, waits for
// it and writes a last summary, so nothing suppressed goes unreported.
func (d *Daemon) runLogFlusher() (stop func()) {
	if d.limiter == nil {
		return func() {}
	}
	every := d.opts.LogSummaryInterval
	if every <= 0 {
		every = logging.DefaultSummaryInterval
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				d.limiter.Flush()
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		d.limiter.Flush()
	}
}
