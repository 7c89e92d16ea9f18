package config

import (
	"path/filepath"
	"regexp"
	"time"
)

// Kubernetes is [switcher.kubernetes]: proxyd as a node agent that lends
// this node's idle GPUs to mining through DRA DeviceTaintRules and gives
// them back to the cluster's pending claims.
type Kubernetes struct {
	Enabled bool `toml:"enabled"`
	// NodeName is this node's name; "" reads $NODE_NAME (the DaemonSet sets
	// it from the downward API).
	NodeName string `toml:"node_name"`
	// Kubeconfig is a kubeconfig file; "" uses the in-cluster service
	// account.
	Kubeconfig string `toml:"kubeconfig"`
	// Driver is the DRA driver whose ResourceSlices publish the GPUs, and
	// UUIDAttribute the device attribute that holds the NVML UUID.
	Driver        string `toml:"driver"`
	UUIDAttribute string `toml:"uuid_attribute"`
	// Namespaces, DeviceClass and MinPriority select the pending claims
	// that count as demand (empty / unset: any).
	Namespaces  []string `toml:"namespaces"`
	DeviceClass string   `toml:"device_class"`
	MinPriority *int32   `toml:"min_priority"`
	// IdleBeforeMining is the dwell: a lent GPU no claim held for this
	// long is tainted again and goes back to mining.
	IdleBeforeMining Duration `toml:"idle_before_mining"`
	// MaxLent caps the GPUs lent at once (0: no cap).
	MaxLent int `toml:"max_lent"`
	// APITimeout bounds each call to the API server.
	APITimeout Duration `toml:"api_timeout"`
	// EvictForMining lets proxyd take a GPU a claim holds back for mining
	// (an operator's lending contract ended, max_lent is a hard cap): a
	// None dry run, then NoExecute, the eviction read back from the
	// rule's status. Off: AI work is never evicted.
	EvictForMining bool `toml:"evict_for_mining"`
	// EvictionTimeout bounds one eviction, dry run and NoExecute together.
	EvictionTimeout Duration `toml:"eviction_timeout"`
	// StaleRuleGrace is how long one of proxyd's rules must stand for no
	// GPU (its device no longer published for this node, or no GPU that
	// NVML sees) before proxyd deletes it.
	StaleRuleGrace Duration `toml:"stale_rule_grace"`
}

// KubernetesWorkload is the name of the lending workload the switcher
// runs on a GPU it lends to the cluster.
const KubernetesWorkload = "kubernetes"

// Bounds of [switcher.kubernetes].
const (
	maxKubeNamespaces = 256
	maxKubeName       = 253
)

var (
	kubeDNSSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	kubeDNSLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

func (k *Kubernetes) applyDefaults() {
	setIf(&k.Driver, "gpu.nvidia.com")
	setIf(&k.UUIDAttribute, "uuid")
	setIf(&k.IdleBeforeMining, Duration(10*time.Minute))
	setIf(&k.APITimeout, Duration(10*time.Second))
	setIf(&k.EvictionTimeout, Duration(2*time.Minute))
	setIf(&k.StaleRuleGrace, Duration(30*time.Second))
}

// EvictionAPICalls is how many API calls an eviction makes besides its
// waits (write None, write NoExecute, write NoSchedule or delete, re-read
// the claims): the switcher's drain_ai must cover them and the waits.
const EvictionAPICalls = 4

// StopBound is how long taking a lent GPU back may take: three API calls
// (taint, re-read the claims, untaint when a claim won), or with
// evict_for_mining the eviction.
func (k *Kubernetes) StopBound() time.Duration {
	if k.EvictForMining {
		return k.EvictionTimeout.D() + EvictionAPICalls*k.APITimeout.D()
	}
	return 3 * k.APITimeout.D()
}

func (k *Kubernetes) validate(v *validator, s *Switcher) {
	const p = "switcher.kubernetes."
	if k.NodeName != "" && (len(k.NodeName) > maxKubeName || !kubeDNSSubdomain.MatchString(k.NodeName)) {
		v.addf(p+"node_name", "%q is not a Kubernetes node name (a DNS subdomain, at most 253 characters)", k.NodeName)
	}
	if k.Kubeconfig != "" && !filepath.IsAbs(k.Kubeconfig) {
		v.addf(p+"kubeconfig", "%q must be an absolute path (empty: the in-cluster service account)", k.Kubeconfig)
	}
	if len(k.Driver) > maxKubeName || !kubeDNSSubdomain.MatchString(k.Driver) {
		v.addf(p+"driver", "%q is not a DRA driver name (a DNS subdomain such as gpu.nvidia.com)", k.Driver)
	}
	if len(k.UUIDAttribute) > 63 || !kubeDNSLabel.MatchString(k.UUIDAttribute) {
		v.addf(p+"uuid_attribute", "%q is not a device attribute name (a C identifier-like DNS label such as uuid)", k.UUIDAttribute)
	}
	if len(k.Namespaces) > maxKubeNamespaces {
		v.addf(p+"namespaces", "lists %d namespaces (at most %d)", len(k.Namespaces), maxKubeNamespaces)
	}
	seen := map[string]bool{}
	for _, ns := range k.Namespaces {
		switch {
		case len(ns) > 63 || !kubeDNSLabel.MatchString(ns):
			v.addf(p+"namespaces", "%q is not a namespace name (a DNS label)", ns)
		case seen[ns]:
			v.addf(p+"namespaces", "lists %q twice", ns)
		}
		seen[ns] = true
	}
	if k.DeviceClass != "" && (len(k.DeviceClass) > maxKubeName || !kubeDNSSubdomain.MatchString(k.DeviceClass)) {
		v.addf(p+"device_class", "%q is not a DeviceClass name (a DNS subdomain)", k.DeviceClass)
	}
	durationRange(v, p+"idle_before_mining", k.IdleBeforeMining, time.Second, 7*24*time.Hour)
	v.intRange(p+"max_lent", int64(k.MaxLent), 0, 4096)
	durationRange(v, p+"api_timeout", k.APITimeout, 100*time.Millisecond, 5*time.Minute)
	durationRange(v, p+"eviction_timeout", k.EvictionTimeout, time.Second, time.Hour)
	durationRange(v, p+"stale_rule_grace", k.StaleRuleGrace, time.Second, time.Hour)
	if k.EvictForMining {
		// The eviction runs inside the switcher's stop of the lending
		// workload, which drain_ai bounds.
		if need := k.StopBound(); s.Timeouts.DrainAI.D() > 0 && need > s.Timeouts.DrainAI.D() {
			v.addf(p+"eviction_timeout", "%s plus %d api_timeouts (%s) is %s, longer than switcher.timeouts.drain_ai (%s), which bounds the eviction: "+
				"lower it or raise drain_ai", k.EvictionTimeout.D(), EvictionAPICalls, k.APITimeout.D(), need, s.Timeouts.DrainAI.D())
		}
	}
	if !k.Enabled {
		return
	}
	if s.Mining == nil {
		v.addf(p+"enabled", "lending GPUs to mining needs [switcher.mining]")
	}
	if s.Workload != nil {
		if _, dup := (*s.Workload)[KubernetesWorkload]; dup {
			v.addf("switcher.workload."+KubernetesWorkload, "the name %q is reserved for [switcher.kubernetes]'s lending", KubernetesWorkload)
		}
	}
}
