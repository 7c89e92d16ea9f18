package stratumsim

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"
)

// ShareKind says what a submitted share is meant to be, so a test knows
// the verdict it should get.
type ShareKind int

// Share kinds.
const (
	// ShareGood is a real share at the miner's difficulty for the job.
	ShareGood ShareKind = iota
	// ShareLowDifficulty has a hash far above the miner's target
	// (difficulty below 1/16 of it): expect 23.
	ShareLowDifficulty
	// ShareStale is sent with a job id that was never issued (a real
	// share of the newest job under a fabricated id), or, with
	// SubmitRequest.JobID naming a job the miner holds (typically one
	// superseded by a clean job), a real share for that job: expect 21.
	ShareStale
	// ShareDuplicate resends the miner's last good share verbatim (sending
	// a good one first if there is none): expect 22.
	ShareDuplicate
	// ShareBadVersionBits is a real share whose version bits include one
	// outside the negotiated mask: expect 20.
	ShareBadVersionBits
	// ShareUnauthorizedWorker submits under a worker name never
	// authorized on the connection: expect 24.
	ShareUnauthorizedWorker
	// ShareBadExtranonce2 sends an extranonce2 one byte too long: expect 20.
	ShareBadExtranonce2
)

// ExpectedCode returns the error code the share should get (0: accepted).
func (k ShareKind) ExpectedCode() int {
	switch k {
	case ShareLowDifficulty:
		return CodeLowDifficulty
	case ShareStale:
		return CodeJobNotFound
	case ShareDuplicate:
		return CodeDuplicate
	case ShareBadVersionBits, ShareBadExtranonce2:
		return CodeOther
	case ShareUnauthorizedWorker:
		return CodeUnauthorized
	}
	return 0
}

