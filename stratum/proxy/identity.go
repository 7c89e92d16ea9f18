package proxy

import (
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/stratum"
)

// With identity = "passthrough", every worker is authorized on the upstream
// session under its own name (worker_template), and its shares are submitted
// under that name, so the pool can see and pay each ASIC. Several workers
// share one session: Stratum lets a connection authorize any number of users.

// workerAuthTimeout bounds how long a miner's authorize waits for the pool.
const workerAuthTimeout = 10 * time.Second

// workerAuth is one upstream authorization on one session.
type workerAuth struct {
	done chan struct{} // closed when the pool answered (or the session died)
	ok   bool
	err  *stratum.Error
}

// upstreamName is how a miner's worker is named at the pool.
func (pl *pool) upstreamName(worker string) string {
	if pl.cfg.Identity != "passthrough" {
		return pl.cfg.User
	}
	suffix := worker
	if i := strings.IndexByte(worker, '.'); i >= 0 && i+1 < len(worker) {
		suffix = worker[i+1:]
	}
	return strings.NewReplacer("{user}", pl.cfg.User, "{worker}", suffix, "{name}", worker).Replace(pl.cfg.WorkerTemplate)
}

// authorizeWorker makes sure name is authorized on this session, sending
// mining.authorize once; the returned value completes with the pool's answer.
// Because the pool reads one connection in order, a submit queued after the
// authorize is judged after it.
func (u *upstream) authorizeWorker(name string) *workerAuth {
	u.mu.Lock()
	if wa, ok := u.workerAuths[name]; ok {
		u.mu.Unlock()
		return wa
	}
	wa := &workerAuth{done: make(chan struct{})}
	if u.state != stateActive {
		u.mu.Unlock()
		wa.err = &stratum.Error{Code: stratum.CodeOther, Message: "pool session not active"}
		close(wa.done)
		return wa
	}
	id := u.nextID
	u.nextID++
	u.workerAuths[name] = wa
	u.authPending[id] = wa
	u.mu.Unlock()
	line := stratum.AppendRequest(nil, stratum.NumberID(id), &stratum.Authorize{User: name, Password: u.pool.cfg.Password})
	if err := u.wq.send(false, line); err != nil {
		u.finishAuth(id, false, &stratum.Error{Code: stratum.CodeOther, Message: "pool connection failed: " + err.Error()})
	}
	return wa
}

// finishAuth completes a pending upstream authorization; false when id is
// not one.
func (u *upstream) finishAuth(id uint64, ok bool, perr *stratum.Error) bool {
	u.mu.Lock()
	wa, found := u.authPending[id]
	delete(u.authPending, id)
	if found && !ok {
		// Forget a refusal so a later authorize (say, after the operator
		// fixed the account) is asked again.
		for name, x := range u.workerAuths {
			if x == wa {
				delete(u.workerAuths, name)
			}
		}
	}
	u.mu.Unlock()
	if !found {
		return false
	}
	wa.ok, wa.err = ok, perr
	close(wa.done)
	return true
}

// failAuths completes every pending authorization when the session ends.
func (u *upstream) failAuths() {
	u.mu.Lock()
	pending := u.authPending
	u.authPending = map[uint64]*workerAuth{}
	u.mu.Unlock()
	for _, wa := range pending {
		wa.err = &stratum.Error{Code: stratum.CodeOther, Message: "pool session ended before it answered the authorization"}
		close(wa.done)
	}
}

// passthroughAuthorize authorizes the miner's worker at the pool and answers
// the miner with the pool's verdict: a refusal reaches this miner only.
func (m *miner) passthroughAuthorize(id stratum.ID, worker string) bool {
	if err := m.ensureSession(); err != nil {
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, "proxy has no pool session: "+err.Error()))
		return false
	}
	m.mu.Lock()
	up := m.up
	m.mu.Unlock()
	if up == nil {
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, "proxy has no pool session"))
		return false
	}
	name := up.pool.upstreamName(worker)
	wa := up.authorizeWorker(name)
	t := time.NewTimer(workerAuthTimeout)
	defer t.Stop()
	select {
	case <-wa.done:
	case <-t.C:
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, fmt.Sprintf("pool did not answer the authorization of %q within %s", name, workerAuthTimeout)))
		return false
	}
	if !wa.ok {
		e := wa.err
		if e == nil {
			e = &stratum.Error{Code: stratum.CodeUnauthorized, Message: "unauthorized worker"}
		}
		m.log().Warn("pool refused the worker", zap.String("upstream_worker", name), zap.Int("code", e.Code), zap.String("message", e.Message))
		m.send(stratum.AppendError(nil, id, e.Code, e.Message))
		return false
	}
	return true
}
