package gpuproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Found is a process FindEnv found, with its PROXYD_* variables.
type Found struct {
	PID int
	Env map[string]string
}

// pids lists the numeric entries of the proc root, ascending.
func (p *ProcFS) pids() ([]int, error) {
	ents, err := os.ReadDir(p.root)
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", p.root, err)
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out, nil
}

// environ reads one process's PROXYD_* variables; ok is false when the
// environment cannot be read (gone, another user's, too large).
func (p *ProcFS) environ(pid int) (map[string]string, bool) {
	data, truncated, err := readLimited(filepath.Join(p.root, strconv.Itoa(pid), "environ"), maxEnviron)
	if err != nil || truncated {
		return nil, false
	}
	return parseEnviron(data), true
}

// FindEnv returns every process whose environment sets name (to anything
// but ""), by PID. Processes whose environment cannot be read are skipped:
// they are not proxyd's to find.
func (p *ProcFS) FindEnv(name string) ([]Found, error) {
	pids, err := p.pids()
	if err != nil {
		return nil, err
	}
	var out []Found
	for _, pid := range pids {
		env, ok := p.environ(pid)
		if ok && env[name] != "" {
			out = append(out, Found{PID: pid, Env: env})
		}
	}
	return out, nil
}

// Alive reports whether a process exists and has not exited (a zombie has).
func (p *ProcFS) Alive(pid int) bool {
	stat, _, err := readLimited(filepath.Join(p.root, strconv.Itoa(pid), "stat"), maxStat)
	if err != nil {
		return false
	}
	_, state, _, _, err := parseStat(stat)
	return err == nil && state != "Z" && state != "X"
}

// KillResult says what KillMarked did.
type KillResult struct {
	// Killed are the PIDs that got SIGKILL.
	Killed []int
	// Spared are members of the process group that do not carry the
	// marker: left alone.
	Spared []int
}

// KillMarked sends SIGKILL to every process whose environment has
// PROXYD_WORKLOAD=marker: the members of process group pgid (0: none
// recorded) that carry it, and those that left the group (a daemon that
// called setsid). Members of the group without the marker are not
// signalled (a PID or group ID reused by another program after a restart
// must never be hit); they are returned in Spared. Each process is pinned
// with a pidfd, its environment read again, and only then signalled.
//
// It works on the live /proc only: signals cannot go through a fake tree.
func (p *ProcFS) KillMarked(marker string, pgid int) (KillResult, error) {
	var res KillResult
	if marker == "" {
		return res, errors.New("no marker: nothing can be proven proxyd's")
	}
	if filepath.Clean(p.root) != "/proc" {
		return res, fmt.Errorf("cannot signal processes through %s (only /proc)", p.root)
	}
	pids, err := p.pids()
	if err != nil {
		return res, err
	}
	self := os.Getpid()
	var errs []error
	for _, pid := range pids {
		if pid == self {
			continue
		}
		env, ok := p.environ(pid)
		marked := ok && env[EnvWorkload] == marker
		if !marked {
			if pgid > 0 && p.inGroup(pid, pgid) {
				res.Spared = append(res.Spared, pid)
			}
			continue
		}
		switch err := p.killVerified(pid, marker); {
		case err == nil:
			res.Killed = append(res.Killed, pid)
		case errors.Is(err, errNotMarked), errors.Is(err, syscall.ESRCH):
			// exited or replaced meanwhile: nothing to do
		default:
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	return res, errors.Join(errs...)
}

var errNotMarked = errors.New("no longer carries the marker")

func (p *ProcFS) inGroup(pid, pgid int) bool {
	stat, _, err := readLimited(filepath.Join(p.root, strconv.Itoa(pid), "stat"), maxStat)
	if err != nil {
		return false
	}
	_, _, g, _, err := parseStat(stat)
	return err == nil && g == pgid
}

// killVerified pins pid with a pidfd, checks its marker once more and
// sends SIGKILL through the pidfd: if the PID was reused after it was
// pinned, the signal fails instead of reaching the newcomer.
func (p *ProcFS) killVerified(pid int, marker string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		// Kernels before 5.3: check and signal with the smallest window.
		if env, ok := p.environ(pid); !ok || env[EnvWorkload] != marker {
			return errNotMarked
		}
		return syscall.Kill(pid, syscall.SIGKILL)
	}
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	if env, ok := p.environ(pid); !ok || env[EnvWorkload] != marker {
		return errNotMarked
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return fmt.Errorf("pidfd_send_signal: %w", err)
	}
	return nil
}

// WaitGone waits until none of pids is alive (gone or a zombie), polling
// every interval, or until ctx ends; it returns those still alive.
func (p *ProcFS) WaitGone(ctx context.Context, pids []int, interval time.Duration) []int {
	left := slices.Clone(pids)
	for {
		left = slices.DeleteFunc(left, func(pid int) bool { return !p.Alive(pid) })
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return left
		case <-time.After(interval):
		}
	}
}
