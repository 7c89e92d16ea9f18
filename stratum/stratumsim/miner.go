package stratumsim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Errors a Miner returns (wrapped).
var (
	// ErrMinerClosed: the miner was closed.
	ErrMinerClosed = errors.New("stratumsim: miner closed")
	// ErrNotConnected: no connection is open (between reconnects, or after
	// the connection was lost without AutoReconnect).
	ErrNotConnected = errors.New("stratumsim: miner not connected")
	// ErrNotReady: the handshake of the current connection has not
	// completed successfully.
	ErrNotReady = errors.New("stratumsim: miner handshake not complete")
	// ErrNoJob: no job has been received on the current connection.
	ErrNoJob = errors.New("stratumsim: no job received")
	// ErrUnknownJob: SubmitRequest.JobID names a job the miner does not hold.
	ErrUnknownJob = errors.New("stratumsim: unknown job id")
	// ErrSearchExhausted: no share found within MaxHashesPerShare hashes
	// (the difficulty is too high for a simulated miner).
	ErrSearchExhausted = errors.New("stratumsim: share search exhausted")
	// ErrAuthorizeRejected: mining.authorize answered false or an error.
	ErrAuthorizeRejected = errors.New("stratumsim: authorize rejected")
	// ErrSubscribeFailed: mining.subscribe failed or its result was invalid.
	ErrSubscribeFailed = errors.New("stratumsim: subscribe failed")
	// ErrUnrequestedExtension: a mining.configure result held keys for
	// extensions the miner did not request (a Whatsminer then disconnects).
	ErrUnrequestedExtension = errors.New("stratumsim: configure result has unrequested extensions")
	// ErrConnectionLost: the connection ended before an answer.
	ErrConnectionLost = errors.New("stratumsim: connection lost")
)

// Style is a firmware family: its handshake order, subscribe params and
// quirks.
type Style int

// Firmware styles.
const (
	// StylePlain: subscribe ["cpuminer/2.5.1"], authorize; no version
	// rolling.
	StylePlain Style = iota
	// StyleAntminer (bmminer/cgminer): configure(version-rolling),
	// subscribe ["bmminer/2.0.0"], authorize.
	StyleAntminer
	// StyleWhatsminer: suggest_difficulty first, subscribe
	// ["whatsminer/v1.0", null or the previous extranonce1], authorize,
	// configure; fails (and disconnects) on configure result keys it did
	// not request.
	StyleWhatsminer
	// StyleBraiinsOS: subscribe [ua, null, "host:port", null], configure,
	// authorize.
	StyleBraiinsOS
	// StyleBitaxe: subscribe, configure, authorize, suggest_difficulty.
	StyleBitaxe
	// StyleNiceHash: configure, subscribe, mining.extranonce.subscribe,
	// authorize; takes mining.set_extranonce.
	StyleNiceHash
	// StyleIdle connects and sends nothing (never subscribes).
	StyleIdle
)

// AllStyles returns the styles that complete a handshake, for table tests
// and mixed fleets.
func AllStyles() []Style {
	return []Style{StylePlain, StyleAntminer, StyleWhatsminer, StyleBraiinsOS, StyleBitaxe, StyleNiceHash}
}

// String returns the style's name.
func (s Style) String() string {
	switch s {
	case StylePlain:
		return "plain"
	case StyleAntminer:
		return "antminer"
	case StyleWhatsminer:
		return "whatsminer"
	case StyleBraiinsOS:
		return "braiinsos"
	case StyleBitaxe:
		return "bitaxe"
	case StyleNiceHash:
		return "nicehash"
	case StyleIdle:
		return "idle"
	}
	return fmt.Sprintf("style(%d)", int(s))
}

func (s Style) userAgent() string {
	switch s {
	case StyleAntminer:
		return "bmminer/2.0.0"
	case StyleWhatsminer:
		return "whatsminer/v1.0"
	case StyleBraiinsOS:
		return "bosminer-plus-tuner/23.12"
	case StyleBitaxe:
		return "bitaxe/BM1366/v2.4.0"
	case StyleNiceHash:
		return "NiceHash/1.0.0"
	}
	return "cpuminer/2.5.1"
}

