package kubeagent

import (
	"strings"
	"testing"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeClock is a Clock the test sets.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestJudgeEviction(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	timeout := 2 * time.Minute
	deadline := clock.Now().Add(timeout)
	rule := func(gen int64, conds ...metav1.Condition) *resourcev1.DeviceTaintRule {
		r := &resourcev1.DeviceTaintRule{ObjectMeta: metav1.ObjectMeta{Name: "proxyd-mining-n1-gpu-0", Generation: gen}}
		r.Status.Conditions = conds
		return r
	}
	cond := func(status metav1.ConditionStatus, observed int64, msg string) metav1.Condition {
		return metav1.Condition{Type: resourcev1.DeviceTaintConditionEvictionInProgress, Status: status, ObservedGeneration: observed,
			Reason: "Controller", Message: msg}
	}
	before, at := clock.Now().Add(time.Second), deadline
	for _, tc := range []struct {
		name    string
		phase   evictPhase
		rule    *resourcev1.DeviceTaintRule
		gen     int64
		held    []string
		now     time.Time
		want    evictVerdict
		mention string // the message names this
	}{
		{"dry run: no status yet", phaseDryRun, rule(1), 1, nil, before, evictWait, ""},
		{"dry run: a status of an older spec does not count", phaseDryRun,
			rule(3, cond(metav1.ConditionFalse, 2, "0 pods would be evicted")), 3, nil, before, evictWait, ""},
		{"dry run: reported", phaseDryRun, rule(3, cond(metav1.ConditionFalse, 3, "1 pod would be evicted")), 3, []string{"ai/c"}, before,
			evictDone, "1 pod would be evicted"},
		{"dry run: reported True counts too", phaseDryRun, rule(1, cond(metav1.ConditionTrue, 1, "1 pod needs eviction")), 1, nil, before,
			evictDone, "EvictionInProgress=True"},
		{"dry run: never reported", phaseDryRun, rule(1), 1, nil, at, evictFailed, "eviction controller running"},
		{"dry run: an older status at the deadline", phaseDryRun, rule(2, cond(metav1.ConditionFalse, 1, "x")), 2, nil, at, evictFailed,
			"no EvictionInProgress status within"},
		{"rule deleted by someone else", phaseDryRun, nil, 1, nil, before, evictFailed, "deleted by someone else"},
		{"rule changed by someone else", phaseEvict, rule(5, cond(metav1.ConditionFalse, 5, "")), 4, nil, before, evictFailed,
			"generation 5, proxyd wrote 4"},
		{"evict: in progress", phaseEvict, rule(2, cond(metav1.ConditionTrue, 2, "1 pod pending eviction")), 2, []string{"ai/c"}, before,
			evictWait, ""},
		{"evict: controller done but the claim still allocated", phaseEvict, rule(2, cond(metav1.ConditionFalse, 2, "1 pod evicted")), 2,
			[]string{"ai/c"}, before, evictWait, ""},
		{"evict: the dry run's status is not the eviction's", phaseEvict, rule(2, cond(metav1.ConditionFalse, 1, "1 pod would be evicted")), 2,
			nil, before, evictWait, ""},
		{"evict: done", phaseEvict, rule(2, cond(metav1.ConditionFalse, 2, "1 pod evicted")), 2, nil, before, evictDone, "1 pod evicted"},
		{"evict: timed out in progress", phaseEvict, rule(2, cond(metav1.ConditionTrue, 2, "1 pod pending eviction")), 2, []string{"ai/c"}, at,
			evictFailed, "1 pod pending eviction; claim(s) ai/c still hold"},
		{"evict: timed out without a status", phaseEvict, rule(2), 2, nil, at, evictFailed, "no EvictionInProgress status for generation 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.t = tc.now
			v, msg := judgeEviction(tc.phase, tc.rule, tc.gen, tc.held, clock.Now(), deadline, timeout)
			if v != tc.want {
				t.Fatalf("verdict %d (%q), want %d", v, msg, tc.want)
			}
			if !strings.Contains(msg, tc.mention) {
				t.Errorf("message %q does not mention %q", msg, tc.mention)
			}
			if v != evictWait && msg == "" {
				t.Error("a verdict without a message for the operator")
			}
		})
	}
}
