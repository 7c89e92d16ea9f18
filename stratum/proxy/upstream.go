package proxy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/version"
	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/job"
)

// Upstream request ids: the handshake uses fixed ids, submits count up from
// firstSubmitID so a verdict can never be mistaken for a handshake answer.
const (
	idConfigure   = 1
	idSubscribe   = 2
	idAuthorize   = 3
	firstSubmitID = 100
)

// Upstream tuning.
const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 15 * time.Second
	// upstreamReadTimeout: pools send a job at least every minute or two;
	// this much silence means the TCP session is dead even if no RST came.
	upstreamReadTimeout = 5 * time.Minute
	upstreamQueueLimit  = 8 << 20
	upstreamLineLimit   = 64 << 10 // pools' notify lines are larger than miners' lines
	// keepJobs is how many recent jobs of a prevhash stay valid for late shares.
	keepJobs = 16
	// requestedMask is the version-rolling mask asked of the pool (BIP320's bits).
	requestedMask = 0x1fffe000
)

type sessionState int

const (
	stateConnecting sessionState = iota
	stateActive
	stateClosed
)

func (s sessionState) String() string {
	switch s {
	case stateConnecting:
		return "connecting"
	case stateActive:
		return "active"
	}
	return "closed"
}

// jobEntry is one pool job as miners see it: the pool's id is replaced by a
// proxy-wide sequence number, so job ids never collide across sessions or
// pools (a share for another session's job is then plainly stale).
type jobEntry struct {
	job       *job.Job
	seq       uint64
	poolJobID string
	// poolDiff is the pool's difficulty for this job: shares at or above it
	// are forwarded.
	poolDiff float64
	received time.Time
}

// jobSet is an immutable snapshot of a session's valid jobs, swapped
// atomically so the submit path looks jobs up without a lock.
type jobSet struct {
	byID  map[string]*jobEntry
	order []*jobEntry // oldest first
}

// pendingSubmit is a share forwarded to the pool, waiting for its verdict.
type pendingSubmit struct {
	reply     verdictPath // the way the share came: its miner
	id        stratum.ID  // the miner's request id, echoed in the answer
	worker    string
	diff      float64
	sent      time.Time
	candidate bool
}

// upstream is one Stratum session to a pool, shared by up to split.Capacity
// miners. Its reader goroutine (run) owns the connection's read side and
// publishes jobs; everything else is guarded by mu (lock order: doc.go).
// Fan-out collects the miners, unlocks, then sends.
type upstream struct {
	pool  *pool
	id    uint64
	log   *zap.Logger
	ready chan struct{} // closed once subscribed and authorized
	done  chan struct{} // closed when the session has ended
	jobs  atomic.Pointer[jobSet]
	wq    *writeQueue // nil until connected
	// started is when the pool opened the session (set before run starts,
	// read under the pool's mu).
	started time.Time

	// active mirrors state == stateActive so the pool and the router can
	// ask without taking mu (setState writes both).
	active atomic.Bool

	mu       sync.Mutex
	conn     net.Conn
	state    sessionState // written with setState
	err      error
	e1       []byte
	split    Split
	prefixes *prefixes
	// mask is the version-rolling mask the pool granted (0: none). Written
	// under mu; atomic so a miner reads it holding only its own lock.
	mask        atomic.Uint32
	nextDiff    float64
	current     *jobEntry
	miners      map[*miner]struct{}
	pending     map[uint64]*pendingSubmit
	nextID      uint64
	connectedAt time.Time
	readyAt     time.Time // when the handshake completed; zero before
	lastJobAt   time.Time
	emptySince  time.Time // when the last miner left; zero while miners are on it
	accepted    uint64
	rejected    uint64
	noVerdict   uint64
	latency     time.Duration // EWMA of submit round trips
	draining    bool          // takes no new miners (pool asked us to reconnect)
	retired     bool          // closed by us (idle, or silent): its end says nothing about the pool
	workerAuths sessionAuths  // passthrough authorizations (identity.go)
}

func newUpstream(pl *pool, id uint64) *upstream {
	u := &upstream{
		pool:        pl,
		id:          id,
		log:         pl.log.With(zap.Uint64("session", id)),
		ready:       make(chan struct{}),
		done:        make(chan struct{}),
		miners:      map[*miner]struct{}{},
		pending:     map[uint64]*pendingSubmit{},
		workerAuths: newSessionAuths(pl),
		nextID:      firstSubmitID,
		// Stratum's difficulty before any mining.set_difficulty is 1.
		nextDiff: 1,
	}
	u.jobs.Store(&jobSet{byID: map[string]*jobEntry{}})
	return u
}

