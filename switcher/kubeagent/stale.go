package kubeagent

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
	resourcev1 "k8s.io/api/resource/v1"

	"github.com/hashgate/proxyd/internal/logkeep"
)

// DefaultStaleRuleGrace is how long one of proxyd's rules must have had no
// GPU to stand for before it is deleted: a driver that rewrites its
// ResourceSlice (delete and create, or a device moved between slices) or
// a watch that relists hides a device for a moment, not for this long.
const DefaultStaleRuleGrace = 30 * time.Second

// staleWarnEvery bounds how often a rule that cannot be deleted is logged
// again (the keeper retries it every pass).
const staleWarnEvery = time.Minute

// staleRule is one of proxyd's rules on this node that no GPU wants.
type staleRule struct {
	Name  string
	UUID  string // the GPU the rule was written for (its label), if any
	Why   string
	Since time.Time // first seen unwanted (this run of proxyd)
}

// staleTracker remembers since when each of proxyd's rules has had no GPU
// to stand for, and when a failed deletion was last logged. Owned by the
// rule keeper (keepRules, under Agent.writeMu).
type staleTracker struct {
	since  map[string]time.Time
	warned map[string]time.Time
}

func newStaleTracker() staleTracker {
	return staleTracker{since: map[string]time.Time{}, warned: map[string]time.Time{}}
}

// ruleNameFor is the name of proxyd's rule for a device on node.
func ruleNameFor(node string, ref deviceRef) string {
	return validRuleName(RuleNamePrefix + node + "-" + ref.Device)
}

// staleRules decides which of proxyd's rules on this node go. rules holds
// only proxyd's own rules on this node (label, node label and name prefix:
// the caller filters, nothing else is ever passed in); devices is this
// node's published GPUs from a synced cache; seen is the set of GPU UUIDs
// proxyd's NVML sees (nil: not known, every published GPU counts as seen);
// keep names rules that must stay whatever the devices say (an eviction
// owns them). A rule is unwanted when its name is not the one proxyd gives
// a published device whose GPU it sees; it is due once it has been
// unwanted on every look for grace. tr.since is updated: a rule wanted
// again, kept or gone starts over. noticed are the rules first seen
// unwanted on this look, due those to delete now; both sorted by name.
func staleRules(tr *staleTracker, rules map[string]*resourcev1.DeviceTaintRule, devices map[string]deviceRef, seen map[string]bool,
	keep map[string]bool, node, driver string, now time.Time, grace time.Duration) (noticed, due []staleRule) {
	wanted := map[string]bool{}
	byRef := map[deviceRef]string{}
	for uuid, ref := range devices {
		byRef[ref] = uuid
		if seen == nil || seen[uuid] {
			wanted[ruleNameFor(node, ref)] = true
		}
	}
	for name := range tr.since {
		if r := rules[name]; r == nil || wanted[name] || keep[name] {
			delete(tr.since, name)
			delete(tr.warned, name)
		}
	}
	names := make([]string, 0, len(rules))
	for name := range rules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if wanted[name] || keep[name] {
			continue
		}
		r := rules[name]
		s := staleRule{Name: name, UUID: r.Labels[LabelGPU], Why: staleWhy(r, byRef, seen, node, driver)}
		since, ok := tr.since[name]
		if !ok {
			since = now
			tr.since[name] = now
			noticed = append(noticed, staleRule{Name: s.Name, UUID: s.UUID, Why: s.Why, Since: now})
		}
		s.Since = since
		if now.Sub(since) >= grace {
			due = append(due, s)
		}
	}
	return noticed, due
}

// staleWhy says why no GPU wants a rule of proxyd's.
func staleWhy(r *resourcev1.DeviceTaintRule, byRef map[deviceRef]string, seen map[string]bool, node, driver string) string {
	sel := r.Spec.DeviceSelector
	if sel == nil || sel.Driver == nil || sel.Pool == nil || sel.Device == nil {
		return "it selects no single device"
	}
	ref := deviceRef{Driver: *sel.Driver, Pool: *sel.Pool, Device: *sel.Device}
	uuid, published := byRef[ref]
	switch {
	case !published:
		return fmt.Sprintf("device %s is not published (with a UUID) by driver %s for node %s", ref, driver, node)
	case seen != nil && !seen[uuid]:
		return fmt.Sprintf("device %s is GPU %s, which proxyd's NVML does not see on this node", ref, uuid)
	}
	return fmt.Sprintf("its name is not the one proxyd gives device %s (%s)", ref, ruleNameFor(node, ref))
}

// removeStale deletes proxyd's rules on this node that no GPU it sees and
// the driver publishes has wanted for StaleRuleGrace. The caller (the rule
// keeper) holds writeMu, runs only on synced caches and once the switcher
// said which GPUs are lent; rules is ownedRules().
func (a *Agent) removeStale(ctx context.Context, rules map[string]*resourcev1.DeviceTaintRule, devices map[string]deviceRef,
	seen map[string]bool, keep map[string]bool) {
	now := a.o.Clock.Now()
	noticed, due := staleRules(&a.stale, rules, devices, seen, keep, a.o.Node, a.o.Driver, now, a.o.StaleRuleGrace)
	for _, s := range noticed {
		if now.Sub(s.Since) < a.o.StaleRuleGrace {
			a.log.Info("one of proxyd's DeviceTaintRules stands for no GPU it mines: it is deleted unless the device comes back",
				zap.String("rule", s.Name), zap.String("gpu", s.UUID), zap.String("why", s.Why),
				zap.Duration("after", a.o.StaleRuleGrace))
		}
	}
	for _, s := range due {
		if err := a.deleteRule(ctx, s.Name); err != nil {
			if last, ok := a.stale.warned[s.Name]; !ok || now.Sub(last) >= staleWarnEvery {
				a.stale.warned[s.Name] = now
				a.log.Warn("cannot delete one of proxyd's stale DeviceTaintRules; retrying", zap.String("rule", s.Name),
					zap.String("why", s.Why), zap.Error(err))
			}
			continue
		}
		delete(a.stale.since, s.Name)
		delete(a.stale.warned, s.Name)
		a.metrics.staleDeleted.Inc()
		a.log.Info("deleted one of proxyd's DeviceTaintRules that stood for no GPU it mines", zap.String("rule", s.Name),
			zap.String("gpu", s.UUID), zap.String("why", s.Why), zap.Duration("unwanted_for", now.Sub(s.Since)), logkeep.Field())
		a.event(ctx, "StaleRuleDeleted", "Delete", fmt.Sprintf("proxyd deleted its DeviceTaintRule %s: %s", s.Name, s.Why))
	}
}
