package kubernetes

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// Timings of the scenarios: the dwell is short so the test does not wait
// ten minutes; start_ai is longer than the dwell, so a lent GPU no claim
// takes goes back because of the dwell.
const (
	dwell   = 4 * time.Second
	startAI = 60 * time.Second
	apiAway = time.Minute
)

// cluster is everything a scenario needs.
type cluster struct {
	t       *testing.T
	api     *apiServer
	admin   *kubernetes.Clientset
	p       *proxyd
	front   *frontProxy
	devices map[string]string // GPU UUID → device name
	uuids   map[string]string // device name → GPU UUID
}

func (c *cluster) ctx() context.Context { return context.Background() }

// use makes the helpers fail t (a subtest) rather than its parent.
func (c *cluster) use(t *testing.T) { c.t, c.p.t = t, t }

// ruleDevices lists the devices proxyd's mining rules (NoSchedule)
// select, sorted. A rule of the eviction (None, NoExecute) is not one.
func (c *cluster) ruleDevices() []string {
	var out []string
	for d, r := range proxydRules(c.t, c.admin) {
		tt := r.Spec.Taint
		if tt.Key != "mining.hashgate.io/mining" || *r.Spec.DeviceSelector.Driver != driver || *r.Spec.DeviceSelector.Pool != node {
			c.t.Fatalf("proxyd's rule %s: unexpected spec %+v", r.Name, r.Spec)
		}
		switch tt.Effect {
		case resourcev1.DeviceTaintEffectNoSchedule:
			out = append(out, d)
		case resourcev1.DeviceTaintEffectNone, resourcev1.DeviceTaintEffectNoExecute:
		default:
			c.t.Fatalf("proxyd's rule %s: effect %q", r.Name, tt.Effect)
		}
	}
	sort.Strings(out)
	return out
}

// effectOn is the effect of proxyd's rule on a device ("" without one).
func (c *cluster) effectOn(device string) resourcev1.DeviceTaintEffect {
	r, ok := proxydRules(c.t, c.admin)[device]
	if !ok {
		return ""
	}
	return r.Spec.Taint.Effect
}

// mining lists the devices of the GPUs proxyd reports MINING, sorted.
func (c *cluster) mining() []string {
	var out []string
	for u, st := range c.p.states() {
		if st == "MINING" {
			out = append(out, c.devices[u])
		}
	}
	sort.Strings(out)
	return out
}

func (c *cluster) stateOf(device string) string { return c.p.states()[c.uuids[device]] }

// consistent: every mining GPU carries its rule, and no GPU a claim is
// allocated on carries one; an eviction's rule (None, NoExecute) is only
// on a GPU proxyd is taking back (DRAINING_AI).
func (c *cluster) consistent() error {
	rules := map[string]bool{}
	for _, d := range c.ruleDevices() {
		rules[d] = true
	}
	for d, r := range proxydRules(c.t, c.admin) {
		if e := r.Spec.Taint.Effect; e != resourcev1.DeviceTaintEffectNoSchedule {
			if st := c.stateOf(d); st != "DRAINING_AI" {
				return fmt.Errorf("GPU %s carries proxyd's eviction rule (effect %s) while %s", d, e, st)
			}
		}
	}
	for _, d := range c.mining() {
		if !rules[d] {
			return fmt.Errorf("GPU %s mines without proxyd's rule", d)
		}
	}
	claims, err := c.admin.ResourceV1().ResourceClaims("").List(c.ctx(), metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, cl := range claims.Items {
		if cl.Status.Allocation == nil {
			continue
		}
		for _, r := range cl.Status.Allocation.Devices.Results {
			if rules[r.Device] {
				return fmt.Errorf("claim %s/%s is allocated on %s, which carries proxyd's rule", cl.Namespace, cl.Name, r.Device)
			}
			if st := c.stateOf(r.Device); st == "MINING" {
				return fmt.Errorf("claim %s/%s is allocated on %s, which mines", cl.Namespace, cl.Name, r.Device)
			}
		}
	}
	return nil
}

// pendingClaim creates a claim for one GPU of the class and a pending pod
// that waits on it.
func (c *cluster) pendingClaim(ns, name string) {
	c.t.Helper()
	claim := &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: driver},
		}}}},
	}
	if _, err := c.admin.ResourceV1().ResourceClaims(ns).Create(c.ctx(), claim, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("creating claim %s/%s: %v", ns, name, err)
	}
	claimName := name
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "infer", Image: "registry.example/infer:1",
				Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "gpu"}}}}},
			ResourceClaims: []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: &claimName}},
		},
	}
	if _, err := c.admin.CoreV1().Pods(ns).Create(c.ctx(), pod, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
}

