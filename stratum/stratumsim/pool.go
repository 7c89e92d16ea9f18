package stratumsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"
)

// ErrPoolClosed is returned by Pool.Start after Close.
var ErrPoolClosed = errors.New("stratumsim: pool closed")

// PoolOptions configures a Pool. The zero value is a working pool on a free
// loopback port with realistic defaults.
type PoolOptions struct {
	// Addr is the listen address; default "127.0.0.1:0". A fixed port makes
	// Restart come back on the same port (it always does: the first port
	// chosen is kept).
	Addr string
	// Extranonce1Size is the extranonce1 length per session, 1..16; default 4.
	Extranonce1Size int
	// Extranonce2Size is the extranonce2_size given to sessions, 1..16;
	// default 8.
	Extranonce2Size int
	// Extranonce1Func, when set, returns the extranonce1 for a session (its
	// length overrides Extranonce1Size). Default: unique per session, derived
	// from a counter (unique for 256^Extranonce1Size sessions).
	Extranonce1Func func(sessionID uint64) []byte
	// InitialDifficulty is the difficulty sent after authorize; default
	// DefaultDifficulty.
	InitialDifficulty float64
	// VersionMask is the BIP310 mask the pool allows; a configure request
	// is granted VersionMask ∧ requested mask. Default DefaultVersionMask.
	VersionMask uint32
	// NoVersionRolling answers version-rolling requests with false.
	NoVersionRolling bool
	// Authorize decides mining.authorize; nil accepts every user. It runs
	// under the pool's lock: it must not call Pool methods.
	Authorize func(user, password string) bool
	// JobInterval sends a new (non-clean) job this often; 0 sends jobs only
	// on NewJob (and one on each session's authorize).
	JobInterval time.Duration
	// NoJobs authorizes sessions but never sends mining.notify (an
	// "unhealthy pool").
	NoJobs bool
	// SubscribeDelay holds each session's mining.subscribe this long before
	// answering it, like a pool across a WAN; the session's later lines
	// wait behind it. PoolStats.MaxSubscribing counts how many sessions
	// were waiting at once.
	SubscribeDelay time.Duration
	// MerkleBranches is the merkle branch length; default 12, negative for
	// an empty branch.
	MerkleBranches int
	// NBits is the jobs' compact network target; default DefaultNBits (no
	// block candidates). EasyNBits makes every share a block candidate.
	NBits uint32
	// BlockHeight goes into the coinbase (BIP34); default 900000.
	BlockHeight uint32
	// Template, when set, is the first JobTemplate: every job is built on
	// it (and on those SetTemplate installs later) instead of an invented
	// block, and NBits, BlockHeight and MerkleBranches are not used.
	Template *JobTemplate
	// KeepJobs is how many recent jobs stay valid; older ones are stale
	// (21). A clean job makes all earlier ones stale. Default 8.
	KeepJobs int
	// SetExtranonceToAll makes SetExtranonce notify every session, not only
	// those that sent mining.extranonce.subscribe (real pools: only those).
	SetExtranonceToAll bool
	// RejectFunc, when set, is asked about every share that passed
	// validation (before the duplicate check); returning reject=true
	// rejects it with code and msg. It runs on the session's goroutine,
	// outside the pool's lock, possibly concurrently for several sessions.
	RejectFunc func(Share) (code int, msg string, reject bool)
	// OnShare is called (from the session's goroutine, outside the pool's
	// lock) with every share's final record.
	OnShare func(Share)
	// KeepShares bounds the share records kept for Shares,
	// AcceptedShares, AcceptedHash and Unaccounted (the most recent
	// KeepShares/2..KeepShares are kept); default 200000, negative keeps
	// none. Counters are always exact.
	KeepShares int
	// MaxLineBytes is the longest request line accepted; a longer one
	// closes the session. Default 64 KiB.
	MaxLineBytes int
	// MaxQueuedLines bounds each session's unsent output; a session over it
	// is closed as a slow consumer. Default 100000.
	MaxQueuedLines int
	// WriteTimeout bounds one socket write; default 10s.
	WriteTimeout time.Duration
	// Seed makes job contents, extranonces and job ids deterministic.
	Seed uint64
	// Logf, when set, receives debug lines (for example t.Logf).
	Logf func(format string, args ...any)
}

