package nvml

import (
	"fmt"
	"slices"
	"strings"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hashgate/proxyd/gpuproc"
)

// System is what NVML reports about the node's driver.
type System struct {
	DriverVersion string `json:"driver_version"`
	NVMLVersion   string `json:"nvml_version"`
	// CUDADriverVersion is the newest CUDA the driver supports, "12.4".
	CUDADriverVersion string `json:"cuda_driver_version"`
}

// Info is a GPU's identity and fixed properties, read once at start. UUID
// is the key: indexes and minor numbers can change between boots.
type Info struct {
	UUID  string `json:"uuid"`
	Index int    `json:"index"`
	// Minor is the minor number: the GPU is /dev/nvidia<Minor>.
	Minor            int    `json:"minor"`
	DevicePath       string `json:"device_path"`
	Name             string `json:"name"`
	PCIBusID         string `json:"pci_bus_id"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	Architecture     string `json:"architecture"`
	// ComputeCapability is the CUDA compute capability, "8.0".
	ComputeCapability string `json:"compute_capability,omitempty"`
	// MIG is nil where the GPU does not support MIG.
	MIG *MIGMode `json:"mig"`
}

// MIGMode is a GPU's Multi-Instance GPU mode; Pending differs from Current
// until the GPU is reset.
type MIGMode struct {
	Current bool `json:"enabled"`
	Pending bool `json:"pending_enabled"`
}

// Process is a process holding a CUDA or graphics context on a GPU.
type Process struct {
	PID uint32 `json:"pid"`
	// UsedMemoryBytes is the process's GPU memory; meaningless when
	// MemoryUnknown (NVML may not tell an unprivileged caller).
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	MemoryUnknown   bool   `json:"memory_unknown,omitempty"`
	// Owner says whose the process is: "mining", "ai:<contract>",
	// "foreign" or "unknown", from /proc at the time of the sample.
	Owner gpuproc.Owner `json:"owner"`
}

// ECCCounts are the volatile ECC error counters (since the driver loaded
// or the GPU was last reset).
type ECCCounts struct {
	Corrected   uint64 `json:"corrected"`
	Uncorrected uint64 `json:"uncorrected"`
}

// RowRemap is the GPU's row-remapping state (Ampere and newer data-centre
// GPUs). Pending: a remap waits for a GPU reset. Failure: a row could not
// be remapped; the GPU needs service.
type RowRemap struct {
	Corrected   int  `json:"corrected_rows"`
	Uncorrected int  `json:"uncorrected_rows"`
	Pending     bool `json:"pending"`
	Failure     bool `json:"failure"`
}

// PowerRange is the span NVML allows for the power limit, in milliwatts.
type PowerRange struct {
	MinMW uint32 `json:"min_mw"`
	MaxMW uint32 `json:"max_mw"`
}

// Field names used in Telemetry.NotSupported and Telemetry.Errors.
const (
	FieldUtilization       = "utilization"
	FieldMemory            = "memory"
	FieldTemperature       = "temperature"
	FieldSlowdownTemp      = "slowdown_temperature"
	FieldPowerDraw         = "power_draw"
	FieldPowerLimit        = "power_limit"
	FieldPowerConstraints  = "power_limit_constraints"
	FieldSMClock           = "sm_clock"
	FieldMemoryClock       = "memory_clock"
	FieldThrottleReasons   = "throttle_reasons"
	FieldECC               = "ecc"
	FieldRowRemap          = "row_remap"
	FieldRetiredPages      = "retired_pages"
	FieldPersistence       = "persistence_mode"
	FieldComputeProcesses  = "compute_processes"
	FieldGraphicsProcesses = "graphics_processes"
	FieldEvents            = "events"
)

// Telemetry is one sample of a GPU. A nil field was not read: its name is
// in NotSupported when NVML answered ERROR_NOT_SUPPORTED (the field does not
// apply to this GPU, GeForce boards have no ECC for instance) or in Errors
// when the read failed. A Telemetry is never modified once published.
type Telemetry struct {
	// Seq counts this GPU's samples from 1; two samples with the same Seq
	// are the same sample.
	Seq       uint64    `json:"seq"`
	SampledAt time.Time `json:"sampled_at"`

	UtilizationGPU    *uint32 `json:"utilization_gpu_pct"`
	UtilizationMemory *uint32 `json:"utilization_memory_pct"`
	MemoryUsedBytes   *uint64 `json:"memory_used_bytes"`
	MemoryFreeBytes   *uint64 `json:"memory_free_bytes"`
	TemperatureC      *uint32 `json:"temperature_c"`
	// SlowdownTemperatureC is where the GPU starts to slow itself down.
	SlowdownTemperatureC *uint32 `json:"slowdown_temperature_c"`
	PowerDrawMW          *uint32 `json:"power_draw_mw"`
	// PowerLimitMW is the enforced power limit.
	PowerLimitMW     *uint32     `json:"power_limit_mw"`
	PowerConstraints *PowerRange `json:"power_limit_constraints"`
	SMClockMHz       *uint32     `json:"sm_clock_mhz"`
	MemoryClockMHz   *uint32     `json:"memory_clock_mhz"`
	// ThrottleReasons is NVML's clocks-event-reasons bit mask;
	// ThrottleReasonNames spells out the bits that are set.
	ThrottleReasons     *uint64    `json:"throttle_reasons"`
	ThrottleReasonNames []string   `json:"throttle_reason_names,omitempty"`
	ECC                 *ECCCounts `json:"ecc"`
	RowRemap            *RowRemap  `json:"row_remap"`
	RetiredPagesPending *bool      `json:"retired_pages_pending"`
	PersistenceMode     *bool      `json:"persistence_mode"`
	// ComputeProcesses and GraphicsProcesses are nil when they could not be
	// read and empty when none run.
	ComputeProcesses  []Process `json:"compute_processes"`
	GraphicsProcesses []Process `json:"graphics_processes"`

	NotSupported []string          `json:"not_supported,omitempty"`
	Errors       map[string]string `json:"errors,omitempty"`
}

// Processes returns every process on the GPU (a PID that is both compute
// and graphics once) and whether the lists could be read at all. known
// false means "cannot tell", never "free".
func (t *Telemetry) Processes() (procs []Process, known bool) {
	if t == nil || t.ComputeProcesses == nil || t.GraphicsProcesses == nil {
		return nil, false
	}
	seen := map[uint32]bool{}
	for _, list := range [][]Process{t.ComputeProcesses, t.GraphicsProcesses} {
		for _, p := range list {
			if !seen[p.PID] {
				seen[p.PID] = true
				procs = append(procs, p)
			}
		}
	}
	return procs, true
}

// Supported reports whether field applies to this GPU (it was not answered
// with ERROR_NOT_SUPPORTED).
func (t *Telemetry) Supported(field string) bool {
	return t != nil && !slices.Contains(t.NotSupported, field)
}

// State is a GPU's health verdict.
type State string

// Health states, in increasing severity.
const (
	// Healthy: fit for any work.
	Healthy State = "healthy"
	// Degraded: works, but something wants attention (sustained thermal
	// slowdown, a row remap waiting for a reset); clears by itself when the
	// condition does.
	Degraded State = "degraded"
	// Unhealthy: not fit for work (critical XID, uncorrected ECC, row-remap
	// failure, lost). Never clears by itself: only Resume after a clean probe.
	Unhealthy State = "unhealthy"
)

// States lists the health states in increasing severity.
var States = []State{Healthy, Degraded, Unhealthy}

func (s State) rank() int { return slices.Index(States, s) }

// Reason codes.
const (
	ReasonXID               = "xid"
	ReasonXIDUnattributed   = "xid_unattributed"
	ReasonECCUncorrected    = "ecc_uncorrected"
	ReasonRowRemapFailure   = "row_remap_failure"
	ReasonGPULost           = "gpu_lost"
	ReasonEventRegistration = "event_registration_failed"
	ReasonRowRemapPending   = "row_remap_pending"
	ReasonRetiredPages      = "retired_pages_pending"
	ReasonThermalSlowdown   = "thermal_slowdown"
	ReasonHWSlowdown        = "hw_slowdown"
	ReasonTelemetryErrors   = "telemetry_errors"
)

// Reason is one cause of a GPU's health verdict.
type Reason struct {
	// Code is stable and machine-readable (the Reason… constants).
	Code string `json:"code"`
	// Severity is the state this reason alone implies: degraded or unhealthy.
	Severity State `json:"severity"`
	// Message says what happened and what to do, for a person.
	Message string `json:"message"`
	// XID is set for XID reasons.
	XID uint64 `json:"xid,omitempty"`
	// Count is how many times this reason was seen (an XID storm is one
	// reason with a count, not a thousand reasons).
	Count uint64    `json:"count"`
	First time.Time `json:"first_seen"`
	Last  time.Time `json:"last_seen"`

	seq uint64 // order of the last sighting, for Resume's "clear what the probe saw"
}

// Health is a GPU's verdict with its reasons; Reasons is empty when Healthy.
type Health struct {
	State   State    `json:"state"`
	Reasons []Reason `json:"reasons"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
}

