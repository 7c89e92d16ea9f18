package switcher

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/switcher/workload"
)

// eventually polls cond (real time: for the nvml event goroutine) for up
// to 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: never happened", what)
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// fakeFeed is a demand feed whose answer the test sets.
type fakeFeed struct {
	srv       *httptest.Server
	tokenFile string

	mu   sync.Mutex
	code int
	body string
	auth string
}

func newFakeFeed(t *testing.T) *fakeFeed {
	t.Helper()
	f := &fakeFeed{code: 200, body: "[]"}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.auth = r.Header.Get("Authorization")
		w.WriteHeader(f.code)
		_, _ = w.Write([]byte(f.body))
	}))
	t.Cleanup(f.srv.Close)
	f.tokenFile = filepath.Join(t.TempDir(), "feed-token")
	if err := os.WriteFile(f.tokenFile, []byte("feed-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeFeed) set(code int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code, f.body = code, body
}

func (f *fakeFeed) lastAuth() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auth
}

// simDrivers registers the simulated runtime, as the wiring does.
func simDrivers(tb testing.TB) *workload.Registry {
	tb.Helper()
	r := workload.NewRegistry()
	err := r.Register(workload.KindSimulated, workload.Driver{
		New: func(env workload.Env) (workload.Runtime, error) {
			return workload.NewSim(workload.SimOptions{Server: env.Sim, Now: env.Now}), nil
		},
		SimulatedOnly: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
