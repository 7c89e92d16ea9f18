// Package switcher turns a mining site's GPUs into compute on demand: when
// an AI contract needs N GPUs it drains them from mining, proves through
// NVML that they are free, starts the inference workloads on them, waits
// until they serve, and gives the GPUs back to mining when the contract
// ends.
//
// Demand is declarative and level-triggered: contracts (from the config,
// the API and an optional polled feed) say how many GPUs of which workload
// they want and when; every pass derives each GPU's desired owner from the
// contracts active at that moment and walks the GPU one guarded step
// toward it, so a replayed or lost signal is harmless.
//
// Each GPU follows one state machine:
//
//	MINING → STOPPING_MINER → VERIFYING_FREE → STARTING_AI → SERVING_AI
//	       → DRAINING_AI → VERIFYING_FREE → RESTORING_MINING → MINING
//
// plus IDLE and QUARANTINED, and a cordon flag with a mandatory reason.
// Every waiting state has a deadline and an escalation: a miner that will
// not stop is killed and, if the GPU is still not free, the GPU is
// quarantined (gpu_not_released) and no AI work starts on it; an AI
// workload that never serves is stopped and the GPU goes back to mining
// with a shortfall reason on the contract. AI work never starts beside a
// running process: the proof of free needs several consecutive NVML
// samples with no process, memory back at the idle baseline and
// utilisation 0. At most max_parallel GPUs are in transition at once.
//
// What outside input can make it keep is bounded: API and feed contracts
// are forgotten contract_retention after their end (a contract_pruned
// event keeps their history), at most max_contracts are kept per source,
// bodies and feed answers have size limits, and their JSON is decoded
// strictly (exact field names, no repeated names); errors quote at most a
// short prefix of the input and never demand_url's credentials.
//
// Every GPU process has an owner (package gpuproc, through nvml): proxyd's
// miner, a contract's AI workload, foreign or unknown. A stop that reports
// success is not believed until the GPU shows none of the workload's
// processes; one still there its stop_timeout later gets the runtime's
// forced stop. Only foreign and unknown processes leave a GPU quarantined
// for an operator; a foreign process is never signalled. A started
// workload counts as MINING or SERVING_AI only once its own process holds
// its GPU (proof_of_start), and one whose process holds another GPU is
// stopped (wrong_gpu).
//
// State (API contracts, assignments, power snapshots, cordons,
// quarantines) is written atomically to state_dir on every change; on
// start the switcher reconciles the file with what really runs (container
// labels, exec status commands, NVML processes) before it acts, adopting
// its own workloads and quarantining GPUs with foreign processes.
//
// On a Kubernetes node (Options.Cluster, package kubeagent) the cluster's
// pending claims are one more contract, ClusterContractID, served by the
// lending workload: its start removes proxyd's DRA taint from the GPU, its
// stop taints it again; a stop that finds the GPU claimed meanwhile
// (workload.ErrInUse) keeps it with the contract instead of mining.
//
// Workloads run through workload.Runtime: Docker (GPU by CDI name, owner
// labels), exec commands, or the simulated runtime used by the demo and the
// tests; Component builds them from the drivers of a workload.Registry.
// Component runs a Switcher in a long-running process: it waits for the GPU
// backend, builds the runtimes and the switcher, and serves the API.
//
// # What it does not do
//
// It does not watch GPUs itself (it reads package nvml's Manager and its
// health changes), never stops a process or container it did not start,
// never preempts a running contract for a higher-priority one, and knows
// nothing of the daemon or the config file: it takes Config, Contracts and
// a workload.Registry, liveness arrives as a Heartbeat func, and
// internal/components converts [switcher] and [[contract]], registers the
// runtime kinds and names the keys a reload cannot apply. It does not
// serve the GPU routes: the wiring adds each GPU's switch state to them.
//
// # Goroutines and locks
//
// One loop goroutine (Run) owns the decisions: each pass derives the
// desired owners and steps every GPU, under Switcher.mu. Everything that
// talks to a runtime or to NVML runs as an op, one goroutine per GPU at
// most, launched only after the state file records the intent and joined
// by Shutdown; an op hands its result back to the loop over a channel, and
// mu is never held while a runtime or NVML is called. The demand feed is
// polled by one goroutine that Run starts and joins. API handlers take mu
// briefly. Component.mu guards which Switcher runs and why none does yet;
// its run goroutine is joined by Stop. Component.mu and Switcher.mu are
// never held together; nvml.Manager's locks are only taken inside its own
// methods, which the switcher calls without holding mu.
package switcher
