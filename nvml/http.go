package nvml

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashgate/proxyd/internal/apijson"
)

// resumeTimeout bounds a resume request: the probe waits for the event
// loop (one event wait) and one telemetry read.
const resumeTimeout = 30 * time.Second

// APIHooks let another component (the switcher) take part in the GPU
// routes without registering them a second time.
type APIHooks struct {
	// Annotate returns extra fields for one GPU, shown under "switch" in
	// GET /api/v1/gpus and /api/v1/gpus/{uuid}; nil shows nothing. It runs
	// inside the request and must not block.
	Annotate func(uuid string) any
	// AfterResume runs after a successful probe in POST /resume (or at once
	// when the GPU was not unhealthy). An error keeps the request from
	// succeeding: the answer is 409 with its message.
	AfterResume func(ctx context.Context, uuid string) error
}

// SetAPIHooks installs hooks (the zero value removes them).
func (c *Component) SetAPIHooks(h APIHooks) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hooks = h
}

func (c *Component) apiHooks() APIHooks {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hooks
}

// annotatedGPU is a GPU with the hooks' extra fields.
type annotatedGPU struct {
	GPU
	Switch any `json:"switch,omitempty"`
}

// annotatedNode is a Node whose GPUs carry the hooks' extra fields; its GPUs
// field hides the embedded one.
type annotatedNode struct {
	Node
	GPUs []annotatedGPU `json:"gpus"`
}

func (h APIHooks) gpu(g GPU) annotatedGPU {
	a := annotatedGPU{GPU: g}
	if h.Annotate != nil {
		a.Switch = h.Annotate(g.UUID)
	}
	return a
}

func (h APIHooks) node(n Node) annotatedNode {
	out := annotatedNode{Node: n, GPUs: make([]annotatedGPU, len(n.GPUs))}
	for i, g := range n.GPUs {
		out.GPUs[i] = h.gpu(g)
	}
	return out
}

// RegisterAPI implements the daemon's APIProvider:
//
//	GET  /api/v1/gpus                 the node: driver, every GPU, problems
//	GET  /api/v1/gpus/{uuid}          one GPU: inventory, latest telemetry, health
//	POST /api/v1/gpus/{uuid}/resume   probe an unhealthy GPU and return it to service
//
// With APIHooks installed, every GPU also shows the hook's fields and a
// resume goes through AfterResume.
func (c *Component) RegisterAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/gpus", c.listGPUs)
	mux.HandleFunc("GET /api/v1/gpus/{uuid}", c.getGPU)
	mux.HandleFunc("POST /api/v1/gpus/{uuid}/resume", c.resumeGPU)
}

// manager answers 503 and returns nil when there is no Manager to ask.
func (c *Component) managerOr503(w http.ResponseWriter) *Manager {
	m, why := c.unavailableReason()
	if m == nil {
		apijson.Error(w, http.StatusServiceUnavailable, "%v", why)
	}
	return m
}

func (c *Component) listGPUs(w http.ResponseWriter, _ *http.Request) {
	if m := c.managerOr503(w); m != nil {
		apijson.Write(w, http.StatusOK, c.apiHooks().node(m.Node()))
	}
}

func (c *Component) getGPU(w http.ResponseWriter, r *http.Request) {
	m := c.managerOr503(w)
	if m == nil {
		return
	}
	uuid := r.PathValue("uuid")
	g, err := m.GPU(uuid)
	if err != nil {
		apijson.Error(w, http.StatusNotFound, "no GPU with UUID %q on this node (GET /api/v1/gpus lists them)", uuid)
		return
	}
	apijson.Write(w, http.StatusOK, c.apiHooks().gpu(g))
}

func (c *Component) resumeGPU(w http.ResponseWriter, r *http.Request) {
	m := c.managerOr503(w)
	if m == nil {
		return
	}
	uuid := r.PathValue("uuid")
	ctx, cancel := context.WithTimeout(r.Context(), resumeTimeout)
	defer cancel()
	_, err := m.Resume(ctx, uuid)
	switch {
	case errors.Is(err, ErrUnknownGPU):
		apijson.Error(w, http.StatusNotFound, "no GPU with UUID %q on this node (GET /api/v1/gpus lists them)", uuid)
		return
	case errors.Is(err, ErrProbeFailed):
		apijson.Error(w, http.StatusConflict, "GPU stays unhealthy: %v", err)
		return
	case errors.Is(err, ErrNotRunning):
		apijson.Error(w, http.StatusServiceUnavailable, "%v", err)
		return
	case err != nil:
		apijson.Error(w, http.StatusServiceUnavailable, "resume did not finish: %v", err)
		return
	}
	hooks := c.apiHooks()
	if hooks.AfterResume != nil {
		if err := hooks.AfterResume(ctx, uuid); err != nil {
			apijson.Error(w, http.StatusConflict, "GPU probed fit for work, but it was not returned to service: %v", err)
			return
		}
	}
	g, _ := m.GPU(uuid)
	apijson.Write(w, http.StatusOK, hooks.gpu(g))
}
