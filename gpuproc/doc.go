// Package gpuproc says who owns a process that holds a GPU. NVML lists a
// GPU's processes by host PID only; for each PID this package reads
// /proc/<pid>:
//
//   - stat: the command name, state, process group and session;
//   - cgroup: the systemd unit and the Docker, podman or containerd
//     container the process runs in;
//   - environ: the markers proxyd sets on every command it runs and that
//     children inherit: PROXYD_WORKLOAD (the workload handle's marker),
//     PROXYD_CONTRACT ("" for the miner) and PROXYD_GPU_UUID (the GPU it
//     was started for); and, for the simulated GPU backend,
//     PROXYD_SIM_GPU and PROXYD_SIM_GPU_MIB.
//
// Classify turns those facts into an Owner: "mining", "ai:<contract>"
// (with the handle's marker), "foreign" (with what is known: unit,
// container, command) or "unknown" with the reason /proc could not tell
// (another user's process hidden by ProtectProc=invisible or hidepid, an
// environment proxyd may not read, another PID namespace). It never
// guesses: a process whose environment cannot be read is unknown, not
// foreign, unless a container proxyd started vouches for it.
//
// KillMarked is the one place proxyd signals a process by PID: it sends
// SIGKILL only to processes whose own environment carries the exact
// marker, each checked through a pidfd right before the signal, so a PID
// reused by another process is never hit. Nothing else here writes or
// signals anything.
//
// The package is a leaf: it imports nothing of proxyd's, and everything it
// reads goes through a ProcFS rooted at /proc (tests root one at a fake
// tree).
package gpuproc
