package switcher

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashgate/proxyd/internal/config"
)

// Errors of the control methods, for errors.Is.
var (
	ErrUnknownGPU      = errors.New("no GPU with that UUID on this node")
	ErrUnknownContract = errors.New("no such contract")
	// ErrNotAPIContract: the contract comes from the config file or the
	// demand feed; only the API's own contracts change through the API.
	ErrNotAPIContract = errors.New("contract is not managed through the API")
	// ErrBelowFloor: the price is below min_price_usd_per_gpu_hour.
	ErrBelowFloor = errors.New("price below the site's floor")
	// ErrNotPersisted: the change could not be written to state_dir and
	// was not made.
	ErrNotPersisted = errors.New("state could not be written")
	// ErrStillHeld: proxyd's own workload still holds the GPU.
	ErrStillHeld = errors.New("proxyd's workload still holds the GPU")
)

// status builds a GPU's public view. Callers hold mu.
func (s *Switcher) statusLocked(g *gpuRec) GPUStatus {
	st := GPUStatus{UUID: g.UUID, Index: g.Index, State: g.State, Contract: g.Contract, Workload: g.Workload,
		Since: g.Since, Reason: g.Reason, Message: g.Message, InTransition: g.State.InTransition(), NotFree: g.notFree,
		ProofOfStart: g.proofWait}
	switch g.State {
	case StateMining, StateRestoringMining, StateStoppingMiner:
		st.Owner = "mining"
	case StateStartingAI, StateServingAI, StateDrainingAI:
		st.Owner = "ai"
	case StateQuarantined:
		if g.Handle != nil {
			st.Owner = map[bool]string{true: "mining", false: "ai"}[g.Handle.IsMining()]
		}
	}
	if g.State == StateMining || g.State == StateRestoringMining {
		st.Contract = "" // (in STOPPING_MINER it names the contract the GPU heads to)
	}
	if g.Cordon != nil {
		c := *g.Cordon
		st.Cordon = &c
	}
	if g.Handle != nil {
		h := *g.Handle
		st.Handle = &h
	}
	if g.Power != nil {
		p := *g.Power
		st.PowerSnapshot = &p
	}
	if d, ok := s.deadlineLocked(g); ok {
		st.Deadline = &d
	}
	return st
}

func (s *Switcher) deadlineLocked(g *gpuRec) (time.Time, bool) {
	t := s.cfg.Timeouts
	var d time.Duration
	switch g.State {
	case StateStoppingMiner:
		d = t.StopMiner.D()
	case StateDrainingAI:
		d = t.DrainAI.D()
	case StateVerifyingFree:
		d = t.VerifyFree.D()
	case StateStartingAI:
		d = t.StartAI.D()
	case StateRestoringMining:
		d = t.RestoreMining.D()
	default:
		return time.Time{}, false
	}
	return g.stepFrom.Add(d), !g.stepFrom.IsZero()
}

// GPUStatuses returns every GPU's switch state, by index.
func (s *Switcher) GPUStatuses() []GPUStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]GPUStatus, len(s.order))
	for i, g := range s.order {
		out[i] = s.statusLocked(g)
	}
	return out
}

// GPUStatus returns one GPU's switch state.
func (s *Switcher) GPUStatus(uuid string) (GPUStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.recs[uuid]
	if g == nil {
		return GPUStatus{}, fmt.Errorf("%w: %q", ErrUnknownGPU, uuid)
	}
	return s.statusLocked(g), nil
}

