package proxy

import (
	"github.com/hashgate/proxyd/stratum"
)

// verdictPath is the way a forwarded share came, which its verdict takes
// back: the session that forwarded it calls judged with the pool's answer,
// or unjudged when no answer will come. Exactly one of them is called per
// share. The miner that submitted the share is the path in production; a
// pool session of another protocol needs only this to answer its miners.
type verdictPath interface {
	// judged relays the pool's verdict; perr is set when !accepted.
	judged(ps *pendingSubmit, pool string, accepted bool, perr *stratum.Error)
	// unjudged answers a share the pool never judged, with an error: never
	// a fake success. reason is a bounded metric label, message the words
	// the miner gets.
	unjudged(ps *pendingSubmit, pool string, reason, message string)
}

// judged implements verdictPath: it counts the verdict and answers the
// miner. The pool's own bookkeeping (reject ratio, latency) is done by the
// session before it calls this.
func (m *miner) judged(ps *pendingSubmit, pool string, accepted bool, perr *stratum.Error) {
	p := m.p
	if accepted {
		m.count(ps.worker, tally{poolAccepted: true})
		p.acct.poolAccepted.Add(1)
		p.metrics.shares.WithLabelValues(m.srv.cfg.Name, pool, "pool_accepted", "").Inc()
		m.send(stratum.AppendBoolResult(nil, ps.id, true))
		return
	}
	reason := poolReason(perr)
	m.count(ps.worker, tally{poolRejected: true, reject: reason})
	p.acct.poolRejected.Add(1)
	p.metrics.shares.WithLabelValues(m.srv.cfg.Name, pool, "pool_rejected", reason).Inc()
	m.send(stratum.AppendError(nil, ps.id, perr.Code, perr.Message))
}

// unjudged implements verdictPath. A timeout feeds the pool's reject ratio
// (upstream.expire does that); a lost session does not: that is the pool's
// health, judged apart.
func (m *miner) unjudged(ps *pendingSubmit, pool string, reason, message string) {
	p := m.p
	m.count(ps.worker, tally{reject: "no_verdict_" + reason})
	p.acct.noVerdict.Add(1)
	p.metrics.shares.WithLabelValues(m.srv.cfg.Name, pool, "no_verdict", reason).Inc()
	m.send(stratum.AppendError(nil, ps.id, stratum.CodeOther, message))
}
