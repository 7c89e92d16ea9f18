package proxy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/logkeep"
	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/job"
	"github.com/hashgate/proxyd/stratum/pow"
)

// Miner-side tuning.
const (
	// minerQueueLimit bounds what may wait to be written to one miner: a few
	// dozen jobs. A miner that lets this fill is not reading and is dropped.
	minerQueueLimit = 256 << 10
	minerWriteWait  = 10 * time.Second
	// reconnectGrace: after client.reconnect, how long before we close.
	reconnectGrace = 2 * time.Second
	// jobDiffSlots is how many of its latest jobs' difficulties a miner
	// remembers: as many as a session keeps valid, so every share a
	// session can still accept finds the difficulty its job was sent with.
	jobDiffSlots = keepJobs
	// maxEchoBytes bounds how much of a client's input an error repeats.
	maxEchoBytes = 32
	// minerReadBuffer is what a parked miner's reader holds: a share
	// (about 150 to 250 bytes with a long worker name) fits; a handshake
	// burst or a longer line grows it for a moment (stratum.NewCompactReader).
	minerReadBuffer = 256
)

// workerStats are one worker name's counters on one connection.
type workerStats struct {
	accepted     uint64 // valid shares (locally; forwarded ones included)
	poolAccepted uint64
	poolRejected uint64
	rejected     map[string]uint64 // by reason, local and pool
	acceptedDiff float64
	lastShare    time.Time
	meter        meter
}

func (w *workerStats) reject(reason string) {
	if w.rejected == nil {
		w.rejected = map[string]uint64{}
	}
	w.rejected[reason]++
}

// miner is one ASIC's connection. Its reader goroutine (serve) owns the
// read side. Its lines are handled one at a time (handleLine, on a shared
// handler goroutine), and that sequence owns the protocol-error count.
// Everything else is guarded by mu, which the session's fan-out and the
// verdict path also take. Writes go through wq and never block the caller.
type miner struct {
	p           *Proxy
	srv         *server
	id          uint64
	conn        net.Conn
	ip          netip.Addr
	logWorker   atomic.Pointer[string] // first authorized worker, for log lines
	wq          *writeQueue
	connectedAt time.Time
	// readBy is the read deadline (readDeadline) in Unix nanoseconds on
	// the proxy's clock; written under mu where worked or lastShare
	// change, read without a lock by the read loop's sweep, which visits
	// every miner each round.
	readBy    atomic.Int64
	closeOnce sync.Once
	closed    chan struct{}
	// ctx ends when the miner closes (Proxy.Stop closes every miner): it
	// bounds every wait done on the miner's behalf, so no task outlives
	// it. A minerContext, not a context.WithCancel of the proxy's.
	ctx context.Context

	protoErrors int // owned by the line being handled (one at a time)
	// names are the distinct worker names the connection presented in
	// mining.authorize, accepted or not (at most max_workers_per_connection);
	// authWaits are its pass-through authorizations the pool may not have
	// answered yet (at most max_pending_authorizations). Owned like
	// protoErrors.
	names     []string
	authWaits []*workerAuth

	mu          sync.Mutex
	userAgent   string
	subscribed  bool
	authorized  bool
	hasWork     bool
	xnsub       bool
	workers     map[string]*workerStats
	primary     string
	up          session // the pool session the miner hashes on; nil: none
	prefix      uint32
	prefixBytes []byte
	e1          []byte
	e2size      int
	wantVR      bool
	minerMask   uint32
	mask        uint32
	diff        float64 // difficulty of the jobs sent from now on
	sentDiff    float64 // last mining.set_difficulty sent; 0: none yet
	suggested   float64
	vd          *vardiff
	jobDiffs    [jobDiffSlots]jobDiff // a ring in the order jobs were sent, next at jobDiffNext
	jobDiffNext int
	lastShare   time.Time
	closeReason string
	retired     bool // closed: workers' counters moved to the worker table
	// worked: hasWork was set once, the handshake is done. A move to
	// another session clears hasWork for a moment, never this, so the read
	// deadline does not fall back to the subscribe timeout meanwhile (the
	// read loop's sweep would drop the miner).
	worked bool

	// Under the read loop (readloop_linux.go): the socket for non-blocking
	// reads, and the start of a line not yet complete (nil, the usual case,
	// when the last read ended on a line break). Owned by the miner's
	// current read turn, which holds turn.
	turn  sync.Mutex
	rc    syscall.RawConn
	inbuf []byte
}

