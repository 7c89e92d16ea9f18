package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// What the test's eviction controller does.
type evictMode int

const (
	// evictSilent: nothing (no kube-controller-manager runs).
	evictSilent evictMode = iota
	// evictDryRunOnly: reports None rules' dry runs, leaves NoExecute be.
	evictDryRunOnly
	// evictActive: dry runs, and NoExecute evicts.
	evictActive
)

// evictionController plays kube-controller-manager's device taint
// eviction controller for proxyd's rules: for effect None it writes the
// EvictionInProgress condition once per generation, saying how many pods
// NoExecute would evict; for NoExecute it deletes the pods of the claims
// allocated on the device, deallocates the claims (the resource claim
// controller's part) and writes the condition False. It polls (every
// 50 ms): what it acts on is state, not events.
type evictionController struct {
	admin *kubernetes.Clientset
	mu    sync.Mutex
	mode  evictMode
	// reported: rule name → generations whose None dry run it reported.
	reported map[string]map[int64]bool
	// writes: proxyd's writes to its rules, in order (from the front
	// proxy): method, rule, effect, the generation the body carries.
	writes     []ruleWrite
	violations []string
	stop       chan struct{}
	done       chan struct{}
}

type ruleWrite struct {
	Method, Rule string
	Effect       resourcev1.DeviceTaintEffect
	Generation   int64
}

func (w ruleWrite) String() string {
	return fmt.Sprintf("%s %s %s@%d", w.Method, w.Rule, w.Effect, w.Generation)
}

func startEvictionController(c *cluster) *evictionController {
	ec := &evictionController{admin: c.admin, reported: map[string]map[int64]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	// Every write proxyd makes to a rule goes through the front proxy.
	c.front.setOnRequest(func(r *http.Request, body []byte) bool {
		if !strings.Contains(r.URL.Path, "/devicetaintrules") || (r.Method != http.MethodPost && r.Method != http.MethodPut) {
			return true
		}
		var rule resourcev1.DeviceTaintRule
		if err := json.Unmarshal(body, &rule); err != nil {
			return true
		}
		ec.recordWrite(ruleWrite{Method: r.Method, Rule: rule.Name, Effect: rule.Spec.Taint.Effect, Generation: rule.Generation})
		return true
	})
	go func() {
		defer close(ec.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ec.stop:
				return
			case <-t.C:
				ec.pass()
			}
		}
	}()
	return ec
}

func (ec *evictionController) close() {
	close(ec.stop)
	<-ec.done
}

func (ec *evictionController) setMode(m evictMode) {
	ec.mu.Lock()
	ec.mode = m
	ec.mu.Unlock()
}

// recordWrite keeps proxyd's write and checks the order the issue asks
// for: NoExecute only on a rule whose previous write was None, at the
// generation whose dry run the controller reported.
func (ec *evictionController) recordWrite(w ruleWrite) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if w.Effect == resourcev1.DeviceTaintEffectNoExecute {
		var prev *ruleWrite
		for i := len(ec.writes) - 1; i >= 0; i-- {
			if ec.writes[i].Rule == w.Rule {
				prev = &ec.writes[i]
				break
			}
		}
		switch {
		case w.Method != http.MethodPut || prev == nil || prev.Effect != resourcev1.DeviceTaintEffectNone:
			ec.violations = append(ec.violations, fmt.Sprintf("%s not preceded by a None write (previous: %v)", w, prev))
		case !ec.reported[w.Rule][w.Generation]:
			ec.violations = append(ec.violations, fmt.Sprintf("%s before the dry run of generation %d was reported", w, w.Generation))
		}
	}
	ec.writes = append(ec.writes, w)
}

func (ec *evictionController) effects(rule string) []string {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	var out []string
	for _, w := range ec.writes {
		if w.Rule == rule {
			out = append(out, string(w.Effect))
		}
	}
	return out
}

