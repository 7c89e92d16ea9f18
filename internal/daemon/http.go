package daemon

import (
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/apijson"
	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/internal/statuspage"
	"github.com/hashgate/proxyd/internal/version"
)

// HTTP bounds. Every request and answer is bounded in size or time, so a
// client that stalls, or sends without end, holds at most a connection's
// buffers for a bounded time. [http] write_timeout and max_api_requests are
// in the config; these are not, as no legitimate client comes near them.
const (
	// maxAPIBody bounds every /api/v1 request body.
	maxAPIBody = 1 << 20
	// maxHeaderBytes bounds a request's header block (a bearer token and a
	// few headers take well under 1 KiB; Go's default is 1 MiB).
	maxHeaderBytes = 16 << 10
	// readHeaderTimeout, readTimeout: a request, headers and a body of at
	// most maxAPIBody, must arrive within these.
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	// idleTimeout closes kept-alive connections nobody uses.
	idleTimeout = 2 * time.Minute
	// maxMetricsInFlight bounds concurrent /metrics scrapes (503 beyond).
	maxMetricsInFlight = 4
)

// newHTTPServer builds the server for d.handler(). WriteTimeout bounds
// every answer from the end of its request's headers: a client that never
// reads is cut off then, whatever the answer's size. A route that
// legitimately streams longer extends its own deadline with
// http.ResponseController.SetWriteDeadline; net/http/pprof does so for a
// profile's duration.
func (d *Daemon) newHTTPServer() *http.Server {
	open := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "proxyd_http_connections",
		Help: "Open connections to the HTTP listener (health, metrics, API).",
	})
	d.reg.MustRegister(open)
	return &http.Server{
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				open.Inc()
			case http.StateClosed, http.StateHijacked:
				open.Dec()
			}
		},
		Handler:           d.handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      d.cfg.HTTP.WriteTimeout.D(),
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(d.log.Named("http")),
	}
}

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.HandleFunc("GET /readyz", d.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{
		Registry:            d.reg,
		ErrorLog:            zap.NewStdLog(d.log.Named("metrics")),
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: maxMetricsInFlight,
	}))
	if d.cfg.HTTP.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/status", d.status)
	api.HandleFunc("GET /api/v1/events", d.listEvents)
	api.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		apijson.Error(w, http.StatusNotFound, "no such API route: %s %s", r.Method, r.URL.Path)
	})
	for _, c := range d.comps {
		if p, ok := c.(APIProvider); ok {
			p.RegisterAPI(api)
		}
	}
	var apiHandler http.Handler = api
	if d.opts.APIMiddleware != nil {
		apiHandler = d.opts.APIMiddleware(api)
	}
	mux.Handle("/api/v1/", d.authenticate(limitInFlight(d.cfg.HTTP.MaxAPIRequests, http.MaxBytesHandler(apiHandler, maxAPIBody))))
	statuspage.Register(mux) // GET /: the status page (no data without the token)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apijson.Error(w, http.StatusNotFound, "not found: %s (try /, /healthz, /readyz, /metrics, /api/v1/status)", r.URL.Path)
	})
	return mux
}

// authenticate lets a request through only with the configured bearer token.
func (d *Daemon) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, reason := d.token.check(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="proxyd"`)
			apijson.Error(w, http.StatusUnauthorized, "%s", reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitInFlight serves at most n requests at once and answers the rest 503
// at once, so a few token holders that stop reading cannot make the API
// hold an unbounded number of answers.
func limitInFlight(n int, next http.Handler) http.Handler {
	slots := make(chan struct{}, max(n, 1))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			apijson.Error(w, http.StatusServiceUnavailable,
				"%d API requests are already being served ([http] max_api_requests); retry shortly", cap(slots))
		}
	})
}

func (d *Daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := d.live.Check(); err != nil {
		apijson.Write(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "reason": err.Error()})
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is the /readyz body: every component's state, "ok" or why not.
type readiness struct {
	Ready      bool              `json:"ready"`
	Phase      string            `json:"phase"`
	Components map[string]string `json:"components"`
	NotReady   []string          `json:"not_ready,omitempty"`
	// Notes are conditions worth an operator's look that do not make
	// proxyd unready, each prefixed with its component's name.
	Notes []string `json:"notes,omitempty"`
}

func (d *Daemon) readiness() readiness {
	d.mu.Lock()
	phase := d.phase
	d.mu.Unlock()
	rd := readiness{Ready: phase == "running", Phase: phase, Components: map[string]string{}}
	if phase != "running" {
		rd.NotReady = append(rd.NotReady, "daemon: "+phase)
	}
	for _, c := range d.comps {
		if err := c.Ready(); err != nil {
			rd.Components[c.Name()] = err.Error()
			rd.NotReady = append(rd.NotReady, c.Name()+": "+err.Error())
			rd.Ready = false
		} else {
			rd.Components[c.Name()] = "ok"
		}
		if n, ok := c.(ReadyNoter); ok {
			for _, note := range n.ReadyNotes() {
				rd.Notes = append(rd.Notes, c.Name()+": "+note)
			}
		}
	}
	sort.Strings(rd.NotReady)
	return rd
}

func (d *Daemon) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := d.readiness()
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	apijson.Write(w, code, rd)
}

func (d *Daemon) status(w http.ResponseWriter, _ *http.Request) {
	cfg := d.config()
	apijson.Write(w, http.StatusOK, map[string]any{
		"version":    version.Version,
		"commit":     version.Commit,
		"go_version": version.GoVersion(),
		"started_at": d.start.UTC().Format(time.RFC3339),
		"uptime_s":   int64(time.Since(d.start).Seconds()),
		"config":     cfg.Path,
		"readiness":  d.readiness(),
	})
}

// listEvents serves the journal: ?component=, ?subject=, ?after=SEQ, ?limit=N
// (default 200, at most events.DefaultSize). A durable journal serves
// events of earlier boots too; "durable" says whether this one is, "boot"
// is this process's boot id and "journal" what it holds.
func (d *Daemon) listEvents(w http.ResponseWriter, r *http.Request) {
	q := events.Query{Component: r.URL.Query().Get("component"), Subject: r.URL.Query().Get("subject"), Limit: 200}
	for _, p := range []struct {
		name string
		dst  func(uint64)
	}{
		{"after", func(v uint64) { q.After = v }},
		{"limit", func(v uint64) { q.Limit = int(min(v, events.DefaultSize)) }},
	} {
		raw := r.URL.Query().Get(p.name)
		if raw == "" {
			continue
		}
		v, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			apijson.FieldError(w, p.name, "%s must be a non-negative integer, got %q", p.name, raw)
			return
		}
		p.dst(v)
	}
	st := d.events.Status()
	apijson.Write(w, http.StatusOK, map[string]any{"events": d.events.List(q), "durable": st.Durable, "boot": st.Boot, "journal": st})
}