// run dials the pool, performs the handshake and reads until the session
// ends; then it fails what is pending and hands the miners back to the pool.
func (u *upstream) run(ctx context.Context) {
	err := u.session(ctx)
	u.mu.Lock()
	wasActive := u.state == stateActive
	u.setState(stateClosed)
	if u.err == nil {
		u.err = err
	}
	pending := u.pending
	u.pending = map[uint64]*pendingSubmit{}
	miners := u.miners
	u.miners = map[*miner]struct{}{}
	conn := u.conn
	u.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	if u.wq != nil {
		u.wq.close()
	}
	u.failAuths()
	select {
	case <-u.ready:
	default:
		close(u.ready)
	}
	close(u.done)
	switch {
	case ctx.Err() != nil: // shutting down: expected
		u.log.Debug("pool session closed", zap.Int("miners", len(miners)))
	case wasActive:
		u.log.Warn("pool session ended", zap.Error(err), zap.Int("miners", len(miners)), zap.Int("pending_shares", len(pending)))
	default:
		u.log.Debug("pool session attempt failed", zap.Error(err))
	}
	for _, ps := range pending {
		ps.reply.unjudged(ps, u.pool.cfg.Name, "upstream_lost", "the pool connection was lost before the pool's verdict arrived")
	}
	u.pool.sessionEnded(u, miners)
}

func (u *upstream) session(ctx context.Context) error {
	conn, err := dialPool(ctx, u.pool.addr, u.pool.tls, dialTimeout)
	if err != nil {
		return fmt.Errorf("connecting to pool %s at %s: %w", u.pool.cfg.Name, u.pool.addr, err)
	}
	m := u.pool.proxy.metrics
	wq := newWriteQueue(conn, upstreamQueueLimit, 30*time.Second, true,
		m.upBytes.WithLabelValues(u.pool.cfg.Name, "out"), func(error) { _ = conn.Close() })
	u.mu.Lock()
	u.conn = conn
	u.connectedAt = u.pool.proxy.clock.Now()
	u.wq = wq
	u.mu.Unlock()
	// The session ends with ctx (shutdown) too.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	// BIP310: negotiate version rolling first, then subscribe and
	// authorize, pipelined: one round trip instead of three.
	var hs []byte
	hs = stratum.AppendRequest(hs, stratum.NumberID(idConfigure), &stratum.Configure{
		Extensions: []string{stratum.ExtVersionRolling},
		Params: stratum.Object{
			{Key: "version-rolling.mask", Value: []byte(`"` + fmt.Sprintf("%08x", requestedMask) + `"`)},
			{Key: "version-rolling.min-bit-count", Value: []byte("2")},
		},
	})
	hs = stratum.AppendRequest(hs, stratum.NumberID(idSubscribe), &stratum.Subscribe{UserAgent: "proxyd/" + version.Version})
	hs = stratum.AppendRequest(hs, stratum.NumberID(idAuthorize), &stratum.Authorize{User: u.pool.cfg.User, Password: u.pool.cfg.Password})
	if err := wq.send(false, hs); err != nil {
		return fmt.Errorf("sending handshake to pool %s: %w", u.pool.cfg.Name, err)
	}

	r := stratum.NewReader(conn, upstreamLineLimit)
	in := newByteCounter(m.upBytes.WithLabelValues(u.pool.cfg.Name, "in"))
	var msg stratum.Message
	deadline := time.Now().Add(handshakeTimeout)
	for {
		if u.isActive() {
			deadline = time.Now().Add(upstreamReadTimeout)
		}
		_ = conn.SetReadDeadline(deadline)
		line, err := r.ReadLine()
		in.update(r.BytesRead())
		if err != nil {
			if !u.isActive() && isTimeout(err) {
				return fmt.Errorf("pool %s did not complete subscribe and authorize within %s", u.pool.cfg.Name, handshakeTimeout)
			}
			return fmt.Errorf("reading from pool %s: %w", u.pool.cfg.Name, err)
		}
		if err := stratum.ParseMessage(line, &msg); err != nil {
			u.log.Warn("ignoring malformed line from pool", zap.Error(err), zap.ByteString("line", truncate(line, 200)))
			continue
		}
		if err := u.handle(&msg); err != nil {
			return err
		}
	}
}

