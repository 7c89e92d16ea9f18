package config

import (
	"strings"
	"testing"
	"time"
)

const kubeMining = `[switcher]
enabled = true
[switcher.mining]
runtime = "exec"
start_command = ["/bin/true"]
stop_command = ["/bin/true"]
status_command = ["/bin/true"]
`

func TestKubernetesDefaultsAndWorkload(t *testing.T) {
	c, err := Parse([]byte(kubeMining + "[switcher.kubernetes]\nenabled = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := c.Switcher.Kubernetes
	if k.Driver != "gpu.nvidia.com" || k.UUIDAttribute != "uuid" || k.IdleBeforeMining.D() != 10*time.Minute ||
		k.APITimeout.D() != 10*time.Second || k.MaxLent != 0 || k.MinPriority != nil ||
		k.EvictForMining || k.EvictionTimeout.D() != 2*time.Minute || k.StaleRuleGrace.D() != 30*time.Second {
		t.Errorf("defaults %+v", k)
	}
	w, ok := c.Switcher.Workloads()[KubernetesWorkload]
	if !ok || w.Runtime != RuntimeKubernetes || w.ProofOfStart != ProofNone {
		t.Errorf("lending workload %+v %v", w, ok)
	}
	// Off (the default): no lending workload.
	c, err = Parse([]byte(kubeMining))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Switcher.Workloads()[KubernetesWorkload]; ok || c.Switcher.Kubernetes != nil {
		t.Errorf("kubernetes off, yet %+v", c.Switcher.Kubernetes)
	}
}

func TestKubernetesValidation(t *testing.T) {
	for _, tc := range []struct {
		name, toml, key string
	}{
		{"node name", `node_name = "Node_1"`, "switcher.kubernetes.node_name"},
		{"relative kubeconfig", `kubeconfig = "kube/config"`, "switcher.kubernetes.kubeconfig"},
		{"driver", `driver = "not a driver"`, "switcher.kubernetes.driver"},
		{"uuid attribute", `uuid_attribute = "UUID!"`, "switcher.kubernetes.uuid_attribute"},
		{"namespace", `namespaces = ["AI"]`, "switcher.kubernetes.namespaces"},
		{"namespace twice", `namespaces = ["ai", "ai"]`, "switcher.kubernetes.namespaces"},
		{"device class", `device_class = "-x"`, "switcher.kubernetes.device_class"},
		{"dwell too short", `idle_before_mining = "10ms"`, "switcher.kubernetes.idle_before_mining"},
		{"max_lent negative", `max_lent = -1`, "switcher.kubernetes.max_lent"},
		{"api timeout", `api_timeout = "1h"`, "switcher.kubernetes.api_timeout"},
		{"unknown key", `evict = true`, "evict"},
		{"evict_for_mining not a bool", `evict_for_mining = "yes"`, "evict_for_mining"},
		{"eviction timeout too short", `eviction_timeout = "10ms"`, "switcher.kubernetes.eviction_timeout"},
		{"eviction timeout too long", `eviction_timeout = "2h"`, "switcher.kubernetes.eviction_timeout"},
		{"stale rule grace too short", `stale_rule_grace = "100ms"`, "switcher.kubernetes.stale_rule_grace"},
		{"stale rule grace too long", `stale_rule_grace = "2h"`, "switcher.kubernetes.stale_rule_grace"},
		{"eviction longer than drain_ai", "evict_for_mining = true\neviction_timeout = \"5m\"", "switcher.kubernetes.eviction_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(kubeMining + "[switcher.kubernetes]\nenabled = true\n" + tc.toml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %v, want one naming %s", err, tc.key)
			}
		})
	}
	// Eviction on with room in drain_ai (default 5m: 2m + 4 × 10s fits).
	if _, err := Parse([]byte(kubeMining + "[switcher.kubernetes]\nenabled = true\nevict_for_mining = true\n")); err != nil {
		t.Errorf("evict_for_mining with the defaults: %v", err)
	}
	// Enabled without a miner: nothing to lend GPUs from.
	if _, err := Parse([]byte("[switcher]\nenabled = true\n[switcher.kubernetes]\nenabled = true\n")); err == nil ||
		!strings.Contains(err.Error(), "switcher.kubernetes.enabled") {
		t.Errorf("no mining: %v", err)
	}
	// The lending workload's name is reserved.
	if _, err := Parse([]byte(kubeMining + "[switcher.kubernetes]\nenabled = true\n[switcher.workload.kubernetes]\nruntime = \"exec\"\n" +
		"start_command = [\"/bin/true\"]\nstop_command = [\"/bin/true\"]\nstatus_command = [\"/bin/true\"]\n")); err == nil ||
		!strings.Contains(err.Error(), "reserved") {
		t.Errorf("workload named kubernetes: %v", err)
	}
}
