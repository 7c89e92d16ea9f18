package nvml

import (
	"context"
	"errors"
	"fmt"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"go.uber.org/zap"
)

// PowerSnapshot is a GPU's power-limit state, taken before the switcher
// changes it and handed back to RestorePower afterwards. Milliwatts
// throughout, as NVML counts.
type PowerSnapshot struct {
	UUID string `json:"uuid"`
	// LimitMW is the management limit: what SetPowerLimit writes and
	// RestorePower puts back exactly.
	LimitMW uint32 `json:"limit_mw"`
	// EnforcedMW is what the GPU enforces (the lowest of every limit).
	EnforcedMW uint32 `json:"enforced_mw"`
	MinMW      uint32 `json:"min_mw"`
	MaxMW      uint32 `json:"max_mw"`
	// DefaultMW is the board's default limit; 0 where NVML does not say.
	DefaultMW uint32 `json:"default_mw,omitempty"`
	// PersistenceMode: with it off, the driver may unload between
	// processes and every limit reverts to the default.
	PersistenceMode *bool     `json:"persistence_mode"`
	TakenAt         time.Time `json:"taken_at"`
}

// PowerChange reports what SetPowerLimit or RestorePower did.
type PowerChange struct {
	UUID        string `json:"uuid"`
	RequestedMW uint32 `json:"requested_mw"`
	// AppliedMW is what was written: RequestedMW clamped to the
	// constraints (SetPowerLimit) or the snapshot's value (RestorePower).
	AppliedMW  uint32 `json:"applied_mw"`
	Clamped    bool   `json:"clamped"`
	PreviousMW uint32 `json:"previous_mw"`
	// ReadBackMW is the limit NVML reports after the write.
	ReadBackMW uint32 `json:"read_back_mw"`
}

// SnapshotPower reads a GPU's power limits and persistence mode.
func (m *Manager) SnapshotPower(ctx context.Context, uuid string) (PowerSnapshot, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return PowerSnapshot{}, err
	}
	if err := ctx.Err(); err != nil {
		return PowerSnapshot{}, err
	}
	g.ctl.Lock()
	defer g.ctl.Unlock()
	return m.snapshot(g, m.device(g))
}

func (m *Manager) snapshot(g *gpu, dev gonvml.Device) (PowerSnapshot, error) {
	s := PowerSnapshot{UUID: g.info.UUID, TakenAt: m.opts.Clock.Now()}
	var ret gonvml.Return
	if s.LimitMW, ret = dev.GetPowerManagementLimit(); ret != gonvml.SUCCESS {
		return s, m.powerErr(g, "GetPowerManagementLimit", ret)
	}
	if s.MinMW, s.MaxMW, ret = dev.GetPowerManagementLimitConstraints(); ret != gonvml.SUCCESS {
		return s, m.powerErr(g, "GetPowerManagementLimitConstraints", ret)
	}
	if s.EnforcedMW, ret = dev.GetEnforcedPowerLimit(); ret != gonvml.SUCCESS {
		return s, m.powerErr(g, "GetEnforcedPowerLimit", ret)
	}
	if def, ret := dev.GetPowerManagementDefaultLimit(); ret == gonvml.SUCCESS {
		s.DefaultMW = def
	} else if ret == gonvml.ERROR_GPU_IS_LOST {
		return s, m.powerErr(g, "GetPowerManagementDefaultLimit", ret)
	}
	if p, ret := dev.GetPersistenceMode(); ret == gonvml.SUCCESS {
		s.PersistenceMode = ptr(p == gonvml.FEATURE_ENABLED)
	} else if ret == gonvml.ERROR_GPU_IS_LOST {
		return s, m.powerErr(g, "GetPersistenceMode", ret)
	}
	return s, nil
}

// SetPowerLimit sets a GPU's power limit to mw clamped to the GPU's
// constraints, then reads it back. A read-back that differs from what was
// written is an error matching ErrReadBackMismatch (the PowerChange still
// says what happened). Setting needs root: without it the error matches
// ErrNoPermission.
func (m *Manager) SetPowerLimit(ctx context.Context, uuid string, mw uint32) (PowerChange, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return PowerChange{}, err
	}
	g.ctl.Lock()
	defer g.ctl.Unlock()
	dev := m.device(g)
	c := PowerChange{UUID: uuid, RequestedMW: mw}
	lo, hi, ret := dev.GetPowerManagementLimitConstraints()
	if ret != gonvml.SUCCESS {
		return c, m.powerErr(g, "GetPowerManagementLimitConstraints", ret)
	}
	c.AppliedMW = min(max(mw, lo), hi)
	c.Clamped = c.AppliedMW != mw
	if err := m.write(ctx, g, dev, &c); err != nil {
		return c, err
	}
	fields := []zap.Field{zap.String("gpu", uuid), zap.Uint32("from_mw", c.PreviousMW), zap.Uint32("to_mw", c.AppliedMW)}
	if c.Clamped {
		m.log.Info("GPU power limit set (clamped to the GPU's constraints)", append(fields,
			zap.Uint32("requested_mw", mw), zap.Uint32("min_mw", lo), zap.Uint32("max_mw", hi))...)
	} else {
		m.log.Info("GPU power limit set", fields...)
	}
	return c, nil
}