// hasError reports whether a response carries an error ("error": null is none).
func hasError(msg *stratum.Message) bool {
	return len(msg.Error) > 0 && string(msg.Error) != "null"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func (u *upstream) isAuthResponse(id uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.workerAuths.pending[id]
	return ok
}

// isActive reports whether the session is subscribed and authorized. It
// takes no lock: the pool asks holding its own.
func (u *upstream) isActive() bool { return u.active.Load() }

// setState moves the session to st; u.mu held.
func (u *upstream) setState(st sessionState) {
	u.state = st
	u.active.Store(st == stateActive)
}

// handle processes one message from the pool; an error ends the session.
func (u *upstream) handle(msg *stratum.Message) error {
	switch msg.Kind {
	case stratum.KindResponse:
		id, ok := msg.ID.Uint64()
		if !ok {
			return nil
		}
		switch id {
		case idConfigure:
			u.onConfigure(msg)
		case idSubscribe:
			return u.onSubscribe(msg)
		case idAuthorize:
			return u.onAuthorize(msg)
		default:
			if u.isAuthResponse(id) {
				ok, _ := stratum.ParseBoolResult(msg.Result)
				var perr *stratum.Error
				if hasError(msg) {
					perr, _ = stratum.ParseError(msg.Error)
					ok = false
				}
				u.finishAuth(id, ok, perr)
				return nil
			}
			u.onVerdict(id, msg)
		}
		return nil
	case stratum.KindNotification, stratum.KindRequest:
		return u.onMethod(msg)
	}
	return nil
}

func (u *upstream) onConfigure(msg *stratum.Message) {
	mask := uint32(0)
	if msg.Result != nil && !hasError(msg) {
		if res, err := stratum.ParseConfigureResult(msg.Result); err == nil {
			if ok, m, err := res.VersionRolling(); err == nil && ok {
				mask = m
			}
		}
	}
	u.mu.Lock()
	u.mask.Store(mask)
	u.mu.Unlock()
	u.pool.noteMask(mask)
	if mask == 0 {
		u.log.Info("pool does not allow version rolling; miners will hash without it",
			zap.ByteString("answer", truncate(msg.Result, 200)))
	} else {
		u.log.Info("pool granted version rolling", zap.String("mask", fmt.Sprintf("%08x", mask)))
	}
}

func (u *upstream) onSubscribe(msg *stratum.Message) error {
	if hasError(msg) {
		e, _ := stratum.ParseError(msg.Error)
		return fmt.Errorf("pool %s refused mining.subscribe: %v", u.pool.cfg.Name, e)
	}
	res, err := stratum.ParseSubscribeResult(msg.Result)
	if err != nil {
		return fmt.Errorf("pool %s sent an unusable subscribe result: %w", u.pool.cfg.Name, err)
	}
	split, err := PlanSplit(res.Extranonce2Size, u.pool.splitPolicy())
	if err != nil {
		return fmt.Errorf("pool %s: %w", u.pool.cfg.Name, err)
	}
	u.mu.Lock()
	u.e1 = append([]byte(nil), res.Extranonce1...)
	u.split = split
	u.prefixes = newPrefixes(split)
	u.mu.Unlock()
	u.pool.capacity.Store(int64(split.Capacity))
	u.log.Info("pool session subscribed",
		zap.String("extranonce1", hex.EncodeToString(res.Extranonce1)),
		zap.Int("pool_extranonce2_size", res.Extranonce2Size),
		zap.Int("prefix_bytes", split.PrefixBytes),
		zap.Int("miner_extranonce2_size", split.MinerExtranonce2Size),
		zap.Int("miners_per_session", split.Capacity),
		zap.String("why", split.Why))
	return nil
}

func (u *upstream) onAuthorize(msg *stratum.Message) error {
	ok, err := stratum.ParseBoolResult(msg.Result)
	if err != nil || !ok {
		e, _ := stratum.ParseError(msg.Error)
		return fmt.Errorf("pool %s refused authorization of user %q: %v", u.pool.cfg.Name, u.pool.cfg.User, e)
	}
	u.mu.Lock()
	if u.prefixes == nil {
		u.mu.Unlock()
		return fmt.Errorf("pool %s authorized before answering mining.subscribe", u.pool.cfg.Name)
	}
	u.setState(stateActive)
	u.readyAt = u.pool.proxy.clock.Now()
	u.mu.Unlock()
	close(u.ready)
	u.pool.sessionReady()
	u.log.Info("pool session ready", zap.String("user", u.pool.cfg.User))
	return nil
}

// onMethod handles the pool's notifications and requests.
func (u *upstream) onMethod(msg *stratum.Message) error {
	switch msg.Method {
	case stratum.MethodNotify:
		var n stratum.Notify
		if err := n.DecodeParams(msg.Params); err != nil {
			u.log.Warn("ignoring malformed mining.notify from pool", zap.Error(err))
			return nil
		}
		u.onNotify(&n, u.pool.proxy.clock.Now())
	case stratum.MethodSetDifficulty:
		var d stratum.SetDifficulty
		if err := d.DecodeParams(msg.Params); err != nil || !(d.Difficulty > 0) {
			u.log.Warn("ignoring bad mining.set_difficulty from pool", zap.Error(err))
			return nil
		}
		u.mu.Lock()
		u.nextDiff = d.Difficulty
		u.mu.Unlock()
		u.log.Debug("pool difficulty for the next job", zap.Float64("difficulty", d.Difficulty))
	case stratum.MethodSetVersionMask:
		var v stratum.SetVersionMask
		if err := v.DecodeParams(msg.Params); err != nil {
			u.log.Warn("ignoring bad mining.set_version_mask from pool", zap.Error(err))
			return nil
		}
		u.onVersionMask(v.Mask)
	case stratum.MethodSetExtranonce:
		var s stratum.SetExtranonce
		if err := s.DecodeParams(msg.Params); err != nil {
			u.log.Warn("ignoring bad mining.set_extranonce from pool", zap.Error(err))
			return nil
		}
		u.onSetExtranonce(&s)
	case stratum.MethodReconnect:
		var rc stratum.Reconnect
		_ = rc.DecodeParams(msg.Params)
		// The pool wants this session gone: stop giving it miners and open a
		// fresh one to the configured address (a pool redirect to another
		// host is not followed: the operator chose the pool).
		u.log.Info("pool asked us to reconnect; moving this session's miners to a fresh session",
			zap.String("host", rc.Host), zap.Int("port", rc.Port), zap.Int("wait_s", rc.Wait))
		u.mu.Lock()
		u.draining = true
		u.mu.Unlock()
		return errors.New("pool sent client.reconnect")
	case stratum.MethodShowMessage:
		var sm stratum.ShowMessage
		_ = sm.DecodeParams(msg.Params)
		u.log.Info("message from pool", zap.String("text", sm.Text))
	case stratum.MethodGetVersion:
		if msg.Kind == stratum.KindRequest {
			res := append([]byte(`"proxyd/`), version.Version...)
			res = append(res, '"')
			_ = u.wq.send(false, stratum.AppendResult(nil, msg.ID, res))
		}
	case stratum.MethodPing:
		if msg.Kind == stratum.KindRequest {
			_ = u.wq.send(false, stratum.AppendResult(nil, msg.ID, []byte(`"pong"`)))
		}
	default:
		if msg.Kind == stratum.KindRequest {
			_ = u.wq.send(false, stratum.AppendError(nil, msg.ID, stratum.CodeOther, "unsupported method "+string(msg.MethodName)))
		}
	}
	return nil
}

// onNotify turns a pool job into a jobEntry and fans it out to every miner
// on the session: one encoded line, many queued writes.
func (u *upstream) onNotify(n *stratum.Notify, received time.Time) {
	p := u.pool.proxy
	seq := p.jobSeq.Add(1)
	poolJobID := n.JobID
	n.JobID = strconv.FormatUint(seq, 16)
	u.mu.Lock()
	extranonceSize := len(u.e1) + u.split.PoolExtranonce2Size
	poolDiff := u.nextDiff
	u.mu.Unlock()
	j, err := job.New(n, job.Config{ExtranonceSize: extranonceSize})
	if err != nil {
		u.log.Warn("ignoring unusable job from pool", zap.String("job", poolJobID), zap.Error(err))
		return
	}
	e := &jobEntry{job: j, seq: seq, poolJobID: poolJobID, poolDiff: poolDiff, received: received}

	old := u.jobs.Load()
	next := &jobSet{byID: make(map[string]*jobEntry, keepJobs)}
	if !n.CleanJobs {
		keep := old.order
		if len(keep) >= keepJobs {
			keep = keep[len(keep)-keepJobs+1:]
		}
		next.order = append(next.order, keep...)
	}
	next.order = append(next.order, e)
	for _, x := range next.order {
		next.byID[x.job.ID()] = x
	}
	u.jobs.Store(next)

	u.mu.Lock()
	u.current = e
	u.lastJobAt = received
	miners := make([]*miner, 0, len(u.miners))
	for m := range u.miners {
		miners = append(miners, m)
	}
	u.mu.Unlock()

	for _, m := range miners {
		m.sendJob(u, e, n.CleanJobs)
	}
	p.metrics.fanout.WithLabelValues(u.pool.cfg.Name).Observe(p.clock.Now().Sub(received).Seconds())
}

func (u *upstream) onVersionMask(mask uint32) {
	u.mu.Lock()
	u.mask.Store(mask)
	miners := make([]*miner, 0, len(u.miners))
	for m := range u.miners {
		miners = append(miners, m)
	}
	u.mu.Unlock()
	u.pool.noteMask(mask)
	u.log.Info("pool changed the version-rolling mask", zap.String("mask", fmt.Sprintf("%08x", mask)))
	for _, m := range miners {
		m.poolMaskChanged(mask)
	}
}

// onSetExtranonce applies the pool's new extranonce1 (and size). Jobs of the
// old extranonce can no longer produce valid shares, so they are dropped;
// miners that subscribed to extranonce changes get theirs at once, the rest
// are asked to reconnect.
func (u *upstream) onSetExtranonce(s *stratum.SetExtranonce) {
	u.mu.Lock()
	if s.Extranonce2Size != u.split.PoolExtranonce2Size {
		// A different split would renumber every miner's prefix: end the
		// session and let the miners move to a fresh one.
		u.mu.Unlock()
		u.log.Warn("pool changed extranonce2_size; reconnecting this session",
			zap.Int("from", u.split.PoolExtranonce2Size), zap.Int("to", s.Extranonce2Size))
		u.mu.Lock()
		u.draining = true
		conn := u.conn
		u.mu.Unlock()
		_ = conn.Close()
		return
	}
	u.e1 = append([]byte(nil), s.Extranonce1...)
	u.current = nil
	miners := make([]*miner, 0, len(u.miners))
	for m := range u.miners {
		miners = append(miners, m)
	}
	u.mu.Unlock()
	u.jobs.Store(&jobSet{byID: map[string]*jobEntry{}})
	u.log.Info("pool changed extranonce1", zap.String("extranonce1", hex.EncodeToString(s.Extranonce1)), zap.Int("miners", len(miners)))
	for _, m := range miners {
		m.extranonceChanged(u)
	}
}

// attach takes a prefix for m on this session, or reports that it is full or
// not usable.
func (u *upstream) attach(m *miner) (prefix uint32, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != stateActive || u.draining {
		return 0, false
	}
	v, err := u.prefixes.take()
	if err != nil {
		return 0, false
	}
	u.miners[m] = struct{}{}
	u.emptySince = time.Time{}
	return v, true
}

// detach releases m's prefix.
func (u *upstream) detach(m *miner, prefix uint32) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.miners[m]; !ok {
		return
	}
	delete(u.miners, m)
	if u.prefixes != nil {
		u.prefixes.release(prefix)
	}
	if len(u.miners) == 0 {
		u.emptySince = u.pool.proxy.clock.Now()
	}
}

