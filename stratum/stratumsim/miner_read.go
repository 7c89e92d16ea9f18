package stratumsim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"time"
)

// minerJob is a job as one miner holds it: the shared parsed notify plus
// what was in force for this miner when it arrived. data, e1, e2size,
// diff, at and conn are immutable; superseded and claims are guarded by
// Miner.mu.
type minerJob struct {
	data       *jobData
	e1         []byte // never mutated: a new extranonce installs a new slice
	e2size     int
	diff       float64
	at         time.Time
	conn       int
	superseded bool   // a later clean job arrived
	claims     uint64 // next extranonce2/ntime claim
}

// handleLine dispatches one line from the server. It reports whether a
// client.reconnect asks to drop the connection.
func (m *Miner) handleLine(mc *minerConn, line []byte) (reconnect bool) {
	if m.cache != nil {
		if jd := m.cache.get(line); jd != nil {
			m.onNotify(mc, jd)
			return false
		}
	}
	var msg inMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		m.malformed("invalid JSON", line)
		return false
	}
	if msg.Method == "" {
		m.onResponse(mc, &msg)
		return false
	}
	var params []json.RawMessage
	_ = json.Unmarshal(msg.Params, &params)
	str := func(i int) string {
		var s string
		if i < len(params) {
			_ = json.Unmarshal(params[i], &s)
		}
		return s
	}
	num := func(i int) (float64, bool) {
		if i >= len(params) {
			return 0, false
		}
		var f float64
		if json.Unmarshal(params[i], &f) == nil {
			return f, true
		}
		if s := str(i); s != "" {
			if v, err := strconv.ParseFloat(s, 64); err == nil {
				return v, true
			}
		}
		return 0, false
	}

	var ev Event
	switch msg.Method {
	case "mining.notify":
		jd, err := parseNotify(msg.Params)
		if err != nil {
			m.malformed(err.Error(), line)
			return false
		}
		if m.cache != nil {
			m.cache.put(line, jd)
		}
		m.onNotify(mc, jd)
		return false
	case "mining.set_difficulty":
		d, ok := num(0)
		if !ok || !(d > 0) {
			m.malformed("bad set_difficulty", line)
			return false
		}
		m.mu.Lock()
		m.diff = d
		ev = m.recordLocked(Event{Kind: EventSetDifficulty, Difficulty: d})
		m.mu.Unlock()
	case "mining.set_extranonce":
		e1hex := str(0)
		e1, err := hex.DecodeString(e1hex)
		if err != nil || len(params) == 0 {
			m.malformed("bad set_extranonce", line)
			return false
		}
		m.mu.Lock()
		size := m.e2size
		if v, ok := num(1); ok && v >= 0 {
			size = int(v)
		}
		m.pendingXN = &xnChange{e1: e1, e2size: size}
		ev = m.recordLocked(Event{Kind: EventSetExtranonce, Extranonce1: e1hex, Extranonce2Size: size})
		m.mu.Unlock()
	case "mining.set_version_mask":
		v, err := strconv.ParseUint(str(0), 16, 32)
		if err != nil {
			m.malformed("bad set_version_mask", line)
			return false
		}
		m.mu.Lock()
		if m.grantedMask != 0 || m.rolling {
			m.mask = uint32(v) & m.opts.VersionMask
			m.rolling = m.mask != 0
		}
		ev = m.recordLocked(Event{Kind: EventSetVersionMask, Mask: uint32(v)})
		m.mu.Unlock()
	case "client.reconnect":
		host := str(0)
		port, _ := num(1)
		wait, _ := num(2)
		m.mu.Lock()
		ev = m.recordLocked(Event{Kind: EventReconnect, Host: host, Port: int(port), Wait: int(wait)})
		if !m.opts.IgnoreReconnect {
			addr := m.addr
			if m.opts.FollowRedirect && host != "" {
				p := strconv.Itoa(int(port))
				if port == 0 {
					_, p, _ = net.SplitHostPort(addr)
				}
				addr = net.JoinHostPort(host, p)
			}
			w := min(time.Duration(wait*float64(time.Second)), m.opts.MaxReconnectWait)
			m.reconnectReq = &reconnectReq{addr: addr, wait: max(w, 0)}
			reconnect = true
		}
		m.mu.Unlock()
	case "client.show_message":
		m.mu.Lock()
		ev = m.recordLocked(Event{Kind: EventShowMessage, Message: str(0)})
		m.mu.Unlock()
	default:
		m.mu.Lock()
		ev = m.recordLocked(Event{Kind: EventOther, Message: msg.Method})
		m.mu.Unlock()
		if msg.Method == "client.get_version" && !isNull(msg.ID) {
			_ = m.write(mc, responseLine(msg.ID, m.opts.UserAgent, nil))
		}
	}
	m.emit(ev)
	return reconnect
}

