package kubernetes

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// staleGrace is the stale_rule_grace of this file's proxyd: long enough to
// see a rule outlive a device's short absence, short enough for CI.
const staleGrace = 5 * time.Second

// taintRule is a DeviceTaintRule for a device of a node's pool.
func taintRule(name string, labels map[string]string, pool, device, key string) *resourcev1.DeviceTaintRule {
	return &resourcev1.DeviceTaintRule{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: resourcev1.DeviceTaintRuleSpec{DeviceSelector: &resourcev1.DeviceTaintSelector{Driver: ptr(driver), Pool: ptr(pool), Device: ptr(device)},
			Taint: resourcev1.DeviceTaint{Key: key, Value: "proxyd", Effect: resourcev1.DeviceTaintEffectNoSchedule}}}
}

// proxydLabels are the labels of proxyd's rules for a node.
func proxydLabels(nodeName string) map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "proxyd", "mining.hashgate.io/node": nodeName}
}

// allRules lists every DeviceTaintRule by name with its resourceVersion.
func (c *cluster) allRules() map[string]string {
	c.t.Helper()
	l, err := c.admin.ResourceV1().DeviceTaintRules().List(c.ctx(), metav1.ListOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range l.Items {
		out[r.Name] = r.ResourceVersion
	}
	return out
}

// setSliceDevices plays the DRA driver rewriting node's ResourceSlice with
// the devices named (each keeps its UUID; extra maps new names to UUIDs).
func (c *cluster) setSliceDevices(names []string, extra map[string]string) {
	c.t.Helper()
	s, err := c.admin.ResourceV1().ResourceSlices().Get(c.ctx(), node+"-gpu.nvidia.com", metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	s.Spec.Devices = nil
	add := func(name, uuid string) {
		s.Spec.Devices = append(s.Spec.Devices, resourcev1.Device{Name: name,
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{"uuid": {StringValue: ptr(uuid)}}})
	}
	for _, n := range names {
		add(n, c.uuids[n])
	}
	for n, u := range extra {
		add(n, u)
	}
	if _, err := c.admin.ResourceV1().ResourceSlices().Update(c.ctx(), s, metav1.UpdateOptions{}); err != nil {
		c.t.Fatalf("updating ResourceSlice %s: %v", s.Name, err)
	}
}

// metricValue reads one sample from proxyd's /metrics (the whole series
// as written, labels included, e.g. `x_total{op="delete",result="ok"}`).
func (c *cluster) metricValue(series string) (float64, bool) {
	c.t.Helper()
	code, body := c.p.get("/metrics")
	if code != 200 {
		c.t.Fatalf("GET /metrics: %d %s", code, tail(body, 500))
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return f, err == nil
		}
	}
	return 0, false
}

// staleEvents are the StaleRuleDeleted Events on the node, by rule named.
func (c *cluster) staleEvents() map[string]bool {
	c.t.Helper()
	evs, err := c.admin.EventsV1().Events("default").List(c.ctx(), metav1.ListOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range evs.Items {
		if e.Reason != "StaleRuleDeleted" || e.Regarding.Kind != "Node" || e.Regarding.Name != node {
			continue
		}
		for _, f := range strings.Fields(e.Note) {
			if strings.HasPrefix(f, "proxyd-mining-") {
				out[strings.TrimSuffix(f, ":")] = true
			}
		}
	}
	return out
}

// TestStaleRules: proxyd deletes its own rules on its node whose device is
// no longer published, or is no GPU it sees, once they have stood for no
// GPU for stale_rule_grace; it deletes nothing of another node's agent or
// of other owners, keeps rules whose device was gone for a moment only,
// and says so (log, Event, metrics).
func TestStaleRules(t *testing.T) {
	c := setupCluster(t)
	all := make([]string, 0, len(c.uuids))
	for d := range c.uuids {
		all = append(all, d)
	}
	sort.Strings(all)
	c.p.waitFor("every GPU mining with proxyd's rule", 60*time.Second, func() bool {
		return fmt.Sprint(c.mining()) == fmt.Sprint(all) && fmt.Sprint(c.ruleDevices()) == fmt.Sprint(all)
	})

	// proxyd down: what it finds when it comes back. Its own rule for a
	// device no slice publishes, and for a published device whose UUID is
	// no GPU of this node's NVML; another node's proxyd rule; NVIDIA's rule
	// and an operator's on the unpublished device (one with proxyd's name
	// prefix, one with proxyd's labels but not its name).
	c.p.kill()
	cfg, err := os.ReadFile(c.p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// [switcher.kubernetes] is the config's last table.
	writeFile(t, c.p.cfgPath, append(cfg, fmt.Sprintf("stale_rule_grace = %q\n", staleGrace.String())...))
	mine := "mining.hashgate.io/mining"
	gone := "proxyd-mining-" + node + "-gpu-gone"
	extra := "proxyd-mining-" + node + "-gpu-extra"
	c.setSliceDevices(all, map[string]string{"gpu-extra": "GPU-not-on-this-node"})
	keepers := []*resourcev1.DeviceTaintRule{
		taintRule("proxyd-mining-node-2-gpu-gone", proxydLabels("node-2"), "node-2", "gpu-gone", mine),
		taintRule("gpu-nvidia-com-unhealthy-"+node+"-gpu-gone", map[string]string{"app.kubernetes.io/managed-by": "nvidia-dra-driver"},
			node, "gpu-gone", "gpu.nvidia.com/xid"),
		taintRule("proxyd-mining-"+node+"-gpu-gone-hold", nil, node, "gpu-gone", "example.com/hold"),
		taintRule("hold-"+node+"-gpu-gone", proxydLabels(node), node, "gpu-gone", "example.com/hold"),
	}
	stale := []*resourcev1.DeviceTaintRule{
		taintRule(gone, proxydLabels(node), node, "gpu-gone", mine),
		taintRule(extra, proxydLabels(node), node, "gpu-extra", mine),
	}
	for _, r := range append(keepers, stale...) {
		if _, err := c.admin.ResourceV1().DeviceTaintRules().Create(c.ctx(), r, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", r.Name, err)
		}
	}
	before := c.allRules()
	c.p.start()

	t.Run("stale rules found at start go, nothing else", func(t *testing.T) {
		c.use(t)
		c.p.waitFor("proxyd's two stale rules deleted", 30*time.Second, func() bool {
			r := c.allRules()
			_, g := r[gone]
			_, e := r[extra]
			return !g && !e
		})
		now := c.allRules()
		for name, rv := range before {
			if name == gone || name == extra {
				continue
			}
			if now[name] != rv {
				t.Errorf("rule %s changed or went (resourceVersion %s, was %s)", name, now[name], rv)
			}
		}
		for name := range now {
			if _, ok := before[name]; !ok {
				t.Errorf("rule %s appeared (no rule for a device that is no GPU proxyd sees)", name)
			}
		}
		c.p.waitFor("StaleRuleDeleted Events for both", 10*time.Second, func() bool {
			ev := c.staleEvents()
			return ev[gone] && ev[extra]
		})
		// The restarted proxyd mines on every GPU, each under its rule.
		c.p.waitFor("every GPU mining again", 60*time.Second, func() bool { return fmt.Sprint(c.mining()) == fmt.Sprint(all) })
		// (c.consistent() lists rules by proxyd's labels, which the
		// look-alike rule here carries too: check by name.)
		rules := c.allRules()
		for _, d := range c.mining() {
			if _, ok := rules["proxyd-mining-"+node+"-"+d]; !ok {
				t.Errorf("GPU %s mines without its rule", d)
			}
		}
	})

	t.Run("a device removed from the slice loses its rule after the grace; one gone for a moment keeps it", func(t *testing.T) {
		c.use(t)
		removed, blinked := all[len(all)-1], all[len(all)-2]
		removedRule, blinkedRule := "proxyd-mining-"+node+"-"+removed, "proxyd-mining-"+node+"-"+blinked
		rv := c.allRules()
		c.setSliceDevices(all[:len(all)-2], nil)
		gapStart := time.Now()
		time.Sleep(time.Second)
		c.setSliceDevices(all[:len(all)-1], nil) // blinked is back
		// Not before the grace: a watch event without the device is no
		// reason to untaint it.
		for time.Since(gapStart) < staleGrace-time.Second {
			r := c.allRules()
			if _, ok := r[removedRule]; !ok {
				t.Fatalf("rule %s deleted %s after its device left the slice, before stale_rule_grace (%s)", removedRule, time.Since(gapStart), staleGrace)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.p.waitFor("the removed device's rule deleted", 30*time.Second, func() bool {
			_, ok := c.allRules()[removedRule]
			return !ok
		})
		// One more pass at least (the keeper runs every 5 s): the blinked
		// device's rule stays, untouched.
		time.Sleep(6 * time.Second)
		now := c.allRules()
		for name, v := range rv {
			if name != removedRule && now[name] != v {
				t.Errorf("rule %s changed or went (resourceVersion %s, was %s)", name, now[name], v)
			}
		}
		if _, ok := now[blinkedRule]; !ok {
			t.Fatalf("rule %s of a device gone for one second was deleted", blinkedRule)
		}
		c.p.waitFor("a StaleRuleDeleted Event for it", 10*time.Second, func() bool { return c.staleEvents()[removedRule] })
		// The GPU itself keeps mining: the cluster cannot allocate a
		// device it is not offered.
		if st := c.stateOf(removed); st != "MINING" {
			t.Errorf("GPU %s is %s, want MINING", removed, st)
		}
		for _, d := range c.mining() {
			if _, ok := now["proxyd-mining-"+node+"-"+d]; !ok && d != removed {
				t.Errorf("GPU %s mines without its rule", d)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		c.use(t)
		for series, want := range map[string]float64{
			"proxyd_kubernetes_api_up":                                        1,
			"proxyd_kubernetes_rules":                                         float64(len(all) - 1),
			"proxyd_kubernetes_gpus_lent":                                     0,
			"proxyd_kubernetes_stale_rules_deleted_total":                     3,
			`proxyd_kubernetes_rule_writes_total{op="delete",result="ok"}`:    3,
			`proxyd_kubernetes_rule_writes_total{op="delete",result="error"}`: 0,
			`proxyd_kubernetes_rule_writes_total{op="create",result="ok"}`:    0,
			`proxyd_kubernetes_evictions_total{result="evicted"}`:             0,
		} {
			if v, ok := c.metricValue(series); !ok || v != want {
				t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
			}
		}
	})
}
