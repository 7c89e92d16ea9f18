package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/hashgate/proxyd/internal/apijson"
	"github.com/hashgate/proxyd/internal/daemon"
)

// SimulatedHeader is set on every /api/v1 response of a demo site; its value
// names the simulated parts ("pool, miners, gpus").
const SimulatedHeader = "X-Proxyd-Simulated"

// simulatedValue is the SimulatedHeader's value: what a demo site
// simulates. Everything else is proxyd's real code.
const simulatedValue = "pool, miners, gpus"

// simulatedParts lists what a demo site simulates, in the order the summary
// prints them.
func simulatedParts() []string { return []string{"pool", "miners", "gpus"} }

// labelSimulated wraps the daemon's /api/v1 handler (daemon.Options
// APIMiddleware) so that every response says it comes from a simulated site:
// the SimulatedHeader on all of them and, on a JSON object body, a top-level
// "simulated": true (added first; a body that already has the key or is not
// a JSON object is left as it is). Responses are buffered, so a handler
// cannot stream through it; the demo's routes do not.
func labelSimulated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(SimulatedHeader, simulatedValue)
		rec := &bufferedResponse{header: w.Header()}
		next.ServeHTTP(rec, r)
		body := rec.body.Bytes()
		if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			body = markSimulated(body)
			w.Header().Del("Content-Length")
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(body) // the client went away; nothing useful to do
	})
}

// bufferedResponse holds a handler's response until it returns. It shares
// the real writer's header map.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// markSimulated returns body with "simulated": true as the first key of its
// top-level JSON object. Anything else (not JSON, not an object, already
// marked) comes back unchanged.
func markSimulated(body []byte) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return body
	}
	if _, ok := top["simulated"]; ok {
		return body
	}
	i := bytes.IndexByte(body, '{')
	rest := body[i+1:]
	var out []byte
	if len(top) == 0 {
		out = append([]byte(`{"simulated": true`), rest...)
	} else {
		// Keep the body's own layout: apijson indents by two spaces.
		out = append([]byte("{\n  \"simulated\": true,"), rest...)
	}
	if !json.Valid(out) {
		return body
	}
	return out
}

// component is the demo's own daemon component: it serves GET /api/v1/demo,
// which says what is simulated, what is real and why, with the latest
// summary. It starts and stops with nothing to do.
type component struct {
	site *Site
}

// Name implements daemon.Component.
func (c *component) Name() string { return "demo" }

// Start implements daemon.Component.
func (c *component) Start(context.Context) error { return nil }

// Ready implements daemon.Component.
func (c *component) Ready() error { return nil }

// Stop implements daemon.Component.
func (c *component) Stop(context.Context) error { return nil }

// RegisterAPI implements daemon.APIProvider.
func (c *component) RegisterAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/demo", func(w http.ResponseWriter, _ *http.Request) {
		apijson.Write(w, http.StatusOK, c.site.describe())
	})
}

var _ daemon.APIProvider = (*component)(nil)

// Description is the body of GET /api/v1/demo.
type Description struct {
	Simulated bool `json:"simulated"`
	// SimulatedParts says, per simulated part, what stands in for it.
	SimulatedParts map[string]string `json:"simulated_parts"`
	// RealParts are the parts of proxyd running as they would in production.
	RealParts []string `json:"real_parts"`
	Why       string   `json:"why"`
	// Summary is the latest summary printed (nil before the first).
	Summary *Summary `json:"summary"`
}
