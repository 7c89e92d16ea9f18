package kubeagent

import (
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
)

// deviceRef names one DRA device: what a DeviceTaintRule selects and what
// an allocation result names.
type deviceRef struct {
	Driver, Pool, Device string
}

func (d deviceRef) String() string { return d.Driver + "/" + d.Pool + "/" + d.Device }

// mapDevices maps GPU UUIDs to the devices the driver publishes for node.
// A UUID published twice keeps its first device in name order and is
// reported in dups (a driver bug the operator must see).
func mapDevices(slices []*resourcev1.ResourceSlice, driver, node, uuidAttr string) (byUUID map[string]deviceRef, dups []string) {
	sorted := append([]*resourcev1.ResourceSlice(nil), slices...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	byUUID = map[string]deviceRef{}
	for _, s := range sorted {
		if s.Spec.Driver != driver || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
			continue
		}
		for _, d := range s.Spec.Devices {
			a, ok := d.Attributes[resourcev1.QualifiedName(uuidAttr)]
			if !ok {
				a, ok = d.Attributes[resourcev1.QualifiedName(driver+"/"+uuidAttr)]
			}
			if !ok || a.StringValue == nil || *a.StringValue == "" {
				continue
			}
			uuid := *a.StringValue
			ref := deviceRef{Driver: driver, Pool: s.Spec.Pool.Name, Device: d.Name}
			if prev, dup := byUUID[uuid]; dup {
				if prev != ref {
					dups = append(dups, uuid)
				}
				continue
			}
			byUUID[uuid] = ref
		}
	}
	return byUUID, dups
}

// allocatedOn returns, for each device, the claims ("namespace/name")
// whose allocation names it.
func allocatedOn(claims []*resourcev1.ResourceClaim) map[deviceRef][]string {
	out := map[deviceRef][]string{}
	for _, c := range claims {
		if c.Status.Allocation == nil {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			ref := deviceRef{Driver: r.Driver, Pool: r.Pool, Device: r.Device}
			out[ref] = append(out[ref], c.Namespace+"/"+c.Name)
		}
	}
	return out
}

// Selector says which pending claims are demand for this node's GPUs.
type Selector struct {
	// Namespaces: only claims in these (empty: every namespace).
	Namespaces []string
	// DeviceClass: only requests for this DeviceClass (empty: any).
	DeviceClass string
	// MinPriority: only claims whose pending pod has at least this
	// priority (nil: any).
	MinPriority *int32
}

// maxPendingPerClaim bounds what one claim can ask for (a request with
// allocationMode All, or a huge count, asks for every GPU at most).
const maxPendingPerClaim = 64

// pendingDemand counts the devices that matching pending claims ask for:
// unallocated claims in a selected namespace, with a request for the
// selected device class, that a pending pod (not bound to another node)
// of high enough priority waits on. It also returns the matching claims'
// names, sorted, for the journal and the API, and their UIDs. Claims in
// ignored do not count.
func pendingDemand(claims []*resourcev1.ResourceClaim, pods []*corev1.Pod, sel Selector, node string,
	ignored map[types.UID]bool) (int, []string, []types.UID) {
	type key struct{ ns, name string }
	waiting := map[key]bool{} // claims a pending pod of ours waits on
	for _, p := range pods {
		if p.Status.Phase != corev1.PodPending || (p.Spec.NodeName != "" && p.Spec.NodeName != node) {
			continue
		}
		if h := p.Spec.NodeSelector[corev1.LabelHostname]; h != "" && h != node {
			continue
		}
		if sel.MinPriority != nil && (p.Spec.Priority == nil || *p.Spec.Priority < *sel.MinPriority) {
			continue
		}
		for _, rc := range p.Spec.ResourceClaims {
			if rc.ResourceClaimName != nil {
				waiting[key{p.Namespace, *rc.ResourceClaimName}] = true
			}
		}
		for _, st := range p.Status.ResourceClaimStatuses {
			if st.ResourceClaimName != nil {
				waiting[key{p.Namespace, *st.ResourceClaimName}] = true
			}
		}
	}
	total := 0
	var names []string
	var uids []types.UID
	for _, c := range claims {
		if c.Status.Allocation != nil || c.DeletionTimestamp != nil || !waiting[key{c.Namespace, c.Name}] || ignored[c.UID] {
			continue
		}
		if len(sel.Namespaces) > 0 && !contains(sel.Namespaces, c.Namespace) {
			continue
		}
		n := 0
		for _, r := range c.Spec.Devices.Requests {
			n += requestCount(r, sel.DeviceClass)
		}
		if n == 0 {
			continue
		}
		total += min(n, maxPendingPerClaim)
		names = append(names, c.Namespace+"/"+c.Name)
		uids = append(uids, c.UID)
	}
	sort.Strings(names)
	return total, names, uids
}

// expiredSince is the latest time one of the expired GPUs became idle.
func expiredSince(expired []string, leases map[string]*lease) time.Time {
	var t time.Time
	for _, u := range expired {
		if l := leases[u]; l != nil && l.idleSince().After(t) {
			t = l.idleSince()
		}
	}
	return t
}