// MinerOptions configures a Miner. The zero value is a Plain miner with
// realistic defaults.
type MinerOptions struct {
	Style    Style
	User     string // default "stratumtest.worker"
	Password string // default "x"
	// UserAgent overrides the style's subscribe user agent.
	UserAgent string
	// VersionMask is the mask requested in mining.configure; default
	// DefaultVersionMask.
	VersionMask uint32
	// NoVersionRolling skips mining.configure for styles that send it.
	NoVersionRolling bool
	// SuggestDifficulty is the mining.suggest_difficulty value
	// (Whatsminer, Bitaxe); default DefaultDifficulty.
	SuggestDifficulty float64
	// ExtranonceSubscribe adds mining.extranonce.subscribe after subscribe
	// for any style (StyleNiceHash always sends it).
	ExtranonceSubscribe bool
	// StrictConfigure fails the handshake on unrequested configure result
	// keys for every style (StyleWhatsminer always does).
	StrictConfigure bool
	// Pipeline sends all handshake requests at once instead of waiting
	// for each answer.
	Pipeline bool
	// SharesPerMinute makes a standalone miner submit good shares at this
	// average rate (exponential gaps) from one extra goroutine. A Fleet
	// schedules its miners itself and ignores this.
	SharesPerMinute float64
	// AutoReconnect redials (backing off up to 1s) whenever the connection
	// is lost, until Close.
	AutoReconnect bool
	// FollowRedirect makes client.reconnect with a host/port connect there
	// (default: reconnect to the current address, as most firmware does).
	FollowRedirect bool
	// IgnoreReconnect records client.reconnect but does nothing.
	IgnoreReconnect bool
	// MaxReconnectWait caps client.reconnect's wait param; default 5s.
	MaxReconnectWait time.Duration
	// ReuseSubmitID sends every submit with the same request id (4), a
	// firmware quirk; verdicts are then matched in order.
	ReuseSubmitID bool
	// KeepJobs is how many recent jobs the miner keeps; default 8.
	KeepJobs int
	// HistoryLimit bounds the event and submit lists (the most recent
	// HistoryLimit/2..HistoryLimit entries are kept); default 4096,
	// negative keeps none. Counters are always exact.
	HistoryLimit int
	// MaxHashesPerShare bounds one share search; default 1<<26 (about 10s
	// of one core; a share at difficulty 1e-3 needs 4.3M on average).
	MaxHashesPerShare uint64
	// ReadBufferSize is the bufio size of the connection reader; longer
	// lines are assembled in a separate buffer. Default 2048.
	ReadBufferSize int
	// MaxLineBytes is the longest line accepted from the server; a longer
	// one drops the connection. Default 64 KiB.
	MaxLineBytes int
	// SocketReadBuffer sets SO_RCVBUF (small values make a StopReading
	// miner fill the server's queue quickly); 0 keeps the OS default.
	SocketReadBuffer int
	// WriteTimeout bounds one socket write; default 10s. A timed-out write
	// closes the connection.
	WriteTimeout time.Duration
	// DialTimeout bounds one dial; default 5s.
	DialTimeout time.Duration
	// LocalAddr is the source IP to dial from (e.g. "127.0.0.2"), to get
	// past the ephemeral port range with many connections.
	LocalAddr string
	// NoWait makes DialMiner return once connected, without waiting for
	// the handshake (see WaitReady). A failed handshake then leaves the
	// connection open for inspection.
	NoWait bool
	// Seed makes extranonce2 starts and garbage deterministic.
	Seed uint64
	// OnEvent is called after each event is recorded, from the miner's
	// connection goroutine (EventConnected of the first connection: from
	// DialMiner's caller). It must not block for long.
	OnEvent func(*Miner, Event)
	// OnVerdict is called from the reader goroutine for each submit
	// verdict (including lost ones).
	OnVerdict func(*Miner, SubmitResult)
	// Logf receives debug lines when set.
	Logf func(format string, args ...any)
}

