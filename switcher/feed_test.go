package switcher

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/internal/fakeclock"
	"github.com/hashgate/proxyd/switcher/workload"
)

// Issue 12 #4: user:password@ or ?api_key= in demand_url showed in logs,
// in the events journal, in /api/v1/switcher and in feed fetch errors
// (Go's http client quotes the whole URL). Every surface shows it
// redacted; the feed still gets its credentials.
func TestDemandURLSecretsNeverShown(t *testing.T) {
	secrets := []string{"hunter2", "s3cretkey", "sitesecret"}
	var sawAuth, sawKey string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pw, _ := r.BasicAuth()
		sawAuth, sawKey = pw, r.URL.Query().Get("api_key")
		switch r.URL.Path {
		case "/down":
			http.Error(w, "feed is down for "+r.URL.String(), http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(w, `[{"id":"feed-ok","gpus":1,"start":%q,"end":%q,"price_usd_per_gpu_hour":2,"workload":"llm"},
				{"id":"feed-bad","gpus":0,"start":%q,"end":%q,"price_usd_per_gpu_hour":2,"workload":"llm"}]`,
				epoch.Format(time.RFC3339), epoch.Add(time.Hour).Format(time.RFC3339), epoch.Format(time.RFC3339), epoch.Add(time.Hour).Format(time.RFC3339))
		}
	}))
	t.Cleanup(srv.Close)
	withCreds := func(base, path string) string {
		return strings.Replace(base, "http://", "http://feeduser:hunter2@", 1) + path + "?api_key=s3cretkey&site=sitesecret"
	}
	// A port nothing listens on: the client's dial error quotes the URL.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	core, logs := observer.New(zapcore.DebugLevel)
	cfg := testConfig(t.TempDir())
	cfg.DemandURL = withCreds(srv.URL, "/contracts")
	sw, err := New(Options{Config: cfg, GPUs: staticGPUs{{Info: nvml.Info{UUID: "GPU-0"}}},
		Runtimes: []workload.Runtime{workload.NewSim(workload.SimOptions{})}, Clock: fakeclock.New(epoch), Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	mux := apiOver(t, sw)
	setURL := func(u string) {
		sw.mu.Lock()
		sw.cfg.DemandURL = u
		sw.mu.Unlock()
	}
	var shown []string // everything an operator or a log shipper can see
	look := func(what string) {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/switcher", nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "redacted") {
			t.Errorf("%s: /api/v1/switcher %d, the feed URL not shown redacted: %s", what, rec.Code, rec.Body)
		}
		fs := sw.FeedStatus()
		shown = append(shown, rec.Body.String(), fs.URL, fs.Error)
	}

	ctx := context.Background()
	for _, step := range []struct {
		name, url string
		fails     bool
	}{
		{"answers", withCreds(srv.URL, "/contracts"), false},
		{"answers 503", withCreds(srv.URL, "/down"), true},
		{"unreachable", withCreds(closed, "/contracts"), true},
		{"unparseable", "http://feeduser:hunter2@127.0.0.1:bad port/c?api_key=s3cretkey", true},
		{"back", withCreds(srv.URL, "/contracts"), false},
	} {
		setURL(step.url)
		err := sw.pollFeed(ctx)
		if (err != nil) != step.fails {
			t.Fatalf("%s: poll error %v", step.name, err)
		}
		if err != nil {
			shown = append(shown, err.Error())
			if !strings.Contains(err.Error(), "demand feed") {
				t.Errorf("%s: the error lost its account: %v", step.name, err)
			}
		}
		look(step.name)
	}
	if sawAuth != "hunter2" || sawKey != "s3cretkey" {
		t.Errorf("the feed got password %q and api_key %q: the credentials must still be sent", sawAuth, sawKey)
	}
	if st, err := sw.ContractStatus("feed-ok"); err != nil || st.Source != SourceFeed {
		t.Errorf("feed contract: %+v %v", st, err)
	}
	for _, e := range sw.Events(EventFilter{Limit: 1000}) {
		shown = append(shown, e.Message)
	}
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		shown = append(shown, e.Message+" "+string(b))
	}
	if logs.FilterMessageSnippet("invalid and refused").Len() == 0 || logs.FilterField(zap.String("reason", "demand_feed_failed")).Len() == 0 {
		t.Errorf("the test did not reach the log lines it checks: %d entries", logs.Len())
	}
	for _, s := range shown {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows in %.400s", secret, s)
			}
		}
	}
}

