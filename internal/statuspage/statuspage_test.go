package statuspage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestRegister(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "other", http.StatusNotFound) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tests := []struct {
		method, path string
		code         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html", `<script src="/ui/app.js"`},
		{"GET", "/ui/app.js", 200, "text/javascript", "Bearer "},
		{"GET", "/ui/style.css", 200, "text/css", "prefers-color-scheme"},
		{"GET", "/index.html", 404, "", "other"}, // only "/" exactly
		{"POST", "/", 404, "", "other"},          // only GET is the page's
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
			continue
		}
		if tt.ctype != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.ctype) {
			t.Errorf("%s: Content-Type %q", tt.path, resp.Header.Get("Content-Type"))
		}
		if tt.code == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "connect-src 'self'") {
			t.Errorf("%s: no same-origin CSP: %q", tt.path, resp.Header.Get("Content-Security-Policy"))
		}
		if !strings.Contains(string(b), tt.body) {
			t.Errorf("%s: body lacks %q", tt.path, tt.body)
		}
	}
}

// TestNoExternalAssets keeps the page working on a site without internet:
// nothing it loads may come from another origin.
func TestNoExternalAssets(t *testing.T) {
	for _, name := range []string{"assets/index.html", "assets/app.js", "assets/style.css"} {
		b, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`(?i)(src|href)=["']?(https?:)?//|url\(["']?(https?:)?//|@import|fetch\(["']https?:`).Find(b); m != nil {
			t.Errorf("%s loads something from another origin: %q", name, m)
		}
	}
}
