package kubeagent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	corelisters "k8s.io/client-go/listers/core/v1"
	resourcelisters "k8s.io/client-go/listers/resource/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/hashgate/proxyd/internal/logkeep"
	"github.com/hashgate/proxyd/switcher/workload"
)

// What marks proxyd's rules. A rule is proxyd's only if it carries both
// labels (LabelNode naming this node) and its name starts with
// RuleNamePrefix: nothing else is ever changed or deleted.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "proxyd"
	LabelNode      = "mining.hashgate.io/node"
	LabelGPU       = "mining.hashgate.io/gpu"
	RuleNamePrefix = "proxyd-mining-"
	// TaintKey is the key of proxyd's taint, under proxyd's own domain
	// (never NVIDIA's gpu.nvidia.com).
	TaintKey   = "mining.hashgate.io/mining"
	TaintValue = "proxyd"
)

// Kind is the runtime kind of the lending workload.
const Kind = "kubernetes"

// Defaults.
const (
	DefaultDriver           = "gpu.nvidia.com"
	DefaultUUIDAttribute    = "uuid"
	DefaultIdleBeforeMining = 10 * time.Minute
	DefaultAPITimeout       = 10 * time.Second
	DefaultEvictionTimeout  = 2 * time.Minute
	probeInterval           = 5 * time.Second
)

// ErrClaimed: the scheduler allocated a claim on the GPU while proxyd
// tainted it for mining; the claim wins and the GPU stays lent.
var ErrClaimed = fmt.Errorf("a ResourceClaim was allocated on the GPU while proxyd tainted it for mining: "+
	"the claim wins, the GPU stays lent (%w)", workload.ErrInUse)

