package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/config"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name   string
		cfg    config.Log
		check  func(t *testing.T, out string)
		hasErr bool
	}{
		{"json", config.Log{Level: "info", Format: "json"}, func(t *testing.T, out string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &m); err != nil {
				t.Fatalf("not one JSON object: %q", out)
			}
			if m["msg"] != "hello" || m["worker"] != "rig1.a" || m["took"] != "1.5s" || m["level"] != "info" {
				t.Errorf("fields: %v", m)
			}
		}, false},
		{"console", config.Log{Level: "info", Format: "console"}, func(t *testing.T, out string) {
			if !strings.Contains(out, "INFO") || !strings.Contains(out, "hello") || strings.HasPrefix(out, "{") {
				t.Errorf("console line %q", out)
			}
		}, false},
		{"level filters", config.Log{Level: "error", Format: "json"}, func(t *testing.T, out string) {
			if out != "" {
				t.Errorf("info logged at level error: %q", out)
			}
		}, false},
		{"bad level", config.Log{Level: "loud", Format: "json"}, nil, true},
		{"bad format", config.Log{Level: "info", Format: "xml"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, _, err := New(tc.cfg, &buf)
			if tc.hasErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Info("hello", zap.String("worker", "rig1.a"), zap.Duration("took", 1500*time.Millisecond))
			tc.check(t, buf.String())
		})
	}
}

func TestSetLevel(t *testing.T) {
	var buf bytes.Buffer
	log, atom, err := New(config.Log{Level: "info", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	if err := SetLevel(atom, "debug"); err != nil {
		t.Fatal(err)
	}
	log.Debug("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Errorf("output %q", buf.String())
	}
	if SetLevel(atom, "nope") == nil {
		t.Error("bad level accepted")
	}
}
