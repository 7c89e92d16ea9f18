package stratumsim

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// EventKind classifies what a Miner received or went through.
type EventKind int

// Event kinds.
const (
	EventConnected      EventKind = iota + 1 // a connection was established
	EventDisconnected                        // a connection ended (Message: the error)
	EventSetDifficulty                       // mining.set_difficulty (Difficulty)
	EventNotify                              // mining.notify (JobID, Clean, PoolJobSeq, Difficulty in force)
	EventSetExtranonce                       // mining.set_extranonce (Extranonce1, Extranonce2Size)
	EventSetVersionMask                      // mining.set_version_mask (Mask)
	EventReconnect                           // client.reconnect (Host, Port, Wait)
	EventShowMessage                         // client.show_message (Message)
	EventOther                               // any other server method (Message: the method)
	eventKinds
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventSetDifficulty:
		return "set_difficulty"
	case EventNotify:
		return "notify"
	case EventSetExtranonce:
		return "set_extranonce"
	case EventSetVersionMask:
		return "set_version_mask"
	case EventReconnect:
		return "reconnect"
	case EventShowMessage:
		return "show_message"
	case EventOther:
		return "other"
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one thing a Miner received, with its arrival time (monotonic
// clock). Only the fields of its Kind are set.
type Event struct {
	Kind            EventKind
	At              time.Time
	Conn            int // connection number, 1-based
	Difficulty      float64
	JobID           string
	Clean           bool
	PoolJobSeq      uint64 // the Pool job's Seq (0 if not from a Pool)
	Extranonce1     string
	Extranonce2Size int
	Mask            uint32
	Host            string
	Port            int
	Wait            int
	Message         string
}

// MinerStats are a Miner's counters over all its connections.
type MinerStats struct {
	Connects            int    // connections established
	Disconnects         int    // connections ended
	Handshakes          int    // handshakes completed successfully
	Ready               bool   // the current connection's handshake succeeded
	Notifies            uint64 // mining.notify received
	CleanNotifies       uint64 // ... with clean_jobs true
	SetDifficulties     uint64
	SetExtranonces      uint64
	SetVersionMasks     uint64
	Reconnects          uint64 // client.reconnect received
	ShowMessages        uint64
	OtherMessages       uint64
	Submitted           uint64 // submits sent
	Accepted            uint64
	Rejected            uint64
	RejectedByCode      map[int]uint64
	Lost                uint64 // connection ended before the verdict
	Pending             uint64 // no verdict yet
	Unexpected          uint64 // verdicts that differ from the share kind's expectation
	Hashes              uint64 // hashes computed
	SearchFailures      uint64 // share searches that failed (difficulty too high, ctx)
	UnexpectedResponses uint64 // responses matching no request (e.g. to Flood)
	Malformed           uint64 // lines that were not valid Stratum
	BytesIn             uint64 // bytes read from the server, all connections
	BytesOut            uint64 // bytes written to the server, all connections
}

// Stats returns a snapshot of the counters.
func (m *Miner) Stats() MinerStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.statsLocked()
}

func (m *Miner) statsLocked() MinerStats {
	s := m.stats
	s.RejectedByCode = maps.Clone(m.stats.RejectedByCode)
	s.Handshakes = m.handshakes
	s.Ready = m.readyLocked()
	s.Notifies = m.kindCount[EventNotify]
	s.SetDifficulties = m.kindCount[EventSetDifficulty]
	s.SetExtranonces = m.kindCount[EventSetExtranonce]
	s.SetVersionMasks = m.kindCount[EventSetVersionMask]
	s.Reconnects = m.kindCount[EventReconnect]
	s.ShowMessages = m.kindCount[EventShowMessage]
	s.OtherMessages = m.kindCount[EventOther]
	s.Hashes = m.hashes.Load()
	s.BytesIn = m.bytesIn.Load()
	s.BytesOut = m.bytesOut.Load()
	return s
}

func (m *Miner) readyLocked() bool {
	return m.cur != nil && m.cur.hs.done && m.cur.hs.err == nil && len(m.cur.hs.steps) > 0
}

// Count returns how many events of a kind were received (exact, not
// bounded by HistoryLimit).
func (m *Miner) Count(k EventKind) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k <= 0 || k >= eventKinds {
		return 0
	}
	return m.kindCount[k]
}

// Events returns the recorded events in arrival order (bounded by
// HistoryLimit).
func (m *Miner) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

// EventsOf returns the recorded events of one kind.
func (m *Miner) EventsOf(k EventKind) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Event
	for _, e := range m.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// LastEvent returns the most recent recorded event of a kind.
func (m *Miner) LastEvent(k EventKind) (Event, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.events) - 1; i >= 0; i-- {
		if m.events[i].Kind == k {
			return m.events[i], true
		}
	}
	return Event{}, false
}

// Submits returns the recorded submit results in send order (bounded by
// HistoryLimit).
func (m *Miner) Submits() []SubmitResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SubmitResult, len(m.submits))
	for i, r := range m.submits {
		out[i] = *r
	}
	return out
}

// AcceptedSubmits returns the recorded results the miner got true for.
func (m *Miner) AcceptedSubmits() []SubmitResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SubmitResult
	for _, r := range m.submits {
		if r.Verdict == VerdictAccepted {
			out = append(out, *r)
		}
	}
	return out
}

