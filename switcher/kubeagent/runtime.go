package kubeagent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hashgate/proxyd/internal/logkeep"
	"github.com/hashgate/proxyd/switcher/workload"
)

// Runtime returns the lending "workload" runtime (kind Kind): Start lends
// a GPU to the cluster, Stop takes it back for mining.
func (a *Agent) Runtime() workload.Runtime { return lender{a} }

type lender struct{ a *Agent }

func (lender) Kind() string { return Kind }

func handleFor(in workload.Instance, now func() metav1.Time) workload.Handle {
	return workload.Handle{Runtime: Kind, ID: Kind + ":" + in.GPUUUID, Instance: in, StartedAt: now().Time}
}

// Start lends the GPU: it records the lease, then deletes proxyd's rule on
// its device. The switcher calls it only after the GPU was proven free.
func (l lender) Start(ctx context.Context, spec workload.Spec, in workload.Instance) (workload.Handle, error) {
	a := l.a
	if !a.cachesSynced() {
		return workload.Handle{}, errors.New("kubernetes: the cluster's objects are not listed yet (API server unreachable?)")
	}
	ref, ok := a.devices()[in.GPUUUID]
	if !ok {
		return workload.Handle{}, fmt.Errorf("kubernetes: GPU %s is not published by driver %s on node %s (no ResourceSlice device with %s=%s): "+
			"the cluster could not use it", in.GPUUUID, a.o.Driver, a.o.Node, a.o.UUIDAttribute, in.GPUUUID)
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	now := a.o.Clock.Now()
	a.mu.Lock()
	if a.leases[in.GPUUUID] == nil {
		a.leases[in.GPUUUID] = &lease{contract: in.Contract, since: now}
	}
	a.mu.Unlock()
	if err := a.deleteRule(ctx, a.ruleName(ref)); err != nil {
		// Not lent after all: the switcher has no handle to take it back
		// with, so the lease goes and the rule keeper keeps the taint.
		a.mu.Lock()
		delete(a.leases, in.GPUUUID)
		a.mu.Unlock()
		return workload.Handle{}, fmt.Errorf("kubernetes: lending GPU %s: %w", in.GPUUUID, err)
	}
	a.log.Info("lent a GPU to the cluster: proxyd's taint is removed, the scheduler may allocate it", zap.String("gpu", in.GPUUUID),
		zap.String("device", ref.String()), logkeep.Field())
	a.event(ctx, "GPULent", "Lend", fmt.Sprintf("proxyd stopped mining on GPU %s (device %s) and removed its taint: the scheduler may allocate it", in.GPUUUID, ref))
	a.notify()
	return handleFor(in, func() metav1.Time { return metav1.NewTime(now) }), nil
}

// Status: a lent GPU "runs"; it is ready once a claim on its device is
// allocated and one of the claim's pods is Ready.
func (l lender) Status(ctx context.Context, spec workload.Spec, h workload.Handle) (workload.Status, error) {
	a := l.a
	if !a.cachesSynced() {
		return workload.Status{}, errors.New("kubernetes: the cluster's objects are not listed yet")
	}
	ref, ok := a.devices()[h.GPUUUID]
	if !ok {
		return workload.Status{Running: true, Detail: "GPU " + h.GPUUUID + " is no longer published by " + a.o.Driver}, nil
	}
	claims, err := a.claims.List(labels.Everything())
	if err != nil {
		return workload.Status{}, err
	}
	ready, detail := a.podReadyFor(claims, ref)
	return workload.Status{Running: true, Ready: ready, Detail: detail}, nil
}

// Stop takes the GPU back for mining: taint it (NoSchedule), then re-read
// the claims from the API server. A claim allocated on the device
// meanwhile (the scheduler saw the device before the taint) wins: the
// rule is removed again and Stop fails with ErrClaimed. A GPU the cache
// shows claimed is evicted with EvictForMining (evict) and otherwise
// stays lent (ErrClaimed).
func (l lender) Stop(ctx context.Context, spec workload.Spec, h workload.Handle, force bool) error {
	a := l.a
	if !a.cachesSynced() {
		return errors.New("kubernetes: the cluster's objects are not listed yet; the GPU stays lent")
	}
	ref, ok := a.devices()[h.GPUUUID]
	if !ok {
		a.mu.Lock()
		delete(a.leases, h.GPUUUID)
		a.mu.Unlock()
		return nil // not published: the cluster cannot allocate it
	}
	// A claim the cache already shows on the device: without
	// evict_for_mining, no taint to write and take back (a force-cordoned
	// GPU under a claim would otherwise churn the API server every pass);
	// with it, the claims are evicted (dry run first).
	if claims, err := a.claims.List(labels.Everything()); err == nil {
		if held := allocatedOn(claims)[ref]; len(held) > 0 {
			if a.o.EvictForMining {
				return a.evict(ctx, h.GPUUUID, ref, held)
			}
			return fmt.Errorf("GPU %s: claim(s) %s hold it: %w", h.GPUUUID, strings.Join(held, ", "), ErrClaimed)
		}
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	if err := a.ensureRule(ctx, h.GPUUUID, ref); err != nil {
		return fmt.Errorf("kubernetes: tainting GPU %s for mining: %w", h.GPUUUID, err)
	}
	held, err := a.freshClaimsOn(ctx, ref)
	if err == nil && len(held) == 0 {
		a.mu.Lock()
		delete(a.leases, h.GPUUUID)
		a.mu.Unlock()
		a.log.Info("took a GPU back from the cluster: tainted NoSchedule, no claim holds it", zap.String("gpu", h.GPUUUID),
			zap.String("device", ref.String()), logkeep.Field())
		a.event(ctx, "GPUTakenBack", "Taint", fmt.Sprintf("no claim held GPU %s (device %s) for the dwell: tainted %s=%s:NoSchedule, mining resumes", h.GPUUUID, ref, TaintKey, TaintValue))
		a.notify()
		return nil
	}
	// Either a claim won the race or the claims cannot be read: undo the
	// taint so nothing the cluster runs is left on a tainted device.
	if derr := a.deleteRule(ctx, a.ruleName(ref)); derr != nil {
		a.log.Error("a claim holds a GPU proxyd just tainted and the taint cannot be removed; the rule keeper retries",
			zap.String("gpu", h.GPUUUID), zap.Error(derr), logkeep.Field())
	}
	a.mu.Lock()
	if le := a.leases[h.GPUUUID]; le != nil {
		le.lastHeld = a.o.Clock.Now()
	}
	a.mu.Unlock()
	a.notify()
	if err != nil {
		return fmt.Errorf("kubernetes: cannot re-check the claims on GPU %s after tainting it (the GPU stays lent): %w", h.GPUUUID, err)
	}
	a.log.Warn("a claim was allocated on a GPU while proxyd tainted it for mining: the claim wins, the GPU stays lent",
		zap.String("gpu", h.GPUUUID), zap.Strings("claims", held), logkeep.Field())
	a.event(ctx, "ClaimWonRace", "Untaint", fmt.Sprintf("claim(s) %s were allocated on GPU %s (device %s) while proxyd tainted it: the taint is removed again, no miner starts", strings.Join(held, ", "), h.GPUUUID, ref))
	return fmt.Errorf("GPU %s: claim(s) %s: %w", h.GPUUUID, strings.Join(held, ", "), ErrClaimed)
}

// freshClaimsOn lists the claims from the API server (not the cache: the
// point is to see what the scheduler did after the taint was written).
func (a *Agent) freshClaimsOn(ctx context.Context, ref deviceRef) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.o.APITimeout)
	defer cancel()
	list, err := a.o.Client.listClaims(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing ResourceClaims: %w", err)
	}
	var held []string
	for i := range list.Items {
		c := &list.Items[i]
		if c.Status.Allocation == nil {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			if (deviceRef{r.Driver, r.Pool, r.Device}) == ref {
				held = append(held, c.Namespace+"/"+c.Name)
			}
		}
	}
	return held, nil
}

