// Package kubeagent lends a Kubernetes node's idle GPUs to mining through
// DRA device taints, and gives them back to the cluster when its work
// needs them.
//
// While a GPU mines it carries a DeviceTaintRule that proxyd owns (one per
// GPU, named RuleNamePrefix+<node>-<device>, labelled LabelManagedBy=proxyd
// and LabelNode=<node>, taint key TaintKey, effect NoSchedule), so the
// scheduler allocates no claim to it. proxyd's GPUs are matched to the
// node's DRA devices by UUID: the ResourceSlices of the configured driver
// (gpu.nvidia.com) on this node, attribute "uuid".
//
// The agent plugs into the switcher's state machine three ways and no
// other:
//
//   - Demand: pending ResourceClaims that match the selector (namespace,
//     device class, pod priority floor) and that a pending pod waits on,
//     plus the GPUs that serve a claim or dwell after one, are one
//     contract's worth of GPUs (ClusterDemand), pinned to the GPUs that
//     may stay lent: a GPU whose dwell (idle_before_mining) ran out
//     without a claim drops out of the pin and the switcher drains it.
//   - Runtime: the "AI workload" of kind Kind. Start deletes the GPU's
//     rule (the switcher has proven the GPU free first); Status is ready
//     once a claim on the device is allocated and one of its pods is Ready;
//     Stop taints the GPU again and then re-reads the claims from the API
//     server: a claim the scheduler allocated meanwhile wins (the rule is
//     removed again and Stop fails with ErrClaimed, so no miner starts).
//   - GuardMining wraps the mining runtime: a miner starts only on a GPU
//     whose rule exists.
//
// The rules are the agent's only persistent state besides the switcher's
// own file: after a restart, the switcher's known handles say which GPUs
// are lent (List), and every other mapped GPU gets its rule back before
// anything else happens. A rule of proxyd's on this node that stands for
// no GPU (its device no longer published for the node, or no GPU that
// Options.GPUs lists) is deleted once it has done so on every look for
// StaleRuleGrace, judged only on synced caches, after List and while the
// API server answers (stale.go). Rules of other owners (NVIDIA's gpu.nvidia.com
// keys, an operator's) are never listed, changed or deleted: the agent
// only touches objects with its label and name prefix.
//
// Its Prometheus series (metrics.go) go to Options.Metrics, a Registerer
// the caller owns.
//
// It knows nothing of the config file or the daemon: internal/components
// builds it from [switcher.kubernetes], registers Runtime as the kind Kind
// in the switcher's workload.Registry, wraps the mining kind's driver with
// GuardMining, hands the agent to the switcher as Options.Cluster, runs
// Run and stops it after the switcher.
//
// It evicts only when the operator says so (Options.EvictForMining): then
// Stop on a GPU a claim holds sets its rule to effect None (a dry run),
// waits for the eviction controller's EvictionInProgress status of that
// generation, journals what it would evict, sets NoExecute, and reads the
// status and the claims back until the eviction is done; it fails (the
// rule deleted again, the GPU still lent) after EvictionTimeout (evict.go).
// Otherwise a GPU that serves a claim stays lent however long the claim
// holds it. It does not schedule: which pending pod gets a lent GPU
// is the scheduler's business, and every node's agent answers the same
// pending claim (surplus GPUs go back to mining after the dwell). When the
// API server is unreachable the miners keep running and no GPU is lent or
// taken back; Ready says so.
package kubeagent