// Summary is a one-line account, "unhealthy: xid 79 (GPU has fallen off the bus)".
func (h Health) Summary() string {
	if len(h.Reasons) == 0 {
		return string(h.State)
	}
	parts := make([]string, len(h.Reasons))
	for i, r := range h.Reasons {
		parts[i] = r.Message
	}
	return fmt.Sprintf("%s: %s", h.State, strings.Join(parts, "; "))
}

func (h Health) clone() Health {
	h.Reasons = slices.Clone(h.Reasons)
	if h.Reasons == nil {
		h.Reasons = []Reason{}
	}
	return h
}

// Event is an NVML event the event loop saw for a GPU.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // "xid" or "ecc_uncorrected"
	XID  uint64    `json:"xid,omitempty"`
	// Application: an XID caused by an application, not the GPU.
	Application bool   `json:"application,omitempty"`
	Description string `json:"description"`
}

// GPU is everything proxyd knows about one GPU at a moment.
type GPU struct {
	Info
	// Telemetry is the latest sample; nil before the first.
	Telemetry *Telemetry `json:"telemetry"`
	Health    Health     `json:"health"`
	// LastXID is the most recent XID seen (0: none), as DCGM reports it.
	LastXID uint64 `json:"last_xid"`
	// RecentEvents are the last few events, oldest first.
	RecentEvents []Event `json:"recent_events"`
	// EventsMonitored: the GPU is registered for XID (and, where it has
	// ECC, uncorrected-ECC) events.
	EventsMonitored bool `json:"events_monitored"`
}

