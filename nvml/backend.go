package nvml

import (
	"errors"
	"fmt"
	"os"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hashgate/proxyd/gpuproc"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// Backend names, as [gpu] backend spells them.
const (
	BackendAuto      = "auto"
	BackendNVML      = "nvml"
	BackendSimulated = "simulated"
	BackendOff       = "off"
)

// Library is an initialised NVML library, real or simulated. Close it
// after the Manager built on it has stopped.
type Library struct {
	gonvml.Interface
	// Backend is what was opened: BackendNVML or BackendSimulated ("auto"
	// resolves to one of them).
	Backend string
	// Sim is the simulated server's control surface; nil for real NVML.
	Sim *nvmlsim.Server
	// Procs tells whose a GPU process is: /proc for real NVML, the
	// simulated server (its own processes, then /proc) for the simulation.
	Procs gpuproc.Inspector
}

// LibraryOptions adjusts OpenLibrary; the zero value is production.
type LibraryOptions struct {
	// Real returns the real library; nil uses go-nvml's (which dlopens
	// libnvidia-ml.so.1 at Init). Tests substitute a simulated server.
	Real func() gonvml.Interface
	// Sim configures the simulated server.
	Sim nvmlsim.Options
}

// OpenLibrary loads and initialises the library a backend names. "nvml"
// and "auto" both load the real library: without a driver the error
// matches ErrLibraryNotFound, and each caller decides what that means
// ("auto": GPU features off; "nvml": a fault to report). "off" is an error.
func OpenLibrary(backend string, opts LibraryOptions) (*Library, error) {
	switch backend {
	case BackendSimulated:
		if opts.Sim.Node == "" {
			// Two simulated daemons on one machine (tests run in
			// parallel) need their own UUIDs, or each sees the other's
			// PROXYD_SIM_GPU processes.
			opts.Sim.Node = os.Getenv(nvmlsim.EnvNode)
		}
		if opts.Sim.Procs == nil {
			// Real processes with PROXYD_SIM_GPU show on the simulated GPUs.
			opts.Sim.Procs = gpuproc.NewProcFS("/proc")
		}
		sim := nvmlsim.New(opts.Sim)
		if ret := sim.Init(); ret != gonvml.SUCCESS {
			return nil, fmt.Errorf("GPU backend %q: %w", backend, retErr("Init", "", ret))
		}
		return &Library{Interface: sim, Backend: BackendSimulated, Sim: sim, Procs: sim}, nil
	case BackendNVML, BackendAuto:
		newLib := opts.Real
		if newLib == nil {
			newLib = func() gonvml.Interface { return gonvml.New() }
		}
		lib := newLib()
		switch ret := lib.Init(); ret {
		case gonvml.SUCCESS:
			return &Library{Interface: lib, Backend: BackendNVML, Procs: gpuproc.NewProcFS("/proc")}, nil
		case gonvml.ERROR_LIBRARY_NOT_FOUND:
			return nil, fmt.Errorf("GPU backend %q: %w", backend, ErrLibraryNotFound)
		default:
			return nil, fmt.Errorf("GPU backend %q: initialising NVML: %w", backend, retErr("Init", "", ret))
		}
	case BackendOff:
		return nil, errors.New(`GPU backend "off": GPU features are disabled by [gpu] backend`)
	}
	return nil, fmt.Errorf("unknown GPU backend %q (use auto, nvml, simulated or off)", backend)
}

// Close shuts the library down.
func (l *Library) Close() error {
	if l.Sim != nil {
		l.Sim.Close()
	}
	return retErr("Shutdown", "", l.Shutdown())
}
