package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel ABI fixes it,
// whatever CONFIG_HZ is).
const clockTicks = 100

// procStat holds the fields of /proc/PID/stat the tool uses.
type procStat struct {
	Comm    string // executable name, without the parentheses
	State   string // R, S, D, Z, ...
	UTime   uint64 // user CPU, clock ticks
	STime   uint64 // system CPU, clock ticks
	Threads int
}

// CPUSeconds returns user+system CPU time in seconds.
func (s procStat) CPUSeconds() float64 { return float64(s.UTime+s.STime) / clockTicks }

// parseProcStat parses the one line of /proc/PID/stat. The comm field may
// hold spaces and parentheses, so the fields are counted from the last ')'.
func parseProcStat(line string) (procStat, error) {
	open := strings.IndexByte(line, '(')
	closeIdx := strings.LastIndexByte(line, ')')
	if open < 0 || closeIdx < open {
		return procStat{}, fmt.Errorf("stat line %.60q: no (comm)", line)
	}
	// After ") ": field 3 (state) is rest[0], so field k is rest[k-3].
	rest := strings.Fields(line[closeIdx+1:])
	if len(rest) < 18 {
		return procStat{}, fmt.Errorf("stat line %.60q: %d fields after comm, want at least 18", line, len(rest))
	}
	st := procStat{Comm: line[open+1 : closeIdx], State: rest[0]}
	var err error
	if st.UTime, err = strconv.ParseUint(rest[14-3], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat utime %q: %w", rest[14-3], err)
	}
	if st.STime, err = strconv.ParseUint(rest[15-3], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat stime %q: %w", rest[15-3], err)
	}
	if st.Threads, err = strconv.Atoi(rest[20-3]); err != nil {
		return procStat{}, fmt.Errorf("stat num_threads %q: %w", rest[20-3], err)
	}
	return st, nil
}

// procStatus holds the memory fields of /proc/PID/status, in KiB.
type procStatus struct {
	VmRSS int64 // resident set now
	VmHWM int64 // peak resident set
}

// parseProcStatus parses /proc/PID/status. VmRSS is required; VmHWM is 0
// when absent.
func parseProcStatus(text string) (procStatus, error) {
	var st procStatus
	var haveRSS bool
	for line := range strings.SplitSeq(text, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst, haveRSS = &st.VmRSS, true
		case "VmHWM":
			dst = &st.VmHWM
		default:
			continue
		}
		kib, err := parseKiB(val)
		if err != nil {
			return procStatus{}, fmt.Errorf("status %s: %w", key, err)
		}
		*dst = kib
	}
	if !haveRSS {
		return procStatus{}, errors.New("status: no VmRSS line (a kernel thread or a zombie?)")
	}
	return st, nil
}

// parseKiB parses "   123456 kB".
func parseKiB(s string) (int64, error) {
	f := strings.Fields(s)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("%q is not \"N kB\"", strings.TrimSpace(s))
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// procSample is one reading of a process's CPU and memory.
type procSample struct {
	At         time.Time
	CPUSeconds float64 // user+system since the process started
	RSSKiB     int64
	HWMKiB     int64
	Threads    int
}

// sampleProc reads /proc/PID/stat and /proc/PID/status.
func sampleProc(pid int) (procSample, error) {
	at := time.Now()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	st, err := parseProcStat(string(b))
	if err != nil {
		return procSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	ss, err := parseProcStatus(string(b))
	if err != nil {
		return procSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return procSample{At: at, CPUSeconds: st.CPUSeconds(), RSSKiB: ss.VmRSS, HWMKiB: ss.VmHWM, Threads: st.Threads}, nil
}

// selfUsage returns this process's CPU seconds (user+system) and peak RSS
// in KiB from getrusage.
func selfUsage() (cpuSeconds float64, maxRSSKiB int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return cpu.Seconds(), ru.Maxrss // Linux reports ru_maxrss in KiB
}

// Machine describes the host a run was measured on.
type Machine struct {
	NProc       int     `json:"nproc"`
	CPUModel    string  `json:"cpu_model"`
	MemTotalGiB float64 `json:"mem_total_gib"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go_version"`
	OSArch      string  `json:"os_arch"`
}

// readMachine gathers Machine from the runtime and /proc; unknown fields
// stay empty rather than failing a run.
func readMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = parseCPUModel(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kib, err := parseMemTotal(string(b)); err == nil {
			m.MemTotalGiB = float64(kib) / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo ("" if none).
func parseCPUModel(text string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parseMemTotal returns MemTotal of /proc/meminfo in KiB.
func parseMemTotal(text string) (int64, error) {
	for line := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == "MemTotal" {
			return parseKiB(v)
		}
	}
	return 0, errors.New("meminfo: no MemTotal line")
}

// parseLoadavg returns the 1, 5 and 15 minute load averages of
// /proc/loadavg.
func parseLoadavg(text string) ([3]float64, error) {
	var la [3]float64
	f := strings.Fields(text)
	if len(f) < 3 {
		return la, fmt.Errorf("loadavg %q: want 3 numbers", strings.TrimSpace(text))
	}
	for i := range la {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return la, fmt.Errorf("loadavg %q: %w", f[i], err)
		}
		la[i] = v
	}
	return la, nil
}

// loadavg reads /proc/loadavg; zeros when unreadable.
func loadavg() [3]float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return [3]float64{}
	}
	la, _ := parseLoadavg(string(b))
	return la
}

// parsePortRange parses /proc/sys/net/ipv4/ip_local_port_range ("lo hi").
func parsePortRange(text string) (lo, hi int, err error) {
	f := strings.Fields(text)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("port range %q: want two numbers", strings.TrimSpace(text))
	}
	if lo, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, fmt.Errorf("port range: %w", err)
	}
	if hi, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, fmt.Errorf("port range: %w", err)
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("port range %d-%d is not valid", lo, hi)
	}
	return lo, hi, nil
}