// minerView is what a miner needs from its session at subscribe time.
type minerView struct {
	extranonce1 []byte // E1 ‖ prefix
	prefix      []byte
	e2size      int
	mask        uint32
	current     *jobEntry
	nextDiff    float64
}

// versionMask is the version-rolling mask the pool granted (0: none). It
// takes no lock: a miner asks holding its own.
func (u *upstream) versionMask() uint32 { return u.mask.Load() }

// currentJob is the session's latest job, nil before the first.
func (u *upstream) currentJob() *jobEntry {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.current
}

func (u *upstream) view(prefix uint32) minerView {
	u.mu.Lock()
	defer u.mu.Unlock()
	e1 := make([]byte, 0, len(u.e1)+u.split.PrefixBytes)
	e1 = append(e1, u.e1...)
	pb := u.prefixes.encode(prefix)
	e1 = append(e1, pb...)
	return minerView{extranonce1: e1, prefix: pb, e2size: u.split.MinerExtranonce2Size, mask: u.mask.Load(), current: u.current, nextDiff: u.nextDiff}
}

// forward sends a share upstream under the pool's user. The miner is
// answered when the pool's verdict arrives (or it times out).
func (u *upstream) forward(ps *pendingSubmit, e *jobEntry, en2 stratum.Extranonce, sub *stratum.Submit) error {
	u.mu.Lock()
	if u.state != stateActive {
		u.mu.Unlock()
		return errors.New("pool session is not active")
	}
	id := u.nextID
	u.nextID++
	ps.sent = u.pool.proxy.clock.Now()
	u.pending[id] = ps
	u.mu.Unlock()

	name := u.pool.upstreamName(ps.worker)
	if u.pool.cfg.Identity == "passthrough" {
		u.authorizeWorker(name) // queued ahead of the submit if this session has not seen the worker yet
	}
	up := stratum.Submit{
		Worker:         []byte(name),
		JobID:          []byte(e.poolJobID),
		Extranonce2:    en2,
		NTime:          sub.NTime,
		Nonce:          sub.Nonce,
		VersionBits:    sub.VersionBits,
		HasVersionBits: sub.HasVersionBits,
	}
	line := stratum.AppendRequest(make([]byte, 0, 192), stratum.NumberID(id), &up)
	if err := u.wq.send(ps.candidate, line); err != nil {
		u.mu.Lock()
		_, still := u.pending[id]
		delete(u.pending, id)
		u.mu.Unlock()
		if still {
			return fmt.Errorf("writing to pool: %w", err)
		}
	}
	return nil
}

