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

// RegisterAPI implements the daemon's APIProvider:
//
//	GET  /api/v1/gpus                 the node: driver, every GPU, problems
//	GET  /api/v1/gpus/{uuid}          one GPU: inventory, latest telemetry, health
//	POST /api/v1/gpus/{uuid}/resume   probe an unhealthy GPU and return it to service
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
		apijson.Write(w, http.StatusOK, m.Node())
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
	apijson.Write(w, http.StatusOK, g)
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
	g, _ := m.GPU(uuid)
	apijson.Write(w, http.StatusOK, g)
}
