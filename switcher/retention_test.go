package switcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// seriesCount counts the series of one metric family.
func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

// metricsMention reports whether any series of the registry carries the
// label value v.
func metricsMention(t *testing.T, reg *prometheus.Registry, v string) bool {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == v {
					return true
				}
			}
		}
	}
	return false
}

func eventsWith(sw *Switcher, contract, reason string) []Event {
	var out []Event
	for _, e := range sw.Events(EventFilter{Contract: contract, Limit: 10000}) {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// Issue 12 #10: ended API and feed contracts were never forgotten. They
// now stay, shown "ended", for contract_retention (the switcher's clock
// decides), then go from the API, the state file and /metrics, with a
// contract_pruned event that keeps their end in the journal.
func TestContractRetention(t *testing.T) {
	feed := newFakeFeed(t)
	a := newAPIHarness(t, harnessOpts{cfg: func(c *Config) { c.DemandURL = feed.srv.URL }})
	now := a.clock.Now()
	a.put(contract("api-short", 1, now, 2*time.Minute))
	a.put(contract("api-long", 1, now, 30*24*time.Hour))
	feed.set(200, `[{"id":"feed-short","gpus":1,"start":"`+now.Format(time.RFC3339)+`","end":"`+
		now.Add(2*time.Minute).Format(time.RFC3339)+`","price_usd_per_gpu_hour":2,"workload":"llm"}]`)
	if err := a.sw.pollFeed(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.runUntil("both short contracts served", 120, func() bool { return a.serving("api-short") == 1 && a.serving("feed-short") == 1 })
	if !metricsMention(t, a.reg, "api-short") {
		t.Fatal("no series for a served contract: the metrics check below would prove nothing")
	}
	a.runUntil("both short contracts ended", 300, func() bool {
		return a.contractStatus("api-short").State == ContractEnded && a.contractStatus("feed-short").State == ContractEnded
	})
	// Within the retention: still shown, as ended.
	a.clock.Advance(7*24*time.Hour - 10*time.Minute)
	a.step()
	for _, id := range []string{"api-short", "feed-short"} {
		if st, err := a.sw.ContractStatus(id); err != nil || st.State != ContractEnded {
			t.Errorf("%s within contract_retention: %+v %v", id, st, err)
		}
	}
	// Past it: forgotten.
	a.clock.Advance(10 * time.Minute)
	a.step()
	state, err := os.ReadFile(filepath.Join(a.cfg.StateDir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"api-short", "feed-short"} {
		if _, err := a.sw.ContractStatus(id); !errors.Is(err, ErrUnknownContract) {
			t.Errorf("%s past contract_retention: still there (%v)", id, err)
		}
		if code, _ := a.do("GET", "/api/v1/contracts/"+id, ""); code != http.StatusNotFound {
			t.Errorf("GET %s: %d", id, code)
		}
		if strings.Contains(string(state), `"`+id+`"`) {
			t.Errorf("%s still in the state file", id)
		}
		if metricsMention(t, a.reg, id) {
			t.Errorf("%s still in /metrics", id)
		}
		pruned := eventsWith(a.sw, id, "contract_pruned")
		end := now.Add(2 * time.Minute).UTC().Format(time.RFC3339)
		if len(pruned) != 1 || !strings.Contains(pruned[0].Message, end) || !strings.Contains(pruned[0].Message, "contract_retention") {
			t.Errorf("%s: pruned events %+v, want one naming its end %s", id, pruned, end)
		}
	}
	if len(eventsWith(a.sw, "api-short", "contract_added")) != 1 {
		t.Error("the contract's earlier history left the journal")
	}
	if st, err := a.sw.ContractStatus("api-long"); err != nil || st.State != ContractActive {
		t.Errorf("a live contract was touched: %+v %v", st, err)
	}
	// The feed still lists it: it stays forgotten, with no new event.
	if err := a.sw.pollFeed(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.step()
	if _, err := a.sw.ContractStatus("feed-short"); !errors.Is(err, ErrUnknownContract) || len(eventsWith(a.sw, "feed-short", "contract_pruned")) != 1 {
		t.Errorf("a long-ended feed contract came back: %v", err)
	}
	// Forgotten across a restart too.
	a.restart()
	if _, err := a.sw.ContractStatus("api-short"); !errors.Is(err, ErrUnknownContract) {
		t.Errorf("api-short back after a restart: %v", err)
	}
}

// A state file from a proxyd that ran for weeks: what ended long ago is
// forgotten at start, with a bounded number of events.
func TestContractRetentionOnLoad(t *testing.T) {
	dir := t.TempDir()
	writeEndedContracts(t, dir, 50, epoch.Add(-8*24*time.Hour))
	h := newHarness(t, harnessOpts{noRun: true, cfg: func(c *Config) { c.StateDir = dir }})
	if cs := h.sw.Contracts(); len(cs) != 0 {
		t.Errorf("%d contracts that ended 8 days ago kept", len(cs))
	}
	var each, rest int
	for _, e := range h.sw.Events(EventFilter{Limit: 10000}) {
		switch e.Reason {
		case "contract_pruned":
			each++
		case "contracts_pruned":
			rest++
			if !strings.Contains(e.Message, fmt.Sprintf("%d more", 50-maxPruneEvents)) {
				t.Errorf("summary event: %s", e.Message)
			}
		}
	}
	if each != maxPruneEvents || rest != 1 {
		t.Errorf("%d contract_pruned and %d contracts_pruned events, want %d and 1", each, rest, maxPruneEvents)
	}
	h.step()
	h.step()
	if b, _ := os.ReadFile(filepath.Join(dir, StateFile)); strings.Contains(string(b), "old-") {
		t.Error("the state file still holds the forgotten contracts")
	}
}

// Issue 12 #10: the API can make proxyd store at most max_contracts: an
// ended one makes room (the one that ended first), a live one never does,
// and past that a new contract gets 409. Replacing a kept one always works.
func TestAPIContractLimit(t *testing.T) {
	a := newAPIHarness(t, harnessOpts{noRun: true, cfg: func(c *Config) { c.MaxContracts = 3 }})
	now := a.clock.Now()
	body := func(start, end time.Time) string {
		return fmt.Sprintf(`{"gpus": 1, "start": %q, "end": %q, "price_usd_per_gpu_hour": 2, "workload": "llm"}`,
			start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	live := body(now.Add(time.Hour), now.Add(2*time.Hour))
	for _, p := range []struct{ id, body string }{
		{"ended-late", body(now.Add(-2*time.Hour), now.Add(-time.Hour))},
		{"ended-early", body(now.Add(-3*time.Hour), now.Add(-2*time.Hour))},
		{"live-1", live},
	} {
		if code, resp := a.do("PUT", "/api/v1/contracts/"+p.id, p.body); code != http.StatusCreated {
			t.Fatalf("PUT %s: %d %s", p.id, code, resp)
		}
	}
	if code, resp := a.do("PUT", "/api/v1/contracts/live-2", live); code != http.StatusCreated {
		t.Fatalf("PUT live-2 at the bound with an ended contract kept: %d %s", code, resp)
	}
	if ids := contractIDs(a.sw); ids != "ended-late live-1 live-2" {
		t.Errorf("contracts %s; want the one that ended first gone", ids)
	}
	if ev := eventsWith(a.sw, "ended-early", "contract_pruned"); len(ev) != 1 || !strings.Contains(ev[0].Message, "max_contracts") {
		t.Errorf("pruned events %+v", ev)
	}
	if code, _ := a.do("PUT", "/api/v1/contracts/live-3", live); code != http.StatusCreated {
		t.Fatalf("PUT live-3: %d", code)
	}
	code, resp := a.do("PUT", "/api/v1/contracts/live-4", live)
	if code != http.StatusConflict || !strings.Contains(resp, "max_contracts") {
		t.Errorf("PUT past max_contracts with every kept contract live: %d %s; want 409 naming max_contracts", code, resp)
	}
	if code, resp := a.do("PUT", "/api/v1/contracts/live-1", body(now.Add(time.Hour), now.Add(3*time.Hour))); code != http.StatusOK {
		t.Errorf("replacing a kept contract at the bound: %d %s", code, resp)
	}
	if ids := contractIDs(a.sw); ids != "live-1 live-2 live-3" {
		t.Errorf("contracts %s", ids)
	}
	if _, _, err := a.sw.PutContract(contract("live-5", 1, now.Add(time.Hour), time.Hour)); !errors.Is(err, ErrTooManyContracts) {
		t.Errorf("PutContract past the bound: %v", err)
	}
}
