package stratumsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/bits"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// session is one connection to the Pool. It has a reader goroutine (which
// handles requests) and a writer goroutine (which drains the output queue).
type session struct {
	id          uint64
	conn        net.Conn
	remote      string
	connectedAt time.Time
	maxQueue    int
	done        chan struct{} // closed by close
	writerDone  chan struct{} // closed when writeLoop returns
	closeOnce   sync.Once

	// guarded by Pool.mu
	open       bool
	closedAt   time.Time
	subscribed bool
	ready      bool // subscribed and authorized: jobs flow
	ua         string
	subParams  string
	e1         []byte
	e2size     int
	users      []string
	userSet    map[string]bool
	rolling    bool
	mask       uint32
	xnsub      bool
	suggested  float64
	diff       float64
	sent       map[string]*sentJob
	methods    []string
	submits    uint64
	accepted   uint64
	rejected   uint64

	// Output queue. qmu is a leaf lock: it may be taken while holding
	// Pool.mu, never the other way round.
	qmu     sync.Mutex
	q       []outLine
	delayed []delayedLine
	signal  chan struct{} // capacity 1: "queue changed"
}

type outLine struct {
	b   []byte
	job *poolJob // set for notify lines, to record send times
}

type delayedLine struct {
	at time.Time
	b  []byte
}

// close closes the connection once; both goroutines then exit.
func (s *session) close() {
	s.closeOnce.Do(func() {
		_ = s.conn.Close()
		close(s.done)
	})
}

