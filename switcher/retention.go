package switcher

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// ErrTooManyContracts: max_contracts live API contracts are kept already,
// so a new one would need a live one dropped.
var ErrTooManyContracts = errors.New("too many contracts")

// maxPruneEvents bounds the contract_pruned events of one prune: past it
// one contracts_pruned event counts the rest, so that a mass expiry (a
// restart after weeks) does not push the rest of the history out of the
// bounded journal.
const maxPruneEvents = 16

// Why a contract is forgotten.
const (
	pruneRetention = "contract_retention"
	pruneLimit     = "max_contracts"
)

// forgotten is a contract dropped by a prune.
type forgotten struct {
	Contract
	source, why string
}

// expiredLocked reports whether c ended contract_retention ago or more.
// A contract with no end (a feed entry too broken to have one) never
// expires: it is shown refused for as long as the feed sends it. Callers
// hold mu.
func (s *Switcher) expiredLocked(c Contract, now time.Time) bool {
	return !c.End.IsZero() && !now.Before(c.End.Add(s.cfg.ContractRetention))
}

// limitContracts returns cs without the contracts that ended
// contract_retention ago, and without as many of the other ended ones
// (oldest end first) as it takes to keep at most limit. Live contracts
// are never dropped: live > limit means the caller must refuse more.
// Order is kept.
func limitContracts(cs []Contract, now time.Time, retention time.Duration, limit int) (keep []Contract, dropped []forgotten, live int) {
	var kept, ended []int // indexes into cs
	for i, c := range cs {
		switch {
		case !c.End.IsZero() && !now.Before(c.End.Add(retention)):
			dropped = append(dropped, forgotten{Contract: c, why: pruneRetention})
			continue
		case c.End.IsZero() || now.Before(c.End):
			live++
		default:
			ended = append(ended, i)
		}
		kept = append(kept, i)
	}
	drop := map[int]bool{}
	if over := len(kept) - limit; over > 0 {
		sort.SliceStable(ended, func(a, b int) bool { return cs[ended[a]].End.Before(cs[ended[b]].End) })
		for _, i := range ended[:min(over, len(ended))] {
			drop[i] = true
		}
	}
	for _, i := range kept {
		if drop[i] {
			dropped = append(dropped, forgotten{Contract: cs[i], why: pruneLimit})
		} else {
			keep = append(keep, cs[i])
		}
	}
	return keep, dropped, live
}