// Clock tells the time; tests pass a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// informer watches one kind of object with list and watch.
func informer(example kruntime.Object, list func(context.Context, metav1.ListOptions) (kruntime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.SharedIndexInformer {
	lw := &cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}
	return cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// Options build an Agent.
type Options struct {
	Client Client
	// Node is this node's name (spec.nodeName of its ResourceSlices).
	Node string
	// Driver publishes the GPUs (default gpu.nvidia.com); UUIDAttribute is
	// the device attribute holding the NVML UUID (default "uuid").
	Driver        string
	UUIDAttribute string
	Selector      Selector
	// IdleBeforeMining is the dwell: a lent GPU no claim held for this
	// long is tainted again and goes back to mining.
	IdleBeforeMining time.Duration
	// MaxLent caps the GPUs lent at once (0: no cap).
	MaxLent int
	// ClusterContract is the id of the switcher's contract that stands for
	// the cluster's demand: only GPUs lent for it dwell and count as the
	// cluster's (a contract of the operator's that lends GPUs to the
	// cluster keeps them for its own term).
	ClusterContract string
	// APITimeout bounds each write or fresh read.
	APITimeout time.Duration
	// EvictForMining lets Stop take back a GPU a claim holds: a None dry
	// run, then NoExecute, until the eviction controller reports it done
	// and no claim holds the device (see evict.go). Off, a claimed GPU
	// stays lent. It also makes MaxLent a hard cap.
	EvictForMining bool
	// EvictionTimeout bounds one eviction, dry run and NoExecute together
	// (default DefaultEvictionTimeout); a failed one is not tried again
	// for the GPU before as long again.
	EvictionTimeout time.Duration
	// Journal records a decision about a GPU in proxyd's journal (nil:
	// none); the eviction's dry run and outcome go there.
	Journal func(gpu, reason, message string)
	// GPUs returns the UUIDs of the GPUs proxyd's NVML sees; ok is false
	// while that is not known (NVML not open yet). Only those GPUs get a
	// rule, and a rule whose device is another GPU is deleted (after
	// StaleRuleGrace). nil, or not ok: every published GPU counts as
	// proxyd's.
	GPUs func() (uuids []string, ok bool)
	// StaleRuleGrace is how long one of proxyd's rules must stand for no
	// GPU (its device not published for this node, or not a GPU that
	// GPUs lists) before it is deleted (default DefaultStaleRuleGrace).
	StaleRuleGrace time.Duration
	// Metrics registers the agent's series (metrics.go); nil: none.
	Metrics prometheus.Registerer
	Clock   Clock
	Log     *zap.Logger
}

// Agent keeps proxyd's DeviceTaintRules on this node in step with what
// the switcher does. Its view of the cluster is the informers' caches;
// leases (which GPUs are lent and since when) are guarded by mu; every
// write to the API server is serialised by writeMu so that the rule
// keeper, Start and Stop never race one another on one rule.
type Agent struct {
	o   Options
	log *zap.Logger

	informers   []cache.SharedIndexInformer
	slices      resourcelisters.ResourceSliceLister
	rules       resourcelisters.DeviceTaintRuleLister
	claims      resourcelisters.ResourceClaimLister
	pods        corelisters.PodLister
	synced      []cache.InformerSynced
	rulesSynced cache.InformerSynced
	metrics     *metrics
	changed     chan struct{} // capacity 1: the caches changed
	writeMu     sync.Mutex
	stale       staleTracker // guarded by writeMu (the rule keeper's)
	mu          sync.Mutex
	leases      map[string]*lease  // GPU UUID → lease
	ignored     map[types.UID]bool // pending claims that let a lent GPU's dwell run out
	restored    bool               // the switcher told which GPUs are lent (List)
	apiErr      error              // last failed probe of the API server, nil when it answers
	apiErrSince time.Time
	apiAnswered bool // some probe has been answered
	onChange    func()
	lastDemand  string // for logging changes only
}

// New builds an agent; nothing talks to the API server before Run.
func New(o Options) (*Agent, error) {
	if !o.Client.ok() {
		return nil, errors.New("kubernetes: no API client")
	}
	if o.Node == "" {
		return nil, errors.New("kubernetes: the node name is empty (set [switcher.kubernetes] node_name, or NODE_NAME from the downward API)")
	}
	if o.Driver == "" {
		o.Driver = DefaultDriver
	}
	if o.UUIDAttribute == "" {
		o.UUIDAttribute = DefaultUUIDAttribute
	}
	if o.IdleBeforeMining <= 0 {
		o.IdleBeforeMining = DefaultIdleBeforeMining
	}
	if o.APITimeout <= 0 {
		o.APITimeout = DefaultAPITimeout
	}
	if o.EvictionTimeout <= 0 {
		o.EvictionTimeout = DefaultEvictionTimeout
	}
	if o.Journal == nil {
		o.Journal = func(string, string, string) {}
	}
	if o.StaleRuleGrace <= 0 {
		o.StaleRuleGrace = DefaultStaleRuleGrace
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	a := &Agent{o: o, log: o.Log, changed: make(chan struct{}, 1), leases: map[string]*lease{}, ignored: map[types.UID]bool{},
		onChange: func() {}, metrics: newMetrics(), stale: newStaleTracker()}
	c := o.Client
	ruleSel := labels.Set{LabelManagedBy: ManagedByValue, LabelNode: labelValue(o.Node)}.String()
	sliceSel := "spec.nodeName=" + o.Node + ",spec.driver=" + o.Driver
	si := informer(&resourcev1.ResourceSlice{}, func(ctx context.Context, lo metav1.ListOptions) (kruntime.Object, error) {
		lo.FieldSelector = sliceSel
		l := &resourcev1.ResourceSliceList{}
		return l, c.list(ctx, c.resource, "resourceslices", lo, l)
	}, func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
		lo.FieldSelector = sliceSel
		return c.watchAll(ctx, c.resource, "resourceslices", lo)
	})
	ri := informer(&resourcev1.DeviceTaintRule{}, func(ctx context.Context, lo metav1.ListOptions) (kruntime.Object, error) {
		lo.LabelSelector = ruleSel
		l := &resourcev1.DeviceTaintRuleList{}
		return l, c.list(ctx, c.resource, "devicetaintrules", lo, l)
	}, func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
		lo.LabelSelector = ruleSel
		return c.watchAll(ctx, c.resource, "devicetaintrules", lo)
	})
	ci := informer(&resourcev1.ResourceClaim{}, func(ctx context.Context, lo metav1.ListOptions) (kruntime.Object, error) {
		l := &resourcev1.ResourceClaimList{}
		return l, c.list(ctx, c.resource, "resourceclaims", lo, l)
	}, func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
		return c.watchAll(ctx, c.resource, "resourceclaims", lo)
	})
	pi := informer(&corev1.Pod{}, func(ctx context.Context, lo metav1.ListOptions) (kruntime.Object, error) {
		l := &corev1.PodList{}
		return l, c.list(ctx, c.core, "pods", lo, l)
	}, func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
		return c.watchAll(ctx, c.core, "pods", lo)
	})
	a.informers = []cache.SharedIndexInformer{si, ri, ci, pi}
	a.slices = resourcelisters.NewResourceSliceLister(si.GetIndexer())
	a.rules = resourcelisters.NewDeviceTaintRuleLister(ri.GetIndexer())
	a.claims = resourcelisters.NewResourceClaimLister(ci.GetIndexer())
	a.pods = corelisters.NewPodLister(pi.GetIndexer())
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.notify() },
		UpdateFunc: func(any, any) { a.notify() },
		DeleteFunc: func(any) { a.notify() },
	}
	for _, inf := range a.informers {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("kubernetes: watching: %w", err)
		}
		a.synced = append(a.synced, inf.HasSynced)
	}
	a.rulesSynced = ri.HasSynced
	if o.Metrics != nil {
		if err := a.registerMetrics(o.Metrics); err != nil {
			return nil, fmt.Errorf("kubernetes: registering metrics: %w", err)
		}
	}
	return a, nil
}