type jobDiff struct {
	seq  uint64
	diff float64
}

func newMiner(p *Proxy, srv *server, id uint64, conn net.Conn, ip netip.Addr) *miner {
	now := p.clock.Now()
	m := &miner{
		p: p, srv: srv, id: id, conn: conn, ip: ip, connectedAt: now,
		closed:  make(chan struct{}),
		workers: map[string]*workerStats{},
		vd:      newVardiff(srv.cfg.SharesPerMinute, srv.cfg.MinDifficulty, srv.cfg.MaxDifficulty, now),
	}
	m.ctx = minerContext{m}
	m.readBy.Store(now.Add(srv.cfg.SubscribeTimeout).UnixNano())
	m.wq = newWriteQueue(conn, minerQueueLimit, minerWriteWait, false,
		p.metrics.downBytes.WithLabelValues(srv.cfg.Name, "out"),
		func(err error) {
			if errors.Is(err, errQueueFull) {
				m.close("write_queue_full", err)
				return
			}
			m.close("write_failed", err)
		})
	m.wq.stall = p.minerStall
	m.wq.flushers = &p.flushers
	return m
}

// log returns a logger carrying the miner's server, address, connection id
// and worker. It is built for each line logged rather than kept: a kept
// zap.Logger.With clones the encoder, about 2.3 KiB a miner (23 MiB at
// 10,000 miners, measured with pprof) for lines most miners never log.
// Safe with or without m.mu held.
func (m *miner) log() *zap.Logger {
	l := m.srv.log.With(zap.Stringer("remote", m.conn.RemoteAddr()), zap.Uint64("conn", m.id))
	if w := m.logWorker.Load(); w != nil {
		l = l.With(zap.String("worker", *w))
	}
	return l
}

// send queues lines for the miner; a miner whose queue overflows is dropped.
func (m *miner) send(lines ...[]byte) {
	if err := m.wq.send(false, lines...); errors.Is(err, errQueueFull) {
		m.close("write_queue_full", err)
	}
}

// serve reads the miner's lines until it disconnects, and hands each to the
// proxy's handlers (see handlers for why the reading goroutine does nothing
// else).
func (m *miner) serve() {
	r := stratum.NewCompactReader(m.conn, minerReadBuffer, m.srv.cfg.MaxLineBytes)
	in := newByteCounter(m.p.metrics.downBytes.WithLabelValues(m.srv.cfg.Name, "in"))
	w := &lineWork{m: m, done: make(chan struct{}, 1)}
	var deadline time.Time
	for {
		if d := m.readDeadline(); d.Sub(deadline) > time.Second || d.Before(deadline) {
			deadline = d
			_ = m.conn.SetReadDeadline(d)
		}
		line, err := r.ReadLine()
		in.update(r.BytesRead())
		if err != nil {
			m.readFailed(err)
			return
		}
		if room := m.wq.waitRoom(); room != nil {
			// Answers are piling up unread: take no more requests until
			// they drain (or the stall deadline drops the miner).
			select {
			case <-room:
			case <-m.closed:
			}
			if isDone(m.closed) {
				return
			}
		}
		w.line = line
		if !m.p.handlers.do(w) {
			return
		}
	}
}

// handleLine parses and handles one line from the miner and reports whether
// the miner may go on. Lines of one miner are never handled concurrently.
func (m *miner) handleLine(line []byte) bool {
	var msg stratum.Message
	if err := stratum.ParseMessage(line, &msg); err != nil {
		return m.protocolError(stratum.ID{}, err.Error())
	}
	switch msg.Kind {
	case stratum.KindRequest:
		return m.handle(&msg)
	case stratum.KindNotification:
		// A request without an id cannot be answered; firmware does not
		// send these. Ignore rather than count against the miner.
	case stratum.KindResponse:
		// Answers to client.get_version and the like: nothing to do.
	}
	return true
}

