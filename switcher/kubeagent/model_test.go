package kubeagent

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func str(s string) *string { return &s }

func slice(name, driver, node string, devs map[string]string) *resourcev1.ResourceSlice {
	s := &resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: resourcev1.ResourceSliceSpec{Driver: driver, NodeName: str(node), Pool: resourcev1.ResourcePool{Name: node}}}
	for dev, uuid := range devs {
		s.Spec.Devices = append(s.Spec.Devices, resourcev1.Device{Name: dev,
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{"uuid": {StringValue: str(uuid)}}})
	}
	return s
}

func TestMapDevices(t *testing.T) {
	slices := []*resourcev1.ResourceSlice{
		slice("a", "gpu.nvidia.com", "n1", map[string]string{"gpu-0": "GPU-0", "gpu-1": "GPU-1"}),
		slice("b", "gpu.nvidia.com", "n2", map[string]string{"gpu-0": "GPU-x"}),   // another node
		slice("c", "other.example", "n1", map[string]string{"gpu-9": "GPU-9"}),    // another driver
		slice("d", "gpu.nvidia.com", "n1", map[string]string{"gpu-dup": "GPU-1"}), // the same UUID again
	}
	m, dups := mapDevices(slices, "gpu.nvidia.com", "n1", "uuid")
	want := map[string]deviceRef{"GPU-0": {"gpu.nvidia.com", "n1", "gpu-0"}, "GPU-1": {"gpu.nvidia.com", "n1", "gpu-1"}}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("map = %v, want %v", m, want)
	}
	if fmt.Sprint(dups) != "[GPU-1]" {
		t.Errorf("dups = %v", dups)
	}
}

func claim(ns, name string, alloc *deviceRef, class string, count int64) *resourcev1.ResourceClaim {
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name)},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: class, Count: count,
				AllocationMode: resourcev1.DeviceAllocationModeExactCount}}}}}}
	if alloc != nil {
		c.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
			Request: "gpu", Driver: alloc.Driver, Pool: alloc.Pool, Device: alloc.Device}}}}
	}
	return c
}

func pod(ns, name, claimName, nodeName string, prio *int32, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: nodeName, Priority: prio,
			ResourceClaims: []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: str(claimName)}}},
		Status: corev1.PodStatus{Phase: phase}}
}

func TestPendingDemand(t *testing.T) {
	p := func(v int32) *int32 { return &v }
	dev := deviceRef{"gpu.nvidia.com", "n1", "gpu-0"}
	claims := []*resourcev1.ResourceClaim{
		claim("ai", "one", nil, "gpu.nvidia.com", 0),
		claim("ai", "two", nil, "gpu.nvidia.com", 2),
		claim("ai", "allocated", &dev, "gpu.nvidia.com", 1),
		claim("ai", "no-pod", nil, "gpu.nvidia.com", 1),
		claim("ai", "other-class", nil, "mig.nvidia.com", 1),
		claim("ai", "elsewhere", nil, "gpu.nvidia.com", 1),
		claim("ai", "low", nil, "gpu.nvidia.com", 1),
		claim("ai", "huge", nil, "gpu.nvidia.com", 1000),
		claim("batch", "outside", nil, "gpu.nvidia.com", 1),
	}
	pods := []*corev1.Pod{
		pod("ai", "one", "one", "", p(100), corev1.PodPending),
		pod("ai", "two", "two", "n1", p(100), corev1.PodPending),
		pod("ai", "allocated", "allocated", "n1", p(100), corev1.PodRunning),
		pod("ai", "other-class", "other-class", "", p(100), corev1.PodPending),
		pod("ai", "elsewhere", "elsewhere", "n2", p(100), corev1.PodPending),
		pod("ai", "low", "low", "", p(1), corev1.PodPending),
		pod("ai", "huge", "huge", "", p(100), corev1.PodPending),
		pod("batch", "outside", "outside", "", p(100), corev1.PodPending),
	}
	for _, tc := range []struct {
		name    string
		sel     Selector
		ignored map[types.UID]bool
		want    int
		names   string
	}{
		{"everything", Selector{}, nil, 1 + 2 + 1 + 1 + maxPendingPerClaim + 1, "[ai/huge ai/low ai/one ai/other-class ai/two batch/outside]"},
		{"namespace, class and priority", Selector{Namespaces: []string{"ai"}, DeviceClass: "gpu.nvidia.com", MinPriority: p(10)}, nil,
			1 + 2 + maxPendingPerClaim, "[ai/huge ai/one ai/two]"},
		{"ignored claims do not count", Selector{Namespaces: []string{"ai"}, DeviceClass: "gpu.nvidia.com", MinPriority: p(10)},
			map[types.UID]bool{"ai/huge": true}, 3, "[ai/one ai/two]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, names, _ := pendingDemand(claims, pods, tc.sel, "n1", tc.ignored)
			if n != tc.want || fmt.Sprint(names) != tc.names {
				t.Errorf("got %d %v, want %d %s", n, names, tc.want, tc.names)
			}
		})
	}
}

