// Package nvml is proxyd's face over NVIDIA's management library: every use
// of go-nvml (imported as gonvml) lives here. It gives the switcher and the
// operator what they need to know about each GPU, keyed by UUID:
//
//   - inventory (Info): index, minor number, name, PCI bus id, memory,
//     architecture, MIG mode; the driver, NVML and CUDA versions (System);
//   - telemetry (Telemetry), sampled every poll interval by one goroutine
//     and published so readers never wait on NVML; a field NVML answers
//     ERROR_NOT_SUPPORTED (GeForce boards have no ECC) is "not applicable",
//     never a fault;
//   - XID and ECC events, read from one event set by a second goroutine in
//     bounded waits;
//   - a health verdict with reasons (Health): healthy, degraded (clears by
//     itself) or unhealthy (sticky: only Resume, after a probe, clears it);
//   - power-limit control: SnapshotPower, SetPowerLimit (clamped, read back)
//     and RestorePower (exact), plus PersistenceMode;
//   - an owner for every GPU process of every sample (package gpuproc:
//     mining, ai:<contract>, foreign or unknown), so NVML's bare PIDs say
//     whose they are.
//
// Manager does all of that over any gonvml.Interface: production passes the
// real library, tests and demos the simulated server in nvmlsim. OpenLibrary
// picks one by [gpu] backend. Component wraps a Manager for the daemon:
// /api/v1/gpus, DCGM-named Prometheus metrics, and readiness that names a
// missing driver without taking proxyd down.
package nvml
