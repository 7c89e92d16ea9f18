package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/gpuproc"
)

// KindExec is the exec runtime's Kind.
const KindExec = "exec"

// maxOutput is how much of a command's output is kept for logs and errors.
const maxOutput = 4096

// Exec runs workloads through commands: start_command launches the
// workload (and returns), status_command exits 0 while it runs,
// stop_command stops it (and waits), kill_command (optional) forces it.
// Commands are argv lists run without a shell, each in its own process
// group under a timeout that kills the whole group; their output goes to
// the log. Every command runs with the instance's markers (MarkerEnv), so
// what start_command launches carries PROXYD_WORKLOAD=<handle ID>; the
// handle records start_command's process group. A forced stop without
// kill_command SIGKILLs the processes that carry the marker (in that
// group, or escaped from it with setsid), never any other; when none
// does (a workload systemd starts, outside proxyd's process tree),
// stop_command is all it has.
type Exec struct {
	log   *zap.Logger
	probe *http.Client
	now   func() time.Time
	procs *gpuproc.ProcFS
}

var _ Runtime = (*Exec)(nil)

// NewExec returns the exec runtime. probe is the HTTP client for
// readiness probes (nil: a default one).
func NewExec(log *zap.Logger, probe *http.Client) *Exec {
	if log == nil {
		log = zap.NewNop()
	}
	if probe == nil {
		probe = &http.Client{Timeout: ProbeTimeout}
	}
	return &Exec{log: log, probe: probe, now: time.Now, procs: gpuproc.NewProcFS("/proc")}
}

// Kind implements Runtime.
func (e *Exec) Kind() string { return KindExec }

func execID(in Instance) string { return MarkerFor(KindExec, in) }

// cmdResult is one command's outcome.
type cmdResult struct {
	code   int // -1: did not exit normally (timeout, signal, not found)
	output string
	pid    int // the command's PID, also its process group; 0 if it did not start
}