// labelValue fits a node name into a label value (63 characters).
func labelValue(s string) string {
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "-_.")
}

// OnChange sets what is called when the demand may have changed (the
// switcher's Wake). Call it before Run.
func (a *Agent) OnChange(f func()) {
	a.mu.Lock()
	a.onChange = f
	a.mu.Unlock()
}

func (a *Agent) notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Run watches the cluster and keeps the rules until ctx ends; it returns
// once its informers and loops have stopped.
func (a *Agent) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, inf := range a.informers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inf.RunWithContext(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.probe(ctx)
	}()
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		if a.cachesSynced() {
			a.keepRules(ctx)
			a.mu.Lock()
			wake := a.onChange
			a.mu.Unlock()
			wake()
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-a.changed:
		case <-tick.C:
		}
	}
}

func (a *Agent) cachesSynced() bool {
	for _, s := range a.synced {
		if !s() {
			return false
		}
	}
	return true
}

// probe asks the API server for its version every probeInterval: Ready
// reports an API server that does not answer.
func (a *Agent) probe(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, a.o.APITimeout)
		err := a.o.Client.version(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		if err == nil {
			a.apiAnswered = true
		}
		switch {
		case err != nil && a.apiErr == nil:
			a.apiErr, a.apiErrSince = err, a.o.Clock.Now()
			a.log.Warn("the Kubernetes API server does not answer: miners keep running, no GPU is lent or taken back until it does",
				zap.Error(err), logkeep.Field())
		case err != nil:
			a.apiErr = err
		case a.apiErr != nil:
			a.log.Info("the Kubernetes API server answers again", zap.Duration("after", a.o.Clock.Now().Sub(a.apiErrSince)), logkeep.Field())
			a.apiErr = nil
		}
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Ready says why the agent cannot do its job (nil when it can).
func (a *Agent) Ready() error {
	a.mu.Lock()
	err, since := a.apiErr, a.apiErrSince
	a.mu.Unlock()
	if err != nil {
		return fmt.Errorf("kubernetes: the API server has not answered since %s (miners keep running; no GPU is lent or taken back): %w",
			since.UTC().Format(time.RFC3339), err)
	}
	if !a.cachesSynced() {
		return errors.New("kubernetes: the ResourceSlices, DeviceTaintRules, ResourceClaims and pods are not listed yet")
	}
	return nil
}

// ruleName is the name of proxyd's rule for a device on this node.
func (a *Agent) ruleName(ref deviceRef) string { return ruleNameFor(a.o.Node, ref) }

func (a *Agent) rule(uuid string, ref deviceRef) *resourcev1.DeviceTaintRule {
	driver, pool, device := ref.Driver, ref.Pool, ref.Device
	return &resourcev1.DeviceTaintRule{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.ruleName(ref),
			Labels: map[string]string{
				LabelManagedBy: ManagedByValue,
				LabelNode:      labelValue(a.o.Node),
				LabelGPU:       labelValue(validRuleName(uuid)),
			},
		},
		Spec: resourcev1.DeviceTaintRuleSpec{
			DeviceSelector: &resourcev1.DeviceTaintSelector{Driver: &driver, Pool: &pool, Device: &device},
			Taint:          resourcev1.DeviceTaint{Key: TaintKey, Value: TaintValue, Effect: resourcev1.DeviceTaintEffectNoSchedule},
		},
	}
}