func (o *PoolOptions) setDefaults() error {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Extranonce1Size == 0 {
		o.Extranonce1Size = 4
	}
	if o.Extranonce2Size == 0 {
		o.Extranonce2Size = 8
	}
	if o.Extranonce1Size < 1 || o.Extranonce1Size > 16 || o.Extranonce2Size < 1 || o.Extranonce2Size > 16 {
		return fmt.Errorf("stratumsim: extranonce sizes %d/%d out of range 1..16", o.Extranonce1Size, o.Extranonce2Size)
	}
	if o.InitialDifficulty == 0 {
		o.InitialDifficulty = DefaultDifficulty
	}
	if !(o.InitialDifficulty > 0) {
		return fmt.Errorf("stratumsim: initial difficulty %v must be positive", o.InitialDifficulty)
	}
	if o.VersionMask == 0 {
		o.VersionMask = DefaultVersionMask
	}
	if o.MerkleBranches == 0 {
		o.MerkleBranches = 12
	}
	if o.MerkleBranches < 0 {
		o.MerkleBranches = 0
	}
	if o.NBits == 0 {
		o.NBits = DefaultNBits
	}
	if o.BlockHeight == 0 {
		o.BlockHeight = 900_000
	}
	if o.KeepJobs <= 0 {
		o.KeepJobs = 8
	}
	if o.KeepShares == 0 {
		o.KeepShares = 200_000
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = 64 << 10
	}
	if o.MaxQueuedLines <= 0 {
		o.MaxQueuedLines = 100_000
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	return nil
}

// Pool is a Stratum V1 pool on loopback that validates every share itself
// (with btcd's header serialization, independently of any proxy code) and
// records everything for assertions. All methods are safe for concurrent
// use.
type Pool struct {
	opts PoolOptions // immutable after StartPool

	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64

	lifeMu sync.Mutex     // serialises Start, Stop and Close
	wg     sync.WaitGroup // accept loop, ticker, session readers and writers

	mu sync.Mutex // guards every field below and every session's state
	// (not its output queue, see session.qmu).
	addr        string
	ln          net.Listener
	running     bool
	closed      bool
	stopCh      chan struct{} // closed by Stop; one per Start
	rng         *rand.Rand
	nextSession uint64
	e1Base      uint64
	sessions    map[uint64]*session // open sessions
	closedInfo  []SessionInfo       // closed sessions, oldest first (bounded)
	jobs        []*poolJob          // valid jobs, oldest first
	jobLog      []*poolJob          // every job created (bounded)
	jobSeq      uint64
	jobIDBase   uint64
	tmpl        *templateState // nil: invented blocks
	prevHash    [32]byte
	payout      [20]byte
	difficulty  float64
	mask        uint32
	authorize   func(user, password string) bool
	rejectFunc  func(Share) (int, string, bool)
	forced      []forcedVerdict
	delay       time.Duration
	subscribing int // sessions held in SubscribeDelay now
	suppress    bool
	stats       PoolStats
	byCode      map[int]uint64
	users       map[string]*UserStats
	shares      []Share
	accepted    map[chainhash.Hash]struct{}
	acceptedLog []chainhash.Hash // insertion order, to bound accepted
	changed     chan struct{}    // closed and replaced on every change
}

type forcedVerdict struct {
	code int
	msg  string
}

// StartPool starts a pool listening on opts.Addr (default 127.0.0.1:0).
func StartPool(opts PoolOptions) (*Pool, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	p := &Pool{
		opts:       opts,
		addr:       opts.Addr,
		rng:        rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15)),
		sessions:   make(map[uint64]*session),
		difficulty: opts.InitialDifficulty,
		mask:       opts.VersionMask,
		authorize:  opts.Authorize,
		rejectFunc: opts.RejectFunc,
		byCode:     make(map[int]uint64),
		users:      make(map[string]*UserStats),
		accepted:   make(map[chainhash.Hash]struct{}),
		changed:    make(chan struct{}),
	}
	if opts.Template != nil {
		st, err := newTemplateState(opts.Template)
		if err != nil {
			return nil, err
		}
		p.tmpl = st
	}
	p.e1Base = p.rng.Uint64()
	p.jobIDBase = uint64(p.rng.Uint32())
	fillRand(p.rng, p.payout[:])
	p.newPrevHash()
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// Addr returns the listen address "127.0.0.1:port". It stays the same across
// Stop/Start and Restart.
func (p *Pool) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// URL returns "stratum+tcp://" + Addr().
func (p *Pool) URL() string { return "stratum+tcp://" + p.Addr() }

// Port returns the listen port.
func (p *Pool) Port() int {
	_, port, _ := net.SplitHostPort(p.Addr())
	n, _ := strconv.Atoi(port)
	return n
}