// allocate plays the scheduler: the claim gets the device, reserved for
// its pod, and the pod is bound to the node.
func (c *cluster) allocate(ns, name, device string) {
	c.t.Helper()
	pod, err := c.admin.CoreV1().Pods(ns).Get(c.ctx(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	claim, err := c.admin.ResourceV1().ResourceClaims(ns).Get(c.ctx(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	claim.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{
		Results: []resourcev1.DeviceRequestAllocationResult{{Request: "gpu", Driver: driver, Pool: node, Device: device}},
	}}
	claim.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	if _, err := c.admin.ResourceV1().ResourceClaims(ns).UpdateStatus(c.ctx(), claim, metav1.UpdateOptions{}); err != nil {
		c.t.Fatalf("allocating claim %s/%s on %s: %v", ns, name, device, err)
	}
	if err := c.admin.CoreV1().Pods(ns).Bind(c.ctx(), &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name},
		Target: corev1.ObjectReference{Kind: "Node", Name: node}}, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("binding pod %s/%s: %v", ns, name, err)
	}
}

// podReady plays the kubelet: the pod runs and is Ready.
func (c *cluster) podReady(ns, name string) {
	c.t.Helper()
	pod, err := c.admin.CoreV1().Pods(ns).Get(c.ctx(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	if _, err := c.admin.CoreV1().Pods(ns).UpdateStatus(c.ctx(), pod, metav1.UpdateOptions{}); err != nil {
		c.t.Fatalf("pod %s/%s Ready: %v", ns, name, err)
	}
}

// finish plays the end of a job: the pod and its claim are deleted.
func (c *cluster) finish(ns, name string) {
	c.t.Helper()
	zero := int64(0)
	if err := c.admin.CoreV1().Pods(ns).Delete(c.ctx(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		c.t.Fatal(err)
	}
	if err := c.admin.ResourceV1().ResourceClaims(ns).Delete(c.ctx(), name, metav1.DeleteOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// lentDevice waits until exactly one more GPU than before left mining
// and its rule is gone, and returns its device.
func (c *cluster) waitLent(before []string, within time.Duration) string {
	c.t.Helper()
	var lent string
	c.p.waitFor("one GPU lent (rule deleted)", within, func() bool {
		rules := map[string]bool{}
		for _, d := range c.ruleDevices() {
			rules[d] = true
		}
		var gone []string
		for _, d := range before {
			if !rules[d] {
				gone = append(gone, d)
			}
		}
		if len(gone) > 1 {
			c.t.Fatalf("more than one GPU lent for one claim: %v", gone)
		}
		if len(gone) == 1 {
			lent = gone[0]
			return true
		}
		return false
	})
	return lent
}

func setupCluster(t *testing.T) *cluster {
	t.Helper()
	return setupClusterWith(t, func(port int, tokenFile, stateDir, kubeconfig string) string {
		return fmt.Sprintf(proxydConfig, port, tokenFile, stateDir, startAI, node, kubeconfig, dwell)
	})
}

// setupClusterWith is setupCluster with proxyd's config file written by
// config (from proxyd's API port, its API token file, its state_dir and
// its kubeconfig, which goes through the front proxy).
func setupClusterWith(t *testing.T, config func(port int, tokenFile, stateDir, kubeconfig string) string) *cluster {
	t.Helper()
	etcd := startEtcd(t)
	api := startAPIServer(t, etcd)
	admin := api.client(adminToken)
	ctx := context.Background()
	applyManifest(t, admin, "namespace.yaml", false)
	applyManifest(t, admin, "rbac.yaml", false)
	// The ConfigMap and DaemonSet must be valid for the real API server's
	// schema (dry run: no kubelet runs here).
	applyManifest(t, admin, "configmap.yaml", true)
	applyManifest(t, admin, "daemonset.yaml", true)
	for _, ns := range []string{"ai", "other"} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	front := startFrontProxy(t, api.url)

	dir := t.TempDir()
	tok := filepath.Join(dir, "api-token")
	writeFile(t, tok, []byte(apiToken+"\n"))
	port := freePort(t)
	cfgPath := filepath.Join(dir, "proxyd.toml")
	writeFile(t, cfgPath, []byte(config(port, tok, filepath.Join(dir, "state"), kubeconfig(t, dir, front.srv.URL))))
	p := &proxyd{t: t, bin: buildProxyd(t), cfgPath: cfgPath, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("proxyd's log:\n%s", p.logs())
		}
	})
	c := &cluster{t: t, api: api, admin: admin, p: p, front: front, devices: map[string]string{}, uuids: map[string]string{}}

	// Play NVIDIA's DRA driver: one ResourceSlice with a device per GPU
	// (UUID attribute), and one for another node that must be ignored.
	gpus := p.gpus()
	if len(gpus) < 4 {
		t.Fatalf("%d simulated GPUs, want at least 4", len(gpus))
	}
	var devs []resourcev1.Device
	for _, g := range gpus {
		name := fmt.Sprintf("gpu-%d", g.Index)
		uuid := g.UUID
		c.devices[uuid], c.uuids[name] = name, uuid
		devs = append(devs, resourcev1.Device{Name: name, Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
			"uuid": {StringValue: &uuid}, "productName": {StringValue: ptr("NVIDIA H200")}}})
	}
	for _, n := range []string{node, "node-2"} {
		nodeName := n
		slice := &resourcev1.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: n + "-gpu.nvidia.com"},
			Spec: resourcev1.ResourceSliceSpec{Driver: driver, NodeName: &nodeName,
				Pool: resourcev1.ResourcePool{Name: n, ResourceSliceCount: 1}, Devices: devs},
		}
		if n != node { // the other node's GPUs have other UUIDs
			slice.Spec.Devices = nil
			for i := range devs {
				u := fmt.Sprintf("GPU-other-%d", i)
				slice.Spec.Devices = append(slice.Spec.Devices, resourcev1.Device{Name: devs[i].Name,
					Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{"uuid": {StringValue: &u}}})
			}
		}
		if _, err := admin.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ResourceSlice: %v", err)
		}
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// TestNodeAgent walks proxyd's node agent through the scenarios
// against one real API server, in order: each step starts from the state
// the one before left.
func TestNodeAgent(t *testing.T) {
	start := time.Now()
	c := setupCluster(t)
	ctx := context.Background()
	all := make([]string, 0, len(c.uuids))
	for d := range c.uuids {
		all = append(all, d)
	}
	sort.Strings(all)

	// Other owners' rules: NVIDIA's health taint on a GPU, and an
	// operator's rule whose name looks like proxyd's but is not labelled.
	others := map[string]string{}
	for _, r := range []*resourcev1.DeviceTaintRule{
		{ObjectMeta: metav1.ObjectMeta{Name: "gpu-nvidia-com-unhealthy-" + node + "-gpu-0", Labels: map[string]string{"app.kubernetes.io/managed-by": "nvidia-dra-driver"}},
			Spec: resourcev1.DeviceTaintRuleSpec{DeviceSelector: &resourcev1.DeviceTaintSelector{Driver: ptr(driver), Pool: ptr(node), Device: ptr("gpu-0")},
				Taint: resourcev1.DeviceTaint{Key: "gpu.nvidia.com/xid", Value: "79", Effect: resourcev1.DeviceTaintEffectNone}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "proxyd-mining-operator-hold"},
			Spec: resourcev1.DeviceTaintRuleSpec{DeviceSelector: &resourcev1.DeviceTaintSelector{Driver: ptr(driver), Pool: ptr(node), Device: ptr("gpu-1")},
				Taint: resourcev1.DeviceTaint{Key: "example.com/hold", Effect: resourcev1.DeviceTaintEffectNone}}},
	} {
		got, err := c.admin.ResourceV1().DeviceTaintRules().Create(ctx, r, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating %s: %v", r.Name, err)
		}
		others[got.Name] = got.ResourceVersion
	}

	t.Run("mining GPUs get rules", func(t *testing.T) {
		c.use(t)
		c.p.waitFor("every GPU mining with proxyd's rule", 60*time.Second, func() bool {
			return fmt.Sprint(c.mining()) == fmt.Sprint(all) && fmt.Sprint(c.ruleDevices()) == fmt.Sprint(all)
		})
	})

	t.Run("a claim outside the selector takes no GPU", func(t *testing.T) {
		c.use(t)
		c.pendingClaim("other", "outside")
		// No event to wait for: watch for a while (many reconcile passes).
		for i := 0; i < 40; i++ {
			if m, r := c.mining(), c.ruleDevices(); fmt.Sprint(m) != fmt.Sprint(all) || fmt.Sprint(r) != fmt.Sprint(all) {
				t.Fatalf("a claim in namespace other moved GPUs: mining %v, rules %v", m, r)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	var lent string
	t.Run("a matching claim releases exactly one GPU, proven free first", func(t *testing.T) {
		c.use(t)
		c.pendingClaim("ai", "job-1")
		lent = c.waitLent(all, 30*time.Second)
		// The rule went only once the switcher had proven the GPU free:
		// the journal holds VERIFYING_FREE → STARTING_AI (gpu_free) for it.
		tr := c.p.transitions(c.uuids[lent])
		var path []string
		for _, e := range tr {
			path = append(path, e.From+"→"+e.To+"("+e.Reason+")")
		}
		joined := strings.Join(path, " ")
		iStop := strings.Index(joined, "MINING→STOPPING_MINER")
		iFree := strings.Index(joined, "VERIFYING_FREE→STARTING_AI(gpu_free)")
		if iStop < 0 || iFree < iStop {
			t.Fatalf("GPU %s was lent without stop, proof of free, start in that order: %s", lent, joined)
		}
		if st := c.stateOf(lent); st != "STARTING_AI" {
			t.Fatalf("lent GPU %s is %s before any claim is allocated, want STARTING_AI", lent, st)
		}
		// proxyd said so on the node, as an Event.
		c.p.waitFor("a GPULent Event on the node", 10*time.Second, func() bool {
			evs, err := c.admin.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs.Items {
				if e.Reason == "GPULent" && e.Regarding.Kind == "Node" && e.Regarding.Name == node && strings.Contains(e.Note, c.uuids[lent]) {
					return true
				}
			}
			return false
		})
		// And only one: the others keep mining, with their rules.
		for i := 0; i < 20; i++ {
			if n := len(c.ruleDevices()); n != len(all)-1 {
				t.Fatalf("%d rules after one claim, want %d", n, len(all)-1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("SERVING_AI once the claim is allocated and its pod Ready", func(t *testing.T) {
		c.use(t)
		c.allocate("ai", "job-1", lent)
		for i := 0; i < 10; i++ { // allocated, pod not Ready: still starting
			if st := c.stateOf(lent); st != "STARTING_AI" {
				t.Fatalf("GPU %s is %s with its pod not Ready, want STARTING_AI", lent, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.podReady("ai", "job-1")
		c.p.waitFor("lent GPU SERVING_AI", 20*time.Second, func() bool { return c.stateOf(lent) == "SERVING_AI" })
		if err := c.consistent(); err != nil {
			t.Fatal(err)
		}
		// /api/v1/gpus shows each GPU's device, rule and claims.
		for _, g := range c.p.gpus() {
			k := g.Switch.Kubernetes
			dev := c.devices[g.UUID]
			switch {
			case k == nil:
				t.Errorf("GPU %s: no kubernetes section in /api/v1/gpus", dev)
			case dev == lent && (k.Rule != "" || fmt.Sprint(k.Claims) != "[ai/job-1]" || !k.Lent):
				t.Errorf("serving GPU %s: %+v, want no rule, claim ai/job-1, lent", dev, *k)
			case dev != lent && (k.Rule != "proxyd-mining-node-1-"+dev || len(k.Claims) != 0 || k.Lent ||
				k.Device != "gpu.nvidia.com/node-1/"+dev):
				t.Errorf("mining GPU %s: %+v, want its rule, no claim, not lent", dev, *k)
			}
		}
	})

	t.Run("back to mining after the dwell, not before", func(t *testing.T) {
		c.use(t)
		// Serving longer than the dwell does not end the loan.
		time.Sleep(dwell + time.Second)
		if st := c.stateOf(lent); st != "SERVING_AI" {
			t.Fatalf("GPU %s is %s while its claim holds it, want SERVING_AI", lent, st)
		}
		c.finish("ai", "job-1")
		released := time.Now()
		time.Sleep(dwell / 2)
		if d := c.ruleDevices(); len(d) != len(all)-1 {
			t.Fatalf("GPU %s tainted again %s after its claim ended, before the dwell of %s", lent, time.Since(released), dwell)
		}
		c.p.waitFor("the GPU mining again with its rule", 30*time.Second, func() bool {
			return fmt.Sprint(c.ruleDevices()) == fmt.Sprint(all) && c.stateOf(lent) == "MINING"
		})
		if took := time.Since(released); took < dwell-time.Second {
			t.Fatalf("back to mining %s after the claim ended, before the dwell of %s", took, dwell)
		}
	})

	var raced string
	t.Run("a claim allocated during the re-taint is respected", func(t *testing.T) {
		c.use(t)
		c.pendingClaim("ai", "job-race")
		raced = c.waitLent(all, 30*time.Second)
		lentAt := time.Now()
		// Nothing allocates it: at the end of the dwell proxyd taints it
		// again. The scheduler "saw" the device before the taint: the
		// front proxy allocates the claim the moment the API server has
		// created the rule, before proxyd reads the answer.
		fired := make(chan struct{}, 1)
		c.front.setOnResponse(func(r *http.Request, status int) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/devicetaintrules") && status == http.StatusCreated {
				select {
				case fired <- struct{}{}:
					c.allocate("ai", "job-race", raced)
				default:
				}
			}
		})
		defer c.front.setOnResponse(nil)
		select {
		case <-fired:
		case <-time.After(dwell + 30*time.Second):
			t.Fatalf("proxyd never tainted GPU %s again; log:\n%s", raced, c.p.logs())
		}
		c.p.waitFor("the raced GPU untainted again", 20*time.Second, func() bool {
			for _, d := range c.ruleDevices() {
				if d == raced {
					return false
				}
			}
			return true
		})
		c.podReady("ai", "job-race")
		c.p.waitFor("the raced GPU SERVING_AI", 30*time.Second, func() bool { return c.stateOf(raced) == "SERVING_AI" })
		// From the loan on, the GPU never headed for mining again.
		claimed := false
		for _, e := range c.p.transitions(c.uuids[raced]) {
			if e.Time.Before(lentAt) {
				continue
			}
			if e.To == "RESTORING_MINING" || e.To == "MINING" || e.To == "VERIFYING_FREE" && e.From == "DRAINING_AI" {
				t.Errorf("GPU %s headed back to mining although a claim won the race: %s → %s (%s)", raced, e.From, e.To, e.Reason)
			}
			if e.From == "DRAINING_AI" && e.To == "STARTING_AI" && e.Reason == "claimed_during_release" {
				claimed = true
			}
		}
		if !claimed {
			t.Errorf("no DRAINING_AI → STARTING_AI (claimed_during_release) transition for GPU %s", raced)
		}
		if err := c.consistent(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("kill -9 while serving and while switching keeps rules consistent", func(t *testing.T) {
		c.use(t)
		c.p.kill()
		if err := consistentRules(c, raced); err != nil {
			t.Fatalf("right after kill -9: %v", err)
		}
		c.p.start()
		if st := c.stateOf(raced); st != "SERVING_AI" {
			t.Fatalf("after restart GPU %s is %s, want SERVING_AI (adopted)", raced, st)
		}
		for i := 0; i < 20; i++ {
			if err := c.consistent(); err != nil {
				t.Fatalf("after restart: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Now kill it in the middle of a loan: a new claim, and kill -9
		// as soon as a GPU left MINING.
		c.pendingClaim("ai", "job-kill")
		c.p.waitFor("a GPU switching", 30*time.Second, func() bool {
			for _, st := range c.p.states() {
				if st == "STOPPING_MINER" || st == "VERIFYING_FREE" || st == "STARTING_AI" {
					return true
				}
			}
			return false
		})
		c.p.kill()
		c.p.start()
		for i := 0; i < 10; i++ {
			if err := c.consistent(); err != nil {
				t.Fatalf("after kill -9 mid-switch and restart: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The claim still wants a GPU: one is lent besides raced; the
		// scheduler takes it.
		var others []string
		for _, d := range all {
			if d != raced {
				others = append(others, d)
			}
		}
		kill := c.waitLent(others, 30*time.Second)
		c.allocate("ai", "job-kill", kill)
		c.podReady("ai", "job-kill")
		c.p.waitFor("job-kill's GPU SERVING_AI", 30*time.Second, func() bool { return c.stateOf(kill) == "SERVING_AI" })
		for i := 0; i < 10; i++ {
			if err := c.consistent(); err != nil {
				t.Fatalf("after kill -9 mid-switch, with job-kill served: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.finish("ai", "job-kill")
	})

	t.Run("kill -9 at each step of a loan and a take-back keeps rules consistent", func(t *testing.T) {
		c.use(t)
		killAtEachStep(t, c, raced)
	})

	t.Run("the API server away for a minute: mining goes on, /readyz says so", func(t *testing.T) {
		c.use(t)
		c.p.waitFor("settled: all but the raced GPU mining", 60*time.Second, func() bool { return len(c.mining()) == len(all)-1 })
		before := c.mining()
		c.api.kill()
		c.p.waitFor("/readyz 503 naming the API server", 30*time.Second, func() bool {
			code, body := c.p.get("/readyz")
			return code == 503 && strings.Contains(body, "kubernetes")
		})
		end := time.Now().Add(apiAway)
		for time.Now().Before(end) {
			if m := c.mining(); fmt.Sprint(m) != fmt.Sprint(before) {
				t.Fatalf("with the API server away, mining changed from %v to %v", before, m)
			}
			time.Sleep(time.Second)
		}
		c.api.start()
		c.p.waitFor("/readyz 200 again", 60*time.Second, func() bool { code, _ := c.p.get("/readyz"); return code == 200 })
		if err := c.consistent(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("other owners' rules are untouched", func(t *testing.T) {
		c.use(t)
		for name, rv := range others {
			r, err := c.admin.ResourceV1().DeviceTaintRules().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("rule %s of another owner: %v", name, err)
			}
			if r.ResourceVersion != rv {
				t.Errorf("rule %s of another owner was changed (resourceVersion %s → %s)", name, rv, r.ResourceVersion)
			}
		}
	})
	evictionScenarios(t, c, raced)
	t.Logf("TestNodeAgent took %s", time.Since(start).Round(time.Second))
}

// evictionScenarios: a GPU an operator's contract lent to the cluster,
// then held by a claim, is not evicted when the contract ends, until the
// operator turns evict_for_mining on (proxyd restarted with it); then the
// dry run comes first, a dry run without an answer leaves the GPU lent,
// kill -9 in the dry run and in the eviction keeps the rules consistent,
// and an eviction that completes ends with the GPU mining under its
// NoSchedule rule. raced serves a claim for the cluster throughout.
func evictionScenarios(t *testing.T, c *cluster, raced string) {
	ctx := context.Background()
	var op string // the GPU the operator's contract lends
	var deleted time.Time
	t.Run("with eviction off a claimed GPU stays lent when its lending contract ends", func(t *testing.T) {
		c.use(t)
		c.p.waitFor("settled: all but the raced GPU mining", 60*time.Second, func() bool {
			return len(c.mining()) == len(c.uuids)-1 && len(c.ruleDevices()) == len(c.uuids)-1
		})
		before := c.ruleDevices()
		now := time.Now().UTC()
		body := fmt.Sprintf(`{"id":"op-lend","gpus":1,"start":%q,"end":%q,"price_usd_per_gpu_hour":1,"workload":"kubernetes"}`,
			now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
		if code, b := c.p.do(http.MethodPut, "/api/v1/contracts/op-lend", body); code/100 != 2 {
			t.Fatalf("PUT contract: %d %s", code, b)
		}
		op = c.waitLent(before, 30*time.Second)
		// A claim outside the selector (so no demand of the cluster's)
		// lands on it, and its pod runs.
		c.allocate("other", "outside", op)
		c.podReady("other", "outside")
		// The first wait on proxyd's claim and pod caches since the API
		// server came back: client-go's watches retry with a backoff that
		// grows to 30 s (with jitter, up to a minute) while the API server
		// is away, so the allocation and Ready may reach proxyd that late.
		c.p.waitFor("the operator's GPU SERVING_AI", 90*time.Second, func() bool { return c.stateOf(op) == "SERVING_AI" })
		deleted = time.Now()
		if code, b := c.p.do(http.MethodDelete, "/api/v1/contracts/op-lend", ""); code/100 != 2 {
			t.Fatalf("DELETE contract: %d %s", code, b)
		}
		c.p.waitFor("a take-back the claim refused", 30*time.Second, func() bool {
			for _, e := range c.p.transitions(c.uuids[op]) {
				if e.Time.After(deleted) && e.Reason == "claimed_during_release" {
					return true
				}
			}
			return false
		})
		for i := 0; i < 30; i++ {
			if st := c.stateOf(op); st == "MINING" || st == "RESTORING_MINING" || st == "VERIFYING_FREE" {
				t.Fatalf("the claimed GPU %s is %s with eviction off", op, st)
			}
			if e := c.effectOn(op); e != "" {
				t.Fatalf("the claimed GPU %s carries proxyd's rule (effect %s) with eviction off", op, e)
			}
			if err := c.consistent(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if op == "" {
		return
	}
	rule := "proxyd-mining-" + node + "-" + op
	ec := startEvictionController(c)
	defer ec.close()
	defer c.front.setOnRequest(nil)

	t.Run("with eviction on a dry run that never reports leaves the GPU lent and mining off", func(t *testing.T) {
		c.use(t)
		c.p.kill()
		cfg, err := os.ReadFile(c.p.cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, c.p.cfgPath, append(cfg, []byte("evict_for_mining = true\neviction_timeout = \"4s\"\n")...))
		c.p.start()
		c.p.waitFor("eviction_failed in the journal", 40*time.Second, func() bool { return len(c.p.decisions(c.uuids[op], "eviction_failed")) > 0 })
		msg, _ := c.p.decisions(c.uuids[op], "eviction_failed")[0].Details["message"].(string)
		if !strings.Contains(msg, "dry run") || !strings.Contains(msg, "EvictionInProgress") {
			t.Errorf("eviction_failed says %q, want it to name the dry run without an EvictionInProgress status", msg)
		}
		if e := c.effectOn(op); e != "" {
			t.Errorf("after the failed dry run GPU %s carries proxyd's rule (effect %s), want none (lent)", op, e)
		}
		if fx := ec.effects(rule); len(fx) == 0 || fx[0] != string(resourcev1.DeviceTaintEffectNone) || slices.Contains(fx, "NoExecute") {
			t.Errorf("proxyd wrote effects %v on %s, want the dry run (None) and never NoExecute", fx, rule)
		}
		cl, err := c.admin.ResourceV1().ResourceClaims("other").Get(ctx, "outside", metav1.GetOptions{})
		if err != nil || cl.Status.Allocation == nil {
			t.Fatalf("the claim lost its allocation without an eviction: %v", err)
		}
		for _, e := range c.p.transitions(c.uuids[op]) {
			if e.Time.After(deleted) && (e.To == "RESTORING_MINING" || e.To == "MINING") {
				t.Errorf("GPU %s headed for mining though its claim was not evicted: %s → %s (%s)", op, e.From, e.To, e.Reason)
			}
		}
		if err := c.consistent(); err != nil {
			t.Fatal(err)
		}
	})

	// kill -9 in the eviction's states: the dry run's rule (None) and the
	// eviction's (NoExecute) left behind by a dead proxyd are the
	// eviction's own; after the restart the GPU is still lent, so the rule
	// keeper removes the leftover and the eviction starts over from the
	// dry run. Neither ever leaves a mining rule on the claimed GPU.
	killInEviction := func(t *testing.T, want resourcev1.DeviceTaintEffect, next evictMode) {
		c.p.waitFor("proxyd's rule on "+op+" with effect "+string(want), 30*time.Second, func() bool { return c.effectOn(op) == want })
		c.p.kill()
		if err := consistentRules(c, raced, op); err != nil {
			t.Fatalf("right after kill -9: %v", err)
		}
		if e := c.effectOn(op); e != want {
			t.Fatalf("with proxyd dead GPU %s carries effect %q, want %s", op, e, want)
		}
		ec.setMode(next)
		c.p.start()
		// The leftover rule is the eviction's until the rule keeper or
		// the new take-back has it.
		c.p.waitFor("consistent after the restart", 10*time.Second, func() bool { return c.consistent() == nil })
		for i := 0; i < 20; i++ {
			if err := c.consistent(); err != nil {
				t.Fatalf("after restart: %v", err)
			}
			if st := c.stateOf(op); st == "MINING" || st == "RESTORING_MINING" {
				t.Fatalf("GPU %s is %s after restart while its claim holds it", op, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Run("kill -9 during the dry run (effect None, no answer yet)", func(t *testing.T) {
		c.use(t)
		killInEviction(t, resourcev1.DeviceTaintEffectNone, evictDryRunOnly)
	})
	t.Run("kill -9 during the eviction (effect NoExecute, not done yet)", func(t *testing.T) {
		c.use(t)
		killInEviction(t, resourcev1.DeviceTaintEffectNoExecute, evictDryRunOnly)
	})

	t.Run("with eviction on the dry run comes first, the pod is evicted and the GPU mines with its NoSchedule rule", func(t *testing.T) {
		c.use(t)
		// proxyd evicts again from the dry run; the controller now does
		// the eviction once NoExecute is set.
		c.p.waitFor("NoExecute again after the restart", 30*time.Second, func() bool { return c.effectOn(op) == resourcev1.DeviceTaintEffectNoExecute })
		ec.setMode(evictActive)
		c.p.waitFor("GPU "+op+" mining with its NoSchedule rule", 60*time.Second, func() bool {
			return c.stateOf(op) == "MINING" && c.effectOn(op) == resourcev1.DeviceTaintEffectNoSchedule
		})
		cl, err := c.admin.ResourceV1().ResourceClaims("other").Get(ctx, "outside", metav1.GetOptions{})
		if err != nil || cl.Status.Allocation != nil {
			t.Errorf("the evicted claim: %v, allocation %v", err, cl.Status.Allocation)
		}
		if _, err := c.admin.CoreV1().Pods("other").Get(ctx, "outside", metav1.GetOptions{}); err == nil {
			t.Error("the evicted pod still exists")
		}
		if p := ec.problems(); len(p) > 0 {
			t.Errorf("proxyd's writes broke the dry-run-first order: %v", p)
		}
		fx := ec.effects(rule)
		iNone := slices.Index(fx, string(resourcev1.DeviceTaintEffectNone))
		iExec := slices.Index(fx, string(resourcev1.DeviceTaintEffectNoExecute))
		if iNone < 0 || iExec < iNone || fx[len(fx)-1] != string(resourcev1.DeviceTaintEffectNoSchedule) {
			t.Errorf("effects proxyd wrote on %s: %v, want None before NoExecute and NoSchedule last", rule, fx)
		}
		dry := c.p.decisions(c.uuids[op], "eviction_dry_run")
		done := c.p.decisions(c.uuids[op], "evicted_for_mining")
		if len(dry) == 0 || len(done) == 0 {
			t.Fatalf("journal: %d eviction_dry_run, %d evicted_for_mining decisions, want both", len(dry), len(done))
		}
		if msg, _ := dry[len(dry)-1].Details["message"].(string); !strings.Contains(msg, "1 pod(s) would be evicted") {
			t.Errorf("the dry run's journal entry %q does not carry the controller's message", msg)
		}
		if dry[len(dry)-1].Time.After(done[len(done)-1].Time) {
			t.Error("evicted_for_mining journaled before the dry run")
		}
		evs, err := c.admin.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range evs.Items {
			found = found || (e.Reason == "GPUEvicted" && strings.Contains(e.Note, c.uuids[op]))
		}
		if !found {
			t.Error("no GPUEvicted Event on the node")
		}
		if err := c.consistent(); err != nil {
			t.Fatal(err)
		}
		// The cluster's own GPU was never touched by the eviction.
		if st := c.stateOf(raced); st != "SERVING_AI" {
			t.Errorf("the cluster's GPU %s is %s, want SERVING_AI", raced, st)
		}
	})
}

// holdOnce holds the first request that match selects, at the front
// proxy: before it reaches the API server (and then drops it: as if the
// connection broke), or after the API server answered (before proxyd gets
// the answer). held is closed once proxyd is stuck there; release lets
// it go.
type holdOnce struct {
	held, release chan struct{}
	once          sync.Once
}

func (c *cluster) hold(match func(r *http.Request) bool, afterAnswer bool) *holdOnce {
	h := &holdOnce{held: make(chan struct{}), release: make(chan struct{})}
	stop := func(r *http.Request) bool {
		hit := false
		if match(r) {
			h.once.Do(func() { hit = true })
		}
		if hit {
			close(h.held)
			<-h.release
		}
		return hit
	}
	if afterAnswer {
		c.front.setOnResponse(func(r *http.Request, _ int) { stop(r) })
	} else {
		c.front.setOnRequest(func(r *http.Request, _ []byte) bool { return !stop(r) })
	}
	return h
}

// killHeld waits until proxyd is held, kills it, then lets the held
// request go (to a dead proxyd) and removes the hooks.
func (c *cluster) killHeld(h *holdOnce, what string) {
	c.t.Helper()
	select {
	case <-h.held:
	case <-time.After(60 * time.Second):
		c.t.Fatalf("proxyd never reached %s; log:\n%s", what, c.p.logs())
	}
	c.p.kill()
	close(h.release)
	c.front.setOnRequest(nil)
	c.front.setOnResponse(nil)
}

// killAtEachStep kill -9s proxyd in each step of lending a GPU and taking
// it back that touches a rule, each reached with a hold at the front
// proxy the test controls (never a sleep), and checks the rules with
// proxyd dead, then the rules against what runs after the restart.
// Steps that touch no rule (STOPPING_MINER, VERIFYING_FREE,
// RESTORING_MINING: the miner stops, the GPU is proven free, the miner
// starts, all under the GPU's NoSchedule rule) have no API call to hold;
// the rules there are those of MINING (the rule is written before the
// miner stops and deleted only by the start of the loan); the mid-switch
// kill above lands in them by chance, TestKillInEveryState on purpose.
func killAtEachStep(t *testing.T, c *cluster, raced string) {
	ruleOp := func(method string) func(r *http.Request) bool {
		return func(r *http.Request) bool {
			return r.Method == method && strings.Contains(r.URL.Path, "/devicetaintrules")
		}
	}
	restartConsistent := func(step string) {
		c.p.start()
		for i := 0; i < 20; i++ {
			if err := c.consistent(); err != nil {
				t.Fatalf("%s: after restart: %v", step, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.p.waitFor("settled: all but the raced GPU mining", 60*time.Second, func() bool {
		return len(c.mining()) == len(c.uuids)-1 && len(c.ruleDevices()) == len(c.uuids)-1
	})

	// MINING.
	c.p.kill()
	if err := consistentRules(c, raced); err != nil {
		t.Fatalf("MINING: with proxyd dead: %v", err)
	}
	restartConsistent("MINING")

	// STARTING_AI, the GPU proven free, its rule not deleted yet (Start's
	// DELETE never reaches the API server).
	h := c.hold(ruleOp(http.MethodDelete), false)
	c.pendingClaim("ai", "job-steps")
	c.killHeld(h, "the loan's rule deletion")
	if err := consistentRules(c, raced); err != nil {
		t.Fatalf("STARTING_AI before the rule is deleted: with proxyd dead: %v", err)
	}
	// STARTING_AI, the rule deleted, proxyd not told yet (after restart
	// the claim still asks; the DELETE's answer is held).
	h = c.hold(ruleOp(http.MethodDelete), true)
	c.p.start()
	c.killHeld(h, "the loan's rule deletion answered")
	var lentNow []string
	for _, d := range c.devicesSorted() {
		if d != raced && !slices.Contains(c.ruleDevices(), d) {
			lentNow = append(lentNow, d)
		}
	}
	if len(lentNow) != 1 {
		t.Fatalf("STARTING_AI after the rule is deleted: GPUs without a rule besides the raced one: %v, want one", lentNow)
	}
	if err := consistentRules(c, raced, lentNow[0]); err != nil {
		t.Fatalf("STARTING_AI after the rule is deleted: with proxyd dead: %v", err)
	}
	restartConsistent("STARTING_AI after the rule is deleted")

	// DRAINING_AI: nothing takes the lent GPU; at the end of the dwell the
	// take-back writes the rule again (its answer held), then re-reads the
	// claims (held before it reaches the API server).
	c.p.waitFor("a GPU lent for job-steps", 30*time.Second, func() bool { return len(c.ruleDevices()) == len(c.uuids)-2 })
	h = c.hold(ruleOp(http.MethodPost), true)
	c.killHeld(h, "the take-back's re-taint answered")
	if err := consistentRules(c, raced); err != nil {
		t.Fatalf("DRAINING_AI, rule re-created: with proxyd dead: %v", err)
	}
	restartConsistent("DRAINING_AI, rule re-created")
	c.p.waitFor("the GPU lent again after the restart", 30*time.Second, func() bool { return len(c.ruleDevices()) == len(c.uuids)-2 })
	var tainted atomic.Bool
	c.front.setOnResponse(func(r *http.Request, _ int) {
		if ruleOp(http.MethodPost)(r) {
			tainted.Store(true)
		}
	})
	h = c.hold(func(r *http.Request) bool {
		return tainted.Load() && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/resourceclaims") &&
			r.URL.Query().Get("watch") == ""
	}, false)
	c.killHeld(h, "the take-back's re-read of the claims")
	if err := consistentRules(c, raced); err != nil {
		t.Fatalf("DRAINING_AI, claims being re-read: with proxyd dead: %v", err)
	}
	restartConsistent("DRAINING_AI, claims being re-read")
	c.finish("ai", "job-steps")
}

// devicesSorted lists every GPU's device, sorted.
func (c *cluster) devicesSorted() []string {
	var out []string
	for d := range c.uuids {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// consistentRules checks the rules alone (proxyd is down): every GPU but
// the lent ones carries proxyd's mining rule, and no lent one does.
func consistentRules(c *cluster, lent ...string) error {
	for _, d := range c.ruleDevices() {
		if slices.Contains(lent, d) {
			return fmt.Errorf("the lent GPU %s carries proxyd's mining rule", d)
		}
	}
	if n := len(c.ruleDevices()); n != len(c.uuids)-len(lent) {
		return fmt.Errorf("%d mining rules, want %d (every GPU but the lent ones %v)", n, len(c.uuids)-len(lent), lent)
	}
	return nil
}

// The shipped ConfigMap's proxyd.toml passes `proxyd check-config` (with
// the Secret's token file put where the DaemonSet mounts it).
func TestConfigMapChecks(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "kubernetes", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Data["proxyd.toml"] == "" {
		t.Fatalf("configmap.yaml holds %T without proxyd.toml", obj)
	}
	dir := t.TempDir()
	tok := filepath.Join(dir, "api-token")
	writeFile(t, tok, []byte(apiToken+"\n"))
	const mounted = "/etc/proxyd/secret/api-token"
	if !strings.Contains(cm.Data["proxyd.toml"], mounted) {
		t.Fatalf("proxyd.toml does not read the token from %s, where the DaemonSet mounts the Secret", mounted)
	}
	cfg := filepath.Join(dir, "proxyd.toml")
	writeFile(t, cfg, []byte(strings.ReplaceAll(cm.Data["proxyd.toml"], mounted, tok)))
	out, err := exec.Command(buildProxyd(t), "check-config", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "switcher on") {
		t.Fatalf("proxyd check-config on the ConfigMap's proxyd.toml: %v\n%s", err, out)
	}
}