// owned reports whether a rule is proxyd's for this node.
func (a *Agent) owned(r *resourcev1.DeviceTaintRule) bool {
	return r.Labels[LabelManagedBy] == ManagedByValue && r.Labels[LabelNode] == labelValue(a.o.Node) &&
		strings.HasPrefix(r.Name, RuleNamePrefix)
}

// devices maps this node's GPUs to their devices (from the cache).
func (a *Agent) devices() map[string]deviceRef {
	sl, err := a.slices.List(labels.Everything())
	if err != nil {
		return nil
	}
	m, dups := mapDevices(sl, a.o.Driver, a.o.Node, a.o.UUIDAttribute)
	if len(dups) > 0 {
		a.log.Warn("the DRA driver publishes one GPU UUID as several devices; proxyd uses the first", zap.Strings("uuids", dups))
	}
	return m
}

// ownedRules returns proxyd's rules on this node by name (from the cache).
func (a *Agent) ownedRules() map[string]*resourcev1.DeviceTaintRule {
	rs, err := a.rules.List(labels.Everything())
	out := map[string]*resourcev1.DeviceTaintRule{}
	if err != nil {
		return out
	}
	for _, r := range rs {
		if a.owned(r) {
			out[r.Name] = r
		}
	}
	return out
}

// seenGPUs is the set of GPUs proxyd's NVML sees (nil: not known).
func (a *Agent) seenGPUs() map[string]bool {
	if a.o.GPUs == nil {
		return nil
	}
	uuids, ok := a.o.GPUs()
	if !ok {
		return nil
	}
	seen := make(map[string]bool, len(uuids))
	for _, u := range uuids {
		seen[u] = true
	}
	return seen
}

// keepRules gives every mapped GPU proxyd sees that is not lent its rule,
// removes the rule of every lent one, and deletes proxyd's rules that
// stand for no such GPU (stale.go), once the switcher said which are lent.
// Run calls it only on synced caches.
func (a *Agent) keepRules(ctx context.Context) {
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	a.mu.Lock()
	restored, apiDown := a.restored, a.apiErr != nil
	lent := map[string]bool{}
	evicting := map[string]bool{}
	for u, l := range a.leases {
		lent[u] = true
		evicting[u] = l.evicting
	}
	a.mu.Unlock()
	if !restored {
		return
	}
	rules := a.ownedRules()
	devs := a.devices()
	seen := a.seenGPUs()
	keep := map[string]bool{}
	for uuid, ref := range devs {
		r := rules[a.ruleName(ref)]
		if evicting[uuid] {
			keep[a.ruleName(ref)] = true
		}
		switch {
		case seen != nil && !seen[uuid]:
			// Not a GPU proxyd sees: it neither mines nor lends it, so
			// it taints it not (a rule it had goes below).
		case evicting[uuid]:
			// Its rule is the eviction's (None, then NoExecute): Stop
			// owns it until the eviction ends one way or the other.
		case lent[uuid] && r != nil:
			if err := a.deleteRule(ctx, r.Name); err != nil {
				a.log.Warn("cannot remove proxyd's taint from a lent GPU; retrying", zap.String("gpu", uuid), zap.Error(err))
			}
		case !lent[uuid] && (r == nil || !sameTaint(r, a.rule(uuid, ref))):
			if err := a.ensureRule(ctx, uuid, ref); err != nil {
				a.log.Warn("cannot taint a mining GPU; retrying", zap.String("gpu", uuid), zap.Error(err))
			}
		}
	}
	if !apiDown {
		// The cache may be stale while the API server does not answer:
		// no rule is judged by it.
		a.removeStale(ctx, rules, devs, seen, keep)
	}
}