// String returns the kind's name.
func (k ShareKind) String() string {
	switch k {
	case ShareGood:
		return "good"
	case ShareLowDifficulty:
		return "low-difficulty"
	case ShareStale:
		return "stale"
	case ShareDuplicate:
		return "duplicate"
	case ShareBadVersionBits:
		return "bad-version-bits"
	case ShareUnauthorizedWorker:
		return "unauthorized-worker"
	case ShareBadExtranonce2:
		return "bad-extranonce2"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// BadKinds lists the deliberately bad kinds.
func BadKinds() []ShareKind {
	return []ShareKind{ShareLowDifficulty, ShareStale, ShareDuplicate, ShareBadVersionBits, ShareUnauthorizedWorker, ShareBadExtranonce2}
}

// Verdict is the outcome of a submit.
type Verdict int

// Verdicts.
const (
	VerdictPending  Verdict = iota // no answer yet
	VerdictAccepted                // result true
	VerdictRejected                // an error, or a result other than true
	VerdictLost                    // the connection ended without an answer
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case VerdictPending:
		return "pending"
	case VerdictAccepted:
		return "accepted"
	case VerdictRejected:
		return "rejected"
	case VerdictLost:
		return "lost"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// SubmitRequest asks a Miner for one share.
type SubmitRequest struct {
	Kind ShareKind
	// JobID works on this job (one the miner holds, superseded or not)
	// instead of the newest. For ShareStale it is the id sent (default: a
	// fabricated never-issued id).
	JobID string
	// Worker overrides the worker name (default the miner's User; for
	// ShareUnauthorizedWorker, User + ".unauthorized").
	Worker string
}

// SubmitResult is the record of one mining.submit by a Miner.
type SubmitResult struct {
	Seq            uint64 // 1-based per miner
	Conn           int    // connection number it was sent on
	Kind           ShareKind
	Expect         int    // Kind.ExpectedCode()
	Worker         string // as sent
	JobID          string // as sent
	PoolJobSeq     uint64 // the Pool's job seq, when the job came from a Pool
	Extranonce1    string // hex, in force for the job
	Extranonce2    string // hex, as sent
	NTime          uint32
	Nonce          uint32
	VersionBits    uint32 // 6th param
	HasVersionBits bool   // a 6th param was sent
	Version        uint32 // header nVersion the miner hashed
	Difficulty     float64
	// ShareDifficulty is the difficulty the hash actually reaches.
	ShareDifficulty float64
	// Hash is the block hash the miner computed (the Pool records the same
	// hash for the same header: compare with Pool.AcceptedHash).
	Hash       chainhash.Hash
	Hashes     uint64 // hashes spent finding it
	SentAt     time.Time
	AnsweredAt time.Time // zero while pending
	Verdict    Verdict
	Code       int    // error code when rejected
	Message    string // error message when rejected
}

// Latency returns AnsweredAt - SentAt (0 while pending).
func (r SubmitResult) Latency() time.Duration {
	if r.AnsweredAt.IsZero() {
		return 0
	}
	return r.AnsweredAt.Sub(r.SentAt)
}

// AsExpected reports whether an answered verdict matches the kind: good
// shares accepted, bad ones rejected with their expected code. Pending and
// lost results are not as expected.
func (r SubmitResult) AsExpected() bool {
	switch r.Verdict {
	case VerdictAccepted:
		return r.Expect == 0
	case VerdictRejected:
		return r.Expect != 0 && r.Code == r.Expect
	}
	return false
}

// Submission is a sent submit awaiting its verdict.
type Submission struct {
	m    *Miner
	rec  *SubmitResult // guarded by m.mu
	done chan struct{} // closed on verdict or loss
}

// Done is closed when the verdict arrives or the connection is lost.
func (s *Submission) Done() <-chan struct{} { return s.done }

// Result returns the record now (Verdict may still be pending).
func (s *Submission) Result() SubmitResult {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return *s.rec
}

// Wait waits for the verdict (or loss) and returns the record; it returns
// the pending record and ctx's error when ctx ends first. A rejection is
// not an error.
func (s *Submission) Wait(ctx context.Context) (SubmitResult, error) {
	select {
	case <-s.done:
		return s.Result(), nil
	case <-ctx.Done():
		return s.Result(), fmt.Errorf("stratumsim: waiting for verdict: %w", ctx.Err())
	}
}

// work is a snapshot of what a share search needs.
type work struct {
	mc      *minerConn
	job     *minerJob
	claim   uint64
	rolling bool
	mask    uint32
	target  [32]byte
	user    string
}

// claimWorkLocked picks the job and reserves a unique extranonce2/ntime
// slot for one share.
func (m *Miner) claimWorkLocked(jobID string) (work, error) {
	mc, err := m.currentLocked()
	if err != nil {
		return work{}, err
	}
	if mc.hs.err != nil {
		return work{}, fmt.Errorf("%w: %w", ErrNotReady, mc.hs.err)
	}
	if !mc.hs.done || !m.subscribed {
		return work{}, ErrNotReady
	}
	var j *minerJob
	if jobID == "" {
		if len(m.jobs) > 0 {
			j = m.jobs[len(m.jobs)-1]
		}
		if j == nil {
			return work{}, ErrNoJob
		}
	} else {
		for i := len(m.jobs) - 1; i >= 0 && j == nil; i-- {
			if m.jobs[i].data.id == jobID {
				j = m.jobs[i]
			}
		}
		if j == nil {
			return work{}, fmt.Errorf("%w %q", ErrUnknownJob, jobID)
		}
	}
	w := work{mc: mc, job: j, claim: j.claims, rolling: m.rolling, mask: m.mask, user: m.opts.User}
	j.claims++
	if !w.rolling {
		w.mask = 0
	}
	if m.targetDiff != j.diff || m.targetDiff == 0 {
		m.target = targetBytes(DifficultyTarget(j.diff))
		m.targetDiff = j.diff
	}
	w.target = m.target
	return w, nil
}

func (m *Miner) holdsJobLocked(id string) bool {
	for _, j := range m.jobs {
		if id != "" && j.data.id == id {
			return true
		}
	}
	return false
}

// claimWork waits (bounded by ctx) until the miner is ready and holds a
// job, then claims work on it. A failed handshake, an unknown job id or a
// lost connection without AutoReconnect fail at once.
func (m *Miner) claimWork(ctx context.Context, jobID string) (work, error) {
	var w work
	var reason error
	err := m.waitLoop(ctx, "work", func() (bool, error) {
		var err error
		w, err = m.claimWorkLocked(jobID)
		reason = err
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, ErrNoJob),
			err == ErrNotReady, // handshake in progress
			errors.Is(err, ErrNotConnected) && m.opts.AutoReconnect:
			return false, nil
		}
		return false, err
	})
	if err != nil && ctx.Err() != nil && reason != nil {
		return work{}, fmt.Errorf("%w (%w)", reason, err)
	}
	return w, err
}

// Submit finds a share of the requested kind (hashing in the calling
// goroutine) and sends it; it does not wait for the verdict (see
// Submission.Wait). When no job has arrived yet (or the handshake is still
// running, or an AutoReconnect miner is between connections) it waits for
// one; ctx bounds the wait and the search. A context error is returned
// wrapping the reason (e.g. ErrNoJob).
func (m *Miner) Submit(ctx context.Context, req SubmitRequest) (*Submission, error) {
	if req.Kind == ShareDuplicate {
		return m.submitDuplicate(ctx, req)
	}
	m.mu.Lock()
	jobID := req.JobID
	if req.Kind == ShareStale && !m.holdsJobLocked(jobID) {
		jobID = "" // hash on the newest job, send the fabricated id
	}
	m.mu.Unlock()
	w, err := m.claimWork(ctx, jobID)
	if err != nil {
		return nil, err
	}
	r, err := m.search(ctx, w, req.Kind)
	if err != nil {
		m.mu.Lock()
		m.stats.SearchFailures++
		m.notifyLocked()
		m.mu.Unlock()
		return nil, err
	}
	r.Kind = req.Kind
	r.Expect = req.Kind.ExpectedCode()
	r.Worker = w.user
	switch req.Kind {
	case ShareStale:
		if req.JobID != "" {
			r.JobID = req.JobID
		} else {
			m.mu.Lock()
			r.JobID = fmt.Sprintf("deadbeef%08x", m.rng.Uint32())
			m.mu.Unlock()
		}
	case ShareUnauthorizedWorker:
		r.Worker = w.user + ".unauthorized"
	case ShareBadExtranonce2:
		r.Extranonce2 += "00"
	}
	if req.Worker != "" {
		r.Worker = req.Worker
	}
	return m.sendShare(w.mc, r)
}

// submitDuplicate resends the last good share (sending one first when
// there is none on the current connection).
func (m *Miner) submitDuplicate(ctx context.Context, req SubmitRequest) (*Submission, error) {
	m.mu.Lock()
	last := m.lastGood
	mc := m.cur
	m.mu.Unlock()
	if last == nil || mc == nil || last.Conn != mc.gen || (req.JobID != "" && last.JobID != req.JobID) {
		sub, err := m.Submit(ctx, SubmitRequest{JobID: req.JobID, Worker: req.Worker})
		if err != nil {
			return nil, err
		}
		r := sub.Result()
		last = &r
		mc = sub.rec0conn()
	}
	r := *last
	r.Kind, r.Expect = ShareDuplicate, CodeDuplicate
	return m.sendShare(mc, r)
}

// rec0conn returns the connection a submission went out on.
func (s *Submission) rec0conn() *minerConn {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.m.cur != nil && s.m.cur.gen == s.rec.Conn {
		return s.m.cur
	}
	return nil
}

// search hashes nonces for w until a hash of the wanted kind turns up.
func (m *Miner) search(ctx context.Context, w work, kind ShareKind) (SubmitResult, error) {
	j := w.job
	jd := j.data
	e2, ntimeOff := claimExtranonce2(w.claim, j.e2size)
	ntime := jd.ntime + ntimeOff
	version := jd.version
	var vb uint32
	if w.rolling {
		vb = spreadBits(uint32(w.claim)*0x9e3779b1+1, w.mask)
		if vb == 0 {
			vb = w.mask & -w.mask
		}
		version = jd.version&^w.mask | vb
	}
	sendVB := w.rolling
	if kind == ShareBadVersionBits {
		ob := outsideBit(w.mask)
		if ob == 0 {
			return SubmitResult{}, fmt.Errorf("stratumsim: mask %08x leaves no bit outside it", w.mask)
		}
		vb |= ob
		version = jd.version&^(w.mask|ob) | vb
		sendVB = true
	}
	target := w.target
	wantMeet := true
	if kind == ShareLowDifficulty {
		target = targetBytes(DifficultyTarget(j.diff / 16))
		wantMeet = false
	}
	root := jd.merkleRoot(j.e1, e2)
	nh := newNonceHasher(buildHeader(version, &jd.prevHash, &root, ntime, jd.nbits, 0))
	limit := m.opts.MaxHashesPerShare
	var n uint64
	defer func() { m.hashes.Add(n) }()
	for nonce := uint32(0); ; nonce++ {
		h := nh.hash(nonce)
		n++
		if meetsTarget(&h, &target) == wantMeet {
			r := SubmitResult{
				Conn:            w.mc.gen,
				JobID:           jd.id,
				PoolJobSeq:      jd.poolSeq,
				Extranonce1:     hex.EncodeToString(j.e1),
				Extranonce2:     hex.EncodeToString(e2),
				NTime:           ntime,
				Nonce:           nonce,
				VersionBits:     vb,
				HasVersionBits:  sendVB,
				Version:         version,
				Difficulty:      j.diff,
				ShareDifficulty: HashDifficulty(chainhash.Hash(h)),
				Hash:            chainhash.Hash(h),
				Hashes:          n,
			}
			return r, nil
		}
		if n&0x3fff == 0 {
			if err := ctx.Err(); err != nil {
				return SubmitResult{}, fmt.Errorf("stratumsim: share search: %w", err)
			}
		}
		if n >= limit || nonce == ^uint32(0) {
			return SubmitResult{}, fmt.Errorf("%w after %d hashes at difficulty %g", ErrSearchExhausted, n, j.diff)
		}
	}
}

// claimExtranonce2 maps a claim number to an extranonce2 of size bytes and
// an ntime offset (when the extranonce2 space is exhausted).
func claimExtranonce2(claim uint64, size int) ([]byte, uint32) {
	e2 := make([]byte, size)
	if size >= 8 {
		binary.BigEndian.PutUint64(e2[size-8:], claim)
		return e2, 0
	}
	space := uint64(1) << (8 * size)
	v, off := claim%space, claim/space
	for i := size - 1; i >= 0; i-- {
		e2[i] = byte(v)
		v >>= 8
	}
	return e2, uint32(off)
}

// sendShare registers and writes a submit built from r's share fields.
func (m *Miner) sendShare(mc *minerConn, r SubmitResult) (*Submission, error) {
	params := []any{r.Worker, r.JobID, r.Extranonce2, hex32(r.NTime), hex32(r.Nonce)}
	if r.HasVersionBits {
		params = append(params, hex32(r.VersionBits))
	}
	sub := &Submission{m: m, done: make(chan struct{})}
	r.Verdict, r.Code, r.Message, r.AnsweredAt = VerdictPending, 0, "", time.Time{}
	err := m.sendRequest(mc, "mining.submit", params, &pendingReq{kind: reqSubmit, sub: sub}, func(uint64) {
		m.stats.Submitted++
		m.stats.Pending++
		r.Seq = m.stats.Submitted
		r.Conn = mc.gen
		r.SentAt = time.Now()
		sub.rec = &r
		if r.Kind == ShareGood {
			good := r
			m.lastGood = &good
		}
		if lim := m.opts.HistoryLimit; lim > 0 {
			m.submits = append(m.submits, sub.rec)
			if len(m.submits) > lim {
				m.submits = slices.Delete(m.submits, 0, len(m.submits)/2)
			}
		}
		m.notifyLocked()
	})
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// SubmitOne finds, sends and waits for one good share; a rejection is
// returned as a result, not an error.
func (m *Miner) SubmitOne(ctx context.Context) (SubmitResult, error) {
	sub, err := m.Submit(ctx, SubmitRequest{})
	if err != nil {
		return SubmitResult{}, err
	}
	return sub.Wait(ctx)
}

// SubmitShares sends n good shares back to back, then waits for all
// verdicts. It returns the results so far and the first error.
func (m *Miner) SubmitShares(ctx context.Context, n int) ([]SubmitResult, error) {
	return m.SubmitKinds(ctx, slices.Repeat([]ShareKind{ShareGood}, n))
}

// SubmitKinds sends one share of each kind in order, then waits for all
// verdicts.
func (m *Miner) SubmitKinds(ctx context.Context, kinds []ShareKind) ([]SubmitResult, error) {
	subs := make([]*Submission, 0, len(kinds))
	var firstErr error
	for _, k := range kinds {
		s, err := m.Submit(ctx, SubmitRequest{Kind: k})
		if err != nil {
			firstErr = fmt.Errorf("submit %s: %w", k, err)
			break
		}
		subs = append(subs, s)
	}
	out := make([]SubmitResult, 0, len(subs))
	for _, s := range subs {
		r, err := s.Wait(ctx)
		out = append(out, r)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return out, firstErr
}
