package nvml

import (
	"context"
	"errors"
	"strings"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

func TestSetPowerLimit(t *testing.T) {
	tests := []struct {
		name      string
		set       func(g *nvmlsim.GPUState)
		mw        uint32
		want      PowerChange
		wantErr   error
		wantSimMW uint32
	}{
		{name: "within constraints", mw: 250_000,
			want: PowerChange{RequestedMW: 250_000, AppliedMW: 250_000, PreviousMW: 400_000, ReadBackMW: 250_000}, wantSimMW: 250_000},
		{name: "below min is clamped", mw: 20_000,
			want: PowerChange{RequestedMW: 20_000, AppliedMW: 100_000, Clamped: true, PreviousMW: 400_000, ReadBackMW: 100_000}, wantSimMW: 100_000},
		{name: "above max is clamped", set: func(g *nvmlsim.GPUState) { g.PowerLimitMW = 300_000 }, mw: 999_000,
			want: PowerChange{RequestedMW: 999_000, AppliedMW: 400_000, Clamped: true, PreviousMW: 300_000, ReadBackMW: 400_000}, wantSimMW: 400_000},
		{name: "already there", mw: 400_000,
			want: PowerChange{RequestedMW: 400_000, AppliedMW: 400_000, PreviousMW: 400_000, ReadBackMW: 400_000}, wantSimMW: 400_000},
		{name: "read-back mismatch", set: func(g *nvmlsim.GPUState) { g.PowerSetIgnored = true }, mw: 250_000,
			want:    PowerChange{RequestedMW: 250_000, AppliedMW: 250_000, PreviousMW: 400_000, ReadBackMW: 400_000},
			wantErr: ErrReadBackMismatch, wantSimMW: 400_000},
		{name: "not root", set: func(g *nvmlsim.GPUState) { g.PowerSetError = gonvml.ERROR_NO_PERMISSION }, mw: 250_000,
			want:    PowerChange{RequestedMW: 250_000, AppliedMW: 250_000, PreviousMW: 400_000},
			wantErr: ErrNoPermission, wantSimMW: 400_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{}, nil)
			if tc.set != nil {
				h.update(t, 0, tc.set)
			}
			got, err := h.m.SetPowerLimit(context.Background(), h.uuids[0], tc.mw)
			tc.want.UUID = h.uuids[0]
			if got != tc.want {
				t.Errorf("change\n got %+v\nwant %+v", got, tc.want)
			}
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), h.uuids[0]) {
				t.Errorf("error %q does not name the GPU", err)
			}
			if st, _ := h.sim.State(h.uuids[0]); st.PowerLimitMW != tc.wantSimMW {
				t.Errorf("GPU limit %d, want %d", st.PowerLimitMW, tc.wantSimMW)
			}
		})
	}
}

func TestSnapshotRestoreExact(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	ctx := context.Background()
	u := h.uuids[2]
	h.update(t, 2, func(g *nvmlsim.GPUState) { g.PowerLimitMW = 312_345 })
	snap, err := h.m.SnapshotPower(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	want := PowerSnapshot{UUID: u, LimitMW: 312_345, EnforcedMW: 312_345, MinMW: 100_000, MaxMW: 400_000,
		DefaultMW: 400_000, PersistenceMode: snap.PersistenceMode, TakenAt: h.clock.Now()}
	if snap != want || snap.PersistenceMode == nil || !*snap.PersistenceMode {
		t.Errorf("snapshot\n got %+v\nwant %+v", snap, want)
	}
	if _, err := h.m.SetPowerLimit(ctx, u, 150_000); err != nil {
		t.Fatal(err)
	}
	c, err := h.m.RestorePower(ctx, snap)
	if err != nil || c.AppliedMW != 312_345 || c.ReadBackMW != 312_345 || c.PreviousMW != 150_000 || c.Clamped {
		t.Fatalf("restore: %+v, %v", c, err)
	}
	if st, _ := h.sim.State(u); st.PowerLimitMW != 312_345 {
		t.Errorf("GPU limit after restore %d, want exactly 312345", st.PowerLimitMW)
	}
	if p, err := h.m.PersistenceMode(u); err != nil || !p {
		t.Errorf("PersistenceMode: %v, %v", p, err)
	}

	// A snapshot the GPU can no longer take is refused, not clamped.
	h.update(t, 2, func(g *nvmlsim.GPUState) { g.PowerMaxMW = 300_000; g.PowerLimitMW = 200_000 })
	if _, err := h.m.RestorePower(ctx, snap); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("restore outside constraints: %v", err)
	}
	if st, _ := h.sim.State(u); st.PowerLimitMW != 200_000 {
		t.Errorf("a refused restore changed the limit to %d", st.PowerLimitMW)
	}
	// A restore the driver ignores is detected.
	h.update(t, 2, func(g *nvmlsim.GPUState) { g.PowerMaxMW = 400_000; g.PowerSetIgnored = true })
	if _, err := h.m.RestorePower(ctx, snap); !errors.Is(err, ErrReadBackMismatch) {
		t.Errorf("ignored restore: %v", err)
	}
	if _, err := h.m.SnapshotPower(ctx, "GPU-nope"); !errors.Is(err, ErrUnknownGPU) {
		t.Errorf("snapshot of an unknown GPU: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.m.SetPowerLimit(cancelled, u, 250_000); !errors.Is(err, context.Canceled) {
		t.Errorf("set with a cancelled context: %v", err)
	}
}