// enqueue queues a line for the writer. A session whose queue exceeds its
// bound is closed (slow consumer).
func (s *session) enqueue(b []byte, j *poolJob) {
	s.qmu.Lock()
	over := len(s.q)+len(s.delayed) >= s.maxQueue
	if !over {
		s.q = append(s.q, outLine{b, j})
	}
	s.qmu.Unlock()
	if over {
		s.close()
		return
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// enqueueAt queues a line to be written no earlier than at.
func (s *session) enqueueAt(b []byte, at time.Time) {
	s.qmu.Lock()
	s.delayed = append(s.delayed, delayedLine{at, b})
	s.qmu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *session) noteMethodLocked(m string) {
	if len(s.methods) < 64 {
		s.methods = append(s.methods, m)
	}
}

// countingReader counts bytes read into a Pool counter.
type countingReader struct {
	c net.Conn
	n *atomic.Uint64
}

func (r countingReader) Read(b []byte) (int, error) {
	n, err := r.c.Read(b)
	r.n.Add(uint64(n))
	return n, err
}

// addSession registers an accepted connection and starts its goroutines.
func (p *Pool) addSession(c net.Conn, stop chan struct{}) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	p.mu.Lock()
	if !p.running || p.stopCh != stop {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.nextSession++
	s := &session{
		id:          p.nextSession,
		conn:        c,
		remote:      c.RemoteAddr().String(),
		connectedAt: time.Now(),
		maxQueue:    p.opts.MaxQueuedLines,
		done:        make(chan struct{}),
		writerDone:  make(chan struct{}),
		open:        true,
		e2size:      p.opts.Extranonce2Size,
		userSet:     make(map[string]bool),
		diff:        p.difficulty,
		sent:        make(map[string]*sentJob),
		signal:      make(chan struct{}, 1),
	}
	if f := p.opts.Extranonce1Func; f != nil {
		s.e1 = append([]byte(nil), f(s.id)...)
	} else {
		s.e1 = p.defaultE1Locked(s.id, 0)
	}
	p.sessions[s.id] = s
	p.stats.SessionsOpen++
	p.stats.SessionsTotal++
	p.notifyLocked()
	p.wg.Add(2)
	p.mu.Unlock()
	p.logf("session %d from %s", s.id, s.remote)
	go p.readLoop(s)
	go p.writeLoop(s)
}

// readLoop reads and handles requests until the connection ends.
func (p *Pool) readLoop(s *session) {
	defer p.wg.Done()
	defer p.endSession(s)
	lr := &lineReader{r: bufio.NewReaderSize(countingReader{s.conn, &p.bytesIn}, 4096), max: p.opts.MaxLineBytes}
	for {
		line, err := lr.next()
		if err != nil {
			p.logf("session %d: read: %v", s.id, err)
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		p.handle(s, line)
	}
}

// endSession closes s and moves it to the closed list. It waits for the
// writer first, so a session counted closed has counted every byte it wrote
// (the peer may have read the last line before the writer counted it).
func (p *Pool) endSession(s *session) {
	s.close()
	<-s.writerDone
	p.mu.Lock()
	defer p.mu.Unlock()
	if !s.open {
		return
	}
	s.open = false
	s.closedAt = time.Now()
	delete(p.sessions, s.id)
	p.stats.SessionsOpen--
	if s.ready {
		p.stats.SessionsReady--
	}
	p.closedInfo = append(p.closedInfo, s.infoLocked())
	if len(p.closedInfo) > 10_000 {
		p.closedInfo = append(p.closedInfo[:0], p.closedInfo[len(p.closedInfo)-5_000:]...)
	}
	p.notifyLocked()
}

// writeLoop writes queued lines (and delayed ones when due) until the
// session closes.
func (p *Pool) writeLoop(s *session) {
	defer p.wg.Done()
	defer close(s.writerDone)
	var bufs net.Buffers
	var jobs []*poolJob
	for {
		s.qmu.Lock()
		batch := s.q
		s.q = nil
		now := time.Now()
		bufs = bufs[:0]
		var next time.Time
		keep := s.delayed[:0]
		for _, d := range s.delayed {
			if !d.at.After(now) {
				bufs = append(bufs, d.b)
			} else {
				keep = append(keep, d)
				if next.IsZero() || d.at.Before(next) {
					next = d.at
				}
			}
		}
		clear(s.delayed[len(keep):])
		s.delayed = keep
		s.qmu.Unlock()

		jobs = jobs[:0]
		for _, l := range batch {
			bufs = append(bufs, l.b)
			if l.job != nil {
				jobs = append(jobs, l.job)
			}
		}
		if len(bufs) > 0 {
			if len(jobs) > 0 {
				// Stamped just before the write, so a miner never sees a
				// notify whose job has no send time yet.
				at := time.Now()
				p.mu.Lock()
				for _, j := range jobs {
					if j.firstSent.IsZero() {
						j.firstSent = at
					}
					j.lastSent = at
					j.sends++
				}
				p.mu.Unlock()
			}
			_ = s.conn.SetWriteDeadline(time.Now().Add(p.opts.WriteTimeout))
			n, err := bufs.WriteTo(s.conn)
			p.bytesOut.Add(uint64(n))
			if err != nil {
				p.logf("session %d: write: %v", s.id, err)
				s.close()
				return
			}
		}
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = time.After(time.Until(next))
		}
		select {
		case <-s.signal:
		case <-timer:
		case <-s.done:
			return
		}
	}
}

// holdSubscribe waits SubscribeDelay (or until the session ends), counting
// the sessions waiting at once.
func (p *Pool) holdSubscribe(s *session) {
	p.mu.Lock()
	p.subscribing++
	p.stats.MaxSubscribing = max(p.stats.MaxSubscribing, p.subscribing)
	p.mu.Unlock()
	t := time.NewTimer(p.opts.SubscribeDelay)
	select {
	case <-t.C:
	case <-s.done:
		t.Stop()
	}
	p.mu.Lock()
	p.subscribing--
	p.mu.Unlock()
}

// handle processes one request line.
func (p *Pool) handle(s *session, line []byte) {
	var msg inMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		p.mu.Lock()
		p.stats.Malformed++
		s.enqueue(responseLine(nil, nil, &RPCError{CodeOther, "Malformed JSON"}), nil)
		p.notifyLocked()
		p.mu.Unlock()
		return
	}
	if msg.Method == "" {
		return // a response (e.g. to client.get_version): nothing to do
	}
	if msg.Method == "mining.submit" {
		p.handleSubmit(s, msg.ID, msg.Params)
		return
	}
	if msg.Method == "mining.subscribe" && p.opts.SubscribeDelay > 0 {
		p.holdSubscribe(s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.notifyLocked()
	s.noteMethodLocked(msg.Method)
	reply := func(result any, e *RPCError) { s.enqueue(responseLine(msg.ID, result, e), nil) }
	var params []json.RawMessage
	if !isNull(msg.Params) {
		if err := json.Unmarshal(msg.Params, &params); err != nil {
			p.stats.Malformed++
			reply(nil, &RPCError{CodeOther, "params must be an array"})
			return
		}
	}
	str := func(i int) string {
		var v string
		if i < len(params) {
			_ = json.Unmarshal(params[i], &v)
		}
		return v
	}
	switch msg.Method {
	case "mining.configure":
		reply(p.configureLocked(s, params), nil)
	case "mining.subscribe":
		s.subscribed = true
		s.ua = str(0)
		s.subParams = truncate(string(msg.Params), 256)
		sub := strconv.FormatUint(s.id, 16)
		reply([]any{
			[]any{[]any{"mining.set_difficulty", sub}, []any{"mining.notify", sub}},
			hexStr(s.e1), s.e2size,
		}, nil)
		p.maybeReadyLocked(s)
	case "mining.authorize":
		user, pass := str(0), str(1)
		ok := p.authorize == nil || p.authorize(user, pass)
		if ok && !s.userSet[user] {
			s.userSet[user] = true
			s.users = append(s.users, user)
		}
		reply(ok, nil)
		if ok {
			p.maybeReadyLocked(s)
		}
	case "mining.extranonce.subscribe":
		s.xnsub = true
		reply(true, nil)
	case "mining.suggest_difficulty":
		if len(params) > 0 {
			var d float64
			if json.Unmarshal(params[0], &d) == nil {
				s.suggested = d
			}
		}
		reply(true, nil)
	case "mining.suggest_target":
		reply(true, nil)
	case "mining.ping":
		reply("pong", nil)
	default:
		reply(nil, &RPCError{CodeOther, "Unknown method " + truncate(msg.Method, 64)})
	}
}

// configureLocked answers mining.configure: a value for every requested
// extension and only those.
func (p *Pool) configureLocked(s *session, params []json.RawMessage) map[string]any {
	var exts []string
	var opt map[string]json.RawMessage
	if len(params) > 0 {
		_ = json.Unmarshal(params[0], &exts)
	}
	if len(params) > 1 {
		_ = json.Unmarshal(params[1], &opt)
	}
	res := make(map[string]any, len(exts)+1)
	for _, e := range exts {
		switch e {
		case "version-rolling":
			req := uint32(0xffffffff)
			var h string
			if json.Unmarshal(opt["version-rolling.mask"], &h) == nil {
				if v, err := strconv.ParseUint(h, 16, 32); err == nil {
					req = uint32(v)
				}
			}
			var minBits float64
			_ = json.Unmarshal(opt["version-rolling.min-bit-count"], &minBits)
			granted := p.mask & req
			if p.opts.NoVersionRolling || granted == 0 || float64(bits.OnesCount32(granted)) < minBits {
				res[e] = false
				s.rolling, s.mask = false, 0
				continue
			}
			res[e] = true
			res["version-rolling.mask"] = hex32(granted)
			s.rolling, s.mask = true, granted
		case "subscribe-extranonce":
			res[e] = true
			s.xnsub = true
		default:
			res[e] = false
		}
	}
	return res
}

// maybeReadyLocked starts work for a session once it is subscribed and has
// an authorized user: set_difficulty, then the current job (clean).
func (p *Pool) maybeReadyLocked(s *session) {
	if s.ready || !s.subscribed || len(s.users) == 0 {
		return
	}
	s.ready = true
	p.stats.SessionsReady++
	s.enqueue(notificationLine("mining.set_difficulty", []any{s.diff}), nil)
	if j := p.currentJobLocked(); j != nil && !p.opts.NoJobs {
		p.sendJobLocked(s, j, true)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// SessionInfo describes one Pool session.
type SessionInfo struct {
	ID                   uint64
	Remote               string    // peer address
	UserAgent            string    // first subscribe param
	SubscribeParams      string    // raw subscribe params (truncated to 256 bytes)
	Subscribed           bool      // sent mining.subscribe
	Ready                bool      // subscribed and authorized: receives jobs
	Extranonce1          string    // current extranonce1, hex
	Extranonce2Size      int       // current extranonce2_size
	Users                []string  // authorized users, in authorize order
	VersionRolling       bool      // negotiated version rolling
	VersionMask          uint32    // mask in force (0 without version rolling)
	ExtranonceSubscribed bool      // sent mining.extranonce.subscribe (or configure subscribe-extranonce)
	SuggestedDifficulty  float64   // last mining.suggest_difficulty value
	Difficulty           float64   // difficulty in force for the next job
	Methods              []string  // first 64 request methods, in arrival order
	Submits              uint64    // mining.submit count
	Accepted             uint64    // accepted shares
	Rejected             uint64    // rejected shares
	ConnectedAt          time.Time // accept time
	ClosedAt             time.Time // zero while open
	Open                 bool
}

func (s *session) infoLocked() SessionInfo {
	return SessionInfo{
		ID:                   s.id,
		Remote:               s.remote,
		UserAgent:            s.ua,
		SubscribeParams:      s.subParams,
		Subscribed:           s.subscribed,
		Ready:                s.ready,
		Extranonce1:          hexStr(s.e1),
		Extranonce2Size:      s.e2size,
		Users:                append([]string(nil), s.users...),
		VersionRolling:       s.rolling,
		VersionMask:          s.mask,
		ExtranonceSubscribed: s.xnsub,
		SuggestedDifficulty:  s.suggested,
		Difficulty:           s.diff,
		Methods:              append([]string(nil), s.methods...),
		Submits:              s.submits,
		Accepted:             s.accepted,
		Rejected:             s.rejected,
		ConnectedAt:          s.connectedAt,
		ClosedAt:             s.closedAt,
		Open:                 s.open,
	}
}

// String summarises the session for test logs.
func (s SessionInfo) String() string {
	return fmt.Sprintf("session %d %s e1=%s/%d users=%v mask=%08x", s.ID, s.Remote, s.Extranonce1, s.Extranonce2Size, s.Users, s.VersionMask)
}
