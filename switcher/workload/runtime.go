package workload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashgate/proxyd/gpuproc"
)

// Labels on every container proxyd creates. OwnerValue marks ownership:
// nothing without it is ever stopped or removed.
const (
	LabelOwner    = "io.hashgate.owner"
	LabelGPU      = "io.hashgate.gpu"
	LabelContract = "io.hashgate.contract"
	LabelWorkload = "io.hashgate.workload"
	OwnerValue    = "proxyd"
)

// MiningWorkload is the name of the mining workload ([switcher.mining]).
const MiningWorkload = "mining"

// ErrInUse: a Stop found that someone else took the GPU meanwhile (a
// cluster's claim allocated while proxyd took the GPU back) and left it
// to them; the switcher keeps the GPU with its contract.
var ErrInUse = errors.New("the GPU was taken by its other user while proxyd took it back")

// ErrNotOwned: the workload found is not proxyd's; it was left alone.
var ErrNotOwned = errors.New("not started by proxyd (no io.hashgate.owner=proxyd label): left alone")

// Spec is a workload's definition with its name.
type Spec struct {
	Name string
	Definition
}

// Readiness kinds: running (the process or container stays up) or an HTTP
// probe; the wiring resolves the presets (vllm, tgi, triton) into
// ReadinessPath and ReadinessStatus.
const (
	ReadinessRunning = "running"
	ReadinessHTTP    = "http"
	ReadinessVLLM    = "vllm"
	ReadinessTGI     = "tgi"
	ReadinessTriton  = "triton"
)

// Warm-up kinds: after the readiness check passes, one real request must
// succeed before the workload counts as ready.
const (
	WarmupOpenAI = "openai"
	WarmupTriton = "triton"
)

// DefaultWarmupTimeout bounds a warm-up request whose WarmupTimeout is 0.
const DefaultWarmupTimeout = 10 * time.Second

// Proof-of-start modes.
const (
	ProofProcess = "process"
	ProofNone    = "none"
)

// Definition is what the switcher runs on one GPU: the miner or an
// inference server ([switcher.mining], [switcher.workload.<name>]). The
// common fields come first; each runtime reads its own.
type Definition struct {
	// Runtime is the kind of the runtime that runs it.
	Runtime string
	// PowerLimitW is the GPU power limit while it runs; 0 keeps the limit
	// the GPU had before the switcher first touched it.
	PowerLimitW int
	// StopTimeout is the time between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// Readiness is ReadinessRunning or an HTTP probe of ReadinessPath on
	// Port expecting ReadinessStatus.
	Readiness       string
	ReadinessPath   string
	ReadinessStatus int
	// Warmup ("" or a Warmup kind) is one real request after readiness;
	// WarmupModel names the model, WarmupTimeout bounds it (0: default).
	Warmup        string
	WarmupModel   string
	WarmupTimeout time.Duration
	// Port is the port it serves on; PortPerGPU adds the GPU index.
	Port       int
	PortPerGPU bool
	// ProofOfStart is ProofProcess or ProofNone.
	ProofOfStart string

	// Params are the runtime's own settings for this workload: DockerParams,
	// ExecParams, SimParams, or another kind's own type. The switcher does
	// not read them; a runtime given another kind's (or none) sees its zero
	// value, as when it stops a workload no longer configured.
	Params any
}

// ParamsOf returns a definition's Params as a runtime's own type (its zero
// value when they are of another type or absent).
func ParamsOf[T any](d Definition) T {
	p, _ := d.Params.(T)
	return p
}

// DockerParams are a docker workload's settings ([...docker] sub-table).
type DockerParams struct {
	Image string
	// Cmd and Env may hold placeholders (see Expand).
	Cmd     []string
	Env     []string
	Binds   []string
	Network string
}

// ExecParams are an exec workload's settings ([...exec] sub-table): argv
// lists, run without a shell, with placeholders (see Expand).
// StatusCommand exits 0 while the workload runs; KillCommand (optional)
// forces it off.
type ExecParams struct {
	StartCommand   []string
	StopCommand    []string
	StatusCommand  []string
	KillCommand    []string
	CommandTimeout time.Duration
}

// SimParams are what a simulated workload does to its simulated GPU
// ([...simulated] sub-table).
type SimParams struct {
	MemoryMiB  int
	Load       float64
	StartDelay time.Duration
	ReadyDelay time.Duration
	StopDelay  time.Duration
	NeverReady bool
}

// PortFor is the port the instance on a GPU serves on (0: none).
func (s Spec) PortFor(gpuIndex int) int {
	if s.Port == 0 {
		return 0
	}
	if s.PortPerGPU {
		return s.Port + gpuIndex
	}
	return s.Port
}

