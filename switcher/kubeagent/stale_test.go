package kubeagent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ownedRule is a rule of proxyd's on node n1 for a device of pool n1.
func ownedRule(name, uuid, device string) *resourcev1.DeviceTaintRule {
	d, p, dev := "gpu.nvidia.com", "n1", device
	return &resourcev1.DeviceTaintRule{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelNode: "n1", LabelGPU: labelValue(validRuleName(uuid))}}, // as Agent.rule writes it,
		Spec: resourcev1.DeviceTaintRuleSpec{DeviceSelector: &resourcev1.DeviceTaintSelector{Driver: &d, Pool: &p, Device: &dev},
			Taint: resourcev1.DeviceTaint{Key: TaintKey, Value: TaintValue, Effect: resourcev1.DeviceTaintEffectNoSchedule}},
	}
}

// TestStaleRules walks the decision through looks at the caches on a fake
// clock: a rule goes only once it has stood for no published GPU that
// proxyd sees on every look for the whole grace.
func TestStaleRules(t *testing.T) {
	const grace = 30 * time.Second
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ref := func(dev string) deviceRef { return deviceRef{"gpu.nvidia.com", "n1", dev} }
	r0 := ownedRule("proxyd-mining-n1-gpu-0", "GPU-0", "gpu-0")
	r1 := ownedRule("proxyd-mining-n1-gpu-1", "GPU-1", "gpu-1")
	rGone := ownedRule("proxyd-mining-n1-gpu-gone", "GPU-9", "gpu-gone")
	rOdd := ownedRule("proxyd-mining-n1-old-name", "GPU-0", "gpu-0") // a second rule for gpu-0
	rNoSel := ownedRule("proxyd-mining-n1-nosel", "", "x")
	rNoSel.Spec.DeviceSelector = nil
	both := map[string]deviceRef{"GPU-0": ref("gpu-0"), "GPU-1": ref("gpu-1")}
	only0 := map[string]deviceRef{"GPU-0": ref("gpu-0")}
	rules := func(rs ...*resourcev1.DeviceTaintRule) map[string]*resourcev1.DeviceTaintRule {
		m := map[string]*resourcev1.DeviceTaintRule{}
		for _, r := range rs {
			m[r.Name] = r
		}
		return m
	}
	set := func(uuids ...string) map[string]bool {
		m := map[string]bool{}
		for _, u := range uuids {
			m[u] = true
		}
		return m
	}
	type look struct {
		at      time.Duration // after t0
		rules   map[string]*resourcev1.DeviceTaintRule
		devices map[string]deviceRef
		seen    map[string]bool // nil: NVML not known
		keep    map[string]bool
		noticed string // names, comma-separated
		due     string
		why     string // a substring of the first due rule's why
	}
	for _, tc := range []struct {
		name  string
		grace time.Duration
		looks []look
	}{
		{"every rule wanted", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: both, seen: set("GPU-0", "GPU-1")},
			{at: time.Hour, rules: rules(r0, r1), devices: both, seen: set("GPU-0", "GPU-1")},
		}},
		{"device no longer published: not before the grace, then deleted", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), noticed: r1.Name},
			{at: grace - time.Nanosecond, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1")},
			{at: grace, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), due: r1.Name,
				why: "device gpu.nvidia.com/n1/gpu-1 is not published (with a UUID) by driver gpu.nvidia.com for node n1"},
		}},
		{"device back within the grace: the clock starts over", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), noticed: r1.Name},
			{at: 20 * time.Second, rules: rules(r0, r1), devices: both, seen: set("GPU-0", "GPU-1")},
			{at: 40 * time.Second, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), noticed: r1.Name},
			{at: 40*time.Second + grace - time.Nanosecond, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1")},
			{at: 40*time.Second + grace, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), due: r1.Name},
		}},
		{"published, but a GPU proxyd's NVML does not see", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: both, seen: set("GPU-0"), noticed: r1.Name},
			{at: grace, rules: rules(r0, r1), devices: both, seen: set("GPU-0"), due: r1.Name,
				why: "device gpu.nvidia.com/n1/gpu-1 is GPU GPU-1, which proxyd's NVML does not see"},
		}},
		{"NVML not known: a published GPU keeps its rule", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: both, seen: nil},
			{at: time.Hour, rules: rules(r0, r1), devices: both, seen: nil},
		}},
		{"NVML not known: an unpublished device's rule still goes", grace, []look{
			{at: 0, rules: rules(r0, rGone), devices: only0, seen: nil, noticed: rGone.Name},
			{at: grace, rules: rules(r0, rGone), devices: only0, seen: nil, due: rGone.Name, why: "gpu-gone is not published"},
		}},
		{"a rule the eviction owns stays; the grace starts over after", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), noticed: r1.Name},
			{at: grace, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), keep: set(r1.Name)},
			{at: 2 * grace, rules: rules(r0, r1), devices: only0, seen: set("GPU-0", "GPU-1"), noticed: r1.Name},
		}},
		{"a rule deleted by someone else is forgotten", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: only0, seen: set("GPU-0"), noticed: r1.Name},
			{at: time.Second, rules: rules(r0), devices: only0, seen: set("GPU-0")},
			{at: 2 * time.Second, rules: rules(r0, r1), devices: only0, seen: set("GPU-0"), noticed: r1.Name},
		}},
		{"a second rule for a wanted device, and one that selects no device", grace, []look{
			{at: 0, rules: rules(r0, rOdd, rNoSel), devices: only0, seen: set("GPU-0"), noticed: rNoSel.Name + "," + rOdd.Name},
			{at: grace, rules: rules(r0, rOdd, rNoSel), devices: only0, seen: set("GPU-0"), due: rNoSel.Name + "," + rOdd.Name,
				why: "it selects no single device"},
		}},
		{"no devices at all: every rule goes after the grace", grace, []look{
			{at: 0, rules: rules(r0, r1), devices: map[string]deviceRef{}, seen: set("GPU-0", "GPU-1"), noticed: r0.Name + "," + r1.Name},
			{at: grace, rules: rules(r0, r1), devices: map[string]deviceRef{}, seen: set("GPU-0", "GPU-1"), due: r0.Name + "," + r1.Name},
		}},
		{"no grace: due on first look", 0, []look{
			{at: 0, rules: rules(r0, rGone), devices: only0, seen: set("GPU-0"), noticed: rGone.Name, due: rGone.Name},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newStaleTracker()
			for i, l := range tc.looks {
				noticed, due := staleRules(&tr, l.rules, l.devices, l.seen, l.keep, "n1", "gpu.nvidia.com", t0.Add(l.at), tc.grace)
				if got := staleNames(noticed); got != l.noticed {
					t.Errorf("look %d (+%s): noticed %q, want %q", i, l.at, got, l.noticed)
				}
				if got := staleNames(due); got != l.due {
					t.Errorf("look %d (+%s): due %q, want %q", i, l.at, got, l.due)
				}
				if l.why != "" && (len(due) == 0 || !strings.Contains(due[0].Why, l.why)) {
					t.Errorf("look %d: why %v, want it to say %q", i, due, l.why)
				}
			}
		})
	}
}

func staleNames(rs []staleRule) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return strings.Join(out, ",")
}

func TestStaleWhyNames(t *testing.T) {
	// The GPU label is carried into the decision (the log and the Event
	// name the GPU the rule was for).
	tr := newStaleTracker()
	_, due := staleRules(&tr, map[string]*resourcev1.DeviceTaintRule{"proxyd-mining-n1-gpu-3": ownedRule("proxyd-mining-n1-gpu-3", "gpu-3-uuid", "gpu-3")},
		nil, nil, nil, "n1", "gpu.nvidia.com", time.Unix(0, 0), 0)
	if len(due) != 1 || due[0].UUID != "gpu-3-uuid" {
		t.Fatalf("due %s", fmt.Sprint(due))
	}
}
