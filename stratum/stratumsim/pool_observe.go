package stratumsim

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/btcsuite/btcd/chainhash/v2"
)

// PoolStats are the Pool's counters. Everything counts from StartPool,
// across Stop/Start.
type PoolStats struct {
	SessionsOpen    int    // connections open now
	SessionsReady   int    // open, subscribed and authorized
	SessionsTotal   int    // connections ever accepted
	Submits         uint64 // mining.submit requests
	Accepted        uint64
	Rejected        uint64
	BlockCandidates uint64 // accepted shares meeting the network target
	JobsCreated     uint64
	NotifiesSent    uint64 // notify lines queued (one per session per job)
	Malformed       uint64 // lines that were not JSON or had non-array params
	MaxSubscribing  int    // most sessions held in SubscribeDelay at once
	BytesIn         uint64 // bytes read from sessions
	BytesOut        uint64 // bytes written to sessions
}

// UserStats counts shares by worker name as submitted.
type UserStats struct {
	Accepted       uint64
	Rejected       uint64
	RejectedByCode map[int]uint64
}

func (p *Pool) statsLocked() PoolStats {
	st := p.stats
	st.BytesIn = p.bytesIn.Load()
	st.BytesOut = p.bytesOut.Load()
	return st
}

// Stats returns a snapshot of the counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statsLocked()
}

// RejectsByCode returns rejected-share counts by error code.
func (p *Pool) RejectsByCode() map[int]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.byCode)
}

// Users returns share counts by worker name (as submitted, authorized or
// not).
func (p *Pool) Users() map[string]UserStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]UserStats, len(p.users))
	for k, u := range p.users {
		out[k] = UserStats{u.Accepted, u.Rejected, maps.Clone(u.RejectedByCode)}
	}
	return out
}

// Sessions returns the open sessions ordered by ID.
func (p *Pool) Sessions() []SessionInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]SessionInfo, 0, len(p.sessions))
	for _, s := range p.sessions {
		out = append(out, s.infoLocked())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return cmpU64(a.ID, b.ID) })
	return out
}

// AllSessions returns closed sessions (the most recent 5,000 to 10,000)
// and open ones, ordered by ID.
func (p *Pool) AllSessions() []SessionInfo {
	p.mu.Lock()
	out := append([]SessionInfo(nil), p.closedInfo...)
	for _, s := range p.sessions {
		out = append(out, s.infoLocked())
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b SessionInfo) int { return cmpU64(a.ID, b.ID) })
	return out
}

// Session returns one session's info, open or recently closed.
func (p *Pool) Session(id uint64) (SessionInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.sessions[id]; s != nil {
		return s.infoLocked(), true
	}
	for _, si := range p.closedInfo {
		if si.ID == id {
			return si, true
		}
	}
	return SessionInfo{}, false
}

// Shares returns the recorded shares, accepted and rejected, in arrival
// order (bounded by KeepShares).
func (p *Pool) Shares() []Share {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.shares)
}

// AcceptedShares returns the recorded accepted shares in arrival order.
func (p *Pool) AcceptedShares() []Share {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Share
	for _, s := range p.shares {
		if s.Accepted {
			out = append(out, s)
		}
	}
	return out
}

// AcceptedHash reports whether the pool accepted a share with this block
// hash (among the last KeepShares accepted).
func (p *Pool) AcceptedHash(h chainhash.Hash) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.accepted[h]
	return ok
}

// Unaccounted returns the miner results that claim acceptance (Verdict
// Accepted) but that the pool never accepted although their share
// difficulty reaches minDifficulty (pass the pool's difficulty). With a
// correct proxy in between the result is empty: every share a miner was
// told "true" for was either accepted upstream or below pool difficulty.
// It relies on the accepted-hash record, so it needs KeepShares >= 0 and
// only sees the last KeepShares/2..KeepShares accepted shares.
func (p *Pool) Unaccounted(results []SubmitResult, minDifficulty float64) []SubmitResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []SubmitResult
	for _, r := range results {
		if r.Verdict != VerdictAccepted {
			continue
		}
		if _, ok := p.accepted[r.Hash]; ok || r.ShareDifficulty < minDifficulty {
			continue
		}
		out = append(out, r)
	}
	return out
}

// Jobs returns the records of the jobs created (the most recent 5,000 to
// 10,000), oldest first.
func (p *Pool) Jobs() []JobInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]JobInfo, len(p.jobLog))
	for i, j := range p.jobLog {
		out[i] = j.infoLocked()
	}
	return out
}

// Job returns the record of the job with sequence number seq.
func (p *Pool) Job(seq uint64) (JobInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := slices.BinarySearchFunc(p.jobLog, seq, func(j *poolJob, s uint64) int { return cmpU64(j.seq, s) })
	if !ok {
		return JobInfo{}, false
	}
	return p.jobLog[i].infoLocked(), true
}

// CurrentJob returns the newest job's record.
func (p *Pool) CurrentJob() JobInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	if j := p.currentJobLocked(); j != nil {
		return j.infoLocked()
	}
	return JobInfo{}
}

// WaitFor blocks until cond holds for the pool's counters or ctx ends; it
// re-evaluates cond on every session, job or share event.
func (p *Pool) WaitFor(ctx context.Context, cond func(PoolStats) bool) error {
	for {
		p.mu.Lock()
		st := p.statsLocked()
		ch := p.changed
		p.mu.Unlock()
		if cond(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("stratumsim: pool wait (stats %+v): %w", st, ctx.Err())
		}
	}
}

// WaitReady waits until at least n sessions are open, subscribed and
// authorized.
func (p *Pool) WaitReady(ctx context.Context, n int) error {
	return p.WaitFor(ctx, func(s PoolStats) bool { return s.SessionsReady >= n })
}

// WaitAccepted waits until at least n shares were accepted.
func (p *Pool) WaitAccepted(ctx context.Context, n uint64) error {
	return p.WaitFor(ctx, func(s PoolStats) bool { return s.Accepted >= n })
}

// WaitSubmits waits until at least n submits were answered or recorded.
func (p *Pool) WaitSubmits(ctx context.Context, n uint64) error {
	return p.WaitFor(ctx, func(s PoolStats) bool { return s.Submits >= n })
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