// ephemeralPorts returns how many local ports the kernel hands out per
// source address (28,232 with Linux's default range); 28232 when the range
// cannot be read.
func ephemeralPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 28232
	}
	lo, hi, err := parsePortRange(string(b))
	if err != nil {
		return 28232
	}
	return hi - lo + 1
}

// Phases at which the proxy's process is sampled.
const (
	phStart       = "start"        // before any miner connects
	phConnected   = "connected"    // every miner connected with a job
	phFanout      = "fanout"       // after the fan-out jobs
	phWindowStart = "window_start" // measured submit window
	phWindowEnd   = "window_end"
	phEnd         = "end" // every miner closed
)

// proxySampler samples a proxy process at phase boundaries. A zero pid
// samples nothing; the first error is kept.
type proxySampler struct {
	pid       int
	samples   map[string]procSample
	err       error
	peakReset bool // VmHWM was reset before the run
}

// resetPeak resets the process's peak RSS (VmHWM) to its current RSS, so
// that the peak of an external proxy that ran before is this run's. Linux
// allows it for a process the tool may ptrace (same user, or root); where
// it fails, the peak stays the process's lifetime peak and the report says
// so.
func (p *proxySampler) resetPeak() {
	if p.pid == 0 {
		return
	}
	err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid), []byte("5"), 0)
	p.peakReset = err == nil
}

func newProxySampler(pid int) *proxySampler {
	return &proxySampler{pid: pid, samples: map[string]procSample{}}
}

// mark samples the process now, for phase.
func (p *proxySampler) mark(phase string) {
	if p.pid == 0 {
		return
	}
	s, err := sampleProc(p.pid)
	if err != nil {
		if p.err == nil {
			p.err = fmt.Errorf("sampling the proxy at %s: %w", phase, err)
		}
		return
	}
	p.samples[phase] = s
}

// figures turns the samples into the proxy's figures; ready is the number
// of connected miners, for the RSS per miner.
func (p *proxySampler) figures(ready int) *ProxyFig {
	f := &ProxyFig{PID: p.pid, PeakReset: p.peakReset}
	switch {
	case p.pid == 0:
		f.Error = "no proxy PID: pass --proxy-pid (or use --spawn-proxyd) for the proxy's RSS and CPU"
		return f
	case p.err != nil:
		f.Error = p.err.Error()
	}
	s := p.samples
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	cpu := func(from, to string) float64 {
		a, okA := s[from]
		b, okB := s[to]
		if !okA || !okB {
			return 0
		}
		return b.CPUSeconds - a.CPUSeconds
	}
	f.RSSStartMiB = mib(s[phStart].RSSKiB)
	f.RSSConnectedMiB = mib(s[phConnected].RSSKiB)
	f.RSSEndMiB = mib(s[phEnd].RSSKiB)
	for _, x := range s {
		f.PeakRSSMiB = max(f.PeakRSSMiB, mib(x.HWMKiB), mib(x.RSSKiB))
		f.Threads = max(f.Threads, x.Threads)
	}
	if ready > 0 && s[phConnected].RSSKiB > 0 {
		f.RSSPerMinerKiB = float64(s[phConnected].RSSKiB-s[phStart].RSSKiB) / float64(ready)
		f.PeakRSSPerMinerKiB = (f.PeakRSSMiB*1024 - float64(s[phStart].RSSKiB)) / float64(ready)
	}
	f.CPUConnectS = cpu(phStart, phConnected)
	f.CPUFanoutS = cpu(phConnected, phFanout)
	f.CPUWindowS = cpu(phWindowStart, phWindowEnd)
	f.CPUTotalS = cpu(phStart, phEnd)
	if w := s[phWindowEnd].At.Sub(s[phWindowStart].At).Seconds(); w > 0 {
		f.CPUWindowPct = 100 * f.CPUWindowS / w
	}
	return f
}