func (o *MinerOptions) setDefaults() {
	if o.User == "" {
		o.User = "stratumtest.worker"
	}
	if o.Password == "" {
		o.Password = "x"
	}
	if o.UserAgent == "" {
		o.UserAgent = o.Style.userAgent()
	}
	if o.VersionMask == 0 {
		o.VersionMask = DefaultVersionMask
	}
	if o.SuggestDifficulty == 0 {
		o.SuggestDifficulty = DefaultDifficulty
	}
	if o.MaxReconnectWait <= 0 {
		o.MaxReconnectWait = 5 * time.Second
	}
	if o.KeepJobs <= 0 {
		o.KeepJobs = 8
	}
	if o.HistoryLimit == 0 {
		o.HistoryLimit = 4096
	}
	if o.MaxHashesPerShare == 0 {
		o.MaxHashesPerShare = 1 << 26
	}
	if o.ReadBufferSize <= 0 {
		o.ReadBufferSize = 2048
	}
	if o.ReadBufferSize < 16 {
		o.ReadBufferSize = 16
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = 64 << 10
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
}

// Miner is a simulated ASIC: one connection (redialled on client.reconnect
// or with AutoReconnect), one reader goroutine, real share hashing in the
// goroutine that asks for a share. All methods are safe for concurrent use.
type Miner struct {
	opts  MinerOptions // immutable after dial
	cache *jobCache    // shared notify cache of a Fleet; nil when standalone
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup // reader goroutine and rate goroutine

	hashes   atomic.Uint64 // hashes computed, all searches
	bytesIn  atomic.Uint64 // bytes read, all connections
	bytesOut atomic.Uint64 // bytes written, all connections

	wmu sync.Mutex // serialises writes to the connection; taken before mu, never after

	mu           sync.Mutex // guards every field below
	addr         string     // current dial target
	cur          *minerConn // current connection (nil between connections)
	last         *minerConn // most recent connection, open or not
	connGen      int
	handshakes   int // successful handshakes, all connections
	nextID       uint64
	rng          *rand.Rand
	e1           []byte
	e2size       int
	subscribed   bool
	authorized   bool
	pendingXN    *xnChange
	diff         float64
	targetDiff   float64 // cache key for target
	target       [32]byte
	rolling      bool
	grantedMask  uint32
	mask         uint32 // in use: granted ∧ requested, or set_version_mask
	unrequested  []string
	subResult    json.RawMessage
	confResult   json.RawMessage
	jobs         []*minerJob
	lastGood     *SubmitResult
	events       []Event
	submits      []*SubmitResult
	stats        MinerStats
	kindCount    [eventKinds]uint64
	reconnectReq *reconnectReq
	paused       chan struct{} // non-nil while StopReading is in effect
	changed      chan struct{} // lazily made; closed on any change
	lastErr      error
}

type xnChange struct {
	e1     []byte
	e2size int
}

type reconnectReq struct {
	addr string
	wait time.Duration
}

// minerConn is one connection of a Miner. c and gen are immutable; the
// rest is guarded by Miner.mu.
type minerConn struct {
	c       net.Conn
	gen     int
	lost    chan struct{} // closed when the connection is over
	closed  bool
	hs      *handshake
	pending map[uint64][]*pendingReq
}

type reqKind int

// Kinds of pending requests.
const (
	reqHandshake reqKind = iota
	reqSubmit
	reqCall
)

type pendingReq struct {
	kind reqKind
	step int
	sub  *Submission
	call chan callResult
}

type callResult struct {
	result json.RawMessage
	err    error
}

// DialMiner connects a miner to addr and, unless opts.NoWait or
// StyleIdle, waits (bounded by ctx) for its handshake; on a handshake
// failure the miner is closed and the error returned.
func DialMiner(ctx context.Context, addr string, opts MinerOptions) (*Miner, error) {
	return dialMiner(ctx, addr, opts, nil)
}

func dialMiner(ctx context.Context, addr string, opts MinerOptions, cache *jobCache) (*Miner, error) {
	opts.setDefaults()
	m := &Miner{
		opts:  opts,
		cache: cache,
		addr:  addr,
		rng:   rand.New(rand.NewPCG(opts.Seed, 0x6a09e667f3bcc908)),
		diff:  1,
	}
	m.ctx, m.stop = context.WithCancel(context.Background())
	c, err := m.dial(ctx, addr)
	if err != nil {
		m.stop()
		return nil, err
	}
	mc := m.attach(c)
	if mc == nil {
		m.stop()
		return nil, ErrMinerClosed
	}
	m.wg.Add(1)
	go m.run(mc)
	if opts.SharesPerMinute > 0 {
		m.wg.Add(1)
		go m.rateLoop(opts.SharesPerMinute)
	}
	if opts.NoWait || opts.Style == StyleIdle {
		return m, nil
	}
	if err := m.WaitReady(ctx); err != nil {
		_ = m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Miner) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: m.opts.DialTimeout}
	if m.opts.LocalAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(m.opts.LocalAddr)}
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("stratumsim: miner dial %s: %w", addr, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		if m.opts.SocketReadBuffer > 0 {
			_ = tc.SetReadBuffer(m.opts.SocketReadBuffer)
		}
	}
	return c, nil
}

