// Package apijson holds the response conventions of proxyd's JSON API, so that
// every component answers errors the same way: a status code and
// {"error": "what is wrong"}.
package apijson

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Write sends v as JSON with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing useful to do
}

// ErrorBody is the shape of every error the API returns.
type ErrorBody struct {
	Error string `json:"error"`
	// Field names the offending request field where there is one.
	Field string `json:"field,omitempty"`
}

// Error sends {"error": msg} with the given status.
func Error(w http.ResponseWriter, status int, format string, args ...any) {
	Write(w, status, ErrorBody{Error: fmt.Sprintf(format, args...)})
}

// FieldError sends a 400 naming the request field that is wrong.
func FieldError(w http.ResponseWriter, field, format string, args ...any) {
	Write(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf(format, args...), Field: field})
}

// DecodeBody reads a JSON request body of at most maxBytes into v, refusing
// unknown fields. On failure it has already answered 400 and returns false.
func DecodeBody(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		Error(w, http.StatusBadRequest, "bad JSON body: %v", err)
		return false
	}
	if dec.More() {
		Error(w, http.StatusBadRequest, "bad JSON body: more than one JSON value")
		return false
	}
	return true
}