func TestComputeDemand(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	dwell := 10 * time.Minute
	devs := map[string]deviceRef{}
	for i := 0; i < 4; i++ {
		devs[fmt.Sprintf("GPU-%d", i)] = deviceRef{"d", "n1", fmt.Sprintf("gpu-%d", i)}
	}
	held := func(gpus ...int) map[deviceRef][]string {
		m := map[deviceRef][]string{}
		for _, g := range gpus {
			m[devs[fmt.Sprintf("GPU-%d", g)]] = []string{fmt.Sprintf("ai/c%d", g)}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		leases  map[string]*lease
		alloc   map[deviceRef][]string
		pending int
		maxLent int
		hardCap bool
		now     time.Time
		gpus    int
		pin     string
		expired string
	}{
		{"nothing wanted", nil, nil, 0, 0, false, t0, 0, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"two pending claims", nil, nil, 2, 0, false, t0, 2, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"a lent free GPU answers a pending claim", map[string]*lease{"GPU-0": {since: t0}}, nil, 1, 0, false, t0.Add(time.Minute), 1,
			"[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"held GPUs stay wanted past the dwell", map[string]*lease{"GPU-0": {since: t0}}, held(0), 0, 0, false, t0.Add(time.Hour), 1,
			"[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"dwell not over: still lent", map[string]*lease{"GPU-1": {since: t0, lastHeld: t0.Add(time.Minute)}}, nil, 0, 0, false,
			t0.Add(time.Minute + dwell - time.Nanosecond), 1, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"dwell over: unpinned, not wanted", map[string]*lease{"GPU-1": {since: t0, lastHeld: t0.Add(time.Minute)}}, nil, 0, 0, false,
			t0.Add(time.Minute + dwell), 0, "[GPU-0 GPU-2 GPU-3]", "[GPU-1]"},
		{"a claim on a mining GPU (tolerated taint) wants it", nil, held(3), 0, 0, false, t0, 1, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"max_lent caps pending", nil, nil, 4, 2, false, t0, 2, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"max_lent never below what claims hold", nil, held(0, 1, 2), 1, 2, false, t0, 3, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"evict_for_mining: max_lent is a hard cap", nil, held(0, 1, 2), 1, 2, true, t0, 2, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"evict_for_mining: held within the cap", nil, held(0), 0, 2, true, t0, 1, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
		{"more pending than GPUs", nil, nil, 64, 0, false, t0, 4, "[GPU-0 GPU-1 GPU-2 GPU-3]", "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leases := tc.leases
			if leases == nil {
				leases = map[string]*lease{}
			}
			d := computeDemand(devs, tc.alloc, leases, tc.pending, nil, dwell, tc.maxLent, tc.hardCap, tc.now)
			if d.GPUs != tc.gpus || fmt.Sprint(d.Pin) != tc.pin || fmt.Sprint(d.Expired) != fmt.Sprint(orEmpty(tc.expired)) {
				t.Errorf("got gpus %d pin %v expired %v, want %d %s %s", d.GPUs, d.Pin, d.Expired, tc.gpus, tc.pin, tc.expired)
			}
			if len(d.Pin) < d.GPUs {
				t.Errorf("pin %v shorter than gpus %d", d.Pin, d.GPUs)
			}
		})
	}
}

func orEmpty(s string) string { return s }

// A claim seen on a lent GPU restarts its dwell from that moment.
func TestDwellRestartsWhileHeld(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	dwell := 10 * time.Minute
	devs := map[string]deviceRef{"GPU-0": {"d", "n1", "gpu-0"}}
	leases := map[string]*lease{"GPU-0": {since: t0}}
	computeDemand(devs, map[deviceRef][]string{devs["GPU-0"]: {"ai/c"}}, leases, 0, nil, dwell, 0, false, t0.Add(30*time.Minute))
	if d := computeDemand(devs, nil, leases, 0, nil, dwell, 0, false, t0.Add(39*time.Minute)); d.GPUs != 1 || len(d.Expired) != 0 {
		t.Errorf("9 minutes after the claim ended: %+v, want still lent", d)
	}
	if d := computeDemand(devs, nil, leases, 0, nil, dwell, 0, false, t0.Add(40*time.Minute)); d.GPUs != 0 || fmt.Sprint(d.Expired) != "[GPU-0]" {
		t.Errorf("10 minutes after the claim ended: %+v, want expired", d)
	}
}

func TestValidRuleName(t *testing.T) {
	for in, want := range map[string]string{
		"proxyd-mining-node-1-gpu-0":   "proxyd-mining-node-1-gpu-0",
		"proxyd-mining-Node_A-gpu-0":   "proxyd-mining-node-a-gpu-0",
		"proxyd-mining-n.example-gpu-": "proxyd-mining-n-example-gpu",
		"proxyd-mining-ñode-gpu-0":     "proxyd-mining---ode-gpu-0",
	} {
		if got := validRuleName(in); got != want {
			t.Errorf("validRuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

// GPUs lent for another contract (an operator's contract naming the
// kubernetes workload) are neither the cluster's demand nor offered to it.
func TestClusterLeasesOnly(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := &Agent{o: Options{ClusterContract: "kubernetes"}, leases: map[string]*lease{
		"GPU-0": {contract: "kubernetes", since: t0},
		"GPU-1": {contract: "acme", since: t0},
	}}
	devs := map[string]deviceRef{"GPU-0": {"d", "n1", "gpu-0"}, "GPU-1": {"d", "n1", "gpu-1"}, "GPU-2": {"d", "n1", "gpu-2"}}
	leases := a.clusterLeasesLocked(devs)
	if len(leases) != 1 || leases["GPU-0"] == nil {
		t.Errorf("cluster leases %v", leases)
	}
	d := computeDemand(devs, nil, leases, 0, nil, time.Hour, 0, false, t0.Add(time.Minute))
	if d.GPUs != 1 || fmt.Sprint(d.Pin) != "[GPU-0 GPU-2]" {
		t.Errorf("demand %d pin %v, want 1 and [GPU-0 GPU-2]", d.GPUs, d.Pin)
	}
}

var ruleNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Whatever NODE_NAME and the driver's device names hold, the rule's name
// is one the API server accepts.
func FuzzValidRuleName(f *testing.F) {
	for _, s := range []string{"proxyd-mining-node-1-gpu-0", "proxyd-mining-Node_A.example.com-gpu-7", "", "-", "..", "ñ",
		"proxyd-mining-" + strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := validRuleName(s)
		if got != "" && (len(got) > 253 || !ruleNameRE.MatchString(got)) {
			t.Fatalf("validRuleName(%q) = %q: not a DNS-1123 subdomain", s, got)
		}
		if got == "" && ruleNameRE.MatchString(strings.ToLower(s)) {
			t.Fatalf("validRuleName(%q) is empty for a valid name", s)
		}
	})
}

// Only claims that were pending for the whole idle time of an expired GPU
// stop counting; a claim that came later still asks for a GPU.
func TestStaleClaims(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	old, fresh := claim("ai", "old", nil, "c", 1), claim("ai", "fresh", nil, "c", 1)
	old.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
	fresh.CreationTimestamp = metav1.NewTime(t0.Add(9 * time.Minute))
	leases := map[string]*lease{"GPU-0": {since: t0}, "GPU-1": {since: t0.Add(-time.Hour)}}
	since := expiredSince([]string{"GPU-0", "GPU-1"}, leases)
	if !since.Equal(t0) {
		t.Fatalf("expiredSince = %s, want %s", since, t0)
	}
	got := staleClaims([]*resourcev1.ResourceClaim{old, fresh}, []types.UID{old.UID, fresh.UID}, since)
	if len(got) != 1 || got[0].Name != "old" {
		t.Errorf("stale claims %v, want only ai/old", got)
	}
}

// A rule is up to date only when it taints the right device the right way
// and names the GPU now on that device: a swapped GPU (same device name,
// new UUID) gets its rule rewritten, not left with the old UUID's label.
func TestSameTaint(t *testing.T) {
	a := &Agent{o: Options{Node: "node-1"}}
	ref := deviceRef{Driver: "gpu.nvidia.com", Pool: "node-1", Device: "gpu-0"}
	want := a.rule("GPU-aaaa", ref)
	tests := []struct {
		name   string
		change func(r *resourcev1.DeviceTaintRule)
		same   bool
	}{
		{"as written", func(*resourcev1.DeviceTaintRule) {}, true},
		{"another owner's extra label", func(r *resourcev1.DeviceTaintRule) { r.Labels["team"] = "ops" }, true},
		{"the GPU was swapped", func(r *resourcev1.DeviceTaintRule) { r.Labels[LabelGPU] = "GPU-bbbb" }, false},
		{"no GPU label", func(r *resourcev1.DeviceTaintRule) { delete(r.Labels, LabelGPU) }, false},
		{"effect None (a dry run left over)", func(r *resourcev1.DeviceTaintRule) {
			r.Spec.Taint.Effect = resourcev1.DeviceTaintEffectNone
		}, false},
		{"another device", func(r *resourcev1.DeviceTaintRule) { d := "gpu-1"; r.Spec.DeviceSelector.Device = &d }, false},
		{"no selector", func(r *resourcev1.DeviceTaintRule) { r.Spec.DeviceSelector = nil }, false},
		{"another key", func(r *resourcev1.DeviceTaintRule) { r.Spec.Taint.Key = "example.com/other" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			have := a.rule("GPU-aaaa", ref)
			tc.change(have)
			if got := sameTaint(have, want); got != tc.same {
				t.Fatalf("sameTaint = %v, want %v", got, tc.same)
			}
		})
	}
}