// Instance is one workload placed on one GPU.
type Instance struct {
	Workload string `json:"workload"`
	// Contract is the contract the instance serves; "" for mining.
	Contract string `json:"contract,omitempty"`
	GPUUUID  string `json:"gpu_uuid"`
	GPUIndex int    `json:"gpu_index"`
}

// IsMining reports whether the instance is the miner.
func (in Instance) IsMining() bool { return in.Workload == MiningWorkload }

func (in Instance) String() string {
	if in.Contract == "" {
		return fmt.Sprintf("%s on GPU %d (%s)", in.Workload, in.GPUIndex, in.GPUUUID)
	}
	return fmt.Sprintf("%s for contract %s on GPU %d (%s)", in.Workload, in.Contract, in.GPUIndex, in.GPUUUID)
}

// Handle names a started instance; the switcher persists it and hands it
// back to Status and Stop, also after a restart.
type Handle struct {
	// Runtime is the runtime's Kind.
	Runtime string `json:"runtime"`
	// ID is the runtime's own name for it: a container ID, "exec:…", "sim-…".
	ID string `json:"id"`
	Instance
	StartedAt time.Time `json:"started_at"`
	// PGID is the process group of an exec workload's start_command (its
	// PID: each command runs in a group of its own); 0 when unknown.
	PGID int `json:"pgid,omitempty"`
}

// Marker is the value of PROXYD_WORKLOAD in the environment of the
// handle's processes: its ID. A container's processes carry no marker
// (they are known by their container); its Marker names it in owners.
func (h Handle) Marker() string {
	if h.Runtime == KindDocker {
		return MarkerFor(KindDocker, h.Instance)
	}
	return h.ID
}

// MarkerFor is the marker of an instance started by a runtime kind:
// "<kind>:<workload>[:<contract>]:<gpu uuid>".
func MarkerFor(kind string, in Instance) string {
	if in.Contract == "" {
		return fmt.Sprintf("%s:%s:%s", kind, in.Workload, in.GPUUUID)
	}
	return fmt.Sprintf("%s:%s:%s:%s", kind, in.Workload, in.Contract, in.GPUUUID)
}

// ExecHandleFromMarker rebuilds the handle of an exec workload from the
// marker its processes carry ("exec:<workload>[:<contract>]:<gpu uuid>"),
// for a leftover a restarted proxyd finds on a GPU although status_command
// no longer reports it. ok is false for anything else.
func ExecHandleFromMarker(marker string) (Handle, bool) {
	parts := strings.Split(marker, ":")
	if len(parts) < 3 || len(parts) > 4 || parts[0] != KindExec {
		return Handle{}, false
	}
	for _, p := range parts[1:] {
		if p == "" {
			return Handle{}, false
		}
	}
	in := Instance{Workload: parts[1], GPUUUID: parts[len(parts)-1]}
	if len(parts) == 4 {
		in.Contract = parts[2]
	}
	if MarkerFor(KindExec, in) != marker {
		return Handle{}, false
	}
	return Handle{Runtime: KindExec, ID: marker, Instance: in}, true
}

// MarkerEnv is the environment that marks an instance's processes as
// proxyd's ("NAME=value").
func MarkerEnv(marker string, in Instance) []string {
	return []string{gpuproc.EnvWorkload + "=" + marker, gpuproc.EnvContract + "=" + in.Contract, gpuproc.EnvGPU + "=" + in.GPUUUID}
}

// Status is what a runtime knows about a started instance.
type Status struct {
	// Running: the process or container is up.
	Running bool `json:"running"`
	// Ready: running and the readiness check passed.
	Ready bool `json:"ready"`
	// Gone: the runtime has no such instance (removed, never created).
	Gone bool `json:"gone,omitempty"`
	// ExitCode is set when the instance exited.
	ExitCode int `json:"exit_code,omitempty"`
	// Detail says why not running or not ready, for a person.
	Detail string `json:"detail,omitempty"`
}

// Listed is an instance a runtime found (List), with whether it runs.
type Listed struct {
	Handle
	Running bool
}

// GPURef names a GPU for List.
type GPURef struct {
	UUID  string
	Index int
}

// ListQuery tells List where to look: runtimes that can enumerate what
// they own (Docker by label, Sim) ignore it; Exec asks status_command for
// each workload on each GPU and for each known handle.
type ListQuery struct {
	GPUs  []GPURef
	Specs map[string]Spec
	Known []Handle
}

// Runtime starts and stops workload instances on GPUs. Every call is
// bounded by ctx; Stop and Start are idempotent where the runtime allows
// (stopping what is gone is not an error).
type Runtime interface {
	// Kind is "docker", "exec" or "simulated".
	Kind() string
	// Start launches the spec on the instance's GPU and returns at once
	// (readiness is Status's business).
	Start(ctx context.Context, spec Spec, in Instance) (Handle, error)
	// Status reports whether the instance runs and, with the spec's
	// readiness check, whether it serves.
	Status(ctx context.Context, spec Spec, h Handle) (Status, error)
	// Stop stops the instance, gracefully within spec.StopTimeout or, with
	// force, at once, and removes what is left of it. An error means it may
	// still run.
	Stop(ctx context.Context, spec Spec, h Handle, force bool) error
	// List returns the instances proxyd owns, running or exited.
	List(ctx context.Context, q ListQuery) ([]Listed, error)
}

