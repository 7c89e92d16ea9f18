package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type e2eEvent struct {
	Seq     uint64 `json:"seq"`
	Boot    string `json:"boot"`
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	From    string `json:"from"`
	To      string `json:"to"`
	Reason  string `json:"reason"`
}

type e2eEvents struct {
	Events  []e2eEvent `json:"events"`
	Durable bool       `json:"durable"`
	Boot    string     `json:"boot"`
	Journal struct {
		Dir       string `json:"dir"`
		Recovered *struct {
			Events    int   `json:"events"`
			TornBytes int64 `json:"torn_bytes"`
		} `json:"recovered"`
	} `json:"journal"`
}

// The events journal survives a kill -9 of the real binary: the restarted
// proxyd serves every event from before the crash with its boot id, its own
// events continue the sequence, and after= splits the two boots.
func TestEventsJournalSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "proxyd.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(switcherConfig, tok, state)), 0o600); err != nil {
		t.Fatal(err)
	}
	p, c := startSwitcherDaemon(t, cfgPath)
	c.waitFor("8 GPUs mining", func() bool { return c.countState("MINING") == 8 })
	now := time.Now().UTC()
	contract := fmt.Sprintf(`{"gpus": 2, "start": %q, "end": %q, "price_usd_per_gpu_hour": 2.1, "workload": "llm"}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
	if code, body := c.do("PUT", "/api/v1/contracts/crash", contract); code != http.StatusCreated {
		t.Fatalf("PUT contract: %d %s", code, body)
	}
	c.waitFor("the contract served", func() bool { ct, _ := c.contract("crash"); return ct.Serving == 2 })
	var before e2eEvents
	c.getJSON("/api/v1/events?limit=4096", &before)
	if !before.Durable || before.Journal.Dir != state || len(before.Events) < 8 {
		t.Fatalf("before the crash: durable %v, dir %q, %d events", before.Durable, before.Journal.Dir, len(before.Events))
	}
	last := before.Events[len(before.Events)-1].Seq

	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no flush, no fsync
		t.Fatal(err)
	}
	select {
	case <-p.exit:
	case <-time.After(10 * time.Second):
		t.Fatal("proxyd did not die on SIGKILL")
	}

	p, c = startSwitcherDaemon(t, cfgPath)
	c.waitFor("the contract served again", func() bool { ct, _ := c.contract("crash"); return ct.Serving == 2 })
	var after e2eEvents
	c.getJSON("/api/v1/events?limit=4096", &after)
	if !after.Durable || after.Boot == before.Boot || after.Journal.Recovered == nil || after.Journal.Recovered.Events < len(before.Events) {
		t.Fatalf("after the restart: durable %v, boot %q (before %q), recovered %+v", after.Durable, after.Boot, before.Boot, after.Journal.Recovered)
	}
	old := map[uint64]e2eEvent{}
	for _, e := range after.Events {
		switch {
		case e.Boot == before.Boot && e.Seq <= last:
			old[e.Seq] = e
		case e.Boot == after.Boot && e.Seq > last:
		default:
			t.Errorf("event %+v is neither from before the crash (boot %s, seq <= %d) nor after it (boot %s)", e, before.Boot, last, after.Boot)
		}
	}
	for _, e := range before.Events {
		if old[e.Seq] != e {
			t.Errorf("event %d before the crash %+v, after it %+v", e.Seq, e, old[e.Seq])
		}
	}
	var since e2eEvents
	c.getJSON(fmt.Sprintf("/api/v1/events?after=%d&limit=4096", last), &since)
	// The daemon runs on between the two reads, so since may hold events
	// recorded after the first: it starts with every new-boot event of after.
	newBoot := after.Events[len(before.Events):]
	if len(since.Events) == 0 || len(since.Events) < len(newBoot) {
		t.Errorf("after=%d gives %d events, want at least the %d of the new boot", last, len(since.Events), len(newBoot))
	} else {
		for i, e := range newBoot {
			if since.Events[i].Seq != e.Seq {
				t.Errorf("after=%d: event %d has seq %d, want %d", last, i, since.Events[i].Seq, e.Seq)
				break
			}
		}
	}
	for _, e := range since.Events {
		if e.Boot != after.Boot {
			t.Errorf("after=%d gives %+v from another boot", last, e)
		}
	}
	t.Logf("%d events before the kill -9, %d read back (torn bytes %d), %d since",
		len(before.Events), after.Journal.Recovered.Events, after.Journal.Recovered.TornBytes, len(since.Events))
	stopDaemon(t, p)
}
