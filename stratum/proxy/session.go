package proxy

import (
	"github.com/hashgate/proxyd/stratum"
)

// session is what a miner needs from its pool session, whatever protocol
// the session speaks to the pool: the current job and the recent ones its
// shares may name, a way to submit a share that carries its own verdict
// path, the miner's extranonce (the session's extranonce1 and the miner's
// prefix, and the extranonce2 size left to the miner), the version-rolling
// mask, and whether the session has ended. Miners hold a session, never
// the concrete type; the Stratum V1 upstream implements it, and a Stratum
// V2 session (jobs built with job.FromTemplate) would implement the same.
//
// Every method is safe to call holding the miner's own lock except view,
// forward, detach and authorizeForMiner, which take the session's lock and
// are called holding none. job and versionMask take no lock: they are on
// the share path.
type session interface {
	// home is the configured pool the session belongs to: routing's unit.
	home() *pool
	// sessionID names the session in the API and logs.
	sessionID() uint64
	// view is the miner's extranonce for prefix: extranonce1 ‖ prefix, the
	// prefix bytes alone, the extranonce2 size left to the miner, and the
	// version mask.
	view(prefix uint32) minerView
	// versionMask is the version-rolling mask the pool granted (0: none).
	versionMask() uint32
	// currentJob is the latest job, nil before the first.
	currentJob() *jobEntry
	// job finds a job still valid for shares by the id the miners were
	// sent; nil when it is unknown or stale.
	job(id string) *jobEntry
	// forward submits a share that met the pool's difficulty. The pool's
	// verdict (or its absence) goes back through ps.reply, exactly once,
	// unless forward returns an error: then nothing was sent and the
	// caller answers the miner.
	forward(ps *pendingSubmit, e *jobEntry, en2 stratum.Extranonce, sub *stratum.Submit) error
	// detach releases the miner's prefix (a no-op once the session ended).
	detach(m *miner, prefix uint32)
	// authorizeForMiner authorizes a miner's worker name at the pool
	// (identity = "passthrough").
	authorizeForMiner(name string) (*workerAuth, authOutcome)
	// ended is closed once the session has ended.
	ended() <-chan struct{}
}

var _ session = (*upstream)(nil)

func (u *upstream) home() *pool             { return u.pool }
func (u *upstream) sessionID() uint64       { return u.id }
func (u *upstream) ended() <-chan struct{}  { return u.done }
func (u *upstream) job(id string) *jobEntry { return u.jobs.Load().byID[id] }