func (ec *evictionController) problems() []string {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return append([]string(nil), ec.violations...)
}

func (ec *evictionController) pass() {
	ctx := context.Background()
	ec.mu.Lock()
	mode := ec.mode
	ec.mu.Unlock()
	if mode == evictSilent {
		return
	}
	rules, err := ec.admin.ResourceV1().DeviceTaintRules().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=proxyd"})
	if err != nil {
		return
	}
	for i := range rules.Items {
		r := &rules.Items[i]
		if r.Spec.DeviceSelector == nil || r.Spec.DeviceSelector.Device == nil || observed(r) {
			continue
		}
		device := *r.Spec.DeviceSelector.Device
		switch r.Spec.Taint.Effect {
		case resourcev1.DeviceTaintEffectNone:
			n, err := ec.podsOn(ctx, device, false)
			if err != nil {
				continue
			}
			if ec.writeCondition(ctx, r, fmt.Sprintf("%d pod(s) would be evicted", n)) {
				ec.mu.Lock()
				if ec.reported[r.Name] == nil {
					ec.reported[r.Name] = map[int64]bool{}
				}
				ec.reported[r.Name][r.Generation] = true
				ec.mu.Unlock()
			}
		case resourcev1.DeviceTaintEffectNoExecute:
			if mode != evictActive {
				continue
			}
			n, err := ec.podsOn(ctx, device, true)
			if err != nil {
				continue
			}
			ec.writeCondition(ctx, r, fmt.Sprintf("%d pod(s) evicted", n))
		}
	}
}

// observed: the rule's current generation has its condition already.
func observed(r *resourcev1.DeviceTaintRule) bool {
	for _, c := range r.Status.Conditions {
		if c.Type == resourcev1.DeviceTaintConditionEvictionInProgress && c.ObservedGeneration == r.Generation {
			return true
		}
	}
	return false
}

// podsOn counts the pods of the claims allocated on device; with evict
// it deletes them and deallocates the claims.
func (ec *evictionController) podsOn(ctx context.Context, device string, evict bool) (int, error) {
	claims, err := ec.admin.ResourceV1().ResourceClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	zero := int64(0)
	for i := range claims.Items {
		cl := &claims.Items[i]
		if cl.Status.Allocation == nil {
			continue
		}
		on := false
		for _, r := range cl.Status.Allocation.Devices.Results {
			on = on || (r.Pool == node && r.Device == device)
		}
		if !on {
			continue
		}
		for _, ref := range cl.Status.ReservedFor {
			if ref.Resource != "pods" {
				continue
			}
			n++
			if evict {
				err := ec.admin.CoreV1().Pods(cl.Namespace).Delete(ctx, ref.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
				if err != nil && !apierrors.IsNotFound(err) {
					return 0, err
				}
			}
		}
		if evict {
			cl.Status.Allocation, cl.Status.ReservedFor = nil, nil
			if _, err := ec.admin.ResourceV1().ResourceClaims(cl.Namespace).UpdateStatus(ctx, cl, metav1.UpdateOptions{}); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (ec *evictionController) writeCondition(ctx context.Context, r *resourcev1.DeviceTaintRule, msg string) bool {
	cond := metav1.Condition{Type: resourcev1.DeviceTaintConditionEvictionInProgress, Status: metav1.ConditionFalse,
		ObservedGeneration: r.Generation, LastTransitionTime: metav1.Now(), Reason: "Completed", Message: msg}
	if r.Spec.Taint.Effect == resourcev1.DeviceTaintEffectNone {
		cond.Reason = "NoEffect"
	}
	var conds []metav1.Condition
	for _, c := range r.Status.Conditions {
		if c.Type != cond.Type {
			conds = append(conds, c)
		}
	}
	r.Status.Conditions = append(conds, cond)
	_, err := ec.admin.ResourceV1().DeviceTaintRules().UpdateStatus(ctx, r, metav1.UpdateOptions{})
	return err == nil
}