// onVerdict relays the pool's verdict on a forwarded share to its miner.
func (u *upstream) onVerdict(id uint64, msg *stratum.Message) {
	u.mu.Lock()
	ps, ok := u.pending[id]
	if ok {
		delete(u.pending, id)
	}
	u.mu.Unlock()
	if !ok {
		u.log.Debug("verdict for a share no longer pending (timed out earlier)", zap.Uint64("id", id))
		return
	}
	rtt := u.pool.proxy.clock.Now().Sub(ps.sent)
	accepted := false
	var perr *stratum.Error
	if hasError(msg) {
		perr, _ = stratum.ParseError(msg.Error)
	} else {
		accepted, _ = stratum.ParseBoolResult(msg.Result)
	}
	if perr == nil && !accepted {
		perr = &stratum.Error{Code: stratum.CodeOther, Message: "rejected by pool"}
	}
	u.mu.Lock()
	if accepted {
		u.accepted++
	} else {
		u.rejected++
	}
	if u.latency == 0 {
		u.latency = rtt
	} else {
		u.latency = (u.latency*7 + rtt) / 8
	}
	u.mu.Unlock()
	u.pool.proxy.metrics.submitLatency.WithLabelValues(u.pool.cfg.Name).Observe(rtt.Seconds())
	if !ps.candidate { // see router.noteVerdict
		u.pool.srv.router.noteVerdict(u.pool, u.pool.proxy.clock.Now(), !accepted)
	}
	ps.reply.judged(ps, u.pool.cfg.Name, accepted, perr)
}