// readDeadline: before the handshake completes, the subscribe timeout from
// connect; afterwards (a move to another session included), the idle
// timeout from the last share (or from connect). It takes no lock.
func (m *miner) readDeadline() time.Time { return time.Unix(0, m.readBy.Load()) }

// setReadByLocked recomputes readBy from worked, lastShare and connectedAt;
// m.mu is held.
func (m *miner) setReadByLocked() {
	if !m.worked {
		m.readBy.Store(m.connectedAt.Add(m.srv.cfg.SubscribeTimeout).UnixNano())
		return
	}
	last := m.lastShare
	if last.IsZero() {
		last = m.connectedAt
	}
	m.readBy.Store(last.Add(m.srv.cfg.IdleTimeout).UnixNano())
}

func (m *miner) readFailed(err error) {
	switch {
	case errors.Is(err, io.EOF):
		m.close("closed_by_miner", nil)
	case errors.Is(err, stratum.ErrLineTooLong):
		m.log().Warn("miner sent an oversized line; disconnecting", zap.Error(err))
		m.close("line_too_long", err)
	case isTimeout(err):
		m.mu.Lock()
		working := m.worked
		m.mu.Unlock()
		if working {
			m.log().Info("miner stopped submitting; disconnecting", zap.Duration("idle_timeout", m.srv.cfg.IdleTimeout))
			m.close("idle_timeout", err)
		} else {
			m.log().Info("miner never completed subscribe and authorize; disconnecting", zap.Duration("subscribe_timeout", m.srv.cfg.SubscribeTimeout))
			m.close("subscribe_timeout", err)
		}
	default:
		m.close("read_error", err)
	}
}

// protocolError answers a bad request with error 20 and reports whether the
// miner may go on (false after max_protocol_errors).
func (m *miner) protocolError(id stratum.ID, what string) bool {
	return m.refuse(id, stratum.CodeOther, what)
}

// refuse answers a request that is malformed or over a bound with an error
// and counts it toward max_protocol_errors; false when the miner was dropped.
func (m *miner) refuse(id stratum.ID, code int, what string) bool {
	m.protoErrors++
	m.send(stratum.AppendError(nil, id, code, what))
	if m.protoErrors >= m.srv.cfg.MaxProtocolErrors {
		m.log().Warn("too many protocol errors; disconnecting", zap.Int("errors", m.protoErrors), zap.String("last", what))
		m.close("protocol_errors", errors.New(what))
		return false
	}
	return true
}

// handle answers one request; false means the connection was closed.
func (m *miner) handle(msg *stratum.Message) bool {
	switch msg.Method {
	case stratum.MethodSubmit:
		m.submit(msg)
	case stratum.MethodConfigure:
		var c stratum.Configure
		if err := c.DecodeParams(msg.Params); err != nil {
			return m.protocolError(msg.ID, err.Error())
		}
		m.configure(msg.ID, &c)
	case stratum.MethodSubscribe:
		var s stratum.Subscribe
		if err := s.DecodeParams(msg.Params); err != nil {
			return m.protocolError(msg.ID, err.Error())
		}
		return m.subscribe(msg.ID, &s)
	case stratum.MethodAuthorize:
		var a stratum.Authorize
		if err := a.DecodeParams(msg.Params); err != nil {
			return m.protocolError(msg.ID, err.Error())
		}
		return m.authorize(msg.ID, &a)
	case stratum.MethodSuggestDifficulty:
		var d stratum.SuggestDifficulty
		if err := d.DecodeParams(msg.Params); err != nil || !(d.Difficulty > 0) {
			return m.protocolError(msg.ID, "mining.suggest_difficulty: difficulty must be a positive number")
		}
		m.suggest(d.Difficulty)
		m.send(stratum.AppendBoolResult(nil, msg.ID, true))
	case stratum.MethodSuggestTarget:
		var st stratum.SuggestTarget
		if err := st.DecodeParams(msg.Params); err != nil {
			return m.protocolError(msg.ID, err.Error())
		}
		if d := pow.TargetFromBytes(st.Target).Difficulty(); d > 0 {
			m.suggest(d)
		}
		m.send(stratum.AppendBoolResult(nil, msg.ID, true))
	case stratum.MethodExtranonceSubscribe:
		m.mu.Lock()
		m.xnsub = true
		m.mu.Unlock()
		m.send(stratum.AppendBoolResult(nil, msg.ID, true))
	case stratum.MethodPing:
		m.send(stratum.AppendResult(nil, msg.ID, []byte(`"pong"`)))
	default:
		// Never drop a miner for a method we do not know (field notes §2).
		// Echo a prefix only: the name is the client's, up to max_line_bytes.
		m.send(stratum.AppendError(nil, msg.ID, stratum.CodeOther, "unknown method "+quotePrefix(msg.MethodName, maxEchoBytes)))
	}
	return true
}