// contractStatusLocked builds a contract's status. Callers hold mu.
func (s *Switcher) contractStatusLocked(c sourced, now time.Time) ContractStatus {
	st := ContractStatus{Contract: c.Contract, Source: c.source, GPUList: []string{}}
	switch {
	case c.refused != "":
		st.State, st.Refused = ContractRefused, c.refused
	case !now.Before(c.End):
		st.State = ContractEnded
	case c.ActiveAt(now):
		st.State, st.Desired = ContractActive, c.GPUs
	default:
		st.State = ContractScheduled
	}
	for _, g := range s.order {
		if heading(g) == c.ID {
			st.Assigned++
			st.GPUList = append(st.GPUList, g.UUID)
			if g.State == StateServingAI {
				st.Serving++
			}
		}
	}
	if st.State == ContractActive {
		st.Shortfall = s.shortfall[c.ID]
		if st.Shortfall == "" && st.Serving < st.Desired {
			st.Shortfall = fmt.Sprintf("%d of %d GPU(s) serving; the others are switching", st.Serving, st.Desired)
			if f := s.failures[c.ID]; f != "" {
				st.Shortfall += "; last failure: " + f
			}
		}
	}
	return st
}

// Contracts returns every contract (config, API, feed) with how it is
// served, by id.
func (s *Switcher) Contracts() []ContractStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	cs := s.contractsLocked()
	out := make([]ContractStatus, len(cs))
	for i, c := range cs {
		out[i] = s.contractStatusLocked(c, now)
	}
	return out
}

// ContractStatus returns one contract's status.
func (s *Switcher) ContractStatus(id string) (ContractStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.contractsLocked() {
		if c.ID == id {
			return s.contractStatusLocked(c, s.clock.Now()), nil
		}
	}
	return ContractStatus{}, fmt.Errorf("%w: %q", ErrUnknownContract, id)
}

