package apijson

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeBody(t *testing.T) {
	type body struct {
		Reason string `json:"reason"`
		Force  bool   `json:"force"`
	}
	tests := []struct {
		name, in string
		ok       bool
		wantErr  string
	}{
		{"valid", `{"reason":"fan swap","force":true}`, true, ""},
		{"unknown field", `{"reason":"x","forse":true}`, false, "unknown field"},
		{"not json", `reason=x`, false, "bad JSON body"},
		{"two values", `{"reason":"a"}{"reason":"b"}`, false, "more than one"},
		{"too large", `{"reason":"` + strings.Repeat("x", 2048) + `"}`, false, "too large"},
		{"empty", ``, false, "EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.in))
			var b body
			ok := DecodeBody(rec, req, 1024, &b)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (response %s)", ok, tc.ok, rec.Body)
			}
			if tc.ok {
				return
			}
			var e ErrorBody
			if rec.Code != http.StatusBadRequest || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, tc.wantErr) {
				t.Errorf("response %d %s, want 400 with %q", rec.Code, rec.Body, tc.wantErr)
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	rec := httptest.NewRecorder()
	FieldError(rec, "gpus", "must be at least %d", 1)
	var e ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != 400 || e.Field != "gpus" || e.Error != "must be at least 1" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q", ct)
	}
}