// ensureSession gives the miner an upstream session and extranonce prefix,
// on pool to when given, else where routing says. It waits at most wait,
// and not past the miner's close.
func (m *miner) ensureSession() error { return m.ensureSessionOn(nil, m.srv.cfg.SubscribeTimeout) }

func (m *miner) ensureSessionOn(pl *pool, wait time.Duration) error {
	m.mu.Lock()
	has := m.up != nil
	m.mu.Unlock()
	if has {
		return nil
	}
	ctx, cancel := withTimeout(m.ctx, m.p.clock, wait)
	defer cancel()
	var (
		up     session
		prefix uint32
		err    error
	)
	for {
		target, wanted := pl, func() bool { return true }
		if target == nil { // follow routing, and follow it again if it changes meanwhile
			target = m.srv.pick()
			wanted = func() bool { return m.srv.isCarrying(target) }
		}
		if target == nil {
			t := time.NewTimer(100 * time.Millisecond) // a poll: wall time
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: no healthy pool", errNoSession)
			}
		}
		up, prefix, err = target.acquire(ctx, m, wanted)
		if errors.Is(err, errNotCarrying) {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	v := up.view(prefix)
	m.mu.Lock()
	if m.up != nil || isDone(m.closed) { // closed (or raced) meanwhile
		m.mu.Unlock()
		up.detach(m, prefix)
		return errors.New("connection closed")
	}
	m.up, m.prefix, m.prefixBytes = up, prefix, v.prefix
	m.e1, m.e2size = v.extranonce1, v.e2size
	if m.wantVR {
		m.mask = m.minerMask & v.mask
	}
	m.mu.Unlock()
	m.srv.router.placedOn(m, up)
	return nil
}

// configure answers exactly the extensions the miner requested
// (Whatsminers disconnect in a loop on any other key).
func (m *miner) configure(id stratum.ID, c *stratum.Configure) {
	var res stratum.ConfigureResult
	for _, ext := range c.Extensions {
		switch ext {
		case stratum.ExtVersionRolling:
			mask, _, _, err := c.VersionRolling()
			granted := uint32(0)
			if err == nil && m.ensureSession() == nil {
				m.mu.Lock()
				m.wantVR, m.minerMask = true, mask
				m.mask = mask & m.poolMaskLocked()
				granted = m.mask
				m.mu.Unlock()
			}
			res.SetVersionRolling(granted != 0, granted)
		case stratum.ExtMinimumDifficulty:
			if d, ok, err := c.MinimumDifficulty(); err == nil && ok && d > 0 {
				m.suggest(d)
				res.Set(ext, []byte("true"))
			} else {
				res.Set(ext, []byte("false"))
			}
		case stratum.ExtSubscribeExtranonce:
			m.mu.Lock()
			m.xnsub = true
			m.mu.Unlock()
			res.Set(ext, []byte("true"))
		default:
			res.Set(ext, []byte("false"))
		}
	}
	m.send(stratum.AppendResult(nil, id, res.AppendJSON(nil)))
}

// poolMaskLocked is the version mask of the miner's session; m.mu held.
func (m *miner) poolMaskLocked() uint32 {
	if m.up == nil {
		return 0
	}
	return m.up.versionMask()
}

func (m *miner) subscribe(id stratum.ID, s *stratum.Subscribe) bool {
	if err := m.ensureSession(); err != nil {
		m.log().Warn("cannot serve miner: no pool session", zap.Error(err))
		m.send(stratum.AppendError(nil, id, stratum.CodeOther, "proxy has no pool session: "+err.Error()))
		m.close("no_pool_session", err)
		return false
	}
	m.mu.Lock()
	m.userAgent = s.UserAgent
	m.subscribed = true
	e1, e2 := m.e1, m.e2size
	m.mu.Unlock()
	sid := strconv.FormatUint(m.id, 16)
	res := stratum.SubscribeResult{
		Subscriptions:   [][2]string{{"mining.set_difficulty", sid}, {"mining.notify", sid}},
		Extranonce1:     e1,
		Extranonce2Size: e2,
	}
	m.send(stratum.AppendResult(nil, id, res.AppendJSON(nil)))
	m.startWork()
	return true
}

// authorize answers mining.authorize; false when the miner was dropped.
func (m *miner) authorize(id stratum.ID, a *stratum.Authorize) bool {
	if a.User == "" {
		m.send(stratum.AppendError(nil, id, stratum.CodeUnauthorized, "empty worker name"))
		return true
	}
	if !m.presentName(a.User) {
		m.p.metrics.limitHits.WithLabelValues(m.srv.cfg.Name, limitWorkersPerConnection).Inc()
		return m.refuse(id, stratum.CodeUnauthorized, fmt.Sprintf("too many worker names on one connection (max_workers_per_connection = %d)",
			m.srv.cfg.MaxWorkersPerConnection))
	}
	m.mu.Lock()
	var pl *pool
	if m.up != nil {
		pl = m.up.home()
	}
	m.mu.Unlock()
	if pl == nil {
		pl = m.srv.pick()
	}
	if pl != nil && pl.cfg.Identity == "passthrough" {
		if ok, keep := m.passthroughAuthorize(id, a.User); !ok {
			return keep
		}
	}
	m.mu.Lock()
	if m.retired { // closed meanwhile
		m.mu.Unlock()
		return false
	}
	if _, ok := m.workers[a.User]; !ok {
		// The hashrate window starts now, not at the first share: a worker
		// is estimated over the time it has been able to submit.
		m.workers[a.User] = &workerStats{meter: meter{since: m.p.clock.Now()}}
		m.p.workers.addLive(a.User)
	}
	if m.primary == "" {
		m.primary = a.User
		m.logWorker.Store(&a.User)
	}
	m.authorized = true
	m.mu.Unlock()
	m.send(stratum.AppendBoolResult(nil, id, true))
	m.startWork()
	return true
}

// presentName records that the connection presented worker name; false
// when it is a new name past max_workers_per_connection. Real firmware
// authorizes one name, or a few; a connection cycling through names is
// making proxyd (and, with pass-through, the pool) store them.
func (m *miner) presentName(name string) bool {
	for _, n := range m.names {
		if n == name {
			return true
		}
	}
	if len(m.names) >= m.srv.cfg.MaxWorkersPerConnection {
		return false
	}
	m.names = append(m.names, name)
	return true
}

// count applies a share outcome to worker's counters: on this connection,
// or in the worker table once the connection has closed (a verdict that
// arrives late), so that the views always add up to the share ledger.
func (m *miner) count(worker string, t tally) {
	m.mu.Lock()
	m.countLocked(worker, t)
	m.mu.Unlock()
}

// countLocked is count with m.mu held.
func (m *miner) countLocked(worker string, t tally) {
	ws := m.workers[worker]
	switch {
	case ws == nil:
	case m.retired:
		m.p.workers.late(m.srv, worker, t)
	default:
		ws.apply(t)
	}
}

// suggest records the miner's wish, applied with its next job.
func (m *miner) suggest(d float64) {
	m.mu.Lock()
	m.suggested = d
	m.diff = 0 // re-derive from the suggestion on the next job
	m.mu.Unlock()
}

// startWork sends the first difficulty and job once subscribed and authorized.
func (m *miner) startWork() {
	m.mu.Lock()
	if m.hasWork || !m.subscribed || !m.authorized || m.up == nil {
		m.mu.Unlock()
		return
	}
	m.hasWork, m.worked = true, true
	m.setReadByLocked()
	up := m.up
	m.mu.Unlock()
	if cur := up.currentJob(); cur != nil {
		m.sendJob(up, cur, true)
	}
}

// sendJob hands one job to the miner, preceded by a new difficulty when
// vardiff changes it: difficulty only ever changes together with a job.
func (m *miner) sendJob(up session, e *jobEntry, clean bool) {
	m.mu.Lock()
	if m.up != up || !m.hasWork {
		m.mu.Unlock()
		return
	}
	now := m.p.clock.Now()
	var d float64
	if m.diff == 0 { // first job, or after a suggestion
		start := m.srv.cfg.InitialDifficulty
		if m.suggested > 0 {
			start = m.suggested
		}
		d = m.vd.clamp(start, e.poolDiff)
		m.vd.reset(now)
	} else {
		d, _ = m.vd.next(m.diff, e.poolDiff, now)
	}
	m.diff = d
	m.recordJobDiffLocked(e.seq, d)
	var lines [2][]byte
	n := 0
	if d != m.sentDiff {
		sd := stratum.SetDifficulty{Difficulty: d}
		lines[n] = stratum.AppendNotification(nil, &sd)
		n++
		m.sentDiff = d
	}
	lines[n] = e.job.NotifyLine(clean)
	n++
	m.mu.Unlock()
	m.send(lines[:n]...)
}

// submit validates a share locally and either answers it, or forwards it and
// lets the pool's verdict answer it.
func (m *miner) submit(msg *stratum.Message) {
	p := m.p
	var sub stratum.Submit
	if err := sub.DecodeParams(msg.Params); err != nil {
		m.reject(msg.ID, "", "malformed", stratum.CodeOther, err.Error())
		return
	}
	if p.stopping.Load() {
		m.reject(msg.ID, string(sub.Worker), "shutting_down", stratum.CodeOther, "proxyd is shutting down; reconnect")
		return
	}
	m.mu.Lock()
	up, e1, mask := m.up, m.e1, m.mask
	_, authorized := m.workers[string(sub.Worker)]
	subscribed := m.subscribed
	prefixBytes := m.prefixBytes
	m.mu.Unlock()
	worker := string(sub.Worker)
	switch {
	case !subscribed || up == nil:
		m.reject(msg.ID, worker, "not_subscribed", stratum.CodeNotSubscribed, "not subscribed")
		return
	case !authorized:
		m.reject(msg.ID, worker, "unauthorized_worker", stratum.CodeUnauthorized, "unauthorized worker")
		return
	}
	e := up.job(string(sub.JobID))
	if e == nil {
		m.reject(msg.ID, worker, job.ReasonStale.String(), job.ReasonStale.Code(), "job not found (stale)")
		return
	}
	diff := m.jobDifficulty(e.seq)
	sh := job.Share{Extranonce1: e1, VersionMask: mask, Difficulty: diff, NtimeWindow: m.srv.cfg.NtimeWindow}
	sh.FromSubmit(&sub)
	res := e.job.Validate(&sh)
	if !res.Valid() {
		m.reject(msg.ID, worker, res.Reason.String(), res.Reason.Code(), res.Reason.Message())
		return
	}
	now := m.p.clock.Now()
	m.mu.Lock()
	m.lastShare = now
	m.setReadByLocked()
	m.vd.accepted(diff)
	m.countLocked(worker, tally{valid: true, diff: diff, at: now})
	m.mu.Unlock()
	p.acct.valid.Add(1)
	pm := p.metrics
	pm.shareDiffSum.WithLabelValues(m.srv.cfg.Name, up.home().cfg.Name).Add(diff)

	if !res.BlockCandidate && !pow.MeetsDifficulty(&res.Hash, e.poolDiff) {
		p.acct.belowPool.Add(1)
		pm.shares.WithLabelValues(m.srv.cfg.Name, up.home().cfg.Name, "accepted", "below_pool_difficulty").Inc()
		m.send(stratum.AppendBoolResult(nil, msg.ID, true))
		return
	}
	if res.BlockCandidate {
		pm.blockCandidates.WithLabelValues(m.srv.cfg.Name, up.home().cfg.Name).Inc()
		m.log().Info("block candidate: forwarding ahead of everything queued",
			zap.String("pool", up.home().cfg.Name), zap.String("hash", res.Hash.String()), zap.String("job", e.poolJobID), logkeep.Field())
	}
	en2, err := stratum.MakeExtranonce(prefixBytes, sub.Extranonce2.Bytes())
	if err != nil {
		m.reject(msg.ID, worker, "malformed", stratum.CodeOther, err.Error())
		return
	}
	ps := &pendingSubmit{reply: m, id: msg.ID, worker: worker, diff: diff, candidate: res.BlockCandidate}
	p.acct.forwarded.Add(1)
	if err := up.forward(ps, e, en2, &sub); err != nil {
		m.unjudged(ps, up.home().cfg.Name, "upstream_lost", "the pool connection is down: "+err.Error())
	}
}

// recordJobDiffLocked remembers that job seq went out at difficulty d; m.mu held.
func (m *miner) recordJobDiffLocked(seq uint64, d float64) {
	m.jobDiffs[m.jobDiffNext] = jobDiff{seq: seq, diff: d}
	m.jobDiffNext = (m.jobDiffNext + 1) % jobDiffSlots
}

// jobDifficulty is the difficulty the miner was given with job seq (its
// current one for a job it was not sent). Job sequence numbers are
// proxy-wide, so a miner's jobs are spaced by the number of sessions: the
// ring is searched, not indexed by seq (indexing by seq modulo the ring
// size kept only 4 of 32 jobs with 40 sessions, 1 with 32).
func (m *miner) jobDifficulty(seq uint64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, jd := range m.jobDiffs {
		if jd.seq == seq {
			return jd.diff
		}
	}
	return m.diff
}

// reject answers a share that failed locally and counts it.
func (m *miner) reject(id stratum.ID, worker, reason string, code int, message string) {
	p := m.p
	p.acct.reject(reason)
	poolName := ""
	m.mu.Lock()
	if m.up != nil {
		poolName = m.up.home().cfg.Name
	}
	m.countLocked(worker, tally{reject: reason})
	m.mu.Unlock()
	p.metrics.shares.WithLabelValues(m.srv.cfg.Name, poolName, "rejected", reason).Inc()
	m.send(stratum.AppendError(nil, id, code, message))
}

// poolMaskChanged re-derives the granted mask and tells the miner at once.
func (m *miner) poolMaskChanged(poolMask uint32) {
	m.mu.Lock()
	if !m.wantVR {
		m.mu.Unlock()
		return
	}
	granted := m.minerMask & poolMask
	changed := granted != m.mask
	m.mask = granted
	m.mu.Unlock()
	if changed {
		vm := stratum.SetVersionMask{Mask: granted}
		m.send(stratum.AppendNotification(nil, &vm))
	}
}

// extranonceChanged follows the session's new extranonce1: miners that
// subscribed to it are told, the others reconnect.
func (m *miner) extranonceChanged(up session) {
	m.mu.Lock()
	if m.up != up {
		m.mu.Unlock()
		return
	}
	xn, prefix := m.xnsub, m.prefix
	m.mu.Unlock()
	if !xn {
		m.reconnect("pool changed extranonce")
		return
	}
	v := up.view(prefix) // the session's lock, not under the miner's
	m.mu.Lock()
	if m.up != up || m.prefix != prefix { // moved meanwhile: its new session told it
		m.mu.Unlock()
		return
	}
	m.e1 = v.extranonce1
	m.mu.Unlock()
	se := stratum.SetExtranonce{Extranonce1: v.extranonce1, Extranonce2Size: v.e2size}
	m.send(stratum.AppendNotification(nil, &se))
}

// relocate moves the miner off session from (if it is still there): to pool
// to when given, else where routing says. A miner that takes
// mining.set_extranonce keeps its connection; the others are asked to
// reconnect, and routing places them when they come back.
func (m *miner) relocate(from session, to *pool, why string) {
	m.mu.Lock()
	if m.up != from {
		m.mu.Unlock()
		return
	}
	xn := m.xnsub
	prefix := m.prefix
	m.up = nil
	m.hasWork = false
	m.mu.Unlock()
	from.detach(m, prefix) // a no-op when the session already ended
	m.srv.router.unplaced(m, from)
	m.p.metrics.moves.WithLabelValues(m.srv.cfg.Name).Inc()
	if !xn {
		m.reconnect(why)
		return
	}
	if err := m.ensureSessionOn(to, rehomeTimeout); err != nil {
		if isDone(m.closed) {
			return // it left while it waited: nothing to move
		}
		m.log().Warn("no pool session to move the miner to; disconnecting so its firmware can fail over", zap.Error(err))
		m.close("no_pool_session", err)
		return
	}
	m.mu.Lock()
	e1, e2, mask, wantVR := m.e1, m.e2size, m.mask, m.wantVR
	pool := m.up.home().cfg.Name
	m.mu.Unlock()
	se := stratum.SetExtranonce{Extranonce1: e1, Extranonce2Size: e2}
	lines := [][]byte{stratum.AppendNotification(nil, &se)}
	if wantVR {
		vm := stratum.SetVersionMask{Mask: mask}
		lines = append(lines, stratum.AppendNotification(nil, &vm))
	}
	m.send(lines...)
	m.log().Info("moved miner to another pool session", zap.String("pool", pool), zap.String("why", why),
		zap.String("extranonce1", hex.EncodeToString(e1)))
	m.startWork()
}

// move takes the miner off its session from to wherever routing says.
func (m *miner) move(from session, why string) { m.relocate(from, nil, why) }

// moveTo moves the miner from whatever session it is on to pool to.
func (m *miner) moveTo(to *pool, why string) {
	m.mu.Lock()
	from := m.up
	m.mu.Unlock()
	if from != nil && from.home() != to {
		m.relocate(from, to, why)
	}
}

// routingHashrate is the damped estimate the weighted split steers by; the
// router asks, holding nothing.
func (m *miner) routingHashrate(now time.Time) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hashrateLocked(now, true)
}

