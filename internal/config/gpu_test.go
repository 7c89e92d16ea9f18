package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGPUDefaults(t *testing.T) {
	g := Default().GPU
	if g.Backend != "auto" || g.PollInterval.D() != 2*time.Second || g.SlowdownSustain.D() != time.Minute ||
		!slices.Equal(g.AppXIDs, []uint64{13, 31, 43, 45, 68, 109}) {
		t.Errorf("defaults %+v", g)
	}
}

func TestGPUValidation(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // "" means valid
	}{
		{"defaults", "", ""},
		{"simulated", `backend = "simulated"`, ""},
		{"all keys", "backend = \"nvml\"\npoll_interval = \"500ms\"\napp_xids = [13]\nslowdown_sustain = \"30s\"", ""},
		{"empty app xids", "app_xids = []", ""},
		{"bad backend", `backend = "cuda"`, `key "gpu.backend": "cuda" is not allowed`},
		{"poll too short", `poll_interval = "10ms"`, `line 3: key "gpu.poll_interval": 10ms is too short`},
		{"poll too long", `poll_interval = "5m"`, `key "gpu.poll_interval": 5m0s is too long`},
		{"xid zero", "app_xids = [0]", `key "gpu.app_xids": 0 is not an XID`},
		{"xid huge", "app_xids = [13, 100000]", `100000 is not an XID`},
		{"xid twice", "app_xids = [13, 13]", `XID 13 is listed twice`},
		{"sustain zero", `slowdown_sustain = "0s"`, `key "gpu.slowdown_sustain": "0s" is out of range`},
		{"sustain long", `slowdown_sustain = "2h"`, `is out of range`},
		{"unknown key", `sim_gpus = 4`, `unknown key "gpu.sim_gpus"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("[gpu]\n\n" + tc.toml + "\n"))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
