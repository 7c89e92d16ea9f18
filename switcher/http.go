package switcher

import (
	"errors"
	"io"
	"net/http"

	"github.com/hashgate/proxyd/internal/apijson"
)

// maxBodyBytes bounds a request body (the daemon's own limit for the API
// is the same; a contract with 4,096 pinned GPUs is about 200 KB).
const maxBodyBytes = 1 << 20

// RegisterAPI implements the daemon's APIProvider:
//
//	GET    /api/v1/contracts               every contract with desired, assigned, serving, shortfall
//	GET    /api/v1/contracts/{id}          one contract
//	PUT    /api/v1/contracts/{id}          add or replace an API contract (persisted before the answer)
//	DELETE /api/v1/contracts/{id}          remove an API contract; its GPUs drain back to mining
//	POST   /api/v1/gpus/{uuid}/cordon      {"reason": "...", "force": false}
//	POST   /api/v1/gpus/{uuid}/uncordon
//	GET    /api/v1/switcher                summary: GPUs per state, contracts, demand feed, readiness
//
// Bodies are JSON objects of at most maxBodyBytes (413 past it) whose
// field names are spelled exactly and appear once; errors quote at most a
// short prefix of the input.
//
// GET /api/v1/gpus and POST /api/v1/gpus/{uuid}/resume stay the GPU
// component's; the wiring (internal/components) adds the switcher's
// GPUStatus to the first and its Resume to the second through an
// nvml.APIExtension when it registers them. Its decisions
// and transitions are in the daemon's journal, GET
// /api/v1/events?component=switcher (subject: the GPU UUID, or the
// contract id for decisions about a contract).
func (c *Component) RegisterAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/contracts", c.listContracts)
	mux.HandleFunc("GET /api/v1/contracts/{id}", c.getContract)
	mux.HandleFunc("PUT /api/v1/contracts/{id}", c.putContract)
	mux.HandleFunc("DELETE /api/v1/contracts/{id}", c.deleteContract)
	mux.HandleFunc("POST /api/v1/gpus/{uuid}/cordon", c.cordon)
	mux.HandleFunc("POST /api/v1/gpus/{uuid}/uncordon", c.uncordon)
	mux.HandleFunc("GET /api/v1/switcher", c.summary)
}

// switcherOr503 answers 503 with the reason and returns nil while there is
// no switcher.
func (c *Component) switcherOr503(w http.ResponseWriter) *Switcher {
	sw := c.Switcher()
	if sw == nil {
		apijson.Error(w, http.StatusServiceUnavailable, "the switcher is not running: %v", c.Ready())
	}
	return sw
}

// writeErr maps the switcher's errors to statuses.
func writeErr(w http.ResponseWriter, err error) {
	var fe *FieldError
	switch {
	case errors.Is(err, ErrBelowFloor) && errors.As(err, &fe):
		apijson.Write(w, http.StatusUnprocessableEntity, apijson.ErrorBody{Error: err.Error(), Field: fe.Field})
	case errors.As(err, &fe):
		apijson.FieldError(w, fe.Field, "%s", err.Error())
	case errors.Is(err, ErrUnknownGPU), errors.Is(err, ErrUnknownContract):
		apijson.Error(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrNotAPIContract), errors.Is(err, ErrStillHeld), errors.Is(err, ErrTooManyContracts):
		apijson.Error(w, http.StatusConflict, "%v", err)
	case errors.Is(err, ErrNotPersisted):
		apijson.Error(w, http.StatusServiceUnavailable, "%v", err)
	default:
		apijson.Error(w, http.StatusBadRequest, "%v", err)
	}
}

// readBody reads a request body of at most maxBodyBytes; past it the
// client gets 413 and ok is false.
func readBody(w http.ResponseWriter, r *http.Request) (b []byte, ok bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		apijson.Error(w, http.StatusRequestEntityTooLarge, "the request body is larger than %d bytes: a contract or request is a small JSON object", tooBig.Limit)
		return nil, false
	case err != nil:
		apijson.Error(w, http.StatusBadRequest, "reading the request body: %s", clip(err.Error()))
		return nil, false
	}
	return b, true
}