// RestorePower puts a snapshot's limit back exactly and verifies it. A
// snapshot limit outside the GPU's current constraints is refused rather
// than clamped: an inexact restore is a failed restore.
func (m *Manager) RestorePower(ctx context.Context, snap PowerSnapshot) (PowerChange, error) {
	g, err := m.lookup(snap.UUID)
	if err != nil {
		return PowerChange{}, err
	}
	g.ctl.Lock()
	defer g.ctl.Unlock()
	dev := m.device(g)
	c := PowerChange{UUID: snap.UUID, RequestedMW: snap.LimitMW, AppliedMW: snap.LimitMW}
	lo, hi, ret := dev.GetPowerManagementLimitConstraints()
	if ret != gonvml.SUCCESS {
		return c, m.powerErr(g, "GetPowerManagementLimitConstraints", ret)
	}
	if snap.LimitMW < lo || snap.LimitMW > hi {
		return c, fmt.Errorf("%s: cannot restore power limit %s: outside the GPU's current constraints %s to %s",
			g.label(), watts(snap.LimitMW), watts(lo), watts(hi))
	}
	if err := m.write(ctx, g, dev, &c); err != nil {
		return c, err
	}
	m.log.Info("GPU power limit restored", zap.String("gpu", snap.UUID),
		zap.Uint32("from_mw", c.PreviousMW), zap.Uint32("to_mw", c.AppliedMW))
	return c, nil
}

// write sets c.AppliedMW unless it is already the limit, then verifies the
// read-back. Callers hold g.ctl.
func (m *Manager) write(ctx context.Context, g *gpu, dev gonvml.Device, c *PowerChange) error {
	prev, ret := dev.GetPowerManagementLimit()
	if ret != gonvml.SUCCESS {
		return m.powerErr(g, "GetPowerManagementLimit", ret)
	}
	c.PreviousMW = prev
	if prev != c.AppliedMW {
		// The last moment to back out before a privileged write.
		if err := ctx.Err(); err != nil {
			return err
		}
		if ret := dev.SetPowerManagementLimit(c.AppliedMW); ret != gonvml.SUCCESS {
			return fmt.Errorf("setting power limit to %s: %w", watts(c.AppliedMW), m.powerErr(g, "SetPowerManagementLimit", ret))
		}
	}
	rb, ret := dev.GetPowerManagementLimit()
	if ret != gonvml.SUCCESS {
		return fmt.Errorf("reading back the power limit: %w", m.powerErr(g, "GetPowerManagementLimit", ret))
	}
	c.ReadBackMW = rb
	if rb != c.AppliedMW {
		err := fmt.Errorf("%s: power limit set to %s but NVML reads back %s (another agent such as nvidia-smi or DCGM "+
			"may manage this GPU, or the driver ignored the write): %w", g.label(), watts(c.AppliedMW), watts(rb), ErrReadBackMismatch)
		m.log.Error("GPU power limit read-back mismatch", zap.String("gpu", g.info.UUID),
			zap.Uint32("set_mw", c.AppliedMW), zap.Uint32("read_back_mw", rb))
		return err
	}
	return nil
}

// PersistenceMode reads whether the GPU's persistence mode is on. With it
// off, power limits revert when the driver unloads.
func (m *Manager) PersistenceMode(uuid string) (bool, error) {
	g, err := m.lookup(uuid)
	if err != nil {
		return false, err
	}
	p, ret := m.device(g).GetPersistenceMode()
	if ret != gonvml.SUCCESS {
		return false, m.powerErr(g, "GetPersistenceMode", ret)
	}
	return p == gonvml.FEATURE_ENABLED, nil
}

// powerErr is call's error with advice for the power-control calls.
func (m *Manager) powerErr(g *gpu, op string, ret gonvml.Return) error {
	err := m.call(g, op, ret)
	if errors.Is(err, ErrNoPermission) {
		return fmt.Errorf("%w: run proxyd as root (or with CAP_SYS_ADMIN) to manage power limits", err)
	}
	return err
}

func watts(mw uint32) string {
	if mw%1000 == 0 {
		return fmt.Sprintf("%d W", mw/1000)
	}
	return fmt.Sprintf("%.3f W", float64(mw)/1000)
}
