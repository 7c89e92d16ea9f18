package switcher

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// State is where a GPU stands in its switch between mining and AI work.
type State string

// GPU states. The AI round trip is MINING → STOPPING_MINER → VERIFYING_FREE
// → STARTING_AI → SERVING_AI → DRAINING_AI → VERIFYING_FREE →
// RESTORING_MINING → MINING.
const (
	// StateIdle: nothing of proxyd's runs on the GPU.
	StateIdle State = "IDLE"
	// StateMining: the miner runs.
	StateMining State = "MINING"
	// StateStoppingMiner: the miner is being stopped for a contract.
	StateStoppingMiner State = "STOPPING_MINER"
	// StateVerifyingFree: waiting for NVML to prove the GPU free.
	StateVerifyingFree State = "VERIFYING_FREE"
	// StateStartingAI: the AI workload is starting; not yet ready.
	StateStartingAI State = "STARTING_AI"
	// StateServingAI: the AI workload passed its readiness check.
	StateServingAI State = "SERVING_AI"
	// StateDrainingAI: the AI workload is being stopped.
	StateDrainingAI State = "DRAINING_AI"
	// StateRestoringMining: the miner is starting.
	StateRestoringMining State = "RESTORING_MINING"
	// StateQuarantined: out of service until an operator resumes it.
	StateQuarantined State = "QUARANTINED"
)

// States lists every state, in the order of the AI round trip.
var States = []State{StateIdle, StateMining, StateStoppingMiner, StateVerifyingFree, StateStartingAI,
	StateServingAI, StateDrainingAI, StateRestoringMining, StateQuarantined}

// InTransition reports whether the state is a step of a switch (counted
// against max_parallel) rather than a resting state.
func (s State) InTransition() bool {
	switch s {
	case StateStoppingMiner, StateVerifyingFree, StateStartingAI, StateDrainingAI, StateRestoringMining:
		return true
	}
	return false
}

// Reason codes of transitions and decisions: stable, machine-readable,
// low-cardinality (they label proxyd_gpu_transitions_total). The event's
// Message says the rest in words.
const (
	ReasonContractAssigned  = "contract_assigned"
	ReasonContractEnded     = "contract_ended"
	ReasonContractReleased  = "contract_released"
	ReasonMinerStopped      = "miner_stopped"
	ReasonMinerStopFailed   = "miner_stop_failed"
	ReasonAIStopped         = "ai_stopped"
	ReasonAIStopFailed      = "ai_stop_failed"
	ReasonGPUFree           = "gpu_free"
	ReasonKillOwned         = "verify_timeout_kill_owned"
	ReasonGPUNotReleased    = "gpu_not_released"
	ReasonAIReady           = "ai_ready"
	ReasonAIStartTimeout    = "ai_start_timeout"
	ReasonAIStartFailed     = "ai_start_failed"
	ReasonAIExited          = "ai_exited"
	ReasonMiningStarted     = "mining_started"
	ReasonMinerExited       = "miner_exited"
	ReasonMinerStartFailed  = "miner_start_failed"
	ReasonMinerStartTimeout = "miner_start_timeout"
	ReasonMiningWanted      = "mining_wanted"
	ReasonMiningOff         = "mining_not_configured"
	ReasonUnhealthy         = "unhealthy"
	ReasonForeignProcess    = "foreign_process"
	ReasonCordonForce       = "cordon_force"
	ReasonCordoned          = "cordoned"
	ReasonResumed           = "resumed"
	ReasonAdopted           = "reconcile_adopted"
	ReasonReconcileConflict = "reconcile_conflict"
	ReasonReconcileStop     = "reconcile_stop_unexpected"
	ReasonReconcileMissing  = "reconcile_workload_missing"
	ReasonReconcileVerify   = "reconcile_verify"
	ReasonDiscovered        = "discovered"
	// ReasonClaimedMeanwhile: a GPU being taken back from a cluster was
	// allocated to a claim meanwhile; it stays lent.
	ReasonClaimedMeanwhile = "claimed_during_release"
)

// Cordon is an operator's "take no new work" on a GPU; with Force the
// GPU's work is also drained.
type Cordon struct {
	Reason string    `json:"reason"`
	Force  bool      `json:"force"`
	At     time.Time `json:"at"`
}

// GPUStatus is the switcher's view of one GPU: what GET /api/v1/gpus shows
// under "switch".
type GPUStatus struct {
	UUID  string `json:"uuid"`
	Index int    `json:"index"`
	State State  `json:"state"`
	// Owner is "mining", "ai" or "" (nothing of proxyd's).
	Owner    string    `json:"owner"`
	Contract string    `json:"contract,omitempty"`
	Workload string    `json:"workload,omitempty"`
	Since    time.Time `json:"since"`
	// Reason is the code of the last transition, Message its account.
	Reason       string `json:"reason"`
	Message      string `json:"message,omitempty"`
	InTransition bool   `json:"in_transition"`
	// Deadline is when the current waiting state escalates.
	Deadline *time.Time `json:"deadline,omitempty"`
	// NotFree says why the proof of free has not passed yet.
	NotFree string `json:"not_free,omitempty"`
	// ProofOfStart says what a started workload still lacks to count as
	// running (no process of it on the GPU yet).
	ProofOfStart string           `json:"proof_of_start,omitempty"`
	Cordon       *Cordon          `json:"cordon"`
	Handle       *workload.Handle `json:"workload_handle,omitempty"`
	// PowerSnapshot is the power limit the GPU had before its first
	// profile, restored exactly when it goes idle.
	PowerSnapshot *nvml.PowerSnapshot `json:"power_snapshot,omitempty"`
}