// pathContractID returns the {id} of the URL, or answers 404 (such an id
// cannot exist) and returns false.
func pathContractID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !contractID.MatchString(id) {
		apijson.Error(w, http.StatusNotFound, "%v: %s is not a contract id (1 to 128 letters, digits, '.', '_' or '-')", ErrUnknownContract, quote(id))
		return "", false
	}
	return id, true
}

// pathGPU returns the {uuid} of the URL, or answers 404 (no GPU has so
// long a UUID) and returns false.
func pathGPU(w http.ResponseWriter, r *http.Request) (string, bool) {
	uuid := r.PathValue("uuid")
	if len(uuid) > maxGPUUUID {
		apijson.Error(w, http.StatusNotFound, "%v: %s", ErrUnknownGPU, quote(uuid))
		return "", false
	}
	return uuid, true
}

func (c *Component) listContracts(w http.ResponseWriter, _ *http.Request) {
	if sw := c.switcherOr503(w); sw != nil {
		apijson.Write(w, http.StatusOK, map[string]any{"contracts": sw.Contracts()})
	}
}

func (c *Component) getContract(w http.ResponseWriter, r *http.Request) {
	sw := c.switcherOr503(w)
	if sw == nil {
		return
	}
	id, ok := pathContractID(w, r)
	if !ok {
		return
	}
	st, err := sw.ContractStatus(id)
	if err != nil {
		writeErr(w, err)
		return
	}
	apijson.Write(w, http.StatusOK, st)
}

func (c *Component) putContract(w http.ResponseWriter, r *http.Request) {
	sw := c.switcherOr503(w)
	if sw == nil {
		return
	}
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	// A malformed path id is the id field's error (400), as before.
	ct, err := decodeContract(b, r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	st, created, err := sw.PutContract(ct)
	if err != nil {
		writeErr(w, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	apijson.Write(w, code, st)
}

func (c *Component) deleteContract(w http.ResponseWriter, r *http.Request) {
	sw := c.switcherOr503(w)
	if sw == nil {
		return
	}
	id, ok := pathContractID(w, r)
	if !ok {
		return
	}
	if err := sw.DeleteContract(id); err != nil {
		writeErr(w, err)
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"deleted": id})
}

// cordonBody is POST /cordon's body.
type cordonBody struct {
	Reason *string `json:"reason"`
	Force  bool    `json:"force"`
}

func (c *Component) cordon(w http.ResponseWriter, r *http.Request) {
	sw := c.switcherOr503(w)
	if sw == nil {
		return
	}
	uuid, ok := pathGPU(w, r)
	if !ok {
		return
	}
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	var body cordonBody
	if err := decodeJSON(b, &body, []string{"reason", "force"}); err != nil {
		writeErr(w, err)
		return
	}
	if body.Reason == nil {
		apijson.FieldError(w, "reason", "reason: required: say why the GPU is cordoned")
		return
	}
	st, err := sw.Cordon(uuid, *body.Reason, body.Force)
	if err != nil {
		writeErr(w, err)
		return
	}
	apijson.Write(w, http.StatusOK, st)
}

func (c *Component) uncordon(w http.ResponseWriter, r *http.Request) {
	sw := c.switcherOr503(w)
	if sw == nil {
		return
	}
	uuid, ok := pathGPU(w, r)
	if !ok {
		return
	}
	st, err := sw.Uncordon(uuid)
	if err != nil {
		writeErr(w, err)
		return
	}
	apijson.Write(w, http.StatusOK, st)
}

func (c *Component) summary(w http.ResponseWriter, _ *http.Request) {
	sw := c.switcherOr503(w)
	if sw == nil {
		return
	}
	sum := sw.Summary()
	apijson.Write(w, http.StatusOK, map[string]any{
		"summary":      sum,
		"summary_line": sum.String(),
		"demand_feed":  sw.FeedStatus(),
	})
}
