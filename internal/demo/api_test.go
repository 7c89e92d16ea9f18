package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashgate/proxyd/internal/apijson"
)

func TestMarkSimulated(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"indented object", "{\n  \"workers\": []\n}\n", "{\n  \"simulated\": true,\n  \"workers\": []\n}\n"},
		{"compact object", `{"a":1}`, "{\n  \"simulated\": true,\"a\":1}"},
		{"empty object", "{}\n", "{\"simulated\": true}\n"},
		{"leading space", " {\"a\":1}", "{\n  \"simulated\": true,\"a\":1}"},
		{"already marked", `{"simulated":false,"a":1}`, `{"simulated":false,"a":1}`},
		{"array", `[1,2]`, `[1,2]`},
		{"null", `null`, `null`},
		{"not JSON", `hello {`, `hello {`},
		{"empty", ``, ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(markSimulated([]byte(tc.in)))
			if got != tc.want {
				t.Errorf("markSimulated(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if json.Valid([]byte(tc.in)) && !json.Valid([]byte(got)) {
				t.Errorf("valid JSON became invalid: %q", got)
			}
		})
	}
}

func TestLabelSimulated(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/things", func(w http.ResponseWriter, _ *http.Request) {
		apijson.Write(w, http.StatusOK, map[string]any{"things": []int{1, 2}})
	})
	mux.HandleFunc("GET /api/v1/teapot", func(w http.ResponseWriter, _ *http.Request) {
		apijson.Error(w, http.StatusTeapot, "short and stout")
	})
	mux.HandleFunc("GET /api/v1/text", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "5")
		_, _ = io.WriteString(w, "plain")
	})
	mux.HandleFunc("GET /api/v1/silent", func(http.ResponseWriter, *http.Request) {})
	srv := httptest.NewServer(labelSimulated(mux))
	defer srv.Close()

	tests := []struct {
		path   string
		status int
		marked bool
		body   string
	}{
		{"/api/v1/things", 200, true, ""},
		{"/api/v1/teapot", http.StatusTeapot, true, ""},
		{"/api/v1/text", 200, false, "plain"},
		{"/api/v1/silent", 200, false, ""},
		{"/api/v1/missing", 404, false, "404 page not found\n"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get(SimulatedHeader); got != "pool, miners, gpus" {
				t.Errorf("%s = %q", SimulatedHeader, got)
			}
			if tc.marked {
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil || m["simulated"] != true {
					t.Errorf("body not marked simulated: %s (%v)", b, err)
				}
				if resp.Header.Get("Content-Length") != "" && resp.ContentLength != int64(len(b)) {
					t.Errorf("Content-Length %d for a body of %d bytes", resp.ContentLength, len(b))
				}
			} else if string(b) != tc.body {
				t.Errorf("body %q, want %q unchanged", b, tc.body)
			}
		})
	}
}