// sameTaint reports whether have taints what want taints, the way want
// does, and names the same GPU (LabelGPU: a device whose GPU was swapped
// keeps its rule's name but gets the new UUID's label).
func sameTaint(have, want *resourcev1.DeviceTaintRule) bool {
	h, w := have.Spec, want.Spec
	return have.Labels[LabelGPU] == want.Labels[LabelGPU] && h.Taint.Key == w.Taint.Key && h.Taint.Value == w.Taint.Value && h.Taint.Effect == w.Taint.Effect &&
		h.DeviceSelector != nil && ptrEq(h.DeviceSelector.Driver, w.DeviceSelector.Driver) &&
		ptrEq(h.DeviceSelector.Pool, w.DeviceSelector.Pool) && ptrEq(h.DeviceSelector.Device, w.DeviceSelector.Device)
}

func ptrEq(a, b *string) bool { return a != nil && b != nil && *a == *b }

// ensureRule creates the GPU's mining rule (NoSchedule) or puts its spec
// back. Callers hold writeMu.
func (a *Agent) ensureRule(ctx context.Context, uuid string, ref deviceRef) error {
	_, err := a.ensureRuleEffect(ctx, uuid, ref, resourcev1.DeviceTaintEffectNoSchedule, 0)
	return err
}

// ensureRuleEffect creates the GPU's rule with the effect or puts its
// spec back, and returns the rule as stored. NoExecute is never created,
// only set on the rule whose dry run (None) was read back: a rule that
// vanished meanwhile is an error, not an eviction without a dry run. A
// non-zero from is the generation the rule must still have (the one whose
// dry run was read back). Callers hold writeMu.
func (a *Agent) ensureRuleEffect(ctx context.Context, uuid string, ref deviceRef, effect resourcev1.DeviceTaintEffect,
	from int64) (*resourcev1.DeviceTaintRule, error) {
	want := a.rule(uuid, ref)
	want.Spec.Taint.Effect = effect
	ctx, cancel := context.WithTimeout(ctx, a.o.APITimeout)
	defer cancel()
	var got *resourcev1.DeviceTaintRule
	var err error = apierrors.NewAlreadyExists(resourcev1.Resource("devicetaintrules"), want.Name)
	if effect != resourcev1.DeviceTaintEffectNoExecute {
		got, err = a.o.Client.createRule(ctx, want)
		if !apierrors.IsAlreadyExists(err) {
			a.metrics.write(opCreate, err) // there already: read and updated below
		}
	}
	if err == nil {
		if effect == resourcev1.DeviceTaintEffectNoSchedule {
			a.log.Info("tainted a mining GPU so the scheduler allocates no claim to it", zap.String("gpu", uuid),
				zap.String("device", ref.String()), zap.String("rule", want.Name), logkeep.Field())
		}
		return got, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating DeviceTaintRule %s (effect %s) for GPU %s (%s): %w", want.Name, effect, uuid, ref, err)
	}
	have, err := a.o.Client.getRule(ctx, want.Name)
	if err != nil {
		return nil, fmt.Errorf("reading DeviceTaintRule %s: %w", want.Name, err)
	}
	if !a.owned(have) {
		return nil, fmt.Errorf("DeviceTaintRule %s exists but is not proxyd's (labels %v): left alone, this GPU cannot be tainted for mining",
			want.Name, have.Labels)
	}
	if from != 0 && have.Generation != from {
		return nil, fmt.Errorf("DeviceTaintRule %s is at generation %d, not %d whose dry run was read back: someone else changed it",
			want.Name, have.Generation, from)
	}
	if sameTaint(have, want) {
		return have, nil
	}
	have.Spec = want.Spec
	if have.Labels == nil {
		have.Labels = map[string]string{}
	}
	have.Labels[LabelGPU] = want.Labels[LabelGPU]
	got, err = a.o.Client.updateRule(ctx, have)
	a.metrics.write(opUpdate, err)
	if err != nil {
		return nil, fmt.Errorf("updating DeviceTaintRule %s to effect %s: %w", want.Name, effect, err)
	}
	return got, nil
}

