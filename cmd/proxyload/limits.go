package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// fdReserve is the file descriptors each process keeps for everything but
// miner connections: stdio, the epoll and wake-up descriptors, pipes to
// child processes, the pool listener, /proc reads, proxyd's log file.
const fdReserve = 128

// FDLimits records RLIMIT_NOFILE before and after the tool raised it.
type FDLimits struct {
	SoftBefore uint64 `json:"soft_before"`
	HardBefore uint64 `json:"hard_before"`
	Soft       uint64 `json:"soft"`
	Hard       uint64 `json:"hard"`
	// Wanted is the limit the planned run needs in its largest process.
	Wanted uint64 `json:"wanted"`
	// RaiseError says why the hard limit could not be raised to Wanted
	// ("" when it did not need raising or was raised).
	RaiseError string `json:"raise_error,omitempty"`
}

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and, when
// want is above the hard limit, tries to raise the hard limit to want
// (capped at /proc/sys/fs/nr_open), which only works with
// CAP_SYS_RESOURCE. It always calls setrlimit, so that child processes
// (miner processes, a spawned proxyd) inherit the raised soft limit
// instead of the one Go restores for children by default.
func raiseFDLimit(want uint64) FDLimits {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return FDLimits{Wanted: want, RaiseError: fmt.Sprintf("getrlimit: %v", err)}
	}
	l := FDLimits{SoftBefore: rl.Cur, HardBefore: rl.Max, Wanted: want}
	if want > rl.Max {
		if nrOpen := readNROpen(); nrOpen > 0 && want > nrOpen {
			want = nrOpen
		}
		up := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err != nil {
			l.RaiseError = fmt.Sprintf("setrlimit(RLIMIT_NOFILE, %d): %v (raising the hard limit needs CAP_SYS_RESOURCE; raise it with `ulimit -Hn` as root or LimitNOFILE= in a systemd unit)", want, err)
		} else if l.Wanted > want {
			l.RaiseError = fmt.Sprintf("capped at fs.nr_open = %d", want)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil && l.RaiseError == "" {
			l.RaiseError = fmt.Sprintf("setrlimit soft to hard: %v", err)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		l.Soft, l.Hard = rl.Cur, rl.Max
	}
	return l
}

// readNROpen returns fs.nr_open, the most any process may open (0 if
// unknown).
func readNROpen() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// layoutInput is what the file-descriptor plan depends on.
type layoutInput struct {
	Miners           int
	Direct           bool   // a direct run is planned: the pool's process holds a session per miner
	Proxied          bool   // a proxied run is planned
	Spawn            bool   // the tool starts proxyd, which inherits the tool's limit
	Procs            int    // miner processes: -1 auto, 0 in the tool's own process
	Limit            uint64 // per-process fd limit (the raised soft limit)
	MinersPerSession int    // the proxy's miners per upstream session, for its upstream count
}

// Layout is where the miners run and what each process needs.
type Layout struct {
	// Procs is the number of miner processes; 0 runs the miners inside the
	// tool's process, next to the pool.
	Procs int `json:"procs"`
	// PerProc is the miners in each process (one entry when in-process).
	PerProc []int `json:"miners_per_proc"`
	// ToolFDs, ProcFDs and ProxydFDs are the fds the tool's process (pool
	// and control), the largest miner process and a spawned proxyd need.
	ToolFDs   int `json:"tool_fds"`
	ProcFDs   int `json:"miner_proc_fds"`
	ProxydFDs int `json:"proxyd_fds,omitempty"`
	// SourceIPs is how many loopback source addresses the miners use (0:
	// the kernel's default source).
	SourceIPs int `json:"source_ips"`
}

// upstreamSessions estimates a proxy's pool sessions for n miners.
func upstreamSessions(n, perSession int) int {
	if perSession <= 0 {
		perSession = 1
	}
	return (n+perSession-1)/perSession + 16
}

// planLayout splits in.Miners over processes and checks every process
// against in.Limit. With Procs -1 it picks the fewest miner processes (at
// least one) that each fit. The error names the process that does not fit
// and the numbers.
func planLayout(in layoutInput) (Layout, error) {
	n := in.Miners
	if n < 1 {
		return Layout{}, fmt.Errorf("need at least one miner, got %d", n)
	}
	limit := int(min(in.Limit, 1<<30))
	procs := in.Procs
	if procs < 0 {
		per := limit - fdReserve
		if per < 1 {
			return Layout{}, fmt.Errorf("the fd limit %d leaves no room for miners (%d are reserved per process)", limit, fdReserve)
		}
		procs = max(1, (n+per-1)/per)
	}
	lay := Layout{Procs: procs}
	if procs == 0 {
		lay.PerProc = []int{n}
	} else {
		if procs > n {
			procs, lay.Procs = n, n
		}
		for i := range procs {
			lay.PerProc = append(lay.PerProc, n/procs+btoi(i < n%procs))
		}
	}
	up := upstreamSessions(n, in.MinersPerSession)
	fixed := fdReserve + 1 + 3*procs // reserve, pool listener, 3 pipes per child
	if in.Spawn {
		fixed += 4 // proxyd's pipes and log file
	}
	inProc := 0
	if procs == 0 {
		inProc = n
	}
	sessions := 0 // the pool's sessions in the worst planned path
	if in.Direct {
		sessions = n
	} else if in.Proxied {
		sessions = up
	}
	lay.ToolFDs = fixed + sessions + inProc
	if procs > 0 {
		lay.ProcFDs = lay.PerProc[0] + fdReserve
	}
	if in.Spawn {
		lay.ProxydFDs = n + up + fdReserve
	}
	switch {
	case lay.ToolFDs > limit:
		var parts []string
		if inProc > 0 {
			parts = append(parts, fmt.Sprintf("%d miner connections (--procs 0)", inProc))
		}
		if in.Direct {
			parts = append(parts, fmt.Sprintf("%d pool sessions on the direct path", sessions))
		} else {
			parts = append(parts, fmt.Sprintf("~%d pool sessions from the proxy", sessions))
		}
		parts = append(parts, fmt.Sprintf("%d reserved", fixed))
		return lay, fmt.Errorf("the tool's own process needs %d file descriptors for %d miners (%s) but its limit is %d", lay.ToolFDs, n, strings.Join(parts, " + "), limit)
	case lay.ProcFDs > limit:
		return lay, fmt.Errorf("each of %d miner processes needs %d file descriptors for %d miners but the limit is %d: use more --procs", procs, lay.ProcFDs, lay.PerProc[0], limit)
	case lay.ProxydFDs > limit:
		return lay, fmt.Errorf("the spawned proxyd needs about %d file descriptors for %d miners and ~%d pool sessions but inherits the limit %d", lay.ProxydFDs, n, up, limit)
	}
	return lay, nil
}

// maxMiners returns the most miners (up to in.Miners) that planLayout
// accepts, or 0 when not even one fits.
func maxMiners(in layoutInput) int {
	lo, hi := 0, in.Miners // lo fits (or is 0), hi is the upper bound
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		try := in
		try.Miners = mid
		if _, err := planLayout(try); err == nil {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// perIPConns is how many connections the tool puts on one source address:
// nine tenths of the ephemeral port range, leaving room for other sockets.
func perIPConns(ports int) int { return max(1, ports*9/10) }

// autoSourceIPs returns how many source addresses n miners need so that
// none carries more than perIPConns(ports) connections.
func autoSourceIPs(n, ports int) int {
	per := perIPConns(ports)
	return max(1, (n+per-1)/per)
}

// checkSourceIPs reports an error when k source addresses leave more
// connections on one of them than its ephemeral ports allow.
func checkSourceIPs(n, k, ports int) error {
	if k < 1 {
		if n > perIPConns(ports) {
			return fmt.Errorf("%d miners from one source address exceed its %d ephemeral ports; the target must be on loopback for --source-ips to spread them", n, ports)
		}
		return nil
	}
	if per := (n + k - 1) / k; per > perIPConns(ports) {
		return fmt.Errorf("%d miners over %d source addresses is %d per address, above the %d ephemeral ports one address has (90%% of %d): use --source-ips %d or more", n, k, per, perIPConns(ports), ports, autoSourceIPs(n, ports))
	}
	return nil
}

// maxSourceIPs is how many distinct addresses sourceIP can produce.
const maxSourceIPs = 254*256*256 - 1

// sourceIP returns the j-th loopback source address: 127.0.0.2,
// 127.0.0.3, ... 127.0.0.254, 127.0.1.1, ... The last octet skips 0 and
// 255, and 127.0.0.1 (everything's default) is never used. Linux routes all
// of 127.0.0.0/8 to the loopback interface, so every address can be bound
// without configuring it.
func sourceIP(j int) string {
	p := j%maxSourceIPs + 1 // position 0 would be 127.0.0.1
	hi := p / 254
	return fmt.Sprintf("127.%d.%d.%d", hi/256, hi%256, p%254+1)
}

// minerSourceIP returns the source address of miner i (global index) when
// k addresses are in use: round-robin, so that each address carries an
// equal share. "" when k < 1 (kernel's choice).
func minerSourceIP(i, k int) string {
	if k < 1 {
		return ""
	}
	return sourceIP(i % k)
}

// isLoopbackTarget reports whether addr ("host:port") is a loopback IP
// address, the condition for binding miners to 127.x source addresses.
func isLoopbackTarget(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}
