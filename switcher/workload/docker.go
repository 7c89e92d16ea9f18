package workload

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"go.uber.org/zap"
)

// KindDocker is the docker runtime's Kind.
const KindDocker = "docker"

// Device modes of [switcher.docker] device_mode.
const (
	DeviceModeCDI    = "cdi"
	DeviceModeNVIDIA = "nvidia"
)

// CDIDevice is the CDI name of one NVIDIA GPU.
func CDIDevice(uuid string) string { return "nvidia.com/gpu=" + uuid }

// DockerOptions configure the docker runtime.
type DockerOptions struct {
	// Host is the Docker Engine API endpoint ("unix:///var/run/docker.sock",
	// "tcp://127.0.0.1:2375"); a podman socket works too.
	Host string
	// DeviceMode attaches a GPU by CDI name (DeviceModeCDI) or through the
	// nvidia container runtime's device request (DeviceModeNVIDIA).
	DeviceMode string
	// APITimeout bounds each API call (a stop adds the workload's
	// StopTimeout).
	APITimeout time.Duration
	Log        *zap.Logger
	// Probe is the HTTP client for readiness probes (nil: a default one).
	Probe *http.Client
	// Now tells the time; nil: time.Now.
	Now func() time.Time
}

// Docker runs workloads as containers through the Docker Engine API. Every
// container it creates carries the labels io.hashgate.owner=proxyd,
// io.hashgate.gpu, io.hashgate.contract and io.hashgate.workload, restart
// policy "no" (proxyd owns restarts), an init process (which reaps zombies
// that would hold GPU memory) and the stop timeout of its workload. The
// GPU is attached by CDI name nvidia.com/gpu=<UUID>, or with device_mode
// "nvidia" through the nvidia driver's device request.
//
// Containers without the owner label are never stopped or removed.
type Docker struct {
	cli   *client.Client
	cfg   DockerOptions // Host, DeviceMode, APITimeout
	log   *zap.Logger
	probe *http.Client
	now   func() time.Time

	mu       sync.Mutex // guards engine
	engine   string     // "docker", "podman"; "" until asked
	warnedPM bool
}

var _ Runtime = (*Docker)(nil)

// NewDocker builds the runtime; it connects on first use. The client
// negotiates the API version with the engine on its first request
// (moby/client's default since v0.3), so old Docker and podman both work.
func NewDocker(o DockerOptions) (*Docker, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Probe == nil {
		o.Probe = &http.Client{Timeout: ProbeTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cli, err := client.New(client.WithHost(o.Host))
	if err != nil {
		return nil, fmt.Errorf("docker runtime: [switcher.docker] host %q: %w", o.Host, err)
	}
	return &Docker{cli: cli, cfg: o, log: o.Log, probe: o.Probe, now: o.Now}, nil
}

// Close releases the client's connections.
func (d *Docker) Close() error { return d.cli.Close() }

// Kind implements Runtime.
func (d *Docker) Kind() string { return KindDocker }

// ContainerName is the name of the container of an instance: stable per
// workload and GPU, so a start after a crash finds the earlier container.
func ContainerName(in Instance) string {
	short := strings.TrimPrefix(in.GPUUUID, "GPU-")
	if len(short) > 8 {
		short = short[:8]
	}
	return fmt.Sprintf("proxyd-%s-%s", in.Workload, short)
}

// Labels are the labels of an instance's container.
func Labels(in Instance) map[string]string {
	return map[string]string{
		LabelOwner:    OwnerValue,
		LabelGPU:      in.GPUUUID,
		LabelContract: in.Contract,
		LabelWorkload: in.Workload,
	}
}

func (d *Docker) apiCtx(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.APITimeout+extra)
}

func (d *Docker) wrap(what string, err error) error {
	if client.IsErrConnectionFailed(err) {
		return fmt.Errorf("docker runtime: %s: cannot reach the container engine at %s (is docker or podman running, "+
			"and may proxyd use its socket?): %w", what, d.cfg.Host, err)
	}
	return fmt.Errorf("docker runtime: %s: %w", what, err)
}

// detectEngine asks /version once which engine serves the API.
func (d *Docker) detectEngine(ctx context.Context) {
	d.mu.Lock()
	known := d.engine != ""
	d.mu.Unlock()
	if known {
		return
	}
	ctx, cancel := d.apiCtx(ctx, 0)
	defer cancel()
	v, err := d.cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return
	}
	engine := "docker"
	for _, c := range v.Components {
		if strings.Contains(strings.ToLower(c.Name), "podman") {
			engine = "podman"
		}
	}
	d.mu.Lock()
	d.engine = engine
	d.mu.Unlock()
	d.log.Info("container engine", zap.String("engine", engine), zap.String("version", v.Version), zap.String("api_version", v.APIVersion))
}

// Engine is "docker" or "podman" once known, else "".
func (d *Docker) Engine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.engine
}