// attach makes c the current connection and resets per-connection state.
// It returns nil (closing c) when the miner is closed.
func (m *Miner) attach(c net.Conn) *minerConn {
	m.mu.Lock()
	if m.ctx.Err() != nil {
		m.mu.Unlock()
		_ = c.Close()
		return nil
	}
	m.connGen++
	mc := &minerConn{c: c, gen: m.connGen, lost: make(chan struct{}), pending: make(map[uint64][]*pendingReq)}
	m.cur, m.last = mc, mc
	m.subscribed, m.authorized, m.rolling = false, false, false
	m.grantedMask, m.mask = 0, 0
	m.unrequested, m.subResult, m.confResult = nil, nil, nil
	m.pendingXN = nil
	m.diff = 1
	m.jobs = nil
	mc.hs = m.newHandshakeLocked(c.RemoteAddr().String())
	m.stats.Connects++
	ev := m.recordLocked(Event{Kind: EventConnected, Conn: mc.gen})
	m.mu.Unlock()
	m.emit(ev)
	return mc
}

// Close closes the miner and waits for its goroutines. Pending submits are
// recorded as lost. Idempotent; returns nil.
func (m *Miner) Close() error {
	m.stop()
	m.mu.Lock()
	mc := m.cur
	m.mu.Unlock()
	if mc != nil {
		_ = mc.c.Close()
	}
	m.wg.Wait()
	return nil
}

// Addr returns the address the miner dials (it changes after a followed
// client.reconnect redirect).
func (m *Miner) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

// LocalAddr returns the local address of the current connection ("" when
// not connected).
func (m *Miner) LocalAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil {
		return ""
	}
	return m.cur.c.LocalAddr().String()
}

// User returns the configured user (worker name).
func (m *Miner) User() string { return m.opts.User }

// Style returns the firmware style.
func (m *Miner) Style() Style { return m.opts.Style }

func (m *Miner) logf(format string, args ...any) {
	if m.opts.Logf != nil {
		m.opts.Logf("miner %s: "+format, append([]any{m.opts.User}, args...)...)
	}
}

// run is the miner's one connection goroutine: it reads the connection,
// and redials after client.reconnect or (with AutoReconnect) a loss.
func (m *Miner) run(mc *minerConn) {
	defer m.wg.Done()
	for {
		m.hsSendNext(mc)
		err := m.readConn(mc)
		req, again := m.connLost(mc, err)
		if !again {
			return
		}
		if mc = m.redial(req); mc == nil {
			return
		}
	}
}

// readConn handles lines until the connection fails or a reconnect is
// requested.
func (m *Miner) readConn(mc *minerConn) error {
	lr := &lineReader{r: bufio.NewReaderSize(countingReader{mc.c, &m.bytesIn}, m.opts.ReadBufferSize), max: m.opts.MaxLineBytes}
	for {
		m.mu.Lock()
		paused := m.paused
		m.mu.Unlock()
		if paused != nil {
			select {
			case <-paused:
			case <-m.ctx.Done():
				return ErrMinerClosed
			case <-mc.lost:
				return ErrConnectionLost
			}
		}
		line, err := lr.next()
		if err != nil {
			if m.ctx.Err() != nil {
				return ErrMinerClosed
			}
			return fmt.Errorf("stratumsim: miner read: %w", err)
		}
		if m.handleLine(mc, line) {
			return errReconnecting
		}
	}
}

// errReconnecting ends readConn after a client.reconnect.
var errReconnecting = errors.New("stratumsim: reconnect requested")

// connLost ends mc: pending requests fail, the handshake (if unfinished)
// fails. It returns where to reconnect and whether to.
func (m *Miner) connLost(mc *minerConn, err error) (*reconnectReq, bool) {
	_ = mc.c.Close()
	m.mu.Lock()
	if mc.closed {
		m.mu.Unlock()
		return nil, false
	}
	mc.closed = true
	close(mc.lost)
	if m.cur == mc {
		m.cur = nil
	}
	var lost []SubmitResult
	now := time.Now()
	for _, q := range mc.pending {
		for _, pr := range q {
			switch pr.kind {
			case reqSubmit:
				r := pr.sub.rec
				r.Verdict = VerdictLost
				r.AnsweredAt = now
				m.stats.Pending--
				m.stats.Lost++
				close(pr.sub.done)
				lost = append(lost, *r)
			case reqCall:
				pr.call <- callResult{err: ErrConnectionLost}
			}
		}
	}
	mc.pending = nil
	if !mc.hs.done {
		m.hsFinishLocked(mc, fmt.Errorf("%w during handshake: %w", ErrConnectionLost, err))
	}
	m.stats.Disconnects++
	m.lastErr = err
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	ev := m.recordLocked(Event{Kind: EventDisconnected, Conn: mc.gen, Message: msg})
	req := m.reconnectReq
	m.reconnectReq = nil
	closed := m.ctx.Err() != nil
	if !closed && req == nil && m.opts.AutoReconnect {
		req = &reconnectReq{addr: m.addr}
	}
	m.mu.Unlock()
	m.logf("connection %d lost: %v", mc.gen, err)
	m.emit(ev)
	if cb := m.opts.OnVerdict; cb != nil {
		for _, r := range lost {
			cb(m, r)
		}
	}
	return req, !closed && req != nil
}