// Node is the whole GPU side of this machine.
type Node struct {
	Backend string `json:"backend"`
	System
	GPUs []GPU `json:"gpus"`
	// Problems are node-level troubles: a GPU left out of the inventory,
	// event monitoring down.
	Problems []string `json:"problems,omitempty"`
}

// architectureName spells out gonvml's architecture codes.
func architectureName(a gonvml.DeviceArchitecture) string {
	switch a {
	case gonvml.DEVICE_ARCH_KEPLER:
		return "Kepler"
	case gonvml.DEVICE_ARCH_MAXWELL:
		return "Maxwell"
	case gonvml.DEVICE_ARCH_PASCAL:
		return "Pascal"
	case gonvml.DEVICE_ARCH_VOLTA:
		return "Volta"
	case gonvml.DEVICE_ARCH_TURING:
		return "Turing"
	case gonvml.DEVICE_ARCH_AMPERE:
		return "Ampere"
	case gonvml.DEVICE_ARCH_ADA:
		return "Ada"
	case gonvml.DEVICE_ARCH_HOPPER:
		return "Hopper"
	case gonvml.DEVICE_ARCH_BLACKWELL:
		return "Blackwell"
	}
	return fmt.Sprintf("unknown (%d)", a)
}

// throttleBits names the clocks-event-reason bits (nvidia-smi's words).
var throttleBits = []struct {
	bit  uint64
	name string
}{
	{gonvml.ClocksThrottleReasonGpuIdle, "idle"},
	{gonvml.ClocksThrottleReasonApplicationsClocksSetting, "applications_clocks_setting"},
	{gonvml.ClocksThrottleReasonSwPowerCap, "sw_power_cap"},
	{gonvml.ClocksThrottleReasonHwSlowdown, "hw_slowdown"},
	{gonvml.ClocksThrottleReasonSyncBoost, "sync_boost"},
	{gonvml.ClocksThrottleReasonSwThermalSlowdown, "sw_thermal_slowdown"},
	{gonvml.ClocksThrottleReasonHwThermalSlowdown, "hw_thermal_slowdown"},
	{gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"},
	{gonvml.ClocksThrottleReasonDisplayClockSetting, "display_clock_setting"},
}

// ThrottleReasonNames spells out the bits set in mask.
func ThrottleReasonNames(mask uint64) []string {
	var out []string
	for _, b := range throttleBits {
		if mask&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	return out
}

// xidText is NVIDIA's short description of the XIDs seen most in the field.
var xidText = map[uint64]string{
	13:  "graphics engine exception (application fault)",
	31:  "GPU memory page fault (application fault)",
	43:  "GPU stopped processing (application fault)",
	45:  "preemptive cleanup after previous errors",
	48:  "double-bit ECC error",
	61:  "internal micro-controller breakpoint/warning",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement or row remapping recording event",
	64:  "ECC page retirement or row remapper recording failure",
	68:  "video processor exception",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	109: "context switch timeout",
	119: "GSP RPC timeout",
	120: "GSP error",
}

// XIDDescription returns NVIDIA's description of an XID, or "" if unknown.
func XIDDescription(xid uint64) string { return xidText[xid] }

func xidLabel(xid uint64) string {
	if d := xidText[xid]; d != "" {
		return fmt.Sprintf("XID %d (%s)", xid, d)
	}
	return fmt.Sprintf("XID %d", xid)
}