// pruneLocked forgets the API's and the feed's contracts that ended
// contract_retention ago, and ended ones past max_contracts (oldest end
// first), with an event for each. Config-file contracts are the
// operator's and stay. The caller persists. Callers hold mu.
func (s *Switcher) pruneLocked(now time.Time) {
	retention, limit := s.cfg.ContractRetention, s.cfg.MaxContracts
	var gone []forgotten
	if s.anyToPruneLocked(len(s.apiContracts), maps.Values(s.apiContracts), now) {
		ids := make([]string, 0, len(s.apiContracts))
		for id := range s.apiContracts {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		cs := make([]Contract, len(ids))
		for i, id := range ids {
			cs[i] = s.apiContracts[id]
		}
		_, dropped, _ := limitContracts(cs, now, retention, limit)
		for _, d := range dropped {
			delete(s.apiContracts, d.ID)
			d.source = SourceAPI
			gone = append(gone, d)
		}
	}
	if s.feed != nil && s.anyToPruneLocked(len(s.feed.Contracts), slices.Values(s.feed.Contracts), now) {
		keep, dropped, _ := limitContracts(s.feed.Contracts, now, retention, limit)
		if len(dropped) > 0 {
			s.feed.Contracts = append([]Contract{}, keep...)
			for _, d := range dropped {
				d.source = SourceFeed
				gone = append(gone, d)
			}
			s.forgetInvalidLocked()
		}
	}
	if len(gone) == 0 {
		return
	}
	s.forgetNotesLocked()
	s.announcePrunedLocked(gone, now)
}

// anyToPruneLocked is the cheap test every pass makes: more contracts than
// max_contracts, or one that expired. Callers hold mu.
func (s *Switcher) anyToPruneLocked(n int, cs iter.Seq[Contract], now time.Time) bool {
	if n > s.cfg.MaxContracts {
		return true
	}
	for c := range cs {
		if s.expiredLocked(c, now) {
			return true
		}
	}
	return false
}

// forgetInvalidLocked drops the feed's invalid-entry notes of ids it no
// longer holds. Callers hold mu.
func (s *Switcher) forgetInvalidLocked() {
	if s.feed == nil || len(s.feed.Invalid) == 0 {
		return
	}
	held := make(map[string]bool, len(s.feed.Contracts))
	for _, c := range s.feed.Contracts {
		held[c.ID] = true
	}
	for id := range s.feed.Invalid {
		if !held[id] {
			delete(s.feed.Invalid, id)
		}
	}
	if len(s.feed.Invalid) == 0 {
		s.feed.Invalid = nil
	}
}

// forgetNotesLocked drops what the switcher remembers about contracts it
// no longer has (announced refusals, last failures), so that those maps
// stay as bounded as the contracts. Callers hold mu.
func (s *Switcher) forgetNotesLocked() {
	held := map[string]bool{}
	for _, c := range s.contractsLocked() {
		held[c.ID] = true
	}
	for _, m := range []map[string]string{s.refusals, s.failures, s.shortfall} {
		for id := range m {
			if !held[id] {
				delete(m, id)
			}
		}
	}
}

// announcePrunedLocked records the forgotten contracts in the journal:
// one event each, up to maxPruneEvents, then one for the rest. Callers
// hold mu.
func (s *Switcher) announcePrunedLocked(gone []forgotten, now time.Time) {
	for i, g := range gone {
		if i == maxPruneEvents {
			rest := gone[i:]
			ids := make([]string, 0, 10)
			for _, r := range rest[:min(10, len(rest))] {
				ids = append(ids, r.ID)
			}
			more := ""
			if len(rest) > len(ids) {
				more = ", …"
			}
			s.event(Event{Reason: "contracts_pruned", Message: fmt.Sprintf("%d more ended contract(s) forgotten (%s or %s): %s%s",
				len(rest), pruneRetention, pruneLimit, strings.Join(ids, ", "), more)})
			return
		}
		why := fmt.Sprintf("ended %s ago, contract_retention is %s", now.Sub(g.End).Round(time.Second), s.cfg.ContractRetention)
		if g.why == pruneLimit {
			why = fmt.Sprintf("ended, and max_contracts (%d) %s contracts are kept: the one that ended first goes", s.cfg.MaxContracts, g.source)
		}
		s.event(Event{Reason: "contract_pruned", Contract: g.ID, Message: fmt.Sprintf("contract %s from the %s (%d GPU(s) of %s, %s to %s) "+
			"is forgotten: %s", g.ID, g.source, g.GPUs, g.Workload, g.Start.UTC().Format(time.RFC3339), g.End.UTC().Format(time.RFC3339), why)})
	}
}

// roomForAPIContractLocked makes room for API contract id: a replacement
// always fits; a new one past max_contracts pushes out the API contract
// that ended first, and is refused (ErrTooManyContracts) when every kept
// one is live. Callers hold mu.
func (s *Switcher) roomForAPIContractLocked(id string, now time.Time) error {
	if _, ok := s.apiContracts[id]; ok || len(s.apiContracts) < s.cfg.MaxContracts {
		return nil
	}
	var ended []Contract
	for _, c := range s.apiContracts {
		if !now.Before(c.End) {
			ended = append(ended, c)
		}
	}
	sort.Slice(ended, func(i, j int) bool {
		if !ended[i].End.Equal(ended[j].End) {
			return ended[i].End.Before(ended[j].End)
		}
		return ended[i].ID < ended[j].ID
	})
	need := len(s.apiContracts) - s.cfg.MaxContracts + 1
	if need > len(ended) {
		return fmt.Errorf("%w: proxyd keeps at most %d API contracts ([switcher] max_contracts) and %d of them have not ended; "+
			"delete one (DELETE /api/v1/contracts/{id}) or raise max_contracts", ErrTooManyContracts, s.cfg.MaxContracts, len(s.apiContracts)-len(ended))
	}
	gone := make([]forgotten, need)
	for i, c := range ended[:need] {
		delete(s.apiContracts, c.ID)
		gone[i] = forgotten{Contract: c, source: SourceAPI, why: pruneLimit}
	}
	s.forgetNotesLocked()
	s.announcePrunedLocked(gone, now)
	return nil
}