// hashrateLocked estimates the miner's hashrate over all its workers; m.mu held.
// With routing, it is the damped estimate the weighted split steers by
// (meter.routingRate); otherwise the one shown to operators.
func (m *miner) hashrateLocked(now time.Time, routing bool) float64 {
	var h float64
	for _, ws := range m.workers {
		if routing {
			h += ws.meter.routingRate(now)
		} else {
			h += ws.meter.hashrate(now)
		}
	}
	return h
}

// reconnect asks the miner to reconnect to us (client.reconnect with no
// params) and closes the connection shortly after, whatever it does.
func (m *miner) reconnect(why string) {
	rc := stratum.Reconnect{}
	m.send(stratum.AppendNotification(nil, &rc))
	closeIt := func() { m.close("reconnect", errors.New(why)) }
	if !m.p.tasks.spawn(func() {
		t := m.p.clock.NewTimer(reconnectGrace)
		defer t.Stop()
		select {
		case <-t.C():
			closeIt()
		case <-m.ctx.Done(): // closed meanwhile, or the proxy is stopping
		}
	}) {
		closeIt()
	}
}

// close tears the connection down once; reason labels the metric.
func (m *miner) close(reason string, err error) {
	m.closeOnce.Do(func() {
		// Counted before the socket closes, so whoever sees the
		// disconnect also sees it counted.
		m.p.metrics.disconnects.WithLabelValues(m.srv.cfg.Name, reason).Inc()
		close(m.closed)
		_ = m.conn.Close()
		m.srv.rl.remove(m)
		m.wq.close()
		m.mu.Lock()
		up, prefix := m.up, m.prefix
		m.up = nil
		m.closeReason = reason
		m.mu.Unlock()
		if up != nil {
			up.detach(m, prefix)
			m.srv.router.unplaced(m, up)
		}
		// Retire before leaving the server's list: a worker page skips
		// retired miners, so the worker is always in one place, never in
		// none (or both).
		m.p.retire(m)
		m.srv.remove(m)
		if err != nil && reason != "closed_by_miner" {
			m.log().Debug("miner disconnected", zap.String("reason", reason), zap.Error(err))
		}
	})
}

func (m *miner) String() string { return fmt.Sprintf("miner %d (%s)", m.id, m.conn.RemoteAddr()) }