func (d *Docker) deviceRequests(uuid string) []container.DeviceRequest {
	if d.cfg.DeviceMode == DeviceModeNVIDIA {
		return []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: []string{uuid}, Capabilities: [][]string{{"gpu"}}}}
	}
	return []container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{CDIDevice(uuid)}}}
}

func stopSeconds(spec Spec) int {
	return int(math.Ceil(spec.StopTimeout.Seconds()))
}

// Start implements Runtime: create (labels, CDI device, restart "no",
// init, stop timeout) and start. A container of the same name left from an
// earlier run is reused if it is this very instance and runs, removed if
// it is proxyd's and stopped, and refused if it is not proxyd's.
func (d *Docker) Start(ctx context.Context, spec Spec, in Instance) (Handle, error) {
	d.detectEngine(ctx)
	if d.Engine() == "podman" {
		d.mu.Lock()
		warn := !d.warnedPM
		d.warnedPM = true
		d.mu.Unlock()
		if warn {
			d.log.Warn("the container engine is podman: its Docker-compatible API ignores GPU device requests, " +
				"so containers get no GPU; use Docker (28.2+ for CDI) or run podman through the exec runtime " +
				"(podman run --device nvidia.com/gpu={gpu_uuid} ...)")
		}
	}
	name := ContainerName(in)
	p := ParamsOf[DockerParams](spec.Definition)
	secs := stopSeconds(spec)
	withInit := true
	opts := client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:       p.Image,
			Cmd:         ExpandAll(p.Cmd, spec, in),
			Env:         ExpandAll(p.Env, spec, in),
			Labels:      Labels(in),
			StopTimeout: &secs,
		},
		HostConfig: &container.HostConfig{
			NetworkMode:   container.NetworkMode(p.Network),
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
			Init:          &withInit,
			Binds:         ExpandAll(p.Binds, spec, in),
			Resources:     container.Resources{DeviceRequests: d.deviceRequests(in.GPUUUID)},
		},
	}
	var id string
	for attempt := 0; id == "" && attempt < 2; attempt++ {
		cctx, cancel := d.apiCtx(ctx, 0)
		res, err := d.cli.ContainerCreate(cctx, opts)
		cancel()
		if err == nil {
			id = res.ID
			for _, w := range res.Warnings {
				d.log.Warn("container engine warning on create", zap.String("container", name), zap.String("warning", w))
			}
			break
		}
		if !cerrdefs.IsConflict(err) || attempt > 0 {
			return Handle{}, d.wrap(fmt.Sprintf("creating container %s for %s from image %s", name, in, p.Image), err)
		}
		// A container of that name exists: ours from a run that crashed?
		h, reuse, err := d.resolveConflict(ctx, name, in)
		if err != nil {
			return Handle{}, err
		}
		if reuse {
			return h, nil
		}
	}
	sctx, cancel := d.apiCtx(ctx, 0)
	_, err := d.cli.ContainerStart(sctx, id, client.ContainerStartOptions{})
	cancel()
	if err != nil {
		rctx, cancel := d.apiCtx(context.WithoutCancel(ctx), 0)
		_, rerr := d.cli.ContainerRemove(rctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		err = d.wrap(fmt.Sprintf("starting container %s for %s", name, in), err)
		if rerr != nil && !cerrdefs.IsNotFound(rerr) {
			err = fmt.Errorf("%w (and removing it failed: %v)", err, rerr)
		}
		return Handle{}, err
	}
	d.log.Info("container started", zap.String("container", name), zap.String("id", shortID(id)),
		zap.String("image", p.Image), zap.String("gpu", in.GPUUUID), zap.String("contract", in.Contract))
	return Handle{Runtime: KindDocker, ID: id, Instance: in, StartedAt: d.now()}, nil
}