// run runs argv under timeout and logs what it did. err is set when the
// command could not run or did not exit in time; a non-zero exit is a
// result, not an error.
func (e *Exec) run(ctx context.Context, what string, argv []string, timeout time.Duration, in Instance) (cmdResult, error) {
	if len(argv) == 0 {
		return cmdResult{code: -1}, fmt.Errorf("no %s configured", what)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// The markers last: they win over any of the same name proxyd inherited.
	cmd.Env = append(os.Environ(), MarkerEnv(execID(in), in)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a wrapper script's children must not survive it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	t0 := e.now()
	err := cmd.Run()
	res := cmdResult{code: -1, output: tail(out.Bytes(), maxOutput)}
	if cmd.Process != nil {
		res.pid = cmd.Process.Pid
	}
	fields := []zap.Field{zap.String("command", what), zap.Strings("argv", argv), zap.String("gpu", in.GPUUUID),
		zap.String("workload", in.Workload), zap.Duration("took", e.now().Sub(t0)), zap.String("output", res.output)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		res.code = 0
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		res.code = exitErr.ExitCode()
		err = nil
	case ctx.Err() != nil:
		err = fmt.Errorf("%s %q did not finish within %s and was killed: %w", what, strings.Join(argv, " "), timeout, ctx.Err())
	default:
		err = fmt.Errorf("%s %q could not run: %w", what, strings.Join(argv, " "), err)
	}
	fields = append(fields, zap.Int("exit_code", res.code))
	if err != nil {
		e.log.Warn("workload command failed", append(fields, zap.Error(err))...)
	} else if what == "status_command" {
		e.log.Debug("workload command ran", fields...)
	} else {
		e.log.Info("workload command ran", fields...)
	}
	return res, err
}

// Start implements Runtime: start_command must exit 0.
func (e *Exec) Start(ctx context.Context, spec Spec, in Instance) (Handle, error) {
	ep := ParamsOf[ExecParams](spec.Definition)
	res, err := e.run(ctx, "start_command", ExpandAll(ep.StartCommand, spec, in), ep.CommandTimeout, in)
	if err != nil {
		return Handle{}, fmt.Errorf("starting %s: %w", in, err)
	}
	if res.code != 0 {
		return Handle{}, fmt.Errorf("starting %s: start_command exited %d: %s", in, res.code, res.output)
	}
	return Handle{Runtime: KindExec, ID: execID(in), Instance: in, StartedAt: e.now(), PGID: res.pid}, nil
}

// Status implements Runtime: status_command exit 0 means running.
func (e *Exec) Status(ctx context.Context, spec Spec, h Handle) (Status, error) {
	ep := ParamsOf[ExecParams](spec.Definition)
	if len(ep.StatusCommand) == 0 {
		return Status{}, fmt.Errorf("%s: workload %q is no longer configured; check it by hand", h.Instance, h.Workload)
	}
	res, err := e.run(ctx, "status_command", ExpandAll(ep.StatusCommand, spec, h.Instance), ep.CommandTimeout, h.Instance)
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", h.Instance, err)
	}
	if res.code != 0 {
		return Status{ExitCode: res.code, Detail: fmt.Sprintf("status_command exited %d: %s", res.code, res.output)}, nil
	}
	st := Status{Running: true, Ready: true}
	if err := Probe(ctx, e.probe, spec, h.Instance); err != nil {
		st.Ready, st.Detail = false, err.Error()
	}
	return st, nil
}

// Stop implements Runtime: stop_command (kill_command with force, where
// configured) must exit 0; it gets command_timeout plus the stop timeout.
// With force and no kill_command, the processes carrying the handle's
// marker are killed (see Exec); stop_command runs only when none does.
func (e *Exec) Stop(ctx context.Context, spec Spec, h Handle, force bool) error {
	ep := ParamsOf[ExecParams](spec.Definition)
	what, argv := "stop_command", ep.StopCommand
	if force && len(ep.KillCommand) > 0 {
		what, argv = "kill_command", ep.KillCommand
	}
	if force && len(ep.KillCommand) == 0 && h.Marker() != "" {
		done, err := e.killMarked(ctx, spec, h)
		if done || err != nil {
			return err
		}
	}
	if len(argv) == 0 {
		return fmt.Errorf("%s: workload %q is no longer configured; stop it by hand", h.Instance, h.Workload)
	}
	res, err := e.run(ctx, what, ExpandAll(argv, spec, h.Instance), ep.CommandTimeout+spec.StopTimeout, h.Instance)
	if err != nil {
		return fmt.Errorf("stopping %s: %w", h.Instance, err)
	}
	if res.code != 0 {
		return fmt.Errorf("stopping %s: %s exited %d: %s", h.Instance, what, res.code, res.output)
	}
	return nil
}

// killMarked SIGKILLs the handle's marked processes and waits until they
// are gone; done is false when none carries the marker.
func (e *Exec) killMarked(ctx context.Context, spec Spec, h Handle) (done bool, err error) {
	ep := ParamsOf[ExecParams](spec.Definition)
	res, err := e.procs.KillMarked(h.Marker(), h.PGID)
	fields := []zap.Field{zap.String("gpu", h.GPUUUID), zap.String("workload", h.Workload), zap.String("marker", h.Marker()),
		zap.Int("pgid", h.PGID), zap.Ints("killed", res.Killed), zap.Ints("spared_unmarked", res.Spared)}
	if err != nil {
		e.log.Warn("forced stop: SIGKILL of the workload's processes failed", append(fields, zap.Error(err))...)
		return true, fmt.Errorf("killing %s: %w", h.Instance, err)
	}
	if len(res.Killed) == 0 {
		e.log.Info("forced stop: no process carries the workload's marker; running stop_command", fields...)
		return false, nil
	}
	e.log.Info("forced stop: SIGKILL sent to the workload's processes", fields...)
	wctx, cancel := context.WithTimeout(ctx, ep.CommandTimeout+spec.StopTimeout)
	defer cancel()
	if left := e.procs.WaitGone(wctx, res.Killed, 20*time.Millisecond); len(left) > 0 {
		return true, fmt.Errorf("killing %s: pid(s) %v still run after SIGKILL (stuck in the kernel?)", h.Instance, left)
	}
	return true, nil
}

// List implements Runtime: it asks status_command for every known handle
// and for every exec workload on every GPU (except workloads whose status
// command needs {contract}: those are found only through known handles).
func (e *Exec) List(ctx context.Context, q ListQuery) ([]Listed, error) {
	var cands []Instance
	pgids := map[string]int{}
	for _, h := range q.Known {
		if h.Runtime == KindExec {
			cands = append(cands, h.Instance)
			pgids[h.ID] = h.PGID
		}
	}
	names := make([]string, 0, len(q.Specs))
	for n := range q.Specs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		spec := q.Specs[n]
		ep := ParamsOf[ExecParams](spec.Definition)
		if spec.Runtime != KindExec || slices.ContainsFunc(ep.StatusCommand, func(a string) bool { return strings.Contains(a, "{contract}") }) {
			continue
		}
		for _, g := range q.GPUs {
			cands = append(cands, Instance{Workload: n, GPUUUID: g.UUID, GPUIndex: g.Index})
		}
	}
	// One probe per workload and GPU: a known handle (with its contract)
	// comes first and hides the contract-less probe of the same pair.
	seen := map[string]bool{}
	var out []Listed
	for _, in := range cands {
		id := execID(in)
		if key := in.Workload + "/" + in.GPUUUID; seen[key] {
			continue
		} else {
			seen[key] = true
		}
		spec, ok := q.Specs[in.Workload]
		if !ok {
			continue
		}
		ep := ParamsOf[ExecParams](spec.Definition)
		res, err := e.run(ctx, "status_command", ExpandAll(ep.StatusCommand, spec, in), ep.CommandTimeout, in)
		if err != nil {
			return nil, fmt.Errorf("listing exec workloads: %w", err)
		}
		if res.code == 0 {
			out = append(out, Listed{Handle: Handle{Runtime: KindExec, ID: id, Instance: in, PGID: pgids[id]}, Running: true})
		}
	}
	return out, nil
}
