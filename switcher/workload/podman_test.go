package workload

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// probeServer is the workload of the podman test: a static Go binary that
// serves GET /health on 127.0.0.1:<port>, or exits with a code
// ("exit=N"); SIGTERM ends it cleanly.
const probeServer = `package main

import (
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	arg := os.Args[1]
	if code, ok := strings.CutPrefix(arg, "exit="); ok {
		n, _ := strconv.Atoi(code)
		os.Exit(n)
	}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(0)
	}()
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	if err := http.ListenAndServe("127.0.0.1:"+arg, nil); err != nil {
		os.Exit(2)
	}
}
`

// podmanEnv is a podman with its own storage under a temporary directory,
// serving the Docker-compatible API on a socket there.
type podmanEnv struct {
	t    *testing.T
	bin  string
	dir  string
	base []string
	env  []string
	sock string
}

// newPodman starts `podman system service` or skips the test, saying why.
func newPodman(t *testing.T) *podmanEnv {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed (Debian: apt-get install podman runc catatonit); the real-socket test of the docker runtime is skipped")
	}
	if os.Geteuid() != 0 {
		t.Skip("the podman test runs containers as root (rootless podman needs subuid ranges this machine may lack)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("podman is installed without runc (apt-get install runc); crun refuses this machine's cgroup layout")
	}
	if _, err := exec.LookPath("catatonit"); err != nil {
		if _, err := os.Stat("/usr/libexec/podman/catatonit"); err != nil {
			t.Skip("podman is installed without catatonit (apt-get install catatonit), which containers with an init process need")
		}
	}
	// Short: podman refuses a runroot longer than 50 characters, and
	// t.TempDir's paths are long.
	dir, err := os.MkdirTemp("", "pm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	conf := filepath.Join(dir, "containers.conf")
	// runc and explicit ulimits within the hard limits: what podman 4.3
	// needs to run containers as root on these machines.
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n"+
		"[engine]\nruntime = \"runc\"\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &podmanEnv{t: t, bin: bin, dir: dir, sock: filepath.Join(dir, "podman.sock"),
		base: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs",
			"--tmpdir", filepath.Join(dir, "tmp")},
		env: append(os.Environ(), "CONTAINERS_CONF="+conf)}
	svc := exec.Command(bin, append(p.base, "system", "service", "--time=0", "unix://"+p.sock)...)
	svc.Env = p.env
	var log bytes.Buffer
	svc.Stdout, svc.Stderr = &log, &log
	if err := svc.Start(); err != nil {
		t.Skipf("podman system service does not start here: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = svc.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// Nothing may outlive the test, whatever it left running.
		rm := exec.Command(bin, append(p.base, "rm", "--force", "--all", "--time", "0")...)
		rm.Env = p.env
		_ = rm.Run()
		_ = svc.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("podman service log:\n%s", log.String())
		}
	})
	for range 300 {
		if c, err := net.Dial("unix", p.sock); err == nil {
			c.Close()
			return p
		}
		select {
		case <-exited:
			t.Skipf("podman system service does not run here: %s", log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Skipf("podman system service never opened its socket: %s", log.String())
	return nil
}

func (p *podmanEnv) run(args ...string) string {
	p.t.Helper()
	cmd := exec.Command(p.bin, append(p.base, args...)...)
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// image builds the probe server statically and imports it as an image (no
// registry is reachable here).
func (p *podmanEnv) image() string {
	p.t.Helper()
	src := filepath.Join(p.dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(probeServer), 0o644); err != nil {
		p.t.Fatal(err)
	}
	bin := filepath.Join(p.dir, "probe")
	build := exec.Command("go", "build", "-o", bin, "main.go")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		p.t.Fatalf("building the probe server: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		p.t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "probe", Mode: 0o755, Size: int64(len(data)), ModTime: time.Now()})
	_, _ = tw.Write(data)
	_ = tw.Close()
	tarball := filepath.Join(p.dir, "probe.tar")
	if err := os.WriteFile(tarball, buf.Bytes(), 0o644); err != nil {
		p.t.Fatal(err)
	}
	const ref = "localhost/proxyd-probe:test"
	p.run("import", tarball, ref)
	return ref
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The docker runtime against a real engine: podman's Docker-compatible API
// on a socket. Create (labels, init, restart "no"), start, readiness by
// HTTP, list by label, an exit seen with its code, graceful stop and
// removal; a container without proxyd's label is left alone.
func TestDockerRuntimeAgainstPodman(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real container engine")
	}
	p := newPodman(t)
	img := p.image()
	d, err := NewDocker(DockerOptions{Host: "unix://" + p.sock, DeviceMode: DeviceModeCDI,
		APITimeout: time.Duration(60 * time.Second), Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	port := freePort(t)
	spec := Spec{Name: "probe", Definition: Definition{Runtime: KindDocker, Params: DockerParams{Image: img, Cmd: []string{"/probe", "{port}"},
		Network: "host"}, StopTimeout: time.Duration(5 * time.Second), Readiness: ReadinessHTTP, ReadinessPath: "/health",
		ReadinessStatus: 200, Port: port}}
	in := Instance{Workload: "probe", Contract: "acme", GPUUUID: "GPU-00000000-0000-0000-0000-000000000001", GPUIndex: 0}
	h, err := d.Start(ctx, spec, in)
	if err != nil {
		t.Fatalf("start on podman: %v", err)
	}
	if d.Engine() != "podman" {
		t.Errorf("engine detected as %q", d.Engine())
	}
	var st Status
	for range 300 {
		if st, err = d.Status(ctx, spec, h); err == nil && st.Ready {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !st.Ready {
		t.Fatalf("never ready: %+v %v", st, err)
	}
	if got := p.run("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Init}} {{index .Config.Labels \"io.hashgate.owner\"}} {{index .Config.Labels \"io.hashgate.contract\"}}", h.ID); got != "no true proxyd acme" &&
		got != " true proxyd acme" {
		t.Errorf("container settings: %q", got)
	}

	// A workload that exits: the runtime sees it with its code.
	exiting := spec
	exitingParams := ParamsOf[DockerParams](spec.Definition)
	exitingParams.Cmd = []string{"/probe", "exit=7"}
	exiting.Name, exiting.Params, exiting.Readiness, exiting.ReadinessPath, exiting.ReadinessStatus = "exiter", exitingParams,
		ReadinessRunning, "", 0
	in2 := Instance{Workload: "exiter", Contract: "acme", GPUUUID: "GPU-00000000-0000-0000-0000-000000000002", GPUIndex: 1}
	h2, err := d.Start(ctx, exiting, in2)
	if err != nil {
		t.Fatal(err)
	}
	for range 300 {
		if st, err = d.Status(ctx, exiting, h2); err == nil && !st.Running {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Running || st.ExitCode != 7 {
		t.Errorf("exited workload: %+v %v", st, err)
	}

	// Someone else's container, no label.
	foreign := p.run("create", "--name", "not-proxyds", img, "/probe", "exit=0")
	if err := d.Stop(ctx, spec, Handle{Runtime: KindDocker, ID: foreign, Instance: in}, true); !errors.Is(err, ErrNotOwned) {
		t.Errorf("stop of a foreign container: %v", err)
	}

	l, err := d.List(ctx, ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]Listed{}
	for _, x := range l {
		ids[x.ID] = x
	}
	if len(l) != 2 || !ids[h.ID].Running || ids[h2.ID].Running || ids[h.ID].GPUUUID != in.GPUUUID || ids[h.ID].Contract != "acme" {
		t.Errorf("list by label: %+v", l)
	}

	for _, x := range []struct {
		s Spec
		h Handle
	}{{spec, h}, {exiting, h2}} {
		if err := d.Stop(ctx, x.s, x.h, false); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if st, err := d.Status(ctx, x.s, x.h); err != nil || !st.Gone {
			t.Errorf("after stop: %+v %v", st, err)
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Error("the workload still serves after its stop")
	}
	if out := p.run("ps", "-a", "--format", "{{.Names}}"); out != "not-proxyds" {
		t.Errorf("containers left: %q", out)
	}
}
