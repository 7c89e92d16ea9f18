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

// APIExtension lets the wiring show another component's view of each GPU
// (the switcher's) in the GPU routes. It is fixed when the routes are
// registered: nothing is installed into a running component.
type APIExtension struct {
	// Annotate returns extra fields for one GPU, shown under "switch" in
	// GET /api/v1/gpus and /api/v1/gpus/{uuid}; nil shows nothing. It runs
	// inside the request and must not block.
	Annotate func(uuid string) any
	// AfterResume runs after a successful probe in POST /resume (or at once
	// when the GPU was not unhealthy). An error keeps the request from
	// succeeding: the answer is 409 with its message.
	AfterResume func(ctx context.Context, uuid string) error
}

// annotatedGPU is a GPU with the extension's extra fields.
type annotatedGPU struct {
	GPU
	Switch any `json:"switch,omitempty"`
}

// annotatedNode is a Node whose GPUs carry the extension's extra fields; its GPUs
// field hides the embedded one.
type annotatedNode struct {
	Node
	GPUs []annotatedGPU `json:"gpus"`
}

func (h APIExtension) gpu(g GPU) annotatedGPU {
	a := annotatedGPU{GPU: g}
	if h.Annotate != nil {
		a.Switch = h.Annotate(g.UUID)
	}
	return a
}

func (h APIExtension) node(n Node) annotatedNode {
	out := annotatedNode{Node: n, GPUs: make([]annotatedGPU, len(n.GPUs))}
	for i, g := range n.GPUs {
		out.GPUs[i] = h.gpu(g)
	}
	return out
}

// RegisterAPI registers the GPU routes without an extension:
//
//	GET  /api/v1/gpus                 the node: driver, every GPU, problems
//	GET  /api/v1/gpus/{uuid}          one GPU: inventory, latest telemetry, health
//	POST /api/v1/gpus/{uuid}/resume   probe an unhealthy GPU and return it to service
func (c *Component) RegisterAPI(mux *http.ServeMux) { c.RegisterAPIWith(mux, APIExtension{}) }

// RegisterAPIWith registers the GPU routes; every GPU also shows ext's
// fields and a resume goes through ext.AfterResume.
func (c *Component) RegisterAPIWith(mux *http.ServeMux, ext APIExtension) {
	api := &gpuAPI{c: c, ext: ext}
	mux.HandleFunc("GET /api/v1/gpus", api.listGPUs)
	mux.HandleFunc("GET /api/v1/gpus/{uuid}", api.getGPU)
	mux.HandleFunc("POST /api/v1/gpus/{uuid}/resume", api.resumeGPU)
}

// gpuAPI serves the GPU routes of one component with one extension.
type gpuAPI struct {
	c   *Component
	ext APIExtension
}

// manager answers 503 and returns nil when there is no Manager to ask.
func (a *gpuAPI) managerOr503(w http.ResponseWriter) *Manager {
	m, why := a.c.unavailableReason()
	if m == nil {
		apijson.Error(w, http.StatusServiceUnavailable, "%v", why)
	}
	return m
}

func (a *gpuAPI) listGPUs(w http.ResponseWriter, _ *http.Request) {
	if m := a.managerOr503(w); m != nil {
		apijson.Write(w, http.StatusOK, a.ext.node(m.Node()))
	}
}

func (a *gpuAPI) getGPU(w http.ResponseWriter, r *http.Request) {
	m := a.managerOr503(w)
	if m == nil {
		return
	}
	uuid := r.PathValue("uuid")
	g, err := m.GPU(uuid)
	if err != nil {
		apijson.Error(w, http.StatusNotFound, "no GPU with UUID %q on this node (GET /api/v1/gpus lists them)", uuid)
		return
	}
	apijson.Write(w, http.StatusOK, a.ext.gpu(g))
}

func (a *gpuAPI) resumeGPU(w http.ResponseWriter, r *http.Request) {
	m := a.managerOr503(w)
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
	if a.ext.AfterResume != nil {
		if err := a.ext.AfterResume(ctx, uuid); err != nil {
			apijson.Error(w, http.StatusConflict, "GPU probed fit for work, but it was not returned to service: %v", err)
			return
		}
	}
	g, _ := m.GPU(uuid)
	apijson.Write(w, http.StatusOK, a.ext.gpu(g))
}
