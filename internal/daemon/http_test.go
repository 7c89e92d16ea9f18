package daemon

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// routeComponent is a component that only serves API routes.
type routeComponent struct {
	name   string
	routes map[string]http.HandlerFunc
}

func (c *routeComponent) Name() string                { return c.name }
func (c *routeComponent) Start(context.Context) error { return nil }
func (c *routeComponent) Ready() error                { return nil }
func (c *routeComponent) Stop(context.Context) error  { return nil }
func (c *routeComponent) RegisterAPI(mux *http.ServeMux) {
	for p, h := range c.routes {
		mux.HandleFunc(p, h)
	}
}

// writeResult is what a large answer's handler saw.
type writeResult struct {
	written int64
	err     error
	took    time.Duration
}

// TestWriteTimeoutCutsOffANonReader: a token holder that asks for a large
// answer and never reads it is cut off after [http] write_timeout; the
// handler's write fails and it returns, instead of holding the answer (and
// a goroutine) for as long as the client likes. Real TCP on loopback.
func TestWriteTimeoutCutsOffANonReader(t *testing.T) {
	const total = 256 << 20 // far more than socket buffers hold
	res := make(chan writeResult, 1)
	comp := &routeComponent{name: "big", routes: map[string]http.HandlerFunc{
		"GET /api/v1/big": func(w http.ResponseWriter, _ *http.Request) {
			t0 := time.Now()
			chunk := make([]byte, 64<<10)
			var n int64
			var err error
			for n < total {
				var k int
				k, err = w.Write(chunk)
				n += int64(k)
				if err != nil {
					break
				}
			}
			res <- writeResult{written: n, err: err, took: time.Since(t0)}
		},
	}}
	h := startWith(t, harnessOptions{httpExtra: "write_timeout = \"300ms\"\n"}, comp)

	conn, err := net.Dial("tcp", h.d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(conn, "GET /api/v1/big HTTP/1.1\r\nHost: proxyd\r\nAuthorization: Bearer "+testToken+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing.
	var r writeResult
	select {
	case r = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler is still writing to a client that never reads, 30 s after a 300 ms write timeout")
	}
	if r.err == nil || r.written >= total {
		t.Fatalf("the whole %d-byte answer was written (%d bytes, err %v) to a client that never read", total, r.written, r.err)
	}
	t.Logf("cut off after %d bytes in %s (write_timeout 300ms): %v", r.written, r.took.Round(time.Millisecond), r.err)

	// The server closed the connection (what the kernel still has to send
	// is no longer proxyd's): only the scrape's own connection stays open.
	for i := 0; ; i++ {
		_, m := h.get(t, "/metrics", "")
		if strings.Contains(m["body"].(string), "\nproxyd_http_connections 1\n") {
			break
		}
		if i > 400 {
			t.Fatalf("the cut-off connection is still open:\n%s", grepLines(m["body"].(string), "proxyd_http_connections"))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAPIRequestsInFlightAreBounded: past max_api_requests, requests are
// answered 503 at once with Retry-After; freed slots serve again.
func TestAPIRequestsInFlightAreBounded(t *testing.T) {
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	comp := &routeComponent{name: "hold", routes: map[string]http.HandlerFunc{
		"GET /api/v1/hold": func(w http.ResponseWriter, _ *http.Request) {
			entered <- struct{}{}
			<-release
			w.WriteHeader(http.StatusOK)
		},
	}}
	h := startWith(t, harnessOptions{httpExtra: "max_api_requests = 2\n"}, comp)
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, h.base+"/api/v1/hold", nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for i := 0; i < 2; i++ {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("held requests never reached the handler")
		}
	}
	req, _ := http.NewRequest(http.MethodGet, h.base+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "max_api_requests") {
		t.Errorf("third request = %d Retry-After %q %s; want 503 with Retry-After naming max_api_requests",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// Unauthenticated requests are refused before they take a slot.
	if code, _ := h.get(t, "/api/v1/status", ""); code != http.StatusUnauthorized {
		t.Errorf("without token while full = %d, want 401", code)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("held request = %d, want 200", c)
		}
	}
	if code, _ := h.get(t, "/api/v1/status", testToken); code != http.StatusOK {
		t.Errorf("after the slots freed = %d, want 200", code)
	}
}

// TestOversizeHeadersRefused: a 64 KiB header block gets 431, not a
// megabyte of buffering per connection.
func TestOversizeHeadersRefused(t *testing.T) {
	h := start(t)
	conn, err := net.Dial("tcp", h.d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET /healthz HTTP/1.1\r\nHost: proxyd\r\nX-Pad: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers = %d, want 431", resp.StatusCode)
	}
}