// PutContract adds or replaces an API contract, durably, before it
// returns; created is false when one with that id existed (an identical
// put changes nothing). A malformed contract is a *FieldError; a price
// below the floor matches ErrBelowFloor (and names the field); an id the
// config or the feed declares matches ErrNotAPIContract.
func (s *Switcher) PutContract(c Contract) (st ContractStatus, created bool, err error) {
	if err := validateContract(c); err != nil {
		return st, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.cfgContracts {
		if x.ID == c.ID {
			return st, false, fmt.Errorf("%w: %q is declared in the config file; change it there and reload", ErrNotAPIContract, c.ID)
		}
	}
	if s.cfg.MinPriceUSDPerGPUHour > c.PriceUSDPerGPUHour {
		return st, false, &FieldError{Field: "price_usd_per_gpu_hour", Err: ErrBelowFloor, Msg: fmt.Sprintf("$%.4g per GPU-hour is below "+
			"the site's floor of $%.4g (min_price_usd_per_gpu_hour, the value of mining a GPU): refused", c.PriceUSDPerGPUHour, s.cfg.MinPriceUSDPerGPUHour)}
	}
	if _, ok := s.specs[c.Workload]; !ok {
		return st, false, &FieldError{Field: "workload", Msg: fmt.Sprintf("workload %q is not defined on this node (defined: %s)",
			c.Workload, strings.Join(slices.Sorted(maps.Keys(s.specs)), ", "))}
	}
	for _, p := range c.Pin {
		if s.recs[p] == nil {
			return st, false, &FieldError{Field: "pin", Msg: fmt.Sprintf("GPU %s is not on this node (GET /api/v1/gpus lists them)", p)}
		}
	}
	if err := s.roomForAPIContractLocked(c.ID, s.clock.Now()); err != nil {
		return st, false, err
	}
	old, existed := s.apiContracts[c.ID]
	c.Pin = slices.Clone(c.Pin)
	if !existed || !reflect.DeepEqual(old, c) {
		s.apiContracts[c.ID] = c
		s.persistLocked()
		if s.persistErr != nil {
			if existed {
				s.apiContracts[c.ID] = old
			} else {
				delete(s.apiContracts, c.ID)
			}
			return st, false, fmt.Errorf("%w: %v", ErrNotPersisted, s.persistErr)
		}
		verb := "added"
		if existed {
			verb = "changed"
		}
		delete(s.refusals, c.ID)
		s.event(Event{Reason: "contract_" + verb, Contract: c.ID, Message: fmt.Sprintf("contract %s through the API: %d GPU(s) of %s "+
			"from %s to %s at $%.4g per GPU-hour", verb, c.GPUs, c.Workload, c.Start.UTC().Format(time.RFC3339),
			c.End.UTC().Format(time.RFC3339), c.PriceUSDPerGPUHour)})
	}
	for _, x := range s.contractsLocked() {
		if x.ID == c.ID {
			st = s.contractStatusLocked(x, s.clock.Now())
		}
	}
	s.wakeLocked()
	return st, !existed, nil
}

// DeleteContract removes an API contract durably; its GPUs drain and go
// back to mining.
func (s *Switcher) DeleteContract(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.apiContracts[id]
	if !ok {
		for _, c := range s.contractsLocked() {
			if c.ID == id {
				return fmt.Errorf("%w: %q comes from the %s", ErrNotAPIContract, id, c.source)
			}
		}
		return fmt.Errorf("%w: %q", ErrUnknownContract, id)
	}
	delete(s.apiContracts, id)
	s.persistLocked()
	if s.persistErr != nil {
		s.apiContracts[id] = old
		return fmt.Errorf("%w: %v", ErrNotPersisted, s.persistErr)
	}
	s.event(Event{Reason: "contract_deleted", Contract: id, Message: "contract deleted through the API: its GPUs drain"})
	s.wakeLocked()
	return nil
}

func (s *Switcher) wakeLocked() { s.Wake() }

// Cordon marks a GPU to take no new work (reason is mandatory). Without
// force its current work goes on (an AI contract until it ends, the miner
// indefinitely); with force the work is drained and the GPU stays idle.
func (s *Switcher) Cordon(uuid, reason string, force bool) (GPUStatus, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return GPUStatus{}, &FieldError{Field: "reason", Msg: "required: say why the GPU is cordoned (it shows in the API and the events)"}
	}
	if len(reason) > 512 {
		return GPUStatus{}, &FieldError{Field: "reason", Msg: "longer than 512 characters"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.recs[uuid]
	if g == nil {
		return GPUStatus{}, fmt.Errorf("%w: %q", ErrUnknownGPU, uuid)
	}
	old := g.Cordon
	g.Cordon = &Cordon{Reason: reason, Force: force, At: s.clock.Now()}
	s.persistLocked()
	if s.persistErr != nil {
		g.Cordon = old
		return GPUStatus{}, fmt.Errorf("%w: %v", ErrNotPersisted, s.persistErr)
	}
	msg := "cordoned: no new work; current work goes on (" + reason + ")"
	if force {
		msg = "cordoned with force: no new work, current work is drained (" + reason + ")"
	}
	s.event(Event{GPU: g.UUID, From: g.State, To: g.State, Reason: ReasonCordoned, Message: msg, Contract: g.Contract})
	s.wakeLocked()
	return s.statusLocked(g), nil
}

// Uncordon lets a GPU take work again.
func (s *Switcher) Uncordon(uuid string) (GPUStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.recs[uuid]
	if g == nil {
		return GPUStatus{}, fmt.Errorf("%w: %q", ErrUnknownGPU, uuid)
	}
	if g.Cordon == nil {
		return s.statusLocked(g), nil
	}
	old := g.Cordon
	g.Cordon = nil
	s.persistLocked()
	if s.persistErr != nil {
		g.Cordon = old
		return GPUStatus{}, fmt.Errorf("%w: %v", ErrNotPersisted, s.persistErr)
	}
	s.event(Event{GPU: g.UUID, From: g.State, To: g.State, Reason: "uncordoned", Message: "uncordoned: takes work again (was: " + old.Reason + ")"})
	s.wakeLocked()
	return s.statusLocked(g), nil
}

// Resume takes a GPU out of quarantine after NVML's probe passed: it goes
// idle, and its next work starts only after a fresh proof of free (a GPU
// that still holds processes is quarantined again). A GPU not quarantined
// is left as it is.
func (s *Switcher) Resume(uuid string) (GPUStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.recs[uuid]
	if g == nil {
		return GPUStatus{}, fmt.Errorf("%w: %q", ErrUnknownGPU, uuid)
	}
	if g.State != StateQuarantined {
		return s.statusLocked(g), nil
	}
	if g.Handle != nil {
		return GPUStatus{}, fmt.Errorf("%w: %s could not be killed yet (the switcher keeps trying); "+
			"stop it by hand, then resume again", ErrStillHeld, g.Handle.Instance)
	}
	was := g.Reason
	g.Contract, g.Workload = "", ""
	s.enter(g, StateIdle, ReasonResumed, "resumed by an operator after a clean NVML probe (was quarantined: "+was+
		"); new work starts only after a fresh proof of free")
	s.persistLocked()
	s.wakeLocked()
	return s.statusLocked(g), nil
}

// Summary counts GPUs per state and each contract's desired and serving
// GPUs.
func (s *Switcher) Summary() Summary {
	s.mu.Lock()
	sum := Summary{GPUs: len(s.order), States: map[State]int{}}
	for _, g := range s.order {
		sum.States[g.State]++
		if g.State.InTransition() {
			sum.InTransition++
		}
		if g.Cordon != nil {
			sum.Cordoned++
		}
	}
	now := s.clock.Now()
	for _, c := range s.contractsLocked() {
		st := s.contractStatusLocked(c, now)
		sum.Contracts = append(sum.Contracts, ContractSum{ID: c.ID, State: st.State, Desired: st.Desired, Serving: st.Serving})
	}
	s.mu.Unlock()
	if err := s.NotReady(); err != nil {
		sum.NotReady = err.Error()
	}
	return sum
}

// Reload applies a new config: contracts, the price floor, max_parallel,
// timeouts and intervals change live; the keys returned need a restart
// (their old values stay in force).
func (s *Switcher) Reload(cfg *config.Config) (needRestart []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, now := s.cfg, cfg.Switcher
	if old.StateDir != now.StateDir {
		needRestart = append(needRestart, "switcher.state_dir")
	}
	if !reflect.DeepEqual(old.Workloads(), now.Workloads()) {
		needRestart = append(needRestart, "switcher.workload")
	}
	om, _ := old.MiningWorkload()
	nm, _ := now.MiningWorkload()
	if (old.Mining == nil) != (now.Mining == nil) || !reflect.DeepEqual(om, nm) {
		needRestart = append(needRestart, "switcher.mining")
	}
	if old.Docker != now.Docker {
		needRestart = append(needRestart, "switcher.docker")
	}
	if old.DemandURL != now.DemandURL || old.DemandTokenFile != now.DemandTokenFile || old.DemandPollInterval != now.DemandPollInterval {
		needRestart = append(needRestart, "switcher.demand_url")
	}
	if old.ReconcileInterval != now.ReconcileInterval {
		needRestart = append(needRestart, "switcher.reconcile_interval")
	}
	if !reflect.DeepEqual(old.Kubernetes, now.Kubernetes) {
		needRestart = append(needRestart, "switcher.kubernetes") // the agent is built at start
	}
	// Live: keep what needs a restart as it is.
	live := now
	live.StateDir, live.Workload, live.Mining, live.Docker = old.StateDir, old.Workload, old.Mining, old.Docker
	live.DemandURL, live.DemandTokenFile, live.DemandPollInterval = old.DemandURL, old.DemandTokenFile, old.DemandPollInterval
	live.ReconcileInterval, live.Kubernetes = old.ReconcileInterval, old.Kubernetes
	if err := s.setConfig(live, cfg.Contracts); err != nil {
		return nil, err
	}
	clear(s.refusals)
	s.event(Event{Reason: "config_reloaded", Message: fmt.Sprintf("config reloaded: %d contract(s) from the file, price floor $%.4g, max_parallel %d",
		len(cfg.Contracts), live.MinPriceUSDPerGPUHour, live.MaxParallel)})
	s.wakeLocked()
	return needRestart, nil
}

// Kinds returns the runtime kinds the configured workloads use.
func Kinds(cfg config.Switcher) []string {
	set := map[string]bool{}
	for _, w := range cfg.Workloads() {
		set[w.Runtime] = true
	}
	if m, ok := cfg.MiningWorkload(); ok {
		set[m.Runtime] = true
	}
	return slices.Sorted(maps.Keys(set))
}