// Event is one decision or transition, as GET /api/v1/events lists them.
type Event struct {
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
	// GPU is empty for decisions about a contract or the demand feed.
	GPU      string `json:"gpu,omitempty"`
	From     State  `json:"from,omitempty"`
	To       State  `json:"to,omitempty"`
	Reason   string `json:"reason"`
	Message  string `json:"message"`
	Contract string `json:"contract,omitempty"`
	// Processes are the GPU processes the decision is about, each with its
	// owner (mining, ai:<contract>, foreign, unknown).
	Processes []ProcessOwner `json:"processes,omitempty"`
}

// Contract is a demand for GPUs, declared by id: putting the same contract
// again changes nothing.
type Contract struct {
	ID                 string    `json:"id"`
	GPUs               int       `json:"gpus"`
	Start              time.Time `json:"start"`
	End                time.Time `json:"end"`
	PriceUSDPerGPUHour float64   `json:"price_usd_per_gpu_hour"`
	Priority           int       `json:"priority"`
	Workload           string    `json:"workload"`
	Pin                []string  `json:"pin,omitempty"`
	LeadTime           Duration  `json:"lead_time"`
}

// ActiveAt reports whether the contract wants its GPUs at now: from its
// start less the lead time until its end.
func (c Contract) ActiveAt(now time.Time) bool {
	return !now.Before(c.Start.Add(-c.LeadTime.D())) && now.Before(c.End)
}

// Contract sources.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
	SourceFeed   = "feed"
	// SourceCluster is the cluster's demand ([switcher.kubernetes]): one
	// contract, ClusterContractID, for the GPUs the cluster wants lent.
	SourceCluster = "cluster"
)

// ClusterContractID is the id of the contract that stands for the
// cluster's demand.
const ClusterContractID = "kubernetes"

// ClusterWorkload is the name of the lending workload that serves
// ClusterContractID: the wiring adds it to Config.Workload, with the
// runtime kind that lends a GPU to the cluster, when a cluster is set.
const ClusterWorkload = "kubernetes"

// ClusterDemand is demand from a cluster proxyd lends GPUs to (package
// kubeagent): how many GPUs it wants lent now and which may be (pin). ok
// is false while the cluster cannot be read; the last answer then stands.
type ClusterDemand interface {
	ClusterDemand() (gpus int, pin []string, ok bool)
}

// Contract states in ContractStatus.
const (
	ContractScheduled = "scheduled"
	ContractActive    = "active"
	ContractEnded     = "ended"
	ContractRefused   = "refused"
)

// ContractStatus is a contract with how it is served.
type ContractStatus struct {
	Contract
	Source string `json:"source"`
	State  string `json:"state"`
	// Desired is how many GPUs the contract wants now (0 unless active).
	Desired int `json:"desired"`
	// Assigned counts GPUs heading to or running it; Serving those ready.
	Assigned int      `json:"assigned"`
	Serving  int      `json:"serving"`
	GPUList  []string `json:"assigned_gpus"`
	// Shortfall says why fewer GPUs serve than desired.
	Shortfall string `json:"shortfall_reason,omitempty"`
	// Refused says why the contract is not served at all.
	Refused string `json:"refused_reason,omitempty"`
}

// Summary is a compact account of the switcher for dashboards and the
// demo: GPUs per state and each contract's desired and serving counts.
type Summary struct {
	GPUs         int           `json:"gpus"`
	States       map[State]int `json:"states"`
	InTransition int           `json:"in_transition"`
	Cordoned     int           `json:"cordoned"`
	Contracts    []ContractSum `json:"contracts"`
	// NotReady says why the switcher does not act, "" when it does.
	NotReady string `json:"not_ready,omitempty"`
}

// ContractSum is one contract in a Summary.
type ContractSum struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Desired int    `json:"desired"`
	Serving int    `json:"serving"`
}

// String is a one-line summary: "8 GPUs: MINING 6, SERVING_AI 2 | demo-llm
// 2/2 serving".
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d GPUs:", s.GPUs)
	first := true
	for _, st := range States {
		if n := s.States[st]; n > 0 {
			if !first {
				b.WriteString(",")
			}
			first = false
			fmt.Fprintf(&b, " %s %d", st, n)
		}
	}
	if s.Cordoned > 0 {
		fmt.Fprintf(&b, " (%d cordoned)", s.Cordoned)
	}
	cs := slices.Clone(s.Contracts)
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	for i, c := range cs {
		if i == 0 {
			b.WriteString(" |")
		} else {
			b.WriteString(",")
		}
		if c.State == ContractActive {
			fmt.Fprintf(&b, " %s %d/%d serving", c.ID, c.Serving, c.Desired)
		} else {
			fmt.Fprintf(&b, " %s %s", c.ID, c.State)
		}
	}
	if s.NotReady != "" {
		b.WriteString(" | not acting: " + s.NotReady)
	}
	return b.String()
}