// List adopts the lent GPUs the switcher knows of (its persisted handles
// of kind Kind): they count as lent from now, so their dwell starts over
// after a restart. Until List has run, the rule keeper does nothing.
func (l lender) List(ctx context.Context, q workload.ListQuery) ([]workload.Listed, error) {
	a := l.a
	if !a.cachesSynced() {
		return nil, errors.New("kubernetes: the cluster's objects are not listed yet (is the API server reachable?)")
	}
	now := a.o.Clock.Now()
	var out []workload.Listed
	a.mu.Lock()
	for _, h := range q.Known {
		if h.Runtime != Kind {
			continue
		}
		if a.leases[h.GPUUUID] == nil {
			a.leases[h.GPUUUID] = &lease{contract: h.Contract, since: now}
		}
		out = append(out, workload.Listed{Handle: h, Running: true})
	}
	a.restored = true
	a.mu.Unlock()
	a.notify()
	return out, nil
}

// GuardMining wraps the runtime that runs the miner: a miner starts only
// on a GPU whose rule is in place (a GPU the driver does not publish needs
// none: the cluster cannot allocate it).
func (a *Agent) GuardMining(rt workload.Runtime) workload.Runtime { return guard{Runtime: rt, a: a} }

type guard struct {
	workload.Runtime
	a *Agent
}

func (g guard) Start(ctx context.Context, spec workload.Spec, in workload.Instance) (workload.Handle, error) {
	if in.IsMining() {
		if err := g.a.taintForMining(ctx, in.GPUUUID); err != nil {
			return workload.Handle{}, err
		}
	}
	return g.Runtime.Start(ctx, spec, in)
}

func (a *Agent) taintForMining(ctx context.Context, uuid string) error {
	if !a.cachesSynced() {
		return fmt.Errorf("kubernetes: GPU %s: the cluster's objects are not listed yet, so proxyd cannot taint it; no miner starts untainted", uuid)
	}
	ref, ok := a.devices()[uuid]
	if !ok {
		return nil
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	a.mu.Lock()
	lent := a.leases[uuid] != nil
	a.mu.Unlock()
	if lent {
		return fmt.Errorf("kubernetes: GPU %s is lent to the cluster: no miner starts on it", uuid)
	}
	if r := a.ownedRules()[a.ruleName(ref)]; r != nil && sameTaint(r, a.rule(uuid, ref)) {
		return nil
	}
	if err := a.ensureRule(ctx, uuid, ref); err != nil {
		return fmt.Errorf("kubernetes: no miner starts on GPU %s before it is tainted: %w", uuid, err)
	}
	return nil
}