func (m *Miner) malformed(why string, line []byte) {
	m.mu.Lock()
	m.stats.Malformed++
	m.notifyLocked()
	m.mu.Unlock()
	m.logf("malformed line (%s): %.200s", why, line)
}

// onNotify installs a job: pending set_extranonce applies now; a clean job
// supersedes the earlier ones.
func (m *Miner) onNotify(mc *minerConn, jd *jobData) {
	m.mu.Lock()
	if m.cur != mc {
		m.mu.Unlock()
		return
	}
	if x := m.pendingXN; x != nil {
		m.e1, m.e2size, m.pendingXN = x.e1, x.e2size, nil
	}
	mj := &minerJob{data: jd, e1: m.e1, e2size: m.e2size, diff: m.diff, at: time.Now(), conn: mc.gen}
	switch {
	case mj.e2size >= 8:
		mj.claims = m.rng.Uint64()
	case mj.e2size > 0:
		mj.claims = m.rng.Uint64N(uint64(1) << (8 * mj.e2size))
	}
	if jd.clean {
		for _, j := range m.jobs {
			j.superseded = true
		}
		m.stats.CleanNotifies++
	}
	m.jobs = append(m.jobs, mj)
	if len(m.jobs) > m.opts.KeepJobs {
		m.jobs = slices.Delete(m.jobs, 0, len(m.jobs)-m.opts.KeepJobs)
	}
	ev := m.recordLocked(Event{Kind: EventNotify, JobID: jd.id, Clean: jd.clean, PoolJobSeq: jd.poolSeq, Difficulty: mj.diff, At: mj.at})
	m.mu.Unlock()
	m.emit(ev)
}

// onResponse matches a response to its request (FIFO per id).
func (m *Miner) onResponse(mc *minerConn, msg *inMessage) {
	id, ok := parseID(msg.ID)
	m.mu.Lock()
	q := mc.pending[id]
	if !ok || len(q) == 0 {
		m.stats.UnexpectedResponses++
		m.notifyLocked()
		m.mu.Unlock()
		return
	}
	pr := q[0]
	if len(q) == 1 {
		delete(mc.pending, id)
	} else {
		mc.pending[id] = q[1:]
	}
	rpcErr := parseRPCError(msg.Error)
	switch pr.kind {
	case reqHandshake:
		closeConn := m.onHandshakeAnswerLocked(mc, pr.step, msg.Result, rpcErr)
		m.mu.Unlock()
		if closeConn {
			_ = mc.c.Close()
			return
		}
		m.hsSendNext(mc)
	case reqSubmit:
		r := m.verdictLocked(pr.sub, msg.Result, rpcErr)
		m.mu.Unlock()
		if cb := m.opts.OnVerdict; cb != nil {
			cb(m, r)
		}
	case reqCall:
		m.mu.Unlock()
		if rpcErr != nil {
			pr.call <- callResult{err: rpcErr}
		} else {
			pr.call <- callResult{result: msg.Result}
		}
	}
}

// verdictLocked records a submit's answer.
func (m *Miner) verdictLocked(sub *Submission, res json.RawMessage, e *RPCError) SubmitResult {
	r := sub.rec
	r.AnsweredAt = time.Now()
	switch {
	case e != nil:
		r.Verdict, r.Code, r.Message = VerdictRejected, e.Code, e.Message
	case bytes.Equal(bytes.TrimSpace(res), []byte("true")):
		r.Verdict = VerdictAccepted
	default:
		r.Verdict, r.Message = VerdictRejected, "result "+string(res)
	}
	m.stats.Pending--
	if r.Verdict == VerdictAccepted {
		m.stats.Accepted++
	} else {
		m.stats.Rejected++
		if m.stats.RejectedByCode == nil {
			m.stats.RejectedByCode = make(map[int]uint64)
		}
		m.stats.RejectedByCode[r.Code]++
	}
	if !r.AsExpected() {
		m.stats.Unexpected++
	}
	close(sub.done)
	m.notifyLocked()
	return *r
}

// recordLocked stamps, counts and (within HistoryLimit) keeps an event.
func (m *Miner) recordLocked(ev Event) Event {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	if ev.Conn == 0 && m.cur != nil {
		ev.Conn = m.cur.gen
	}
	m.kindCount[ev.Kind]++
	if lim := m.opts.HistoryLimit; lim > 0 {
		m.events = append(m.events, ev)
		if len(m.events) > lim {
			m.events = slices.Delete(m.events, 0, len(m.events)/2)
		}
	}
	m.notifyLocked()
	return ev
}

func (m *Miner) emit(ev Event) {
	if cb := m.opts.OnEvent; cb != nil && ev.Kind != 0 {
		cb(m, ev)
	}
}