// Expand fills the placeholders of one argument for an instance.
func Expand(arg string, spec Spec, in Instance) string {
	port := ""
	if p := spec.PortFor(in.GPUIndex); p > 0 {
		port = strconv.Itoa(p)
	}
	return strings.NewReplacer(
		"{gpu_uuid}", in.GPUUUID,
		"{gpu_index}", strconv.Itoa(in.GPUIndex),
		"{contract}", in.Contract,
		"{workload}", in.Workload,
		"{port}", port,
	).Replace(arg)
}

// ExpandAll fills the placeholders of every argument.
func ExpandAll(args []string, spec Spec, in Instance) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = Expand(a, spec, in)
	}
	return out
}

// ProbeTimeout bounds one readiness probe.
const ProbeTimeout = 5 * time.Second

// maxProbeBody bounds what is read of a probe's or a warm-up's answer.
const maxProbeBody = 64 << 10

// Probe runs the spec's readiness check for a running instance, then its
// warm-up request if it has one: nil when both pass (or the spec only asks
// for "running"), else why not.
func Probe(ctx context.Context, client *http.Client, spec Spec, in Instance) error {
	if client == nil {
		client = http.DefaultClient
	}
	port := spec.PortFor(in.GPUIndex)
	if spec.Readiness != "" && spec.Readiness != ReadinessRunning {
		if err := probeReadiness(ctx, client, spec, port); err != nil {
			return err
		}
	}
	if spec.Warmup != "" {
		return warmup(ctx, client, spec, port)
	}
	return nil
}

func probeReadiness(ctx context.Context, client *http.Client, spec Spec, port int) error {
	url := fmt.Sprintf("http://127.0.0.1:%d%s", port, spec.ReadinessPath)
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("readiness probe %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("readiness probe GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	if resp.StatusCode != spec.ReadinessStatus {
		return fmt.Errorf("readiness probe GET %s: status %d, want %d (%s still loading?)", url, resp.StatusCode,
			spec.ReadinessStatus, spec.Readiness)
	}
	return nil
}

// warmup sends the spec's one real request: a one-token completion
// (openai) or a model-ready check (triton). A server whose /health answers
// can still fail here (a model that did not load, a GPU fault after start).
func warmup(ctx context.Context, client *http.Client, spec Spec, port int) error {
	timeout := spec.WarmupTimeout
	if timeout <= 0 {
		timeout = DefaultWarmupTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The runtimes' probe clients carry the readiness probe's timeout; the
	// first completion of a fresh server may take longer, so the warm-up's
	// own timeout (on ctx) bounds it instead.
	c := *client
	c.Timeout = 0
	var (
		req  *http.Request
		err  error
		what string
	)
	switch spec.Warmup {
	case WarmupOpenAI:
		body := map[string]any{"prompt": "Hello", "max_tokens": 1, "temperature": 0}
		if spec.WarmupModel != "" {
			body["model"] = spec.WarmupModel
		}
		b, _ := json.Marshal(body) // strings and numbers: cannot fail
		url := fmt.Sprintf("http://127.0.0.1:%d/v1/completions", port)
		what = fmt.Sprintf("warm-up POST %s (model %q, max_tokens 1)", url, spec.WarmupModel)
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	case WarmupTriton:
		url := fmt.Sprintf("http://127.0.0.1:%d/v2/models/%s/ready", port, neturl.PathEscape(spec.WarmupModel))
		what = "warm-up GET " + url
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	default:
		return fmt.Errorf("warm-up %q is not one this proxyd knows (openai, triton)", spec.Warmup)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no answer within warmup_timeout %s (%w)", what, timeout, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if spec.Warmup == WarmupOpenAI && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest) {
			hint = " (is warmup_model the name the server serves the model under?)"
		}
		return fmt.Errorf("%s: status %d, want 200%s: %s", what, resp.StatusCode, hint, tail(answer, 200))
	}
	if spec.Warmup == WarmupOpenAI {
		var completion struct {
			Choices []json.RawMessage `json:"choices"`
		}
		if err := json.Unmarshal(answer, &completion); err != nil || len(completion.Choices) == 0 {
			return fmt.Errorf("%s: status 200 but no completion choices in the answer: %s", what, tail(answer, 200))
		}
	}
	return nil
}

// tail keeps the last n bytes of a command's output for logs and errors.
func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
