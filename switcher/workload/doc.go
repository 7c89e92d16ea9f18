// Package workload starts, watches and stops the switcher's workloads, one
// instance per GPU, behind one small interface (Runtime) with three
// implementations:
//
//   - Docker: the Docker Engine API (Docker or podman), the GPU attached by
//     CDI name, every container labelled with its owner, GPU and contract;
//   - Exec: start, stop and status commands (systemctl, vendor tools);
//   - Sim: a simulated workload on nvmlsim's simulated GPUs, for the demo
//     and tests.
//
// A workload's Definition holds what every runtime understands (readiness,
// warm-up, port, stop timeout, power limit) and, in Params, the runtime's
// own settings (DockerParams, ExecParams, SimParams). Runtime kinds are
// registered by value: a Registry maps each kind to a Driver (how to build
// its runtime); the wiring (internal/components) builds one Registry,
// registers the kinds proxyd ships and hands it to the switcher. There is
// no package-level registry. A new kind is a package with its Runtime, a
// Register call in the wiring and its config sub-table.
//
// A runtime only ever stops what it started: Docker refuses to stop or
// remove a container without proxyd's owner label.
//
// Exec and simulated workloads carry proxyd's environment markers
// (MarkerEnv: PROXYD_WORKLOAD=<the handle's Marker>, PROXYD_CONTRACT,
// PROXYD_GPU_UUID): exec commands run with them and their children inherit
// them, simulated processes show them. Package gpuproc reads them back from
// /proc to tell which GPU process is whose, and a forced stop of an exec
// workload without kill_command SIGKILLs exactly the processes that carry
// the handle's marker. A container's processes are known by the container
// they run in (its cgroup names the ID, which is the handle's ID): the
// container's env stays what the workload's config says.
//
// # What it does not do
//
// It decides nothing: which workload runs on which GPU, when, and what to
// do when a start fails or a stop does not take are the switcher's. It
// does not read NVML (the switcher proves a GPU free and attributes its
// processes), keeps no state across a restart (the switcher persists the
// Handles and hands them back), and knows nothing of the config file.
//
// # Goroutines and locks
//
// Runtimes start no goroutines of their own that outlive a call: every
// call runs in the caller's goroutine (the switcher's op for that GPU) and
// returns within its context. Docker's mu guards only which engine answered
// (docker or podman); Sim's mu guards its instances, calls and faults and
// is never held while calling the simulated server, whose scheduled
// callbacks run on its clock. Exec holds no lock: each command runs in a
// process group of its own and is waited for before the call returns. A
// Registry is filled before use and only read afterwards, so it has no
// lock.
package workload