// HandshakeInfo describes the current connection's negotiation.
type HandshakeInfo struct {
	Conn            int    // connection number (0: not connected)
	Done            bool   // handshake finished (successfully or not)
	Err             error  // why it failed
	Subscribed      bool   // subscribe answered with a valid result
	Authorized      bool   // authorize answered true
	Extranonce1     string // hex, from subscribe (or a set_extranonce since applied)
	Extranonce2Size int
	// VersionRolling is true when a mask was granted and is in use.
	VersionRolling bool
	GrantedMask    uint32 // mask in the configure result
	VersionMask    uint32 // mask in use: granted (or set_version_mask) ∧ requested
	// UnrequestedKeys lists configure result keys for extensions the miner
	// did not ask for (a real Whatsminer disconnects on them).
	UnrequestedKeys []string
	SubscribeResult json.RawMessage
	ConfigureResult json.RawMessage
	Difficulty      float64 // last set_difficulty (1 before any)
}

// Handshake returns the current connection's negotiation state.
func (m *Miner) Handshake() HandshakeInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := HandshakeInfo{
		Subscribed:      m.subscribed,
		Authorized:      m.authorized,
		Extranonce1:     hex.EncodeToString(m.e1),
		Extranonce2Size: m.e2size,
		VersionRolling:  m.rolling,
		GrantedMask:     m.grantedMask,
		VersionMask:     m.mask,
		UnrequestedKeys: slices.Clone(m.unrequested),
		SubscribeResult: slices.Clone(m.subResult),
		ConfigureResult: slices.Clone(m.confResult),
		Difficulty:      m.diff,
	}
	if m.cur != nil {
		h.Conn, h.Done, h.Err = m.cur.gen, m.cur.hs.done, m.cur.hs.err
	}
	return h
}

// JobView describes a job a miner holds.
type JobView struct {
	ID          string
	PoolJobSeq  uint64
	Clean       bool
	Superseded  bool    // a later clean job arrived
	Difficulty  float64 // in force when it arrived
	Extranonce1 string  // in force when it arrived
	ReceivedAt  time.Time
}

// Jobs returns the jobs the miner holds on the current connection, oldest
// first.
func (m *Miner) Jobs() []JobView {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]JobView, len(m.jobs))
	for i, j := range m.jobs {
		out[i] = JobView{j.data.id, j.data.poolSeq, j.data.clean, j.superseded, j.diff, hex.EncodeToString(j.e1), j.at}
	}
	return out
}

// CurrentJob returns the newest job held.
func (m *Miner) CurrentJob() (JobView, bool) {
	jobs := m.Jobs()
	if len(jobs) == 0 {
		return JobView{}, false
	}
	return jobs[len(jobs)-1], true
}

// Difficulty returns the last difficulty received (1 before any).
func (m *Miner) Difficulty() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.diff
}

// Connected reports whether a connection is open.
func (m *Miner) Connected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur != nil
}

// Ready reports whether the current connection completed its handshake.
func (m *Miner) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readyLocked()
}

// Err returns the last connection or handshake error.
func (m *Miner) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// WaitReady waits for the handshake of the most recent connection (open
// or already lost) and returns its error.
func (m *Miner) WaitReady(ctx context.Context) error {
	m.mu.Lock()
	mc := m.last
	m.mu.Unlock()
	if mc == nil {
		return ErrNotConnected
	}
	select {
	case <-mc.hs.ready:
	case <-ctx.Done():
		return fmt.Errorf("stratumsim: miner %s: handshake: %w", m.opts.User, ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return mc.hs.err
}

// WaitHandshakes waits until n handshakes in total have completed
// successfully (n=2: ready again after one reconnect).
func (m *Miner) WaitHandshakes(ctx context.Context, n int) error {
	return m.waitLoop(ctx, fmt.Sprintf("%d handshakes", n), func() (bool, error) {
		return m.handshakes >= n, nil
	})
}

// WaitEvents waits until at least n events of kind k were received in
// total.
func (m *Miner) WaitEvents(ctx context.Context, k EventKind, n uint64) error {
	return m.waitLoop(ctx, fmt.Sprintf("%d %s events", n, k), func() (bool, error) {
		return k > 0 && k < eventKinds && m.kindCount[k] >= n, nil
	})
}

// WaitJob waits until the miner holds a job on a ready connection.
func (m *Miner) WaitJob(ctx context.Context) error {
	return m.waitLoop(ctx, "a job", func() (bool, error) {
		return m.readyLocked() && len(m.jobs) > 0, nil
	})
}

// WaitPoolJob waits until the newest job the miner holds on a ready
// connection is the Pool's job seq or a later one (Pool.NewJob and
// Pool.SetTemplate return the seq; a proxy passes it through in coinb2).
func (m *Miner) WaitPoolJob(ctx context.Context, seq uint64) error {
	return m.waitLoop(ctx, fmt.Sprintf("pool job %d", seq), func() (bool, error) {
		return m.readyLocked() && len(m.jobs) > 0 && m.jobs[len(m.jobs)-1].data.poolSeq >= seq, nil
	})
}

// WaitFor waits until cond holds for the miner's counters.
func (m *Miner) WaitFor(ctx context.Context, cond func(MinerStats) bool) error {
	return m.waitLoop(ctx, "condition", func() (bool, error) {
		return cond(m.statsLocked()), nil
	})
}

// WaitDisconnected waits until the connection open at the call (if any)
// has ended.
func (m *Miner) WaitDisconnected(ctx context.Context) error {
	m.mu.Lock()
	mc := m.cur
	m.mu.Unlock()
	if mc == nil {
		return nil
	}
	select {
	case <-mc.lost:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stratumsim: miner %s: waiting for disconnect: %w", m.opts.User, ctx.Err())
	}
}