// Start (re)opens the listener on Addr after Stop, with a fresh clean job:
// a restarted pool knows none of the previous jobs. It is a no-op when
// running and fails after Close.
func (p *Pool) Start() error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPoolClosed
	}
	if p.running {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("stratumsim: pool listen %s: %w", p.addr, err)
	}
	p.ln = ln
	p.addr = ln.Addr().String()
	p.running = true
	p.stopCh = make(chan struct{})
	p.jobs = nil
	p.newPrevHash()
	p.createJobLocked(true)
	p.wg.Add(1)
	go p.acceptLoop(ln, p.stopCh)
	if p.opts.JobInterval > 0 {
		p.wg.Add(1)
		go p.jobTicker(p.stopCh)
	}
	p.notifyLocked()
	return nil
}

// Stop closes the listener and every session and waits for their
// goroutines; counters and records are kept and Start brings the pool back
// on the same address (a pool crash/restart for failover tests).
func (p *Pool) Stop() {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	p.stopLocked()
}

func (p *Pool) stopLocked() {
	p.mu.Lock()
	if !p.running {
		p.mu.Unlock()
		return
	}
	p.running = false
	close(p.stopCh)
	ln := p.ln
	p.ln = nil
	ss := p.openSessionsLocked()
	p.mu.Unlock()
	_ = ln.Close()
	for _, s := range ss {
		s.close()
	}
	p.wg.Wait()
}

// Restart is Stop then Start on the same address.
func (p *Pool) Restart() error {
	p.Stop()
	return p.Start()
}

// Close stops the pool for good and waits for all its goroutines. It is
// idempotent and always returns nil (the error is for io.Closer).
func (p *Pool) Close() error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	p.stopLocked()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

// DropAll closes every open session (the listener keeps accepting). It
// returns how many were closed.
func (p *Pool) DropAll() int {
	p.mu.Lock()
	ss := p.openSessionsLocked()
	p.mu.Unlock()
	for _, s := range ss {
		s.close()
	}
	return len(ss)
}

// Kick closes one session; false if it is not open.
func (p *Pool) Kick(sessionID uint64) bool {
	p.mu.Lock()
	s := p.sessions[sessionID]
	p.mu.Unlock()
	if s == nil {
		return false
	}
	s.close()
	return true
}

// NewJob creates a job and sends it to every subscribed, authorized session
// (unless NoJobs). clean=true also gives it a new prevhash (a new block;
// with a JobTemplate the template's prevhash stays) and makes every earlier
// job stale. It returns the job's record.
func (p *Pool) NewJob(clean bool) JobInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	if clean {
		p.newPrevHash()
	}
	j := p.createJobLocked(clean)
	p.broadcastJobLocked(j)
	p.notifyLocked()
	return j.infoLocked()
}

// SetDifficulty sets every session's difficulty (and the one new sessions
// get) and sends mining.set_difficulty at once; it applies to jobs sent
// after it, as in the protocol.
func (p *Pool) SetDifficulty(d float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.difficulty = d
	line := notificationLine("mining.set_difficulty", []any{d})
	for _, s := range p.sessions {
		s.diff = d
		if s.subscribed {
			s.enqueue(line, nil)
		}
	}
}

// SetSessionDifficulty sets one session's difficulty and sends it
// mining.set_difficulty; false if the session is not open.
func (p *Pool) SetSessionDifficulty(sessionID uint64, d float64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sessions[sessionID]
	if s == nil {
		return false
	}
	s.diff = d
	s.enqueue(notificationLine("mining.set_difficulty", []any{d}), nil)
	return true
}

// Difficulty returns the difficulty new sessions get.
func (p *Pool) Difficulty() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.difficulty
}

// SetExtranonce gives sessions a new extranonce1 (from gen, or a fresh
// unique default when gen is nil) and extranonce2 size (0 keeps each
// session's), sending mining.set_extranonce. Only sessions that sent
// mining.extranonce.subscribe are changed, unless SetExtranonceToAll. The
// change applies to jobs sent afterwards (call NewJob); shares for earlier
// jobs are still checked with the extranonce they were sent with. It
// returns how many sessions were notified.
func (p *Pool) SetExtranonce(gen func(sessionID uint64) []byte, extranonce2Size int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen == nil {
		p.e1Base = p.rng.Uint64()
	}
	n := 0
	for _, s := range p.sessions {
		if !s.subscribed || !(s.xnsub || p.opts.SetExtranonceToAll) {
			continue
		}
		if gen != nil {
			s.e1 = append([]byte(nil), gen(s.id)...)
		} else {
			s.e1 = p.defaultE1Locked(s.id, len(s.e1))
		}
		if extranonce2Size > 0 {
			s.e2size = extranonce2Size
		}
		s.enqueue(notificationLine("mining.set_extranonce", []any{hexStr(s.e1), s.e2size}), nil)
		n++
	}
	p.notifyLocked()
	return n
}