// deleteRule deletes one of proxyd's rules (gone already is fine).
// Callers hold writeMu.
func (a *Agent) deleteRule(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.APITimeout)
	defer cancel()
	err := a.o.Client.deleteRule(ctx, name)
	if err != nil && !apierrors.IsNotFound(err) {
		a.metrics.write(opDelete, err)
		return fmt.Errorf("deleting DeviceTaintRule %s: %w", name, err)
	}
	a.metrics.write(opDelete, nil)
	return nil
}

// ClusterDemand implements the switcher's cluster demand: how many of this
// node's GPUs the cluster wants lent now, and which may be. ok is false
// while the caches are not synced (the switcher then keeps what it has).
func (a *Agent) ClusterDemand() (gpus int, pin []string, ok bool) {
	d, ok := a.demand()
	return d.GPUs, d.Pin, ok
}

func (a *Agent) demand() (demand, bool) {
	if !a.cachesSynced() {
		return demand{}, false
	}
	devs := a.devices()
	claims, _ := a.claims.List(labels.Everything())
	pods, _ := a.pods.List(labels.Everything())
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.restored || a.apiErr != nil {
		// Not restored yet, or the API server does not answer: the cache
		// may be stale and no rule could be written anyway, so the
		// switcher keeps what it has (nothing is lent or taken back).
		return demand{}, false
	}
	now := a.o.Clock.Now()
	alloc := allocatedOn(claims)
	n, names, uids := pendingDemand(claims, pods, a.o.Selector, a.o.Node, a.ignored)
	leases := a.clusterLeasesLocked(devs)
	d := computeDemand(devs, alloc, leases, n, names, a.o.IdleBeforeMining, a.o.MaxLent, a.o.EvictForMining, now)
	if len(d.Expired) > 0 && n > 0 {
		// A lent GPU sat free for a whole dwell and the claims that were
		// pending all that time did not take it: they wait for something
		// else (another node, a selector), so they are demand no more, or
		// every dwell would lend the next GPU to them. A claim newer than
		// the GPU's idle time still counts.
		if stale := staleClaims(claims, uids, expiredSince(d.Expired, leases)); len(stale) > 0 {
			var staleNames []string
			for _, c := range stale {
				a.ignored[c.UID] = true
				staleNames = append(staleNames, c.Namespace+"/"+c.Name)
			}
			a.log.Info("pending claims left a lent GPU free for the whole dwell: they no longer count as demand for this node",
				zap.Strings("claims", staleNames), zap.Duration("idle_before_mining", a.o.IdleBeforeMining), logkeep.Field())
			n, names, _ = pendingDemand(claims, pods, a.o.Selector, a.o.Node, a.ignored)
			d = computeDemand(devs, alloc, leases, n, names, a.o.IdleBeforeMining, a.o.MaxLent, a.o.EvictForMining, now)
		}
	}
	a.pruneIgnoredLocked(claims)
	if s := fmt.Sprintf("%d %v %v %v", d.GPUs, d.Pending, d.Expired, heldKeys(d.Held)); s != a.lastDemand {
		a.lastDemand = s
		a.log.Info("the cluster's demand for this node's GPUs changed", zap.Int("gpus", d.GPUs), zap.Strings("pending_claims", d.Pending),
			zap.Strings("dwell_over", d.Expired), zap.Strings("held", heldKeys(d.Held)), logkeep.Field())
	}
	return d, true
}

