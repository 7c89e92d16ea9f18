package gpuproc

import (
	"fmt"
	"strings"
)

// Owner classes. An AI workload's class is ClassAIPrefix + its contract.
const (
	ClassMining   = "mining"
	ClassAIPrefix = "ai:"
	ClassForeign  = "foreign"
	ClassUnknown  = "unknown"
)

// Owner says whose a GPU process is, and what is known about it.
type Owner struct {
	// Class is "mining", "ai:<contract>", "foreign" or "unknown".
	Class string `json:"class"`
	// Workload is the marker of the proxyd workload handle the process
	// belongs to (its PROXYD_WORKLOAD); set for mining and ai classes.
	Workload string `json:"workload,omitempty"`
	Contract string `json:"contract,omitempty"`
	// GPU is the GPU UUID the workload was started for (PROXYD_GPU_UUID).
	GPU       string `json:"gpu,omitempty"`
	Unit      string `json:"unit,omitempty"`
	Container string `json:"container,omitempty"`
	Comm      string `json:"comm,omitempty"`
	PGID      int    `json:"pgid,omitempty"`
	SID       int    `json:"sid,omitempty"`
	// Reason says why the class is unknown.
	Reason    string `json:"reason,omitempty"`
	Simulated bool   `json:"simulated,omitempty"`
}

// Proxyd reports whether the process is one of proxyd's workloads.
func (o Owner) Proxyd() bool {
	return o.Class == ClassMining || strings.HasPrefix(o.Class, ClassAIPrefix)
}

// String is a one-line account: "mining (exec:mining:GPU-…)",
// "foreign (comm sleep, unit session-2.scope)", "unknown (…)".
func (o Owner) String() string {
	if o.Class == "" {
		return "not attributed"
	}
	var known []string
	if o.Proxyd() && o.Workload != "" {
		known = append(known, o.Workload)
	}
	if o.Reason != "" {
		known = append(known, o.Reason)
	}
	if o.Comm != "" {
		known = append(known, "comm "+o.Comm)
	}
	if o.Unit != "" {
		known = append(known, "unit "+o.Unit)
	}
	if o.Container != "" {
		known = append(known, "container "+shortID(o.Container))
	}
	if o.Simulated {
		known = append(known, "simulated")
	}
	if len(known) == 0 {
		return o.Class
	}
	return fmt.Sprintf("%s (%s)", o.Class, strings.Join(known, ", "))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Known is a workload proxyd runs, as Classify matches processes to it:
// by the marker in their environment or, where that cannot be read (a
// container's root process seen by an unprivileged proxyd), by the
// container they run in.
type Known struct {
	Marker string
	// Container is the container ID for workloads run as containers.
	Container string
	// Contract is the workload's contract, "" for the miner.
	Contract string
	GPU      string
}

// Classify says whose a process is. Its marker decides where it can be
// read; a container proxyd started decides where the marker cannot be
// read; without either the process is foreign when its environment was
// read and unknown when it was not.
func Classify(f Facts, known []Known) Owner {
	o := Owner{Comm: f.Comm, PGID: f.PGID, SID: f.SID, Unit: f.Unit, Container: f.Container, Simulated: f.Simulated}
	if f.Err != nil {
		o.Class, o.Reason = ClassUnknown, f.Err.Error()
		return o
	}
	if m := f.Env[EnvWorkload]; m != "" {
		o.Workload, o.Contract, o.GPU = m, f.Env[EnvContract], f.Env[EnvGPU]
		for _, k := range known {
			if k.Marker == m {
				o.Contract, o.GPU = k.Contract, k.GPU
				break
			}
		}
		o.Class = classOf(o.Contract)
		return o
	}
	if f.Container != "" {
		for _, k := range known {
			if k.Container != "" && k.Container == f.Container {
				o.Workload, o.Contract, o.GPU = k.Marker, k.Contract, k.GPU
				o.Class = classOf(o.Contract)
				return o
			}
		}
	}
	switch {
	case f.EnvErr != nil:
		o.Class, o.Reason = ClassUnknown, f.EnvErr.Error()
	case f.State == "Z":
		o.Class, o.Reason = ClassUnknown, "a zombie: it exited and its parent has not reaped it, its environment is gone"
	default:
		o.Class = ClassForeign
	}
	return o
}

func classOf(contract string) string {
	if contract == "" {
		return ClassMining
	}
	return ClassAIPrefix + contract
}
