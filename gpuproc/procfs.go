package gpuproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Environment markers. proxyd sets the first three on every command it
// runs (exec commands, container env); the simulated GPU backend reads the
// last two.
const (
	EnvWorkload  = "PROXYD_WORKLOAD"
	EnvContract  = "PROXYD_CONTRACT"
	EnvGPU       = "PROXYD_GPU_UUID"
	EnvSimGPU    = "PROXYD_SIM_GPU"
	EnvSimGPUMiB = "PROXYD_SIM_GPU_MIB"
)

// envPrefix selects the variables Facts keeps: proxyd's own.
const envPrefix = "PROXYD_"

// Bounds on what is read from /proc per process. An environment larger
// than maxEnviron is not parsed (the process is "unknown"): Linux lets a
// process have megabytes of environment, proxyd does not read them all.
const (
	maxStat    = 4 << 10
	maxCgroup  = 64 << 10
	maxEnviron = 4 << 20
	maxMount   = 1 << 20
	// maxEnvValue bounds a PROXYD_* value that is kept: markers are well
	// under it; a longer value (anyone can set one) is ignored.
	maxEnvValue = 512
)

// Facts is what /proc says about one process.
type Facts struct {
	PID int
	// Comm is the command name (15 bytes at most, as the kernel keeps it).
	Comm string
	// State is the stat state letter: R, S, D, Z...
	State     string
	PGID, SID int
	// Unit is the innermost systemd unit of its cgroup ("miner@0.service",
	// "session-3.scope"); Container the Docker/podman/containerd container
	// ID (64 hex digits) it runs in.
	Unit      string
	Container string
	// Env holds the process's PROXYD_* variables.
	Env map[string]string
	// Err is set when /proc/<pid> could not be read at all; nothing else
	// but PID is then known.
	Err error
	// EnvErr is set when the environment could not be read (another
	// user's process and no CAP_SYS_PTRACE, say).
	EnvErr error
	// Simulated: a process of the simulated GPU backend, not in /proc.
	Simulated bool
}

// Inspector tells the facts about a PID. ProcFS reads /proc; the simulated
// GPU backend answers for its simulated processes.
type Inspector interface {
	Inspect(pid int) Facts
}

// ProcFS reads processes from a proc file system. Its methods are safe for
// concurrent use.
type ProcFS struct {
	root string

	once sync.Once // guards note
	// note says why PIDs NVML lists may be missing or wrong here (a
	// hidepid mount, another PID namespace); "" when nothing is known.
	note string
}

// NewProcFS reads the proc file system at root ("/proc" in production).
func NewProcFS(root string) *ProcFS { return &ProcFS{root: root} }

// Root is the directory this ProcFS reads.
func (p *ProcFS) Root() string { return p.root }

// readLimited reads at most limit bytes of a file; truncated reports that
// there was more.
func readLimited(path string, limit int) (data []byte, truncated bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > limit {
		return data[:limit], true, nil
	}
	return data, false, nil
}

// Inspect reads /proc/<pid>: stat, cgroup and environ.
func (p *ProcFS) Inspect(pid int) Facts {
	f := Facts{PID: pid}
	dir := filepath.Join(p.root, strconv.Itoa(pid))
	stat, _, err := readLimited(filepath.Join(dir, "stat"), maxStat)
	if err != nil {
		f.Err = p.unreadable(pid, "its status", err)
		return f
	}
	if f.Comm, f.State, f.PGID, f.SID, err = parseStat(stat); err != nil {
		f.Err = fmt.Errorf("/proc/%d/stat: %w", pid, err)
		return f
	}
	if cg, _, err := readLimited(filepath.Join(dir, "cgroup"), maxCgroup); err == nil {
		f.Unit, f.Container = parseCgroup(cg)
	}
	env, truncated, err := readLimited(filepath.Join(dir, "environ"), maxEnviron)
	switch {
	case err != nil:
		f.EnvErr = p.unreadable(pid, "its environment", err)
	case truncated:
		f.EnvErr = fmt.Errorf("its environment is larger than %d MiB; proxyd does not read it", maxEnviron>>20)
	default:
		f.Env = parseEnviron(env)
	}
	return f
}

// unreadable says, for a person, why part of /proc/<pid> could not be read.
func (p *ProcFS) unreadable(pid int, what string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		why := fmt.Sprintf("no /proc/%d visible to proxyd", pid)
		if n := p.Note(); n != "" {
			return fmt.Errorf("%s: %s (or it exited just now)", why, n)
		}
		return fmt.Errorf("%s (it exited just now, or runs in another PID namespace)", why)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot read %s in /proc/%d: permission denied (another user's process: "+
			"proxyd needs CAP_SYS_PTRACE to read it)", what, pid)
	}
	return fmt.Errorf("cannot read %s in /proc/%d: %w", what, pid, err)
}

