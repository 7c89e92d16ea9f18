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
// picks one by backend name (BackendNVML, BackendSimulated, BackendAuto).
// Component wraps a Manager for a long-running process: the GPU routes
// (RegisterAPI, or RegisterAPIWith and an APIExtension for another
// component's view of each GPU), DCGM-named Prometheus metrics, and
// readiness that names a missing driver without taking proxyd down.
//
// # What it does not do
//
// It never decides what runs on a GPU (package switcher does), never
// starts or signals a process, and changes no GPU setting but the power
// limit it is asked for. It knows nothing of the daemon or the config file:
// Component takes ComponentOptions, liveness arrives as a Heartbeat func,
// and internal/components converts [gpu] and registers the routes.
//
// # Goroutines and locks
//
// A started Manager runs two goroutines, both joined by Stop: the poll
// loop (telemetry every PollInterval) and the event loop (XID/ECC events in
// bounded waits; Resume's probe is handed to it). Manager.mu guards every
// GPU's mutable state and the subscription set and is never held across an
// NVML call; sampleMu orders sampling passes (poll loop, SampleNow,
// Resume); each GPU's ctl mutex serialises its power-limit operations; a
// Subscription's own mu guards only its pending changes. Readers (the API,
// metrics, the switcher) take mu briefly and never wait on NVML.
// Component.mu guards which library and Manager are open; its retry
// goroutine (while the backend is unavailable) is joined by Stop.
package nvml
