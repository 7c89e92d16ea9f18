package proxy

import (
	"sync"
	"sync/atomic"
)

// accounting is the proxy's share ledger. Every share a miner submits ends in
// exactly one place:
//
//	received  = valid + rejected (by reason)
//	valid     = below_pool + forwarded
//	forwarded = pool_accepted + pool_rejected + no_verdict + in_flight
//
// A miner is told "true" only for below_pool and pool_accepted shares.
type accounting struct {
	valid        atomic.Uint64
	belowPool    atomic.Uint64
	forwarded    atomic.Uint64
	poolAccepted atomic.Uint64
	poolRejected atomic.Uint64
	noVerdict    atomic.Uint64

	mu       sync.Mutex // guards rejected
	rejected map[string]uint64
}

func (a *accounting) reject(reason string) {
	a.mu.Lock()
	if a.rejected == nil {
		a.rejected = map[string]uint64{}
	}
	a.rejected[reason]++
	a.mu.Unlock()
}

// Accounting is a consistent-enough snapshot of the ledger for the API and
// tests (counters are read one by one; at rest they are exact).
type Accounting struct {
	Received     uint64            `json:"received"`
	Valid        uint64            `json:"valid"`
	Rejected     uint64            `json:"rejected"`
	RejectedBy   map[string]uint64 `json:"rejected_by_reason"`
	BelowPool    uint64            `json:"below_pool_difficulty"`
	Forwarded    uint64            `json:"forwarded"`
	PoolAccepted uint64            `json:"pool_accepted"`
	PoolRejected uint64            `json:"pool_rejected"`
	NoVerdict    uint64            `json:"no_verdict"`
	InFlight     int64             `json:"in_flight"`
}

func (a *accounting) snapshot() Accounting {
	s := Accounting{RejectedBy: map[string]uint64{}}
	a.mu.Lock()
	for k, v := range a.rejected {
		s.RejectedBy[k] = v
		s.Rejected += v
	}
	a.mu.Unlock()
	s.Valid = a.valid.Load()
	s.BelowPool = a.belowPool.Load()
	s.Forwarded = a.forwarded.Load()
	s.PoolAccepted = a.poolAccepted.Load()
	s.PoolRejected = a.poolRejected.Load()
	s.NoVerdict = a.noVerdict.Load()
	s.Received = s.Valid + s.Rejected
	s.InFlight = int64(s.Forwarded) - int64(s.PoolAccepted+s.PoolRejected+s.NoVerdict)
	return s
}

// Balanced reports whether every share is accounted for (at rest: nothing
// in flight) and, if not, the first broken identity.
func (s Accounting) Balanced() (bool, string) {
	switch {
	case s.Valid != s.BelowPool+s.Forwarded:
		return false, "valid != below_pool_difficulty + forwarded"
	case s.InFlight != 0:
		return false, "shares still in flight"
	}
	return true, ""
}
