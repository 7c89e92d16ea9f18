package components

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
	"github.com/hashgate/proxyd/switcher"
	"github.com/hashgate/proxyd/switcher/kubeagent"
	"github.com/hashgate/proxyd/switcher/workload"
)

// kubeSwitcher is a [switcher] with [switcher.kubernetes] on, its client
// reading a kubeconfig for an API server nobody asks (nothing is started).
func kubeSwitcher(t *testing.T, mining string) config.Switcher {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(kc, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	s := DemoSwitcher(dir)
	s.Workload = nil
	s.Mining.Runtime = mining
	s.Kubernetes = &config.Kubernetes{Enabled: true, NodeName: "gpu-node-1", Kubeconfig: kc, APITimeout: config.Duration(time.Second)}
	return s
}

// The lending runtime is a kind in the wiring's registry, the cluster's
// contract has its workload even without [switcher.workload] tables, and
// the miner's runtime is guarded without losing its Close.
func TestKubernetesKindRegistered(t *testing.T) {
	if config.KubernetesWorkload != switcher.ClusterWorkload || config.RuntimeKubernetes != kubeagent.Kind {
		t.Fatalf("config names the lending workload %q/%q, the switcher %q, the agent's kind %q",
			config.KubernetesWorkload, config.RuntimeKubernetes, switcher.ClusterWorkload, kubeagent.Kind)
	}
	s := kubeSwitcher(t, config.RuntimeDocker)
	kube, err := newKubeAgent(s, zaptest.NewLogger(t), nil, nil, nil)
	if err != nil || kube == nil {
		t.Fatalf("newKubeAgent: %v %v", kube, err)
	}
	r, err := workloadDrivers(s, kube)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Kinds(); !slices.Equal(got, []string{"docker", "exec", "kubernetes", "simulated"}) {
		t.Errorf("kinds %v", got)
	}
	d, ok := r.Lookup(kubeagent.Kind)
	if !ok || d.CallBound != 3*time.Second {
		t.Fatalf("kubernetes driver %v %+v", ok, d)
	}
	env := workload.Env{Log: zaptest.NewLogger(t), Now: time.Now}
	rt, err := d.New(env)
	if err != nil || rt.Kind() != kubeagent.Kind {
		t.Fatalf("lending runtime %v %v", rt, err)
	}
	dd, _ := r.Lookup(workload.KindDocker)
	miner, err := dd.New(env)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := miner.(io.Closer); !ok || miner.Kind() != workload.KindDocker {
		t.Errorf("the guarded docker runtime %T (kind %s) does not close the docker client", miner, miner.Kind())
	}
	if cl, ok := miner.(io.Closer); ok {
		_ = cl.Close()
	}
	w := switcherConfig(s).Workload[switcher.ClusterWorkload]
	if w.Runtime != kubeagent.Kind || w.ProofOfStart != workload.ProofNone || w.StopTimeout != 3*time.Second {
		t.Errorf("lending workload %+v", w)
	}

	// With evict_for_mining the take-back is the eviction: the driver's
	// bound and the lending workload's stop timeout say so.
	s.Kubernetes.EvictForMining, s.Kubernetes.EvictionTimeout = true, config.Duration(20*time.Second)
	ev, err := workloadDrivers(s, kube)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := ev.Lookup(kubeagent.Kind); d.CallBound != 24*time.Second {
		t.Errorf("kubernetes driver's bound with eviction %s, want 24s (20s + 4 × 1s)", d.CallBound)
	}
	if w := switcherConfig(s).Workload[switcher.ClusterWorkload]; w.StopTimeout != 24*time.Second {
		t.Errorf("lending workload's stop timeout with eviction %s, want 24s", w.StopTimeout)
	}
	s.Kubernetes.EvictForMining = false

	// Without the agent: the shipped kinds only, the miner not wrapped.
	sim := nvmlsim.New(nvmlsim.Options{})
	plain, err := workloadDrivers(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := plain.Lookup(kubeagent.Kind); ok {
		t.Error("a kubernetes kind without the agent")
	}
	sd, _ := plain.Lookup(workload.KindSimulated)
	if rt, err := sd.New(workload.Env{Sim: sim, Now: time.Now}); err != nil || fmt.Sprintf("%T", rt) != "*workload.Sim" {
		t.Errorf("plain simulated runtime %T %v", rt, err)
	}
}

// A node name is needed; the factory says so instead of starting an agent
// that cannot find its GPUs.
func TestKubernetesAgentNeedsNodeName(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	cfg := config.Default()
	cfg.GPU.Backend = nvml.BackendSimulated
	cfg.Switcher = kubeSwitcher(t, config.RuntimeSimulated)
	cfg.Switcher.Kubernetes.NodeName = ""
	_, err := newSwitcher(daemon.Env{Config: cfg, Log: zaptest.NewLogger(t)}, func() *gpuComponent { return nil })
	if err == nil || !strings.Contains(err.Error(), "node name") {
		t.Fatalf("err %v", err)
	}
	t.Setenv("NODE_NAME", "gpu-node-2")
	c, err := newSwitcher(daemon.Env{Config: cfg, Log: zaptest.NewLogger(t)}, func() *gpuComponent { return nil })
	if err != nil || c.kube == nil {
		t.Fatalf("with NODE_NAME: %v %v", c, err)
	}
}
