package nvmlsim

import (
	"math"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
)

// Device is one simulated GPU: dgxa100's device (identity, MIG bookkeeping)
// plus the state in GPUState. Its methods are safe for concurrent use.
type Device struct {
	*dgxa100.Device
	srv   *Server
	state GPUState // guarded by srv.mu
}

var _ gonvml.Device = (*Device)(nil)

// UUID is the GPU's deterministic UUID.
func (d *Device) UUID() string { return d.Device.UUID }

// read runs fn under the server lock unless the GPU is lost or lacks
// feature (0: always supported).
func (d *Device) read(feature Feature, fn func(g *GPUState) gonvml.Return) gonvml.Return {
	d.srv.mu.Lock()
	defer d.srv.mu.Unlock()
	if d.state.Lost {
		return gonvml.ERROR_GPU_IS_LOST
	}
	if d.state.NotSupported&feature != 0 {
		return gonvml.ERROR_NOT_SUPPORTED
	}
	return fn(&d.state)
}

// GetUUID implements gonvml.Device.
func (d *Device) GetUUID() (string, gonvml.Return) {
	return d.Device.UUID, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetIndex implements gonvml.Device.
func (d *Device) GetIndex() (int, gonvml.Return) {
	return d.Device.Index, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetMinorNumber implements gonvml.Device.
func (d *Device) GetMinorNumber() (int, gonvml.Return) {
	return d.Device.Minor, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetName implements gonvml.Device.
func (d *Device) GetName() (string, gonvml.Return) {
	return d.Device.Name, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetBrand implements gonvml.Device.
func (d *Device) GetBrand() (gonvml.BrandType, gonvml.Return) {
	return d.Device.Brand, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetArchitecture implements gonvml.Device.
func (d *Device) GetArchitecture() (gonvml.DeviceArchitecture, gonvml.Return) {
	return d.Device.Architecture, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetCudaComputeCapability implements gonvml.Device.
func (d *Device) GetCudaComputeCapability() (int, int, gonvml.Return) {
	cc := d.Device.CudaComputeCapability
	return cc.Major, cc.Minor, d.read(0, func(*GPUState) gonvml.Return { return gonvml.SUCCESS })
}

// GetPciInfo implements gonvml.Device; unlike the mock it fills in the bus id.
func (d *Device) GetPciInfo() (gonvml.PciInfo, gonvml.Return) {
	var p gonvml.PciInfo
	ret := d.read(0, func(*GPUState) gonvml.Return {
		p.PciDeviceId = 0x20B010DE // A100-SXM4-40GB
		copy(p.BusId[:len(p.BusId)-1], d.Device.PciBusID)
		copy(p.BusIdLegacy[:len(p.BusIdLegacy)-1], d.Device.PciBusID[4:])
		return gonvml.SUCCESS
	})
	return p, ret
}

// GetMemoryInfo implements gonvml.Device: used is the base plus every
// process's memory.
func (d *Device) GetMemoryInfo() (gonvml.Memory, gonvml.Return) {
	var m gonvml.Memory
	real := d.srv.realOn(d)
	ret := d.read(0, func(g *GPUState) gonvml.Return {
		m.Total = d.Device.MemoryInfo.Total
		used := g.memoryUsed(m.Total)
		for _, p := range real {
			if !g.hasPID(p.pid) {
				used += p.mem
			}
		}
		m.Used = min(used, m.Total)
		m.Free = m.Total - m.Used
		return gonvml.SUCCESS
	})
	return m, ret
}

// GetMigMode implements gonvml.Device.
func (d *Device) GetMigMode() (current, pending int, ret gonvml.Return) {
	ret = d.read(FeatureMIG, func(g *GPUState) gonvml.Return {
		if g.MIGEnabled {
			current, pending = gonvml.DEVICE_MIG_ENABLE, gonvml.DEVICE_MIG_ENABLE
		}
		return gonvml.SUCCESS
	})
	return current, pending, ret
}

// GetUtilizationRates implements gonvml.Device.
func (d *Device) GetUtilizationRates() (gonvml.Utilization, gonvml.Return) {
	var u gonvml.Utilization
	ret := d.read(FeatureUtilization, func(g *GPUState) gonvml.Return {
		u = gonvml.Utilization{Gpu: g.UtilGPU, Memory: g.UtilMemory}
		return gonvml.SUCCESS
	})
	return u, ret
}

// GetTemperature implements gonvml.Device.
func (d *Device) GetTemperature(sensor gonvml.TemperatureSensors) (uint32, gonvml.Return) {
	var t uint32
	ret := d.read(0, func(g *GPUState) gonvml.Return {
		if sensor != gonvml.TEMPERATURE_GPU {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		t = g.TemperatureC
		return gonvml.SUCCESS
	})
	return t, ret
}

// GetTemperatureThreshold implements gonvml.Device (slowdown only).
func (d *Device) GetTemperatureThreshold(kind gonvml.TemperatureThresholds) (uint32, gonvml.Return) {
	var t uint32
	ret := d.read(FeatureTemperatureThreshold, func(g *GPUState) gonvml.Return {
		if kind != gonvml.TEMPERATURE_THRESHOLD_SLOWDOWN {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		t = g.SlowdownTempC
		return gonvml.SUCCESS
	})
	return t, ret
}

// GetPowerUsage implements gonvml.Device.
func (d *Device) GetPowerUsage() (uint32, gonvml.Return) {
	var p uint32
	ret := d.read(FeaturePowerUsage, func(g *GPUState) gonvml.Return {
		p = g.PowerDrawMW
		return gonvml.SUCCESS
	})
	return p, ret
}

// GetEnforcedPowerLimit implements gonvml.Device.
func (d *Device) GetEnforcedPowerLimit() (uint32, gonvml.Return) {
	return d.GetPowerManagementLimit()
}

// GetPowerManagementLimit implements gonvml.Device.
func (d *Device) GetPowerManagementLimit() (uint32, gonvml.Return) {
	var p uint32
	ret := d.read(FeaturePowerLimit, func(g *GPUState) gonvml.Return {
		p = g.PowerLimitMW
		return gonvml.SUCCESS
	})
	return p, ret
}

// GetPowerManagementDefaultLimit implements gonvml.Device.
func (d *Device) GetPowerManagementDefaultLimit() (uint32, gonvml.Return) {
	var p uint32
	ret := d.read(FeaturePowerLimit, func(g *GPUState) gonvml.Return {
		p = g.PowerDefaultMW
		return gonvml.SUCCESS
	})
	return p, ret
}

// GetPowerManagementLimitConstraints implements gonvml.Device.
func (d *Device) GetPowerManagementLimitConstraints() (minMW, maxMW uint32, ret gonvml.Return) {
	ret = d.read(FeaturePowerLimit, func(g *GPUState) gonvml.Return {
		minMW, maxMW = g.PowerMinMW, g.PowerMaxMW
		return gonvml.SUCCESS
	})
	return minMW, maxMW, ret
}

// SetPowerManagementLimit implements gonvml.Device: ERROR_INVALID_ARGUMENT
// outside the constraints, like the driver; PowerSetError and
// PowerSetIgnored simulate a refusal and a silent no-op.
func (d *Device) SetPowerManagementLimit(mw uint32) gonvml.Return {
	return d.read(FeaturePowerLimit, func(g *GPUState) gonvml.Return {
		switch {
		case g.PowerSetError != gonvml.SUCCESS:
			return g.PowerSetError
		case mw < g.PowerMinMW || mw > g.PowerMaxMW:
			return gonvml.ERROR_INVALID_ARGUMENT
		case g.PowerSetIgnored:
			return gonvml.SUCCESS
		}
		g.PowerLimitMW = mw
		if g.PowerDrawMW > mw {
			g.PowerDrawMW = mw
		}
		return gonvml.SUCCESS
	})
}

// GetClockInfo implements gonvml.Device (SM and memory clocks).
func (d *Device) GetClockInfo(clock gonvml.ClockType) (uint32, gonvml.Return) {
	var mhz uint32
	ret := d.read(FeatureClocks, func(g *GPUState) gonvml.Return {
		switch clock {
		case gonvml.CLOCK_SM, gonvml.CLOCK_GRAPHICS:
			mhz = g.SMClockMHz
		case gonvml.CLOCK_MEM:
			mhz = g.MemClockMHz
		default:
			return gonvml.ERROR_NOT_SUPPORTED
		}
		return gonvml.SUCCESS
	})
	return mhz, ret
}

// GetCurrentClocksEventReasons implements gonvml.Device.
func (d *Device) GetCurrentClocksEventReasons() (uint64, gonvml.Return) {
	var r uint64
	ret := d.read(FeatureThrottleReasons, func(g *GPUState) gonvml.Return {
		r = g.ThrottleReasons
		return gonvml.SUCCESS
	})
	return r, ret
}

// GetCurrentClocksThrottleReasons implements gonvml.Device (the old name).
func (d *Device) GetCurrentClocksThrottleReasons() (uint64, gonvml.Return) {
	return d.GetCurrentClocksEventReasons()
}

// GetTotalEccErrors implements gonvml.Device. Volatile and aggregate
// counters are the same number here.
func (d *Device) GetTotalEccErrors(kind gonvml.MemoryErrorType, _ gonvml.EccCounterType) (uint64, gonvml.Return) {
	var n uint64
	ret := d.read(FeatureECC, func(g *GPUState) gonvml.Return {
		switch kind {
		case gonvml.MEMORY_ERROR_TYPE_CORRECTED:
			n = g.ECCCorrected
		case gonvml.MEMORY_ERROR_TYPE_UNCORRECTED:
			n = g.ECCUncorrected
		default:
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		return gonvml.SUCCESS
	})
	return n, ret
}

// GetRemappedRows implements gonvml.Device.
func (d *Device) GetRemappedRows() (corrected, uncorrected int, pending, failure bool, ret gonvml.Return) {
	ret = d.read(FeatureRowRemap, func(g *GPUState) gonvml.Return {
		corrected, uncorrected, pending, failure = g.RemapCorrected, g.RemapUncorrected, g.RemapPending, g.RemapFailure
		return gonvml.SUCCESS
	})
	return corrected, uncorrected, pending, failure, ret
}

// GetRetiredPagesPendingStatus implements gonvml.Device.
func (d *Device) GetRetiredPagesPendingStatus() (gonvml.EnableState, gonvml.Return) {
	var s gonvml.EnableState
	ret := d.read(FeatureRetiredPages, func(g *GPUState) gonvml.Return {
		s = enable(g.RetiredPending)
		return gonvml.SUCCESS
	})
	return s, ret
}

// GetPersistenceMode implements gonvml.Device.
func (d *Device) GetPersistenceMode() (gonvml.EnableState, gonvml.Return) {
	var s gonvml.EnableState
	ret := d.read(FeaturePersistence, func(g *GPUState) gonvml.Return {
		s = enable(g.Persistence)
		return gonvml.SUCCESS
	})
	return s, ret
}

// GetComputeRunningProcesses implements gonvml.Device.
func (d *Device) GetComputeRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	return d.processes(false)
}

// GetGraphicsRunningProcesses implements gonvml.Device.
func (d *Device) GetGraphicsRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	return d.processes(true)
}

func (d *Device) processes(graphics bool) ([]gonvml.ProcessInfo, gonvml.Return) {
	var out []gonvml.ProcessInfo
	var real []realProc
	if !graphics {
		real = d.srv.realOn(d)
	}
	ret := d.read(FeatureProcesses, func(g *GPUState) gonvml.Return {
		out = []gonvml.ProcessInfo{}
		for _, p := range g.Processes {
			if p.Graphics != graphics {
				continue
			}
			mem := p.UsedMemory
			if p.NotAvailable {
				mem = math.MaxUint64 // NVML_VALUE_NOT_AVAILABLE
			}
			out = append(out, gonvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: mem,
				GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF})
		}
		for _, p := range real {
			if !g.hasPID(p.pid) { // a simulated process of that PID wins
				out = append(out, gonvml.ProcessInfo{Pid: p.pid, UsedGpuMemory: p.mem,
					GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF})
			}
		}
		return gonvml.SUCCESS
	})
	return out, ret
}

// supportedEvents are the event types the simulated GPU can deliver.
func supportedEvents(g *GPUState) uint64 {
	ev := uint64(gonvml.EventTypeXidCriticalError | gonvml.EventTypePState | gonvml.EventTypeClock)
	if g.NotSupported&FeatureECC == 0 {
		ev |= gonvml.EventTypeSingleBitEccError | gonvml.EventTypeDoubleBitEccError
	}
	return ev
}

// GetSupportedEventTypes implements gonvml.Device.
func (d *Device) GetSupportedEventTypes() (uint64, gonvml.Return) {
	var ev uint64
	ret := d.read(FeatureEvents, func(g *GPUState) gonvml.Return {
		ev = supportedEvents(g)
		return gonvml.SUCCESS
	})
	return ev, ret
}

// RegisterEvents implements gonvml.Device. Registering again adds to the
// mask, as NVML does.
func (d *Device) RegisterEvents(mask uint64, set gonvml.EventSet) gonvml.Return {
	es, ok := set.(*EventSet)
	if !ok || es == nil || es.srv != d.srv {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	return d.read(FeatureEvents, func(g *GPUState) gonvml.Return {
		if es.freed {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		if g.RegisterEventsError != gonvml.SUCCESS {
			return g.RegisterEventsError
		}
		if mask&^supportedEvents(g) != 0 {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		es.masks[d] |= mask
		return gonvml.SUCCESS
	})
}

func enable(b bool) gonvml.EnableState {
	if b {
		return gonvml.FEATURE_ENABLED
	}
	return gonvml.FEATURE_DISABLED
}
