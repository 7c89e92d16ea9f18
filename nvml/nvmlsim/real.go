package nvmlsim

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashgate/proxyd/gpuproc"
)

// EnvNode, in the environment of a process that opens the simulated
// backend through nvml.OpenLibrary, sets Options.Node: the seed of the
// GPUs' UUIDs. Simulated daemons with different nodes do not see each
// other's PROXYD_SIM_GPU=<UUID> processes.
const EnvNode = "PROXYD_SIM_NODE"

// Real processes on simulated GPUs (see the package doc).
const (
	// DefaultRealProcessMiB is the memory a real process shows on its
	// simulated GPU without PROXYD_SIM_GPU_MIB.
	DefaultRealProcessMiB = 1024
	// realScanTTL is how long one /proc scan answers queries: the eight
	// GPUs of one telemetry pass are asked within it, so a pass costs one
	// scan, and a process that starts or ends shows at the next pass.
	realScanTTL = 50 * time.Millisecond
)

// realProc is a real process on a simulated GPU.
type realProc struct {
	pid uint32
	mem uint64
}

// realScan is the last scan of /proc, per device index. Guarded by
// Server.scanMu.
type realScan struct {
	at    time.Time
	byDev map[int][]realProc
	err   error
}

// realOn returns the real processes that name d in PROXYD_SIM_GPU. A scan
// that fails (no /proc) shows no real process; the simulated ones stay.
func (s *Server) realOn(d *Device) []realProc {
	if s.procs == nil {
		return nil
	}
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	if now := time.Now(); s.scan.byDev == nil || now.Sub(s.scan.at) >= realScanTTL || now.Before(s.scan.at) {
		s.scan = s.scanReal()
		s.scan.at = now
	}
	return s.scan.byDev[d.Device.Index]
}

// scanReal finds every process with PROXYD_SIM_GPU and assigns it to the
// GPU it names (UUID or index); a value naming no GPU is ignored.
func (s *Server) scanReal() realScan {
	found, err := s.procs.FindEnv(gpuproc.EnvSimGPU)
	sc := realScan{byDev: map[int][]realProc{}, err: err}
	for _, f := range found {
		d := s.simTarget(f.Env[gpuproc.EnvSimGPU])
		if d == nil || f.PID <= 0 || f.PID > 1<<31 {
			continue
		}
		sc.byDev[d.Device.Index] = append(sc.byDev[d.Device.Index], realProc{pid: uint32(f.PID), mem: realMemory(f.Env[gpuproc.EnvSimGPUMiB])})
	}
	return sc
}

// simTarget is the device a PROXYD_SIM_GPU value names, or nil.
func (s *Server) simTarget(v string) *Device {
	v = strings.TrimSpace(v)
	for _, d := range s.devices {
		if v == d.Device.UUID || v == strconv.Itoa(d.Device.Index) {
			return d
		}
	}
	return nil
}

// realMemory parses PROXYD_SIM_GPU_MIB: a count of MiB from 0 to 1 TiB;
// anything else is the default.
func realMemory(v string) uint64 {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil || n > 1<<20 {
		n = DefaultRealProcessMiB
	}
	return n << 20
}

// Inspect implements gpuproc.Inspector: a simulated process is described
// from its Env and Comm; any other PID is read from /proc (when Procs is
// set).
func (s *Server) Inspect(pid int) gpuproc.Facts {
	s.mu.Lock()
	for _, d := range s.devices {
		for _, p := range d.state.Processes {
			if int(p.PID) != pid {
				continue
			}
			env := map[string]string{}
			for _, kv := range p.Env {
				if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "PROXYD_") {
					env[k] = v
				}
			}
			comm := p.Comm
			if comm == "" {
				comm = "simulated"
			}
			s.mu.Unlock()
			return gpuproc.Facts{PID: pid, Comm: comm, State: "S", PGID: pid, SID: pid, Env: env, Simulated: true}
		}
	}
	s.mu.Unlock()
	if s.procs == nil {
		return gpuproc.Facts{PID: pid, Err: fmt.Errorf("pid %d is not a simulated process, and this simulated server does not look at real ones", pid)}
	}
	return s.procs.Inspect(pid)
}

var _ gpuproc.Inspector = (*Server)(nil)