// expire answers shares whose verdict is overdue.
func (u *upstream) expire(now time.Time, timeout time.Duration) {
	var late []*pendingSubmit
	u.mu.Lock()
	for id, ps := range u.pending {
		if now.Sub(ps.sent) >= timeout {
			late = append(late, ps)
			delete(u.pending, id)
			u.noVerdict++
		}
	}
	u.mu.Unlock()
	for _, ps := range late {
		if !ps.candidate { // see router.noteVerdict
			u.pool.srv.router.noteVerdict(u.pool, now, true)
		}
		ps.reply.unjudged(ps, u.pool.cfg.Name, "timeout",
			fmt.Sprintf("the pool did not answer within %s", timeout))
	}
}

// silentSince reports whether the active session has sent no job for at
// least d at now, and since when (its last job, else its handshake).
func (u *upstream) silentSince(now time.Time, d time.Duration) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	since := u.lastJobAt
	if since.IsZero() {
		since = u.readyAt
	}
	if u.state != stateActive || u.draining || since.IsZero() {
		return since, false
	}
	return since, now.Sub(since) >= d
}

func (u *upstream) pendingCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.pending)
}

// close ends the session by our decision.
func (u *upstream) close() {
	u.mu.Lock()
	conn := u.conn
	u.draining, u.retired = true, true
	u.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}