// Note says why PIDs that NVML lists may be missing from this proc file
// system: it is mounted with hidepid (systemd's ProtectProc=invisible), or
// proxyd runs in a PID namespace of its own (NVML reports host PIDs). ""
// when neither applies. Read once.
func (p *ProcFS) Note() string {
	p.once.Do(func() {
		var notes []string
		if opts := p.mountOptions(); opts != "" {
			for _, o := range strings.Split(opts, ",") {
				if v, ok := strings.CutPrefix(o, "hidepid="); ok && v != "0" && v != "off" {
					notes = append(notes, fmt.Sprintf("%s is mounted with hidepid=%s (systemd ProtectProc=%s): "+
						"processes of other users are hidden", p.root, v, protectProcName(v)))
				}
			}
		}
		if st, _, err := readLimited(filepath.Join(p.root, "self", "status"), 64<<10); err == nil {
			if levels := nsPIDLevels(st); levels > 1 {
				notes = append(notes, "proxyd runs in a PID namespace of its own, and NVML reports host PIDs")
			}
		}
		p.note = strings.Join(notes, "; ")
	})
	return p.note
}

func protectProcName(hidepid string) string {
	switch hidepid {
	case "2", "invisible":
		return "invisible"
	case "4", "ptraceable":
		return "ptraceable"
	case "1", "noaccess":
		return "noaccess"
	}
	return hidepid
}

// mountOptions returns the super-block options of the proc mount at root,
// from /proc/self/mountinfo ("" when not found).
func (p *ProcFS) mountOptions() string {
	data, _, err := readLimited(filepath.Join(p.root, "self", "mountinfo"), maxMount)
	if err != nil {
		return ""
	}
	return procMountOptions(data, p.root)
}

// procMountOptions finds the proc mount at mountPoint in mountinfo text and
// returns its super options.
func procMountOptions(mountinfo []byte, mountPoint string) string {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	found := ""
	for sc.Scan() {
		// 22 27 0:21 / /proc rw,relatime shared:13 - proc proc rw,hidepid=invisible
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || g[0] != "proc" || f[4] != mountPoint {
			continue
		}
		found = g[2] // the last mount at that point is the visible one
	}
	return found
}

// nsPIDLevels counts the PID namespaces in the NSpid line of a status file
// (1: the process sees itself as the host does).
func nsPIDLevels(status []byte) int {
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return len(strings.Fields(v))
		}
	}
	return 0
}

// parseStat reads comm, state, process group and session from
// /proc/<pid>/stat. comm may hold spaces and parentheses: it runs from the
// first '(' to the last ')'.
func parseStat(data []byte) (comm, state string, pgid, sid int, err error) {
	s := string(data)
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", "", 0, 0, errors.New("malformed: no (comm)")
	}
	comm = s[open+1 : end]
	// After ") ": state ppid pgrp session ...
	rest := strings.Fields(s[end+1:])
	if len(rest) < 4 {
		return "", "", 0, 0, errors.New("malformed: too few fields after comm")
	}
	state = rest[0]
	if pgid, err = strconv.Atoi(rest[2]); err != nil {
		return "", "", 0, 0, fmt.Errorf("malformed process group %q", rest[2])
	}
	if sid, err = strconv.Atoi(rest[3]); err != nil {
		return "", "", 0, 0, fmt.Errorf("malformed session %q", rest[3])
	}
	return comm, state, pgid, sid, nil
}

// parseEnviron returns the PROXYD_* variables of a NUL-separated
// environment. The first definition of a name wins, as getenv(3) sees it;
// values longer than maxEnvValue are ignored.
func parseEnviron(data []byte) map[string]string {
	env := map[string]string{}
	for kv := range bytes.SplitSeq(data, []byte{0}) {
		if !bytes.HasPrefix(kv, []byte(envPrefix)) {
			continue
		}
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok {
			continue
		}
		if _, dup := env[string(k)]; !dup && len(v) <= maxEnvValue {
			env[string(k)] = string(v)
		}
	}
	return env
}

// containerPrefixes are the cgroup scope names container engines use,
// before the container ID ("docker-<id>.scope").
var containerPrefixes = []string{"docker-", "libpod-", "cri-containerd-", "crio-", "containerd-"}

// parseCgroup finds the innermost systemd unit and container ID in
// /proc/<pid>/cgroup. The unified (v2) line is preferred for the unit,
// then name=systemd; any line may name the container.
func parseCgroup(data []byte) (unit, container string) {
	var v2, systemd, first string
	for line := range strings.SplitSeq(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[2]
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = path
		case parts[1] == "name=systemd":
			systemd = path
		case first == "":
			first = path
		}
		if c := containerIn(path); c != "" {
			container = c
		}
	}
	for _, path := range []string{v2, systemd, first} {
		if u := unitIn(path); u != "" {
			return u, container
		}
	}
	return "", container
}

// containerIn returns the innermost container ID in a cgroup path.
func containerIn(path string) string {
	found := ""
	for seg := range strings.SplitSeq(path, "/") {
		id := strings.TrimSuffix(seg, ".scope")
		if strings.HasPrefix(id, "libpod-conmon-") {
			continue // podman's monitor, not the container
		}
		for _, p := range containerPrefixes {
			if rest, ok := strings.CutPrefix(id, p); ok {
				id = rest
				break
			}
		}
		if isContainerID(id) {
			found = id
		}
	}
	return found
}

func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// unitIn returns the innermost systemd unit (.service or .scope) in a
// cgroup path that is not a container's own scope.
func unitIn(path string) string {
	found := ""
	for seg := range strings.SplitSeq(path, "/") {
		if !strings.HasSuffix(seg, ".service") && !strings.HasSuffix(seg, ".scope") {
			continue
		}
		if containerIn(seg) != "" {
			continue
		}
		found = seg
	}
	return found
}