// clusterLeasesLocked returns the leases of the cluster's contract and
// removes the GPUs lent for other contracts from devs: those are neither
// the cluster's demand nor GPUs it may be given. Callers hold mu.
func (a *Agent) clusterLeasesLocked(devs map[string]deviceRef) map[string]*lease {
	out := map[string]*lease{}
	for u, l := range a.leases {
		if l.contract == a.o.ClusterContract {
			out[u] = l
		} else {
			delete(devs, u)
		}
	}
	return out
}

// pruneIgnoredLocked forgets ignored claims that were deleted or
// allocated. Callers hold mu.
func (a *Agent) pruneIgnoredLocked(claims []*resourcev1.ResourceClaim) {
	if len(a.ignored) == 0 {
		return
	}
	pending := map[types.UID]bool{}
	for _, c := range claims {
		if c.Status.Allocation == nil {
			pending[c.UID] = true
		}
	}
	for u := range a.ignored {
		if !pending[u] {
			delete(a.ignored, u)
		}
	}
}

func heldKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+strings.Join(v, ","))
	}
	sort.Strings(out)
	return out
}

// GPUInfo is what the agent knows of one GPU, for the API.
type GPUInfo struct {
	Device string   `json:"device,omitempty"`
	Rule   string   `json:"rule,omitempty"`
	Claims []string `json:"claims,omitempty"`
	Lent   bool     `json:"lent"`
}

// GPU returns what the agent knows of one GPU.
func (a *Agent) GPU(uuid string) GPUInfo {
	var gi GPUInfo
	if !a.cachesSynced() {
		return gi
	}
	ref, ok := a.devices()[uuid]
	if !ok {
		return gi
	}
	gi.Device = ref.String()
	if r := a.ownedRules()[a.ruleName(ref)]; r != nil {
		gi.Rule = r.Name
	}
	claims, _ := a.claims.List(labels.Everything())
	gi.Claims = allocatedOn(claims)[ref]
	a.mu.Lock()
	gi.Lent = a.leases[uuid] != nil
	a.mu.Unlock()
	return gi
}

// podReadyFor reports whether some pod a claim is reserved for is Ready.
func (a *Agent) podReadyFor(claims []*resourcev1.ResourceClaim, ref deviceRef) (bool, string) {
	var held []string
	for _, c := range claims {
		if c.Status.Allocation == nil {
			continue
		}
		on := false
		for _, r := range c.Status.Allocation.Devices.Results {
			if (deviceRef{r.Driver, r.Pool, r.Device}) == ref {
				on = true
			}
		}
		if !on {
			continue
		}
		held = append(held, c.Namespace+"/"+c.Name)
		for _, p := range claimPods(c) {
			ns, name, _ := strings.Cut(p, "/")
			pod, err := a.pods.Pods(ns).Get(name)
			if err == nil && podReady(pod) {
				return true, fmt.Sprintf("claim %s/%s is allocated on %s and pod %s is Ready", c.Namespace, c.Name, ref, p)
			}
		}
	}
	if len(held) == 0 {
		return false, "lent to the cluster (no proxyd taint on " + ref.String() + "); no claim is allocated on it yet"
	}
	return false, "claim(s) " + strings.Join(held, ", ") + " allocated on " + ref.String() + "; no pod of theirs is Ready yet"
}

// event records what the agent did to a GPU as an Event on its Node (in
// namespace default, where cluster-scoped objects' events go). It is best
// effort: a failure is logged, never retried.
func (a *Agent) event(ctx context.Context, reason, action, note string) {
	ctx, cancel := context.WithTimeout(ctx, a.o.APITimeout)
	defer cancel()
	now := a.o.Clock.Now()
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{GenerateName: "proxyd-" + labelValue(a.o.Node) + "-", Namespace: metav1.NamespaceDefault},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: "hashgate.io/proxyd",
		ReportingInstance:   labelValue("proxyd-" + a.o.Node),
		Action:              action,
		Reason:              reason,
		Type:                corev1.EventTypeNormal,
		Regarding:           corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: a.o.Node},
		Note:                truncate(note, 1024),
	}
	if err := a.o.Client.createEvent(ctx, ev); err != nil {
		a.log.Debug("cannot record a Kubernetes Event", zap.String("reason", reason), zap.Error(err))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