// staleClaims are the pending claims (by uid) that already existed when
// an expired GPU became idle: they had it free for the whole dwell.
func staleClaims(claims []*resourcev1.ResourceClaim, pending []types.UID, idleSince time.Time) []*resourcev1.ResourceClaim {
	want := map[types.UID]bool{}
	for _, u := range pending {
		want[u] = true
	}
	var out []*resourcev1.ResourceClaim
	for _, c := range claims {
		if want[c.UID] && !c.CreationTimestamp.Time.After(idleSince) {
			out = append(out, c)
		}
	}
	return out
}

// requestCount is how many devices of the class one request asks for.
func requestCount(r resourcev1.DeviceRequest, class string) int {
	if e := r.Exactly; e != nil {
		if class != "" && e.DeviceClassName != class {
			return 0
		}
		if e.AllocationMode == resourcev1.DeviceAllocationModeAll {
			return maxPendingPerClaim
		}
		if e.Count > 0 {
			return int(min(e.Count, maxPendingPerClaim))
		}
		return 1
	}
	for _, sub := range r.FirstAvailable {
		if class == "" || sub.DeviceClassName == class {
			return 1
		}
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// lease is one lent GPU's dwell clock. Guarded by Agent.mu.
type lease struct {
	contract string    // the switcher's contract the GPU is lent for
	since    time.Time // lent (Start) or adopted after a restart
	lastHeld time.Time // last time a claim was seen allocated on it
	// evicting: Stop is evicting the claims on it and owns its rule.
	evicting bool
	// evictAgain: a failed eviction is not tried again before this.
	evictAgain time.Time
}

// idleSince is when the GPU last had a claim (or was lent).
func (l *lease) idleSince() time.Time {
	if l.lastHeld.After(l.since) {
		return l.lastHeld
	}
	return l.since
}

// demand is what the cluster wants of this node's GPUs at one moment.
type demand struct {
	// GPUs is how many GPUs should be lent; Pin the GPUs that may be
	// (every mapped GPU but those whose dwell ran out).
	GPUs int
	Pin  []string
	// Held: GPU UUID → claims allocated on its device.
	Held map[string][]string
	// Expired: lent GPUs whose dwell ran out without a claim.
	Expired []string
	// Pending: the matching pending claims and the devices they ask for.
	Pending      []string
	PendingCount int
}

// computeDemand derives the demand and refreshes the leases' lastHeld.
// A GPU a claim holds is wanted whether or not it is lent (a claim that
// tolerates proxyd's taint may land on a mining GPU: the miner then
// yields); a lent GPU without a claim is wanted until its dwell runs out;
// pending claims want as many more GPUs as the lent idle ones do not
// already offer. maxLent caps the total (0: every mapped GPU); a GPU a
// claim holds counts in spite of the cap unless hardCap (the operator
// lets proxyd evict for mining).
func computeDemand(devices map[string]deviceRef, alloc map[deviceRef][]string, leases map[string]*lease,
	pendingCount int, pending []string, dwell time.Duration, maxLent int, hardCap bool, now time.Time) demand {
	d := demand{Held: map[string][]string{}, Pending: pending, PendingCount: pendingCount}
	wanted := 0
	offered := 0 // lent, free and still dwelling: what a pending claim can take now
	uuids := make([]string, 0, len(devices))
	for u := range devices {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	for _, u := range uuids {
		held := alloc[devices[u]]
		l := leases[u]
		switch {
		case len(held) > 0:
			d.Held[u] = held
			if l != nil {
				l.lastHeld = now
			}
			wanted++
		case l != nil && now.Sub(l.idleSince()) >= dwell:
			d.Expired = append(d.Expired, u)
			continue
		case l != nil:
			wanted++
			offered++
		}
		d.Pin = append(d.Pin, u)
	}
	for _, u := range uuids {
		if len(d.Held[u]) == 0 && leases[u] == nil {
			d.Pin = append(d.Pin, u) // a mining GPU: may be lent
		}
	}
	dedupSorted(&d.Pin)
	d.GPUs = wanted + max(0, pendingCount-offered)
	if maxLent > 0 && d.GPUs > maxLent {
		d.GPUs = maxLent
		if !hardCap {
			d.GPUs = max(maxLent, len(d.Held)) // never fewer than what claims hold
		}
	}
	d.GPUs = min(d.GPUs, len(d.Pin))
	return d
}

func dedupSorted(s *[]string) {
	sort.Strings(*s)
	out := (*s)[:0]
	for i, v := range *s {
		if i == 0 || v != (*s)[i-1] {
			out = append(out, v)
		}
	}
	*s = out
}

// podReady reports whether the pod's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// claimPods returns the pods a claim is reserved for (status.reservedFor)
// by namespace/name.
func claimPods(c *resourcev1.ResourceClaim) []string {
	var out []string
	for _, r := range c.Status.ReservedFor {
		if r.Resource == "pods" && (r.APIGroup == "" || r.APIGroup == "core") {
			out = append(out, c.Namespace+"/"+r.Name)
		}
	}
	return out
}

// validRuleName makes a rule's name a valid object name (a DNS-1123
// subdomain) whatever the node and device names hold: lower case, every
// character but [a-z0-9-] replaced by '-', at most 253 characters, no
// leading or trailing '-'.
func validRuleName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 253 {
		b = b[:253]
	}
	return strings.Trim(string(b), "-")
}