// Issue 12 #10: a feed can make proxyd store at most max_contracts: more
// live ones and the whole answer is refused, the last known demand stays;
// the ended ones past the bound are ignored, oldest end first.
func TestFeedContractLimit(t *testing.T) {
	feed := newFakeFeed(t)
	a := newAPIHarness(t, harnessOpts{noRun: true, cfg: func(c *Config) {
		c.DemandURL = feed.srv.URL
		c.MaxContracts = 3
	}})
	now := a.clock.Now()
	entry := func(id string, start, end time.Time) string {
		return fmt.Sprintf(`{"id":%q,"gpus":1,"start":%q,"end":%q,"price_usd_per_gpu_hour":2,"workload":"llm"}`,
			id, start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	list := func(entries ...string) string { return "[" + strings.Join(entries, ",") + "]" }
	ctx := context.Background()

	feed.set(200, list(entry("live-1", now, now.Add(time.Hour)), entry("live-2", now, now.Add(time.Hour))))
	if err := a.sw.pollFeed(ctx); err != nil {
		t.Fatal(err)
	}
	// 25 live contracts: refused whole, the two known stay in force.
	var many []string
	for i := range 25 {
		many = append(many, entry(fmt.Sprintf("flood-%02d", i), now, now.Add(time.Hour)))
	}
	feed.set(200, list(many...))
	err := a.sw.pollFeed(ctx)
	if err == nil || !strings.Contains(err.Error(), "max_contracts (3)") {
		t.Fatalf("a feed of 25 live contracts with max_contracts 3: %v", err)
	}
	if fs := a.sw.FeedStatus(); fs.Contracts != 2 || !strings.Contains(fs.Error, "max_contracts") {
		t.Errorf("feed status %+v", fs)
	}
	if ids := contractIDs(a.sw); ids != "live-1 live-2" {
		t.Errorf("contracts after the refused answer: %s", ids)
	}
	a.step()
	if n := seriesCount(t, a.reg, "proxyd_contract_gpus"); n > 2*3 {
		t.Errorf("%d proxyd_contract_gpus series with max_contracts 3", n)
	}
	// Ended ones past the bound: the ones that ended first are ignored.
	feed.set(200, list(entry("live-1", now, now.Add(time.Hour)), entry("live-2", now, now.Add(time.Hour)),
		entry("ended-1", now.Add(-3*time.Hour), now.Add(-2*time.Hour)), entry("ended-3", now.Add(-2*time.Hour), now.Add(-time.Minute)),
		entry("ended-2", now.Add(-3*time.Hour), now.Add(-time.Hour))))
	if err := a.sw.pollFeed(ctx); err != nil {
		t.Fatal(err)
	}
	if ids := contractIDs(a.sw); ids != "ended-3 live-1 live-2" {
		t.Errorf("contracts kept: %s; want the two live ones and the one that ended last", ids)
	}
}

func contractIDs(sw *Switcher) string {
	var ids []string
	for _, c := range sw.Contracts() {
		ids = append(ids, c.ID)
	}
	return strings.Join(ids, " ")
}

func TestURLSecrets(t *testing.T) {
	tests := []struct {
		url  string
		want []string
	}{
		{"https://feed.example.net/c", nil},
		{"https://u:hunter2@feed.example.net/a@b?api_key=s3cr%2Ft&x=1#frag", []string{"u:hunter2", "hunter2", "s3cr%2Ft", "s3cr/t"}},
		{"http://u:p%40ss@h:bad port/c?k=v&token=abcd", []string{"u:p%40ss", "u:p@ss", "p%40ss", "p@ss", "abcd"}},
	}
	for _, tc := range tests {
		got := urlSecrets(tc.url)
		for _, w := range tc.want {
			if !containsString(got, w) {
				t.Errorf("urlSecrets(%q) = %q, missing %q", tc.url, got, w)
			}
		}
		for _, g := range got {
			if strings.Contains(g, "feed.example.net") || strings.Contains(g, "/a") {
				t.Errorf("urlSecrets(%q) takes %q for a secret", tc.url, g)
			}
		}
		if len(tc.want) == 0 && len(got) != 0 {
			t.Errorf("urlSecrets(%q) = %q", tc.url, got)
		}
	}
	if got := scrub("echo u:hunter2 and hunter2", urlSecrets("https://u:hunter2@h/")); got != "echo redacted and redacted" {
		t.Errorf("scrub: %q", got)
	}
}