// redial connects to req.addr after req.wait, retrying with backoff: for
// ever with AutoReconnect, else 10 attempts. nil when giving up or closed.
func (m *Miner) redial(req *reconnectReq) *minerConn {
	if req.wait > 0 {
		select {
		case <-time.After(req.wait):
		case <-m.ctx.Done():
			return nil
		}
	}
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := m.dial(m.ctx, req.addr)
		if err == nil {
			m.mu.Lock()
			m.addr = req.addr
			m.mu.Unlock()
			return m.attach(c)
		}
		if m.ctx.Err() != nil {
			return nil
		}
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		if !m.opts.AutoReconnect && attempt >= 10 {
			m.logf("giving up reconnecting to %s: %v", req.addr, err)
			return nil
		}
		select {
		case <-time.After(backoff):
		case <-m.ctx.Done():
			return nil
		}
		backoff = min(backoff*2, time.Second)
	}
}

// write writes one or more lines to mc; a failed write closes mc.
func (m *Miner) write(mc *minerConn, b []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	return m.writeLocked(mc, b)
}

// writeLocked is write with m.wmu held.
func (m *Miner) writeLocked(mc *minerConn, b []byte) error {
	_ = mc.c.SetWriteDeadline(time.Now().Add(m.opts.WriteTimeout))
	n, err := mc.c.Write(b)
	m.bytesOut.Add(uint64(n))
	if err != nil {
		_ = mc.c.Close()
		return fmt.Errorf("stratumsim: miner write: %w", err)
	}
	return nil
}

// sendRequest registers pr under a fresh id and writes the request on mc.
// init, when set, runs under m.mu right before registration. Registration
// and write happen under m.wmu, so requests hit the wire in registration
// order (a duplicate never overtakes its original).
func (m *Miner) sendRequest(mc *minerConn, method string, params any, pr *pendingReq, init func(id uint64)) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	if mc == nil || mc.closed || m.cur != mc {
		m.mu.Unlock()
		return ErrNotConnected
	}
	var id uint64
	if pr.kind == reqSubmit && m.opts.ReuseSubmitID {
		id = 4
	} else {
		m.nextID++
		id = m.nextID + 100 // leave room below for the quirky fixed id
	}
	if init != nil {
		init(id)
	}
	mc.pending[id] = append(mc.pending[id], pr)
	m.mu.Unlock()
	return m.writeLocked(mc, requestLine(id, method, params))
}

// currentLocked returns the current connection or an error.
func (m *Miner) currentLocked() (*minerConn, error) {
	if m.ctx.Err() != nil {
		return nil, ErrMinerClosed
	}
	if m.cur == nil {
		return nil, ErrNotConnected
	}
	return m.cur, nil
}

// notifyLocked wakes waiters.
func (m *Miner) notifyLocked() {
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

// waitLoop blocks until cond (called with m.mu held) holds or fails, or
// ctx ends, re-evaluating it on every change.
func (m *Miner) waitLoop(ctx context.Context, what string, cond func() (bool, error)) error {
	for {
		m.mu.Lock()
		ok, err := cond()
		if ok || err != nil {
			m.mu.Unlock()
			return err
		}
		if m.changed == nil {
			m.changed = make(chan struct{})
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("stratumsim: miner %s: waiting for %s: %w", m.opts.User, what, ctx.Err())
		}
	}
}

// rateLoop submits good shares at an average rate (exponential gaps).
func (m *Miner) rateLoop(perMinute float64) {
	defer m.wg.Done()
	mean := float64(time.Minute) / perMinute
	for {
		m.mu.Lock()
		d := time.Duration(m.rng.ExpFloat64() * mean)
		m.mu.Unlock()
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(d):
		}
		if _, err := m.Submit(m.ctx, SubmitRequest{}); err != nil {
			m.logf("rate submit: %v", err)
		}
	}
}
