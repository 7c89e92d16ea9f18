package switcher

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashgate/proxyd/nvml"
)

// sourced is a contract with where it came from and, if refused, why.
type sourced struct {
	Contract
	source  string
	refused string
}

// contractsLocked returns every known contract by id, config first, then
// API, then feed (a later source cannot reuse an earlier one's id), each
// checked against the price floor, the workloads and this node's GPUs.
// Callers hold mu.
func (s *Switcher) contractsLocked() []sourced {
	var out []sourced
	seen := map[string]string{}
	add := func(c Contract, source string) {
		sc := sourced{Contract: c, source: source}
		if prev, dup := seen[c.ID]; dup {
			if source == SourceFeed {
				sc.refused = fmt.Sprintf("the demand feed repeats id %q, already declared by the %s; the feed's entry is ignored", c.ID, prev)
				sc.ID = c.ID + "@feed"
				out = append(out, sc)
			}
			return
		}
		seen[c.ID] = source
		sc.refused = s.refusalLocked(c, source)
		out = append(out, sc)
	}
	for _, c := range s.cfgContracts {
		add(c, SourceConfig)
	}
	ids := make([]string, 0, len(s.apiContracts))
	for id := range s.apiContracts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		add(s.apiContracts[id], SourceAPI)
	}
	if s.feed != nil {
		for _, c := range s.feed.Contracts {
			if why := s.feed.Invalid[c.ID]; why != "" {
				out = append(out, sourced{Contract: c, source: SourceFeed, refused: "invalid in the demand feed: " + why})
				continue
			}
			if err := validateContract(c); err != nil {
				out = append(out, sourced{Contract: c, source: SourceFeed, refused: "invalid in the demand feed: " + err.Error()})
				continue
			}
			add(c, SourceFeed)
		}
	}
	if c, ok := s.clusterContractLocked(); ok {
		add(c, SourceCluster)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// clusterContractLocked is the contract that stands for the cluster's
// demand, if it wants any GPU. A cluster that cannot be read keeps its
// last answer. Callers hold mu.
func (s *Switcher) clusterContractLocked() (Contract, bool) {
	if s.cluster == nil {
		return Contract{}, false
	}
	now := s.clock.Now()
	if gpus, pin, ok := s.cluster.ClusterDemand(); ok {
		if s.clusterGPUs == 0 && gpus > 0 {
			s.clusterSince = now
		}
		s.clusterGPUs, s.clusterPin = gpus, pin
	}
	if s.clusterGPUs <= 0 {
		return Contract{}, false
	}
	// It has no end of its own: it ends when the cluster wants no GPU. It
	// starts a minute early: a pass compares it with the time the pass
	// began, which may be before this call (a restart adopting a lent GPU
	// must not see the contract "not active yet" and drain it).
	return Contract{ID: ClusterContractID, GPUs: s.clusterGPUs, Start: s.clusterSince.Add(-time.Minute), End: now.Add(24 * time.Hour),
		Workload: ClusterWorkload, Pin: slices.Clone(s.clusterPin)}, true
}

// refusalLocked says why a well-formed contract cannot be served here, or
// "". Callers hold mu.
func (s *Switcher) refusalLocked(c Contract, source string) string {
	// The cluster's work is the site's own: the price floor is for sales.
	if c.PriceUSDPerGPUHour < s.cfg.MinPriceUSDPerGPUHour && source != SourceCluster {
		return fmt.Sprintf("price $%.4g per GPU-hour is below the site's floor of $%.4g ([switcher] min_price_usd_per_gpu_hour, "+
			"the value of mining a GPU)", c.PriceUSDPerGPUHour, s.cfg.MinPriceUSDPerGPUHour)
	}
	if _, ok := s.specs[c.Workload]; !ok {
		names := make([]string, 0, len(s.specs))
		for n := range s.specs {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Sprintf("workload %q is not defined on this node (defined: %s); add [switcher.workload.%s]",
			c.Workload, strings.Join(names, ", "), c.Workload)
	}
	for _, p := range c.Pin {
		if _, ok := s.recs[p]; !ok {
			return fmt.Sprintf("pinned GPU %s is not on this node (GET /api/v1/gpus lists them)", p)
		}
	}
	return ""
}

// heading returns the contract g serves or is switching to ("" if none).
func heading(g *gpuRec) string {
	switch g.State {
	case StateStoppingMiner, StateVerifyingFree, StateStartingAI, StateServingAI:
		return g.Contract
	}
	return ""
}

// placement is what the active contracts want of each GPU.
type placement struct {
	want    map[string]string // GPU → contract
	desired map[string]int    // contract → GPUs wanted now
}

// placeLocked derives the owner every GPU should have from the active
// contracts: contracts by priority, then price, then start, then id; each
// keeps the GPUs already heading to it, then takes healthy idle GPUs, then
// mining ones (never another contract's: no preemption), honouring pins
// and cordons. It also records each contract's shortfall. Callers hold mu.
func (s *Switcher) placeLocked(now time.Time) placement {
	pl := placement{want: map[string]string{}, desired: map[string]int{}}
	var active []sourced
	for _, c := range s.contractsLocked() {
		if c.refused == "" && c.ActiveAt(now) {
			active = append(active, c)
		}
		if c.refused != "" && s.refusals[c.ID] != c.refused {
			s.refusals[c.ID] = c.refused
			s.event(Event{Reason: "contract_refused", Contract: c.ID, Message: c.refused})
		}
	}
	sort.SliceStable(active, func(i, j int) bool {
		a, b := active[i], active[j]
		switch {
		case a.Priority != b.Priority:
			return a.Priority > b.Priority
		case a.PriceUSDPerGPUHour != b.PriceUSDPerGPUHour:
			return a.PriceUSDPerGPUHour > b.PriceUSDPerGPUHour
		case !a.Start.Equal(b.Start):
			return a.Start.Before(b.Start)
		}
		return a.ID < b.ID
	})
	clear(s.shortfall)
	for _, c := range active {
		pl.desired[c.ID] = c.GPUs
		pinned := func(g *gpuRec) bool { return len(c.Pin) == 0 || slices.Contains(c.Pin, g.UUID) }
		var keep []*gpuRec
		for _, g := range s.order {
			sameWorkload := (g.State != StateStartingAI && g.State != StateServingAI) || g.Workload == c.Workload
			if heading(g) == c.ID && pl.want[g.UUID] == "" && pinned(g) && sameWorkload &&
				!(g.Cordon != nil && g.Cordon.Force) && g.health.State != nvml.Unhealthy {
				keep = append(keep, g)
			}
		}
		if len(keep) > c.GPUs {
			// Shrunk: keep the ones furthest along, release the rest.
			sort.SliceStable(keep, func(i, j int) bool {
				return stageRank(keep[i].State) > stageRank(keep[j].State)
			})
			keep = keep[:c.GPUs]
		}
		for _, g := range keep {
			pl.want[g.UUID] = c.ID
		}
		need := c.GPUs - len(keep)
		if need == 0 {
			continue
		}
		var cands []*gpuRec
		for _, g := range s.order {
			if pl.want[g.UUID] == "" && pinned(g) && s.eligibleLocked(g, c.ID, now) {
				cands = append(cands, g)
			}
		}
		sort.SliceStable(cands, func(i, j int) bool {
			a, b := cands[i], cands[j]
			if ha, hb := a.health.State == nvml.Healthy, b.health.State == nvml.Healthy; ha != hb {
				return ha
			}
			if ca, cb := candClass(a), candClass(b); ca != cb {
				return ca < cb
			}
			return a.Index < b.Index
		})
		take := min(need, len(cands))
		for _, g := range cands[:take] {
			pl.want[g.UUID] = c.ID
		}
		if take < need {
			s.shortfall[c.ID] = s.explainShortfallLocked(c, len(keep)+take, pl, now)
		}
	}
	return pl
}

// stageRank orders states by how far along toward serving they are.
func stageRank(st State) int {
	switch st {
	case StateServingAI:
		return 3
	case StateStartingAI:
		return 2
	case StateVerifyingFree:
		return 1
	}
	return 0
}

// candClass: idle GPUs (and GPUs already freed) before mining ones.
func candClass(g *gpuRec) int {
	if g.State == StateMining {
		return 1
	}
	return 0
}

// eligibleLocked reports whether g may take new work for contract id.
// Callers hold mu.
func (s *Switcher) eligibleLocked(g *gpuRec, id string, now time.Time) bool {
	if g.Cordon != nil || g.health.State == nvml.Unhealthy || now.Before(g.Backoff[id]) {
		return false
	}
	switch g.State {
	case StateIdle, StateMining:
		return true
	case StateVerifyingFree:
		return g.Contract == ""
	}
	return false
}

// explainShortfallLocked says, GPU by GPU, why a contract has fewer GPUs
// than it wants. Callers hold mu.
func (s *Switcher) explainShortfallLocked(c sourced, got int, pl placement, now time.Time) string {
	counts := map[string]int{}
	var order []string
	note := func(why string) {
		if counts[why] == 0 {
			order = append(order, why)
		}
		counts[why]++
	}
	for _, g := range s.order {
		if pl.want[g.UUID] == c.ID {
			continue
		}
		switch {
		case len(c.Pin) > 0 && !slices.Contains(c.Pin, g.UUID):
			note("not pinned")
		case pl.want[g.UUID] != "":
			note("serve or switch to other contracts")
		case g.State == StateQuarantined:
			note("quarantined (" + g.Reason + ")")
		case g.health.State == nvml.Unhealthy:
			note("unhealthy")
		case g.Cordon != nil:
			note("cordoned")
		case now.Before(g.Backoff[c.ID]):
			note("in retry backoff after this contract's workload failed on them")
		case heading(g) != "":
			note("serve or switch to other contracts")
		default:
			note("still switching (" + string(g.State) + ")")
		}
	}
	parts := make([]string, 0, len(order))
	for _, why := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[why], why))
	}
	msg := fmt.Sprintf("wants %d GPU(s), %d available on this node", c.GPUs, got)
	if len(parts) > 0 {
		msg += ": " + strings.Join(parts, ", ")
	}
	if f := s.failures[c.ID]; f != "" {
		msg += "; last failure: " + f
	}
	return msg
}
