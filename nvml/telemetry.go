package nvml

import (
	"math"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// sampler reads one GPU's telemetry field by field. A field answered with
// ERROR_NOT_SUPPORTED is noted as not applicable; any other failure is
// noted as an error; ERROR_GPU_IS_LOST ends the sample (every further call
// would say the same).
type sampler struct {
	t    *Telemetry
	lost bool
}

func (s *sampler) ok(field string, ret gonvml.Return) bool {
	switch ret {
	case gonvml.SUCCESS:
		return true
	case gonvml.ERROR_NOT_SUPPORTED:
		s.t.NotSupported = append(s.t.NotSupported, field)
	default:
		if ret == gonvml.ERROR_GPU_IS_LOST {
			s.lost = true
		}
		if s.t.Errors == nil {
			s.t.Errors = map[string]string{}
		}
		if _, seen := s.t.Errors[field]; !seen {
			s.t.Errors[field] = ret.String()
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

// readTelemetry samples dev once. lost reports ERROR_GPU_IS_LOST.
func readTelemetry(dev gonvml.Device, now time.Time) (t *Telemetry, lost bool) {
	t = &Telemetry{SampledAt: now}
	s := &sampler{t: t}
	steps := []func(){
		func() {
			if m, ret := dev.GetMemoryInfo(); s.ok(FieldMemory, ret) {
				t.MemoryUsedBytes, t.MemoryFreeBytes = ptr(m.Used), ptr(m.Free)
			}
		},
		func() {
			if u, ret := dev.GetUtilizationRates(); s.ok(FieldUtilization, ret) {
				t.UtilizationGPU, t.UtilizationMemory = ptr(u.Gpu), ptr(u.Memory)
			}
		},
		func() {
			if v, ret := dev.GetTemperature(gonvml.TEMPERATURE_GPU); s.ok(FieldTemperature, ret) {
				t.TemperatureC = ptr(v)
			}
		},
		func() {
			if v, ret := dev.GetTemperatureThreshold(gonvml.TEMPERATURE_THRESHOLD_SLOWDOWN); s.ok(FieldSlowdownTemp, ret) {
				t.SlowdownTemperatureC = ptr(v)
			}
		},
		func() {
			if v, ret := dev.GetPowerUsage(); s.ok(FieldPowerDraw, ret) {
				t.PowerDrawMW = ptr(v)
			}
		},
		func() {
			if v, ret := dev.GetEnforcedPowerLimit(); s.ok(FieldPowerLimit, ret) {
				t.PowerLimitMW = ptr(v)
			}
		},
		func() {
			if lo, hi, ret := dev.GetPowerManagementLimitConstraints(); s.ok(FieldPowerConstraints, ret) {
				t.PowerConstraints = &PowerRange{MinMW: lo, MaxMW: hi}
			}
		},
		func() {
			if v, ret := dev.GetClockInfo(gonvml.CLOCK_SM); s.ok(FieldSMClock, ret) {
				t.SMClockMHz = ptr(v)
			}
		},
		func() {
			if v, ret := dev.GetClockInfo(gonvml.CLOCK_MEM); s.ok(FieldMemoryClock, ret) {
				t.MemoryClockMHz = ptr(v)
			}
		},
		func() {
			if v, ret := dev.GetCurrentClocksEventReasons(); s.ok(FieldThrottleReasons, ret) {
				t.ThrottleReasons = ptr(v)
				t.ThrottleReasonNames = ThrottleReasonNames(v)
			}
		},
		func() {
			corr, ret := dev.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.VOLATILE_ECC)
			if !s.ok(FieldECC, ret) {
				return
			}
			unc, ret := dev.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.VOLATILE_ECC)
			if s.ok(FieldECC, ret) {
				t.ECC = &ECCCounts{Corrected: corr, Uncorrected: unc}
			}
		},
		func() {
			if c, u, pending, failure, ret := dev.GetRemappedRows(); s.ok(FieldRowRemap, ret) {
				t.RowRemap = &RowRemap{Corrected: c, Uncorrected: u, Pending: pending, Failure: failure}
			}
		},
		func() {
			if v, ret := dev.GetRetiredPagesPendingStatus(); s.ok(FieldRetiredPages, ret) {
				t.RetiredPagesPending = ptr(v == gonvml.FEATURE_ENABLED)
			}
		},
		func() {
			if v, ret := dev.GetPersistenceMode(); s.ok(FieldPersistence, ret) {
				t.PersistenceMode = ptr(v == gonvml.FEATURE_ENABLED)
			}
		},
		func() {
			if ps, ret := dev.GetComputeRunningProcesses(); s.ok(FieldComputeProcesses, ret) {
				t.ComputeProcesses = processes(ps)
			}
		},
		func() {
			if ps, ret := dev.GetGraphicsRunningProcesses(); s.ok(FieldGraphicsProcesses, ret) {
				t.GraphicsProcesses = processes(ps)
			}
		},
	}
	for _, step := range steps {
		if s.lost {
			break
		}
		step()
	}
	return t, s.lost
}

// processes converts NVML's list; never nil, so "none" differs from "unknown".
func processes(ps []gonvml.ProcessInfo) []Process {
	out := make([]Process, 0, len(ps))
	for _, p := range ps {
		proc := Process{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory}
		if p.UsedGpuMemory == math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE
			proc.UsedMemoryBytes, proc.MemoryUnknown = 0, true
		}
		out = append(out, proc)
	}
	return out
}
