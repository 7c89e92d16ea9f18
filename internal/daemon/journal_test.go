package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/events"
)

type eventsAnswer struct {
	Events  []events.Event `json:"events"`
	Durable bool           `json:"durable"`
	Boot    string         `json:"boot"`
	Journal events.Status  `json:"journal"`
}

// runJournalDaemon runs a daemon on cfgPath until stop is called, and
// returns a GET of /api/v1/events with the query q.
func runJournalDaemon(t *testing.T, cfgPath string) (get func(q string) eventsAnswer, d *Daemon, stop func()) {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	d, err = New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), Options{Notify: func(s string) {
		if s == "READY=1" {
			close(ready)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("daemon never ready")
	}
	get = func(q string) eventsAnswer {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+d.Addr().String()+"/api/v1/events"+q, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a eventsAnswer
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&a) != nil {
			t.Fatalf("GET /api/v1/events%s: %d", q, resp.StatusCode)
		}
		return a
	}
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	return get, d, stop
}

// With the switcher enabled the journal lives in its state_dir: a restart
// serves the earlier boot's events, sequence numbers continue, and after=
// and the filters work across boots. Without the switcher it is in memory
// and the API says so.
func TestEventsJournalSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	tok := writeToken(t, dir, 0o600)
	state := filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "proxyd.toml")
	body := "shutdown_timeout = \"2s\"\n[log]\nevents_file_mib = 1\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n" +
		"[gpu]\nbackend = \"off\"\n[switcher]\nenabled = true\nstate_dir = %q\n"
	writeConfig(t, cfgPath, fmt.Sprintf(body, tok, state))

	get, d, stop := runJournalDaemon(t, cfgPath)
	d.events.Add(events.Event{Component: "stratum", Kind: "failover", Subject: "primary", Reason: "no job for 2m"})
	d.events.Add(events.Event{Component: "switcher", Kind: "transition", Subject: "GPU-1", From: "MINING", To: "STOPPING_MINER", Reason: "contract_start"})
	first := get("")
	if !first.Durable || len(first.Events) != 2 || first.Journal.Dir != state || first.Events[1].Boot != first.Boot {
		t.Fatalf("first boot: %+v", first)
	}
	stop()
	for _, name := range events.SegmentNames {
		if _, err := os.Stat(filepath.Join(state, name)); err != nil {
			t.Errorf("journal file: %v", err)
		}
	}

	get, d, stop = runJournalDaemon(t, cfgPath)
	defer stop()
	d.events.Add(events.Event{Component: "switcher", Kind: "transition", Subject: "GPU-1", From: "STOPPING_MINER", To: "VERIFYING_FREE", Reason: "miner_stopped"})
	second := get("")
	if !second.Durable || second.Boot == first.Boot || second.Journal.Recovered == nil || second.Journal.Recovered.Events != 2 {
		t.Fatalf("second boot: %+v", second)
	}
	want := []string{"1 " + first.Boot, "2 " + first.Boot, "3 " + second.Boot}
	var got []string
	for _, e := range second.Events {
		got = append(got, fmt.Sprint(e.Seq, " ", e.Boot))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events across boots %v, want %v", got, want)
	}
	if a := get("?after=2"); len(a.Events) != 1 || a.Events[0].Reason != "miner_stopped" {
		t.Errorf("after=2: %+v", a.Events)
	}
	if a := get("?component=switcher&subject=GPU-1&limit=1"); len(a.Events) != 1 || a.Events[0].Seq != 3 {
		t.Errorf("component, subject and limit: %+v", a.Events)
	}
	if a := get("?component=stratum"); len(a.Events) != 1 || a.Events[0].Boot != first.Boot {
		t.Errorf("component=stratum: %+v", a.Events)
	}

	// Without the switcher there is no state directory: memory only.
	memPath := filepath.Join(dir, "memory.toml")
	writeConfig(t, memPath, fmt.Sprintf("shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n[gpu]\nbackend = \"off\"\n", tok))
	getMem, dm, stopMem := runJournalDaemon(t, memPath)
	defer stopMem()
	dm.events.Add(events.Event{Component: "stratum", Kind: "failover", Reason: "r"})
	if a := getMem(""); a.Durable || a.Journal.Dir != "" || len(a.Events) != 1 || a.Boot == "" {
		t.Errorf("in memory: %+v", a)
	}
}

// A journal the daemon cannot open stops it at start with the file and
// what to do.
func TestEventsJournalThatCannotBeOpened(t *testing.T) {
	dir := t.TempDir()
	tok := writeToken(t, dir, 0o600)
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, events.SegmentNames[0]), []byte("something else entirely"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "proxyd.toml")
	writeConfig(t, cfgPath, fmt.Sprintf("[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n[gpu]\nbackend = \"off\"\n"+
		"[switcher]\nenabled = true\nstate_dir = %q\n", tok, state))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, zap.NewNop(), Options{})
	if err == nil || !strings.Contains(err.Error(), "log.events_file_mib") || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("New: %v", err)
	}
}
