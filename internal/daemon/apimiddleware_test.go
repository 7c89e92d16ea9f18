package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
)

// TestAPIMiddlewareWrapsOnlyAuthenticatedAPI: Options.APIMiddleware sees
// every /api/v1 request that passed authentication (the daemon's own routes
// and the components'), and nothing else.
func TestAPIMiddlewareWrapsOnlyAuthenticatedAPI(t *testing.T) {
	dir := t.TempDir()
	tok := writeToken(t, dir, 0o600)
	cfg, err := config.Parse([]byte(fmt.Sprintf("shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n", tok)))
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	comp := &fakeComponent{name: "widgets", log: &calls}
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Wrapped", r.URL.Path)
			next.ServeHTTP(w, r)
		})
	}
	ready := make(chan struct{})
	d, err := New(cfg, zap.NewNop(), Options{
		Factories: []Factory{func(Env) (Component, error) { return comp, nil }},
		Notify: func(s string) {
			if s == "READY=1" {
				close(ready)
			}
		},
		APIMiddleware: mw,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon never ready")
	}
	base := "http://" + d.Addr().String()
	tests := []struct {
		path, token string
		status      int
		wrapped     bool
	}{
		{"/api/v1/status", testToken, 200, true},
		{"/api/v1/widgets", testToken, 200, true},
		{"/api/v1/nope", testToken, 404, true},
		{"/api/v1/status", "", 401, false},
		{"/healthz", "", 200, false},
		{"/metrics", "", 200, false},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := resp.Header.Get("X-Wrapped")
		if resp.StatusCode != tc.status || (got == tc.path) != tc.wrapped {
			t.Errorf("%s (token %v): status %d, X-Wrapped %q; want %d, wrapped %v", tc.path, tc.token != "", resp.StatusCode, got, tc.status, tc.wrapped)
		}
	}
}