// resolveConflict deals with an existing container named name: reuse it
// (running, same instance), remove it (ours, stopped) or refuse.
func (d *Docker) resolveConflict(ctx context.Context, name string, in Instance) (Handle, bool, error) {
	ictx, cancel := d.apiCtx(ctx, 0)
	res, err := d.cli.ContainerInspect(ictx, name, client.ContainerInspectOptions{})
	cancel()
	if err != nil {
		return Handle{}, false, d.wrap("inspecting existing container "+name, err)
	}
	c := res.Container
	labels := map[string]string{}
	if c.Config != nil {
		labels = c.Config.Labels
	}
	if labels[LabelOwner] != OwnerValue {
		return Handle{}, false, fmt.Errorf("docker runtime: a container named %s exists and is %w; remove or rename it", name, ErrNotOwned)
	}
	running := c.State != nil && c.State.Running
	same := labels[LabelGPU] == in.GPUUUID && labels[LabelContract] == in.Contract && labels[LabelWorkload] == in.Workload
	if running && same {
		d.log.Info("container already running: adopted", zap.String("container", name), zap.String("id", shortID(c.ID)))
		return Handle{Runtime: KindDocker, ID: c.ID, Instance: in, StartedAt: d.now()}, true, nil
	}
	if running {
		return Handle{}, false, fmt.Errorf("docker runtime: container %s still runs for contract %q on GPU %s; it must be stopped first",
			name, labels[LabelContract], labels[LabelGPU])
	}
	rctx, cancel := d.apiCtx(ctx, 0)
	_, err = d.cli.ContainerRemove(rctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	cancel()
	if err != nil && !cerrdefs.IsNotFound(err) {
		return Handle{}, false, d.wrap("removing stale container "+name, err)
	}
	d.log.Info("stale container removed before a new start", zap.String("container", name), zap.String("id", shortID(c.ID)))
	return Handle{}, false, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// inspectOwned inspects a container and checks the owner label; gone is
// true when it does not exist.
func (d *Docker) inspectOwned(ctx context.Context, id string) (c container.InspectResponse, gone bool, err error) {
	ictx, cancel := d.apiCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return c, true, nil
	}
	if err != nil {
		return c, false, d.wrap("inspecting container "+shortID(id), err)
	}
	c = res.Container
	if c.Config == nil || c.Config.Labels[LabelOwner] != OwnerValue {
		return c, false, fmt.Errorf("docker runtime: container %s%s is %w", shortID(id), c.Name, ErrNotOwned)
	}
	return c, false, nil
}

// Status implements Runtime.
func (d *Docker) Status(ctx context.Context, spec Spec, h Handle) (Status, error) {
	c, gone, err := d.inspectOwned(ctx, h.ID)
	if gone {
		return Status{Gone: true, Detail: "container " + shortID(h.ID) + " no longer exists"}, nil
	}
	if err != nil {
		return Status{}, err
	}
	if c.State == nil || !c.State.Running {
		st := Status{Detail: "container " + c.Name + " is not running"}
		if c.State != nil {
			st.ExitCode = c.State.ExitCode
			st.Detail = fmt.Sprintf("container %s is %s with exit code %d", c.Name, c.State.Status, c.State.ExitCode)
			if c.State.OOMKilled {
				st.Detail += " (killed for lack of memory)"
			}
			if c.State.Error != "" {
				st.Detail += ": " + c.State.Error
			}
			st.Detail += "; see docker logs " + strings.TrimPrefix(c.Name, "/")
		}
		return st, nil
	}
	st := Status{Running: true, Ready: true}
	if err := Probe(ctx, d.probe, spec, h.Instance); err != nil {
		st.Ready, st.Detail = false, err.Error()
	}
	return st, nil
}

// Stop implements Runtime: stop (SIGTERM, stop timeout, SIGKILL) or with
// force kill, then remove. Only containers with proxyd's owner label.
func (d *Docker) Stop(ctx context.Context, spec Spec, h Handle, force bool) error {
	c, gone, err := d.inspectOwned(ctx, h.ID)
	if gone {
		return nil
	}
	if err != nil {
		return err
	}
	if c.State != nil && c.State.Running {
		if force {
			kctx, cancel := d.apiCtx(ctx, 0)
			_, err = d.cli.ContainerKill(kctx, c.ID, client.ContainerKillOptions{Signal: "KILL"})
			cancel()
			if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
				return d.wrap("killing container "+c.Name, err)
			}
		} else {
			secs := stopSeconds(spec)
			sctx, cancel := d.apiCtx(ctx, spec.StopTimeout)
			_, err = d.cli.ContainerStop(sctx, c.ID, client.ContainerStopOptions{Timeout: &secs})
			cancel()
			if err != nil && !cerrdefs.IsNotFound(err) {
				return d.wrap("stopping container "+c.Name, err)
			}
		}
	}
	rctx, cancel := d.apiCtx(ctx, 0)
	_, err = d.cli.ContainerRemove(rctx, c.ID, client.ContainerRemoveOptions{Force: force, RemoveVolumes: true})
	cancel()
	if err != nil && !cerrdefs.IsNotFound(err) {
		return d.wrap("removing container "+c.Name, err)
	}
	d.log.Info("container stopped and removed", zap.String("container", c.Name), zap.String("id", shortID(c.ID)), zap.Bool("force", force))
	return nil
}

// List implements Runtime: every container labelled io.hashgate.owner=proxyd.
func (d *Docker) List(ctx context.Context, _ ListQuery) ([]Listed, error) {
	lctx, cancel := d.apiCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.ContainerList(lctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelOwner+"="+OwnerValue),
	})
	if err != nil {
		return nil, d.wrap("listing proxyd's containers", err)
	}
	out := make([]Listed, 0, len(res.Items))
	for _, c := range res.Items {
		if c.Labels[LabelOwner] != OwnerValue {
			continue // an engine that ignored the filter
		}
		in := Instance{Workload: c.Labels[LabelWorkload], Contract: c.Labels[LabelContract], GPUUUID: c.Labels[LabelGPU]}
		out = append(out, Listed{Handle: Handle{Runtime: KindDocker, ID: c.ID, Instance: in}, Running: c.State == container.StateRunning})
	}
	return out, nil
}

// IsNotOwned reports whether err is a refusal to touch a foreign container.
func IsNotOwned(err error) bool { return errors.Is(err, ErrNotOwned) }