// SetVersionMask changes the pool's mask and sends mining.set_version_mask
// to every session that negotiated version rolling; their mask becomes
// mask at once (shares with bits outside it are rejected 20).
func (p *Pool) SetVersionMask(mask uint32) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mask = mask
	line := notificationLine("mining.set_version_mask", []any{hex32(mask)})
	n := 0
	for _, s := range p.sessions {
		if s.rolling {
			s.mask = mask
			s.enqueue(line, nil)
			n++
		}
	}
	return n
}

// SetAuthorize replaces the authorize decision (nil accepts all).
func (p *Pool) SetAuthorize(f func(user, password string) bool) {
	p.mu.Lock()
	p.authorize = f
	p.mu.Unlock()
}

// SetRejectFunc replaces the RejectFunc hook (nil removes it).
func (p *Pool) SetRejectFunc(f func(Share) (code int, msg string, reject bool)) {
	p.mu.Lock()
	p.rejectFunc = f
	p.mu.Unlock()
}

// RejectNext makes the next n submits (from any session, whatever their
// validity) get error [code, msg]. The shares are still validated and
// recorded with Forced set.
func (p *Pool) RejectNext(n int, code int, msg string) {
	p.mu.Lock()
	for range n {
		p.forced = append(p.forced, forcedVerdict{code, msg})
	}
	p.mu.Unlock()
}

// DelayResponses delays every submit verdict by d (0 restores immediate
// answers); other traffic is not delayed.
func (p *Pool) DelayResponses(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SuppressVerdicts makes the pool validate and record submits but never
// answer them (on=false restores answers).
func (p *Pool) SuppressVerdicts(on bool) {
	p.mu.Lock()
	p.suppress = on
	p.mu.Unlock()
}

// SendReconnect sends client.reconnect to every session: [] when host is
// empty, else [host, port, waitSeconds]. It returns the session count.
func (p *Pool) SendReconnect(host string, port, waitSeconds int) int {
	params := []any{}
	if host != "" {
		params = []any{host, port, waitSeconds}
	}
	return p.Broadcast("client.reconnect", params)
}

// ShowMessage sends client.show_message [text] to every session.
func (p *Pool) ShowMessage(text string) int {
	return p.Broadcast("client.show_message", []any{text})
}

// Broadcast sends a notification with arbitrary params (a JSON array
// value such as []any{...}) to every open session and returns the count.
func (p *Pool) Broadcast(method string, params any) int {
	line := notificationLine(method, params)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.sessions {
		s.enqueue(line, nil)
	}
	return len(p.sessions)
}

// SendTo sends a notification to one session; false if it is not open.
func (p *Pool) SendTo(sessionID uint64, method string, params any) bool {
	line := notificationLine(method, params)
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sessions[sessionID]
	if s == nil {
		return false
	}
	s.enqueue(line, nil)
	return true
}

func (p *Pool) logf(format string, args ...any) {
	if p.opts.Logf != nil {
		p.opts.Logf("pool: "+format, args...)
	}
}

// acceptLoop accepts sessions on ln until stop closes.
func (p *Pool) acceptLoop(ln net.Listener, stop chan struct{}) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-stop:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.logf("accept: %v", err)
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.addSession(c, stop)
	}
}

// jobTicker sends a non-clean job every JobInterval until stop closes.
func (p *Pool) jobTicker(stop chan struct{}) {
	defer p.wg.Done()
	t := time.NewTicker(p.opts.JobInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.NewJob(false)
		}
	}
}

// newPrevHash draws a realistic previous-block hash (leading zeros in
// explorer order: zero bytes at the end of the internal order).
func (p *Pool) newPrevHash() {
	fillRand(p.rng, p.prevHash[:22])
	clear(p.prevHash[22:])
}

// defaultE1Locked returns the default extranonce1 for a session.
func (p *Pool) defaultE1Locked(id uint64, size int) []byte {
	if size <= 0 {
		size = p.opts.Extranonce1Size
	}
	v := p.e1Base + id
	b := make([]byte, size)
	for i := size - 1; i >= 0 && v > 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

// notifyLocked wakes WaitFor callers.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) openSessionsLocked() []*session {
	ss := make([]*session, 0, len(p.sessions))
	for _, s := range p.sessions {
		ss = append(ss, s)
	}
	return ss
}

func fillRand(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}
