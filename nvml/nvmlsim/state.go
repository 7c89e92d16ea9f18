package nvmlsim

import (
	"slices"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Feature is a group of NVML calls a simulated GPU can answer with
// ERROR_NOT_SUPPORTED, the way GeForce boards and older GPUs do.
type Feature uint32

// Features a simulated GPU may lack. Combine them with |.
const (
	FeatureECC                  Feature = 1 << iota // GetTotalEccErrors, ECC events
	FeatureRowRemap                                 // GetRemappedRows
	FeatureRetiredPages                             // GetRetiredPagesPendingStatus
	FeatureMIG                                      // GetMigMode
	FeaturePowerUsage                               // GetPowerUsage
	FeaturePowerLimit                               // enforced/management limit, constraints, default, Set
	FeatureClocks                                   // GetClockInfo
	FeatureThrottleReasons                          // GetCurrentClocksEventReasons
	FeatureTemperatureThreshold                     // GetTemperatureThreshold
	FeatureUtilization                              // GetUtilizationRates
	FeatureProcesses                                // Get{Compute,Graphics}RunningProcesses
	FeaturePersistence                              // GetPersistenceMode
	FeatureEvents                                   // GetSupportedEventTypes, RegisterEvents
)

// GeForceUnsupported is what a GeForce board answers ERROR_NOT_SUPPORTED to:
// no ECC, no row remapping or page retirement, no MIG.
const GeForceUnsupported = FeatureECC | FeatureRowRemap | FeatureRetiredPages | FeatureMIG

// Process is a process the simulated GPU reports as running on it.
type Process struct {
	PID uint32
	// UsedMemory is the process's GPU memory in bytes; NotAvailable reports
	// NVML's "value not available" instead (as unprivileged reads can).
	UsedMemory   uint64
	NotAvailable bool
	// Graphics lists the process among graphics processes instead of compute.
	Graphics bool
	// Env is the simulated process's environment, "NAME=value" (the
	// simulated runtime puts proxyd's workload markers here); Comm its
	// command name. The server's Inspect reports them.
	Env  []string
	Comm string
}

// A100 idle and limit values the simulated GPUs start with.
const (
	IdleUtilization   = 0
	IdlePowerMW       = 55_000
	IdleTemperatureC  = 32
	MaxLoadTempRiseC  = 40
	SlowdownTempC     = 90
	IdleSMClockMHz    = 210
	MaxSMClockMHz     = 1410
	MemClockMHz       = 1215
	PowerLimitMinMW   = 100_000
	PowerLimitMaxMW   = 400_000
	PowerLimitDefault = 400_000
	// IdleMemoryUsed is what the driver holds on an idle A100 with
	// persistence mode on and no process (nvidia-smi shows "4MiB").
	IdleMemoryUsed uint64 = 4 << 20
)

// GPUState is everything a simulated GPU reports beyond its identity. The
// zero value is a cold, silent GPU; DefaultState is an idle A100. Change it
// through Server.Update so every change is atomic for readers.
type GPUState struct {
	UtilGPU, UtilMemory uint32 // percent
	TemperatureC        uint32
	SlowdownTempC       uint32
	PowerDrawMW         uint32
	// PowerLimitMW is the management limit: what SetPowerManagementLimit
	// writes, GetPowerManagementLimit reads and the GPU enforces.
	PowerLimitMW     uint32
	PowerMinMW       uint32
	PowerMaxMW       uint32
	PowerDefaultMW   uint32
	SMClockMHz       uint32
	MemClockMHz      uint32
	ThrottleReasons  uint64 // gonvml.ClocksThrottleReason… bits
	ECCCorrected     uint64 // volatile counters
	ECCUncorrected   uint64
	RemapCorrected   int
	RemapUncorrected int
	RemapPending     bool
	RemapFailure     bool
	RetiredPending   bool
	Persistence      bool
	MIGEnabled       bool
	// BaseMemoryUsed is memory used with no process (driver, contexts).
	BaseMemoryUsed uint64
	Processes      []Process

	// RefuseRelease makes StopProcess a no-op: the GPU keeps its processes
	// and memory, like a zombie holding a CUDA context.
	RefuseRelease bool
	// Lost makes every call on the GPU return ERROR_GPU_IS_LOST.
	Lost bool
	// NotSupported lists the features answered with ERROR_NOT_SUPPORTED.
	NotSupported Feature
	// PowerSetError, when not SUCCESS, is what SetPowerManagementLimit
	// returns (ERROR_NO_PERMISSION when not root).
	PowerSetError gonvml.Return
	// PowerSetIgnored makes SetPowerManagementLimit answer SUCCESS without
	// changing the limit, so a read-back sees the old value.
	PowerSetIgnored bool
	// RegisterEventsError, when not SUCCESS, is what RegisterEvents returns.
	RegisterEventsError gonvml.Return
}

// DefaultState is an idle A100-SXM4-40GB with persistence mode on.
func DefaultState() GPUState {
	return GPUState{
		UtilGPU:         IdleUtilization,
		TemperatureC:    IdleTemperatureC,
		SlowdownTempC:   SlowdownTempC,
		PowerDrawMW:     IdlePowerMW,
		PowerLimitMW:    PowerLimitDefault,
		PowerMinMW:      PowerLimitMinMW,
		PowerMaxMW:      PowerLimitMaxMW,
		PowerDefaultMW:  PowerLimitDefault,
		SMClockMHz:      IdleSMClockMHz,
		MemClockMHz:     MemClockMHz,
		ThrottleReasons: gonvml.ClocksThrottleReasonGpuIdle,
		Persistence:     true,
		BaseMemoryUsed:  IdleMemoryUsed,
	}
}

// SetLoad sets utilisation, power draw, temperature and clocks consistently
// for a load between 0 (idle) and 1 (flat out at the power limit).
func (g *GPUState) SetLoad(load float64) {
	load = min(max(load, 0), 1)
	g.UtilGPU = uint32(load*100 + 0.5)
	g.UtilMemory = uint32(load*60 + 0.5)
	limit := max(g.PowerLimitMW, IdlePowerMW)
	g.PowerDrawMW = IdlePowerMW + uint32(load*float64(limit-IdlePowerMW))
	g.TemperatureC = IdleTemperatureC + uint32(load*MaxLoadTempRiseC+0.5)
	g.SMClockMHz = IdleSMClockMHz + uint32(load*float64(MaxSMClockMHz-IdleSMClockMHz))
	if load == 0 {
		g.ThrottleReasons |= gonvml.ClocksThrottleReasonGpuIdle
	} else {
		g.ThrottleReasons &^= gonvml.ClocksThrottleReasonGpuIdle
	}
}

// StartProcess adds (or replaces) a process using mem bytes of GPU memory.
func (g *GPUState) StartProcess(pid uint32, mem uint64) {
	g.Processes = slices.DeleteFunc(g.Processes, func(p Process) bool { return p.PID == pid })
	g.Processes = append(g.Processes, Process{PID: pid, UsedMemory: mem})
}

// AddProcess adds (or replaces) a process with everything Process holds.
func (g *GPUState) AddProcess(p Process) {
	g.Processes = slices.DeleteFunc(g.Processes, func(x Process) bool { return x.PID == p.PID })
	p.Env = slices.Clone(p.Env)
	g.Processes = append(g.Processes, p)
}

// StopProcess removes a process and reports whether it did; with
// RefuseRelease set it removes nothing.
func (g *GPUState) StopProcess(pid uint32) bool {
	if g.RefuseRelease {
		return false
	}
	n := len(g.Processes)
	g.Processes = slices.DeleteFunc(g.Processes, func(p Process) bool { return p.PID == pid })
	return len(g.Processes) != n
}

// StopAllProcesses removes every process unless RefuseRelease is set.
func (g *GPUState) StopAllProcesses() {
	if !g.RefuseRelease {
		g.Processes = nil
	}
}

func (g *GPUState) memoryUsed(total uint64) uint64 {
	used := g.BaseMemoryUsed
	for _, p := range g.Processes {
		if !p.NotAvailable {
			used += p.UsedMemory
		}
	}
	return min(used, total)
}

func (g *GPUState) clone() GPUState {
	c := *g
	c.Processes = slices.Clone(g.Processes)
	return c
}

func (g *GPUState) hasPID(pid uint32) bool {
	return slices.ContainsFunc(g.Processes, func(p Process) bool { return p.PID == pid })
}
